"""grants.max_pending_per_operator in the break-glass rules (review finding: one operator flooded RequestGrant with
11,328 PENDING grants in 20 s, and ListGrants' newest 1,000 hid earlier real requests from approvers). A refused
request is audited ``grant.refused`` like every other refusal. SQLite and PostgreSQL (skipped when
no PostgreSQL is reachable)."""

import pytest

from support.grants import make_world
from tenantgate.core.breakglass import GrantRules
from tenantgate.core.grants import GrantState
from tenantgate.errors import GrantConflict, classify


def test_the_default_limit_is_ten_pending_grant_requests_per_operator(tmp_path, store_url):
    assert GrantRules().max_pending_per_operator == 10
    world = make_world(tmp_path, store_url)
    for _ in range(10):
        world.request()
    with pytest.raises(GrantConflict):
        world.request()
    assert len(world.service.store.list(None, GrantState.PENDING, world.clock.now())) == 10


def test_a_request_beyond_the_operators_pending_limit_is_refused_and_audited(tmp_path, store_url):
    world = make_world(tmp_path, store_url, max_pending_per_operator=2)
    world.request()
    world.request()
    with pytest.raises(GrantConflict, match=r"grants.max_pending_per_operator \(2\)") as refused:
        world.request(target="globex")
    assert classify(refused.value) == ("invalid_request", "FAILED_PRECONDITION")
    assert len(world.events("grant.requested")) == 2  # nothing was stored for the third
    last = world.records()[-1]
    assert (last["event"], last["actor"], last["grant_id"]) == ("grant.refused", "oscar", "")
    assert last["detail"].startswith("request: GrantConflict: the operator has 2 pending grant request(s)")
    world.request(sub="mallory")  # another operator is not held back by oscar's requests


def test_a_pending_slot_frees_when_a_request_is_approved_revoked_or_expires(tmp_path, store_url):
    world = make_world(tmp_path, store_url, max_pending_per_operator=2, pending_ttl_seconds=600)
    first, second = world.request(), world.request()
    world.service.approve(world.approver(), first.id)
    third = world.request()
    world.service.revoke(world.approver(), second.id, "duplicate")
    world.request()
    with pytest.raises(GrantConflict):
        world.request()
    world.clock.advance(600)  # both pending requests expire, swept or not
    assert third.id not in {g.id for g in world.service.store.list(None, GrantState.PENDING, world.clock.now())}
    world.request()


def test_requests_active_at_once_are_not_pending_requests(tmp_path, store_url):
    world = make_world(tmp_path, store_url, max_pending_per_operator=1, require_approval=False)
    assert {world.request().state for _ in range(3)} == {GrantState.ACTIVE}
