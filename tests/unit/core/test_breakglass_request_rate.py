"""grants.max_requests_per_operator_per_hour in the break-glass rules (review finding: under the pending cap, an
operator could request and revoke their own grants in a loop; each cycle stored a grant row, which is never purged,
and wrote audit records, so one token grew the store and the audit log without bound and flooded approvers). A
refused request stores nothing and is audited ``grant.refused`` like every other refusal. SQLite and PostgreSQL
(skipped when no PostgreSQL is reachable)."""

import pytest

from support.grants import NOW, make_world
from tenantgate.core.breakglass import GrantRules
from tenantgate.core.model import rfc3339
from tenantgate.errors import GrantConflict, classify


def stored(world):
    return world.service.store.list(None, None, world.clock.now(), 10_000)


def request_and_revoke(world, sub="oscar"):
    grant = world.request(sub=sub)
    world.service.revoke(world.operator(sub), grant.id, "mistake")
    world.clock.advance(1)
    return grant


def test_the_default_limit_is_thirty_grant_requests_per_operator_per_hour(tmp_path, store_url):
    assert GrantRules().max_requests_per_operator_per_hour == 30
    world = make_world(tmp_path, store_url)
    for _ in range(30):
        request_and_revoke(world)
    with pytest.raises(GrantConflict, match=r"grants.max_requests_per_operator_per_hour \(30\)"):
        world.request()
    assert len(stored(world)) == 30


def test_requesting_and_revoking_in_a_loop_is_refused_at_the_limit_and_audited(tmp_path, store_url):
    world = make_world(tmp_path, store_url, max_requests_per_operator_per_hour=3)
    for _ in range(3):
        request_and_revoke(world)
    with pytest.raises(GrantConflict) as refused:
        world.request(target="globex")  # nothing is pending: the pending cap does not stop this
    assert classify(refused.value) == ("invalid_request", "FAILED_PRECONDITION")  # as the pending cap's refusal
    when = rfc3339(NOW + 3600)
    assert str(refused.value) == ("the operator made 3 grant request(s) in the last hour, the most "
                                  "grants.max_requests_per_operator_per_hour (3) allows: try again after "
                                  f"{when} (in 3597 s)")
    assert len(stored(world)) == 3 and len(world.events("grant.requested")) == 3  # nothing for the fourth
    last = world.records()[-1]
    # The refusal names the tenant requested (``audit query --tenant globex`` lists it).
    assert (last["event"], last["actor"], last["grant_id"], last["target_tenant"]) == ("grant.refused", "oscar",
                                                                                        "", "globex")
    assert last["detail"] == f"request: GrantConflict: {refused.value}"
    world.request(sub="mallory")  # another operator is not held back by oscar's requests


def test_the_window_slides_with_the_clock(tmp_path, store_url):
    world = make_world(tmp_path, store_url, max_requests_per_operator_per_hour=2)
    world.request()
    world.clock.advance(1800)
    world.request()
    world.clock.advance(1799)  # the first request is 3599 s old
    with pytest.raises(GrantConflict, match=r"\(in 1 s\)"):
        world.request()
    world.clock.advance(1)
    world.request()  # the first one left the window; the second is still in it
    with pytest.raises(GrantConflict, match=rf"try again after {rfc3339(NOW + 1800 + 3600)}"):
        world.request()


def test_requests_active_at_once_count(tmp_path, store_url):
    world = make_world(tmp_path, store_url, max_requests_per_operator_per_hour=2, require_approval=False)
    world.request()
    world.request()
    with pytest.raises(GrantConflict, match=r"grants.max_requests_per_operator_per_hour \(2\)"):
        world.request()
    assert len(stored(world)) == 2
