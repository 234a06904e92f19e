"""The sweep keeps the books; a replica whose clock runs ahead cannot expire, for everyone, a grant still live.

Review finding (MEDIUM): the sweep expired what was due by its replica's own clock, and rows once EXPIRED are
closed for every replica sharing the store. A replica 600 s ahead expired a 900 s grant 300 s after its approval,
after which the replica with the right clock denied the operator; a replica stepped 2 days ahead expired every
grant and pending request. Now a sweep expires only what has been due for ``SWEEP_MARGIN_SECONDS``, and every
decision, approval and revocation still judges expiry exactly, by its own clock.
"""

import pytest

from support.grants import NOW, make_world
from support.issuers import FixedClock
from tenantgate.core.breakglass import BreakGlass, GrantRules
from tenantgate.core.grants import SWEEP_MARGIN_SECONDS, GrantState
from tenantgate.core.model import CheckInput, Decision, Reason, Resource
from tenantgate.errors import GrantConflict

AHEAD = SWEEP_MARGIN_SECONDS - 50  # a replica's clock this far ahead of the world's: within the margin


@pytest.fixture()
def world(tmp_path):
    world = make_world(tmp_path, pending_ttl_seconds=60)
    yield world
    world.service.store.close()


def ahead_replica(world, seconds=AHEAD):
    """Another replica on the world's store whose clock is ``seconds`` ahead of the world's (it moves with it)."""

    class Ahead(FixedClock):
        def now(self):
            return world.clock.now() + seconds

    return BreakGlass(store=world.service.store, audit=world.sink, clock=Ahead(), rules=GrantRules(),
                      verifier=world.service._verifier)


def check(world):
    token = world.token("platform", "oscar", "breakglass-operator")
    return world.pdp.decide(CheckInput(token=token, action="read", resource=Resource("Invoice", "inv-1", "acme")))


def test_a_replica_ahead_cannot_expire_a_grant_still_live_on_the_others(world):
    grant = world.active_grant(duration=900)
    fast = ahead_replica(world)
    world.clock.advance(899)  # the fast replica is past the expiry: its sweep runs there
    assert fast.sweep() == []
    assert world.service.store.get(grant.id).state is GrantState.ACTIVE
    assert check(world).decision is Decision.ALLOW  # the replica with the right clock still honours it
    assert not world.events("grant.expired")


def test_a_pending_request_expired_only_by_a_fast_clock_can_still_be_approved(world):
    pending = world.request()  # pending for 60 s
    world.clock.advance(1)
    assert ahead_replica(world).sweep() == []
    approved = world.service.approve(world.approver(), pending.id)
    assert approved.state is GrantState.ACTIVE


def test_a_grant_due_but_not_yet_swept_is_refused_by_decisions_approvals_and_revocations(world):
    grant = world.active_grant(duration=900)
    world.clock.advance(840)
    pending = world.request(target="globex")  # pending for 60 s: due with the grant
    world.clock.advance(60)
    assert world.service.sweep() == []  # due by this clock, within the margin: the rows stay as they are
    assert world.service.store.get(grant.id).state is GrantState.ACTIVE
    assert world.service.store.get(pending.id).state is GrantState.PENDING
    assert check(world).reason is Reason.CROSS_TENANT  # expiry is judged exactly, by the decision's clock
    with pytest.raises(GrantConflict, match="EXPIRED"):
        world.service.approve(world.approver(), pending.id)
    with pytest.raises(GrantConflict):
        world.service.revoke(world.approver(), grant.id, "too late")
    listed = world.service.list(world.approver(), None, GrantState.EXPIRED)
    assert {g.id for g in listed.grants} == {grant.id, pending.id}


def test_the_sweep_expires_grants_once_they_have_been_due_for_the_margin(world):
    grant = world.active_grant(duration=900)
    pending = world.request(target="globex")  # pending until NOW + 60
    world.clock.advance(60 + SWEEP_MARGIN_SECONDS)
    assert [g.id for g in world.service.sweep()] == [pending.id]
    world.clock.advance(900 - 60 - 1)  # the grant has been due for the margin, less a second
    assert world.service.sweep() == []
    world.clock.advance(1)
    assert [g.id for g in world.service.sweep()] == [grant.id]
    assert [e["grant_id"] for e in world.events("grant.expired")] == [pending.id, grant.id]
    assert world.clock.now() == NOW + 900 + SWEEP_MARGIN_SECONDS
