"""Break-glass review findings (each test failed before its fix): the system clock, the approving replica's TTL,
blank-rendering subjects, the revocation race message, undeclared actions, over-long grant ids."""

import time
from pathlib import Path

import cedarpy
import pytest

from support.grants import NOW, make_world
from support.issuers import verifier_for
from tenantgate.core.breakglass import BreakGlass, GrantRequest, GrantRules
from tenantgate.core.grants import GrantState
from tenantgate.core.ports import SystemClock
from tenantgate.core.schema import undeclared_actions
from tenantgate.errors import GrantConflict, GrantInvalid, GrantPermissionDenied

SCHEMA = Path(__file__).resolve().parents[3] / "policies" / "schema.cedarschema"
BUNDLED_ACTIONS = {"read", "update", "delete", "approve", "reconcile", "share", "comment"}


@pytest.fixture()
def world(tmp_path):
    return make_world(tmp_path)


def replica(world, *, clock=None, store=None, **kw):
    """Another BreakGlass sharing the world's store and audit log (another replica, or another clock)."""
    rules = {k: v for k, v in kw.items() if k != "undeclared_actions"}
    return BreakGlass(store=store or world.service.store, audit=world.sink, clock=clock or world.clock,
                      rules=GrantRules(**rules), undeclared_actions=kw.get("undeclared_actions"),
                      verifier=verifier_for(world.issuer, clock=world.clock, max_lifetime_seconds=90_000))


def refusals(world):
    return [r for r in world.records() if r.get("event") == "grant.refused"]


# --- 2. a wall clock stepped back ------------------------------------------------------------------------------

def test_the_system_clock_is_the_wall_clock_so_a_correction_is_taken_at_once(monkeypatch):
    # Decided after a review of a clock that never went backwards (extrapolating with the monotonic clock
    # after a step back): a host clock that ran ahead and was corrected by NTP stayed ahead by the whole step
    # for the life of the process, refusing fresh tokens. A step back may stretch a live grant (and revive
    # a token) by the size of the step instead, as the README says.
    readings = iter([NOW, NOW - 600, NOW - 599])
    monkeypatch.setattr(time, "time", lambda: next(readings))
    clock = SystemClock()
    assert [clock.now(), clock.now(), clock.now()] == [NOW, NOW - 600, NOW - 599]


# --- 3. the approving replica's grants.max_ttl_seconds ----------------------------------------------------------

def test_a_replica_with_a_shorter_max_ttl_does_not_approve_a_longer_grant(world):
    long_ttl = replica(world, max_ttl_seconds=86_400)
    grant = long_ttl.request(world.operator(), GrantRequest("acme", ("read",), "INC-1 outage", "INC-1", 86_400))
    with pytest.raises(GrantInvalid, match=r"duration_seconds 86400, above grants.max_ttl_seconds \(3600\)"):
        world.service.approve(world.approver(), grant.id)
    assert world.service.store.get(grant.id).state is GrantState.PENDING
    refused = refusals(world)[-1]
    assert (refused["grant_id"], refused["actor"]) == (grant.id, "ada")
    assert refused["detail"].startswith("approve: GrantInvalid: grant ") and "max_ttl_seconds" in refused["detail"]
    assert long_ttl.approve(world.approver(), grant.id).expires_at == NOW + 86_400  # where the rule allows it


# --- 4. blank-rendering characters in subjects ------------------------------------------------------------------

BLANKS = ["\u2800", "\U0001d159", "\u3164", "\uffa0", "\u115f", "\u1160", "\u17b4", "\u17b5", "\u180e",
          *(chr(c) for c in range(0x2000, 0x200b)), "\u205f", "\u3000", "\u00a0", "\u1680", "\u202f", "\u2028",
          "\u2029", "\U00016fe4", "\u2062", "\U000e0020", "\ue000", "\U000f0000", "\u0378", "\t", " "]


@pytest.mark.parametrize("blank", BLANKS, ids=[f"U+{ord(b):04X}" for b in BLANKS])
@pytest.mark.parametrize("where", ["end", "start", "inside"])
def test_a_subject_that_differs_only_by_a_blank_rendering_character_cannot_approve(world, blank, where):
    variant = {"end": "oscar" + blank, "start": blank + "oscar", "inside": "osc" + blank + "ar"}[where]
    grant = world.request(sub="oscar")
    with pytest.raises(GrantPermissionDenied, match="self-approval"):
        world.service.approve(world.approver(sub=variant), grant.id)
    assert world.service.store.get(grant.id).state is GrantState.PENDING


def test_visible_differences_still_make_another_person(world):
    for other in ("oscar1", "osc\u00e1r", "\u043escar"):  # a digit, an accent, a Cyrillic o (no confusables table)
        grant = world.request(sub="oscar")
        assert world.service.approve(world.approver(sub=other), grant.id).state is GrantState.ACTIVE


# --- 5. the loser of two revocations ----------------------------------------------------------------------------

class RaceFirst:
    """The world's store, letting ``first()`` run just before this replica's own conditional update."""

    def __init__(self, inner, first):
        self._inner, self._first = inner, first

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def revoke(self, *args):
        self._first()
        return self._inner.revoke(*args)

    def activate(self, *args):
        self._first()
        return self._inner.activate(*args)


def test_the_loser_of_two_revocations_is_told_the_grant_is_already_revoked(world):
    grant = world.active_grant()
    loser = replica(world, store=RaceFirst(world.service.store,
                                           lambda: world.service.revoke(world.approver("bea"), grant.id, "done")))
    with pytest.raises(GrantConflict) as refused:
        loser.revoke(world.approver(), grant.id, "incident closed")
    assert str(refused.value) == f"grant {grant.id} is already REVOKED"
    assert refusals(world)[-1]["detail"] == f"revoke: GrantConflict: grant {grant.id} is already REVOKED"


def test_the_loser_of_two_approvals_is_told_the_grant_is_already_active(world):
    grant = world.request()
    loser = replica(world, store=RaceFirst(world.service.store,
                                           lambda: world.service.approve(world.approver("bea"), grant.id)))
    with pytest.raises(GrantConflict, match=f"^grant {grant.id} is already ACTIVE$"):
        loser.approve(world.approver(), grant.id)


# --- 6. actions the policy schema does not declare --------------------------------------------------------------

def _undeclared(schema_text):
    schema = cedarpy.Schema.from_str(schema_text)
    return lambda names: undeclared_actions(schema, names)


def test_the_bundled_schema_declares_its_seven_actions_and_no_other_name():
    check = _undeclared(SCHEMA.read_text())
    assert check(sorted(BUNDLED_ACTIONS)) == []
    assert check(["*", "Delete", 'Action::"read"', "admin", 'we"ird\\x', "read "]) == [
        "*", "Delete", 'Action::"read"', "admin", 'we"ird\\x', "read "]


def test_an_action_declared_in_a_namespace_or_applying_to_nothing_is_no_action_a_check_asks_for():
    text = SCHEMA.read_text() + '''
        action lonely;
        namespace Billing { entity U; action "refund" appliesTo { principal: [U], resource: [U] }; }
    '''
    assert _undeclared(text)(["read", "lonely", "refund"]) == ["lonely", "refund"]


@pytest.mark.parametrize("action", ["*", "Delete", 'Action::"read"', "admin"])
def test_a_grant_for_an_action_the_schema_does_not_declare_is_refused(world, action):
    service = replica(world, undeclared_actions=_undeclared(SCHEMA.read_text()))
    with pytest.raises(GrantInvalid, match="not declared by the policy schema") as refused:
        service.request(world.operator(), GrantRequest("acme", ("read", action), "INC-1 outage", "INC-1", 900))
    assert str(refused.value) == f"action(s) {action!r} not declared by the policy schema (for any principal and " \
        "resource type)"
    assert refusals(world)[-1]["detail"].startswith(f"request: GrantInvalid: action(s) {action!r} not declared")
    assert service.request(world.operator(), GrantRequest("acme", ("read", "update"), "INC-1 outage", "INC-1",
                                                          900)).actions == ("read", "update")


def test_the_schema_is_asked_at_each_request(world):
    known = {"read"}
    service = replica(world, undeclared_actions=lambda names: [n for n in names if n not in known])
    with pytest.raises(GrantInvalid):
        service.request(world.operator(), GrantRequest("acme", ("export",), "INC-1 outage", "INC-1", 900))
    known.add("export")  # a reloaded policy set declares it
    assert service.request(world.operator(), GrantRequest("acme", ("export",), "INC-1", "INC-1", 900)).actions \
        == ("export",)


# --- 7. over-long grant ids -------------------------------------------------------------------------------------

def test_an_over_long_grant_id_is_called_too_long_not_missing(world):
    with pytest.raises(GrantInvalid, match=r"^grant_id is longer than 64 characters$"):
        world.service.approve(world.approver(), "g" * 65)
    with pytest.raises(GrantInvalid, match=r"^grant_id is required$"):
        world.service.revoke(world.approver(), "", "done")
    long_id, missing = refusals(world)
    assert long_id["grant_id"] == "g" * 64 + "..." and "longer than 64" in long_id["detail"]
    assert missing["grant_id"] == ""
    assert world.service.approve(world.approver(), world.request().id).state is GrantState.ACTIVE  # 36 is fine
