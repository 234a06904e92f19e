"""Break-glass rules and their effect on decisions, with a real SQLite store and an injected clock."""

import base64
import hashlib

import pytest

from support.grants import make_world
from tenantgate import errors
from tenantgate.core.breakglass import GrantRequest
from tenantgate.core.grants import SWEEP_MARGIN_SECONDS, GrantState
from tenantgate.core.model import CheckInput, Decision, Reason, Resource
from tenantgate.errors import AuditUnavailable, GrantConflict, GrantInvalid, GrantNotFound, GrantPermissionDenied


@pytest.fixture()
def world(tmp_path):
    return make_world(tmp_path)


def _check(world, token, tenant="acme", action="read", rtype="Invoice", context=None):
    return world.pdp.decide(CheckInput(token=token, action=action, resource=Resource(rtype, "inv-1", tenant),
                                       context=context or {}))


def test_request_approve_then_operator_is_allowed_with_the_grant_id_in_the_audit(world):
    grant = world.request()
    assert grant.state is GrantState.PENDING
    op = world.token("platform", "oscar", "breakglass-operator")
    assert _check(world, op).reason is Reason.CROSS_TENANT  # pending opens nothing
    active = world.service.approve(world.approver(), grant.id)
    assert active.state is GrantState.ACTIVE and active.approved_by == "ada"
    assert active.expires_at == world.clock.now() + 900
    result = _check(world, op)
    assert (result.decision, result.reason) == (Decision.ALLOW, Reason.ALLOW_BREAK_GLASS)
    assert result.audit.grant_id == grant.id and result.policy_ids == ("break-glass-operators",)


def test_self_approval_is_refused(world):
    grant = world.request(sub="oscar")
    both_roles = world.caller("platform", "oscar", "breakglass-operator", "breakglass-approver")
    with pytest.raises(GrantPermissionDenied, match="self-approval"):
        world.service.approve(both_roles, grant.id)


@pytest.mark.parametrize("tenant,roles", [("acme", ("breakglass-operator",)), ("platform", ("admin",)),
                                          ("platform", ("breakglass-approver",))])
def test_wrong_tenant_or_role_cannot_request(world, tenant, roles):
    with pytest.raises(GrantPermissionDenied):
        world.service.request(world.caller(tenant, "mallory", *roles),
                              GrantRequest("acme", ("read",), "r", "t", 60))


@pytest.mark.parametrize("tenant,roles", [("acme", ("breakglass-approver",)), ("platform", ("breakglass-operator",))])
def test_wrong_tenant_or_role_cannot_approve(world, tenant, roles):
    grant = world.request()
    with pytest.raises(GrantPermissionDenied):
        world.service.approve(world.caller(tenant, "mallory", *roles), grant.id)


@pytest.mark.parametrize("kw,message", [
    ({"duration": 3601}, "exceeds grants.max_ttl_seconds"),
    ({"duration": 0}, "> 0"),
    ({"reason": "   "}, "reason is required"),
    ({"ticket": ""}, "ticket reference is required"),
    ({"target": "acme corp"}, "not a valid tenant id"),
    ({"target": "platform"}, "operator tenant"),
    ({"actions": ()}, "at least one action"),
])
def test_invalid_requests_are_refused_never_capped(world, kw, message):
    with pytest.raises(GrantInvalid, match=message):
        world.request(**kw)


def test_ticket_is_optional_when_configured(tmp_path):
    world = make_world(tmp_path, require_ticket=False)
    assert world.request(ticket="").ticket == ""


def test_without_required_approval_a_request_is_active_at_once(tmp_path):
    world = make_world(tmp_path, require_approval=False)
    grant = world.request()
    assert grant.state is GrantState.ACTIVE
    assert _check(world, world.token("platform", "oscar", "breakglass-operator")).reason is Reason.ALLOW_BREAK_GLASS


def test_use_one_second_before_expiry_is_allowed_at_and_after_expiry_denied(world):
    grant = world.active_grant(duration=600)
    op = world.token("platform", "oscar", "breakglass-operator")
    world.clock.advance(599)
    assert _check(world, op).reason is Reason.ALLOW_BREAK_GLASS
    world.clock.advance(1)
    assert world.clock.now() == grant.expires_at
    assert _check(world, op).reason is Reason.CROSS_TENANT
    world.clock.advance(1)
    assert _check(world, op).reason is Reason.CROSS_TENANT


def test_grant_for_tenant_b_does_not_open_tenant_c(world):
    world.active_grant(target="tenant-b")
    op = world.token("platform", "oscar", "breakglass-operator")
    assert _check(world, op, tenant="tenant-b").reason is Reason.ALLOW_BREAK_GLASS
    assert _check(world, op, tenant="tenant-c").reason is Reason.CROSS_TENANT


def test_grant_for_read_does_not_open_delete(world):
    world.active_grant(actions=("read",))
    op = world.token("platform", "oscar", "breakglass-operator")
    assert _check(world, op, action="delete", context={"mfa": True}).reason is Reason.CROSS_TENANT


def test_grant_belongs_to_its_operator_only(world):
    world.active_grant(sub="oscar")
    other = world.token("platform", "olga", "breakglass-operator")
    assert _check(world, other).reason is Reason.CROSS_TENANT
    same_sub_other_tenant = world.token("acme-ops", "oscar", "breakglass-operator")
    assert _check(world, same_sub_other_tenant, tenant="acme").reason is Reason.CROSS_TENANT


def test_operator_who_lost_the_role_cannot_use_the_grant(world):
    world.active_grant()
    assert _check(world, world.token("platform", "oscar")).reason is Reason.CROSS_TENANT


def test_cedar_still_decides_under_a_grant(world):
    world.active_grant(actions=("delete",))
    op = world.token("platform", "oscar", "breakglass-operator")
    result = _check(world, op, action="delete")  # delete-requires-mfa still applies
    assert (result.reason, result.policy_ids) == (Reason.POLICY_FORBID, ("delete-requires-mfa",))
    assert result.audit.grant_id


def test_revoked_grant_denies_at_the_next_check(world):
    grant = world.active_grant()
    op = world.token("platform", "oscar", "breakglass-operator")
    assert _check(world, op).allowed
    revoked = world.service.revoke(world.approver(), grant.id, "incident closed")
    assert revoked.state is GrantState.REVOKED and revoked.revoked_by == "ada"
    assert _check(world, op).reason is Reason.CROSS_TENANT
    with pytest.raises(GrantConflict):
        world.service.revoke(world.operator(), grant.id, "again")


def test_revoke_requires_a_grant_role_and_a_reason(world):
    grant = world.active_grant()
    with pytest.raises(GrantPermissionDenied):
        world.service.revoke(world.caller("platform", "eve", "admin"), grant.id, "x")
    with pytest.raises(GrantInvalid):
        world.service.revoke(world.operator(), grant.id, " ")


def test_approving_a_non_pending_grant_is_a_conflict(world):
    grant = world.active_grant()
    with pytest.raises(GrantConflict):
        world.service.approve(world.approver("bea"), grant.id)
    with pytest.raises(GrantNotFound):
        world.service.approve(world.approver(), "no-such-grant")


def test_pending_requests_expire(tmp_path):
    world = make_world(tmp_path, pending_ttl_seconds=60)
    grant = world.request()
    world.clock.advance(60)
    with pytest.raises(GrantConflict, match="EXPIRED"):
        world.service.approve(world.approver(), grant.id)


def test_every_lifecycle_step_is_an_audit_event(world):
    grant = world.active_grant(duration=60)
    other = world.active_grant(target="globex")
    world.service.revoke(world.approver(), other.id, "done")
    world.clock.advance(61 + SWEEP_MARGIN_SECONDS)
    expired = world.service.sweep()
    assert [g.id for g in expired] == [grant.id]
    events = [(r["event"], r["grant_id"]) for r in world.records() if r.get("record_type") == "grant_event"]
    assert events == [("grant.requested", grant.id), ("grant.approved", grant.id),
                      ("grant.requested", other.id), ("grant.approved", other.id),
                      ("grant.revoked", other.id), ("grant.expired", grant.id)]


def test_a_grant_event_that_cannot_be_written_is_refused(world, monkeypatch):
    grant = world.request()

    def broken(_event):
        raise AuditUnavailable("disk full")

    monkeypatch.setattr(world.sink, "write", broken)
    with pytest.raises(AuditUnavailable):
        world.service.approve(world.approver(), grant.id)
    assert world.service.store.get(grant.id).state is GrantState.PENDING


def test_list_by_tenant_and_state(world):
    a = world.active_grant(target="acme")
    b = world.request(target="globex")
    listed = world.service.list(world.approver(), None, None).grants
    assert {g.id for g in listed} == {a.id, b.id}
    assert [g.id for g in world.service.list(world.operator(), "globex", GrantState.PENDING).grants] == [b.id]
    assert world.service.list(world.operator(), "acme", GrantState.PENDING).grants == ()
    with pytest.raises(GrantPermissionDenied):
        world.service.list(world.caller("acme", "alice", "admin"), None, None)


def test_agents_cannot_use_or_request_grants(world):
    world.active_grant()
    agent = world.issuer.mint(tenant="platform", sub="oscar", roles=["breakglass-operator"], intents=["x"],
                              act={"sub": "bot"}, exp=int(world.clock.now()) + 3000)
    result = world.pdp.decide(CheckInput(token=agent, action="read", resource=Resource("Invoice", "i", "acme"),
                                         intent="x"))
    assert result.reason is Reason.CROSS_TENANT
    with pytest.raises(GrantPermissionDenied):
        world.service.request(world.service.caller(agent), GrantRequest("acme", ("read",), "r", "t", 60))


def test_request_context_cannot_forge_break_glass(world):
    op = world.token("platform", "oscar", "breakglass-operator")
    forged = {"breakGlass": {"grantId": "x", "targetTenant": "acme", "expiresAt": 9999999999, "reason": "r",
                             "ticket": "t"}}
    result = _check(world, op, context=forged)
    assert (result.decision, result.reason) == (Decision.DENY, Reason.INVALID_REQUEST)


def test_same_tenant_checks_never_touch_the_store(world, monkeypatch):
    def unreachable(*_a, **_k):
        raise AssertionError("store consulted on the same-tenant path")

    monkeypatch.setattr(world.service.store, "find_active", unreachable)
    token = world.token("acme", "alice", "viewer")
    assert _check(world, token).reason is Reason.ALLOW


def test_store_outage_denies_cross_tenant_only(world, monkeypatch):
    from tenantgate.errors import GrantStoreUnavailable

    world.active_grant()

    def down(*_a, **_k):
        raise GrantStoreUnavailable("connection refused")

    monkeypatch.setattr(world.service.store, "find_active", down)
    op = world.token("platform", "oscar", "breakglass-operator")
    assert _check(world, op).reason is Reason.GRANT_STORE_UNAVAILABLE
    assert _check(world, world.token("acme", "alice", "viewer")).reason is Reason.ALLOW


# --- review findings (each failed before its fix) --------------------------------------------------------------


def test_a_clock_stepped_back_before_the_approval_does_not_stretch_the_grant(world):
    world.active_grant(duration=900)
    world.clock.advance(-7200)  # this replica's clock is stepped back two hours
    op = world.token("platform", "oscar", "breakglass-operator")
    assert _check(world, op).reason is Reason.CROSS_TENANT
    world.clock.advance(7200 - 3)  # within the allowed skew of the approval time
    op = world.token("platform", "oscar", "breakglass-operator")
    assert _check(world, op).reason is Reason.ALLOW_BREAK_GLASS


@pytest.mark.parametrize("variant", ["Oscar", "OSCAR", "oscar\u200b", "\uff4f\uff53\uff43\uff41\uff52"])
def test_case_and_unicode_variants_of_the_operator_cannot_approve_its_grant(world, variant):
    grant = world.request(sub="oscar")
    with pytest.raises(GrantPermissionDenied, match="self-approval"):
        world.service.approve(world.approver(sub=variant), grant.id)
    assert world.service.store.get(grant.id).state is GrantState.PENDING


def test_refused_changes_are_audited_and_events_name_the_actors_issuer_and_token(world):
    grant = world.request(sub="oscar")
    with pytest.raises(GrantPermissionDenied):
        world.service.approve(world.caller("platform", "oscar", "breakglass-approver"), grant.id)
    with pytest.raises(GrantPermissionDenied):
        world.service.approve(world.caller("platform", "mallory", "admin"), grant.id)
    with pytest.raises(GrantPermissionDenied):
        world.service.request(world.caller("acme", "eve", "breakglass-operator"),
                              GrantRequest("globex", ("read",), "r", "t", 60))
    approver = world.approver()
    world.service.approve(approver, grant.id)
    events = [r for r in world.records() if r.get("record_type") == "grant_event"]
    refused = [(e["event"], e["grant_id"], e["actor"], e["detail"].split(":")[0]) for e in events
               if e["event"] == "grant.refused"]
    assert refused == [("grant.refused", grant.id, "oscar", "approve"),
                       ("grant.refused", grant.id, "mallory", "approve"), ("grant.refused", "", "eve", "request")]
    self_refusal = next(e for e in events if e["event"] == "grant.refused")
    assert self_refusal["detail"] == "approve: GrantPermissionDenied: self-approval is not allowed: a second " \
                                     "person must approve"
    approved = next(e for e in events if e["event"] == "grant.approved")
    assert approved["actor_issuer"] == approver.issuer and approved["actor_token_id"] == approver.token_id
    assert approved["actor_token_id"] and approved["actor_issuer"]


def test_an_operator_subject_longer_than_the_store_index_holds_cannot_request(world):
    with pytest.raises(GrantInvalid, match="longer than 1024 bytes"):
        world.request(sub="\u754c" * 342)  # 1,026 bytes in UTF-8
    assert world.request(sub="\u754c" * 341).operator == "\u754c" * 341  # 1,023 bytes


def test_a_certificate_bound_token_needs_its_certificate_for_grant_calls(world):
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(b"certificate DER").digest()).rstrip(b"=").decode()
    bound = world.issuer.mint(tenant="platform", sub="ada", roles=["breakglass-approver"],
                              cnf={"x5t#S256": thumbprint}, exp=int(world.clock.now()) + 86_000)
    with pytest.raises(errors.TokenBindingMismatch, match="none was presented"):
        world.service.caller(bound)
    with pytest.raises(errors.TokenBindingMismatch, match="does not match"):
        world.service.caller(bound, hashlib.sha256(b"another certificate").hexdigest())
    assert world.service.caller(bound, hashlib.sha256(b"certificate DER").hexdigest()).subject == "ada"
    malformed = world.issuer.mint(tenant="platform", sub="ada", roles=["breakglass-approver"], cnf="x",
                                  exp=int(world.clock.now()) + 86_000)
    with pytest.raises(errors.TokenInvalid):
        world.service.caller(malformed, hashlib.sha256(b"certificate DER").hexdigest())


@pytest.mark.parametrize("step", ["unknown", "conflict", "invalid"])
def test_every_refused_change_is_audited_not_only_permission_refusals(world, step):
    grant = world.active_grant()
    call = {"unknown": lambda: world.service.approve(world.approver(), "no-such-grant"),
            "conflict": lambda: world.service.approve(world.approver(), grant.id),
            "invalid": lambda: world.service.revoke(world.approver(), grant.id, "   ")}[step]
    with pytest.raises((GrantNotFound, GrantConflict, GrantInvalid)):
        call()
    refused = [r for r in world.records() if r.get("event") == "grant.refused"]
    assert len(refused) == 1 and refused[0]["actor"] == "ada"


def test_a_huge_grant_id_from_any_caller_is_clipped_in_the_refusal_event(world):
    # Review finding: an ordinary user of any tenant could write 1 MB into the audit log per call.
    with pytest.raises(GrantPermissionDenied):
        world.service.approve(world.caller("acme", "alice", "viewer"), "x" * 1_000_000)
    event = next(r for r in world.records() if r.get("event") == "grant.refused")
    assert event["grant_id"] == "x" * 64 + "..." and len(event["detail"]) < 1200


def test_refusals_of_callers_without_a_verified_token_are_audited_by_the_api(world):
    world.service.refused("approve", None, "g-1", "token_binding_mismatch: no certificate")
    event = next(r for r in world.records() if r.get("event") == "grant.refused")
    assert (event["actor"], event["grant_id"], event["detail"]) == (
        "(unauthenticated)", "g-1", "approve: token_binding_mismatch: no certificate")


@pytest.mark.parametrize("variant", ["oscar\u034f", "oscar\ufe0f", "\u3164oscar", " oscar ", "osc\u00adar"])
def test_default_ignorable_characters_and_spaces_do_not_make_another_person(world, variant):
    grant = world.request(sub="oscar")
    with pytest.raises(GrantPermissionDenied, match="self-approval"):
        world.service.approve(world.approver(sub=variant), grant.id)


def test_a_grant_being_revoked_is_not_honoured_once_its_revocation_is_on_record(world):
    # Self-review finding: lookups read what is committed on a connection of their own, so a Check between the
    # grant.revoked record and the revocation's commit was allowed, its ALLOW after the revocation in the chain.
    import threading

    grant = world.active_grant()
    op = world.token("platform", "oscar", "breakglass-operator")
    assert _check(world, op).reason is Reason.ALLOW_BREAK_GLASS
    recorded, release = threading.Event(), threading.Event()
    real_write = world.sink.write

    def slow_after_revoked(event):
        real_write(event)
        if getattr(event, "event", "") == "grant.revoked":
            recorded.set()
            release.wait(10)  # the revocation's transaction stays open meanwhile

    world.sink.write = slow_after_revoked
    revoking = threading.Thread(target=world.service.revoke, args=(world.approver(), grant.id, "done"))
    revoking.start()
    try:
        assert recorded.wait(10)
        assert _check(world, op).reason is Reason.CROSS_TENANT  # not ALLOW while the revocation commits
    finally:
        release.set()
        revoking.join(10)
    assert _check(world, op).reason is Reason.CROSS_TENANT
    assert world.service._revoking == {}


@pytest.mark.parametrize("batch", [False, True], ids=["decide", "decide_many"])
def test_a_revocation_made_while_a_check_is_decided_never_leaves_an_allow_after_grant_revoked(world, batch):
    # Hostile review finding: a Check that found the grant before the revocation began, and wrote its record after
    # the revocation was on record and committed, was answered ALLOW, its record after grant.revoked in the chain
    # (a race seen 4 times in 20 with three checking threads and one revoke, on SQLite and PostgreSQL alike).
    grant = world.active_grant()
    op = world.token("platform", "oscar", "breakglass-operator")
    real_find = world.service.find

    def find_then_revoked(*args):
        found = real_find(*args)
        world.service.find = real_find  # once
        world.service.revoke(world.approver(), grant.id, "done")  # the whole revocation, before the record
        return found

    world.service.find = find_then_revoked
    check = CheckInput(token=op, action="read", resource=Resource("Invoice", "inv-1", "acme"))
    result = world.pdp.decide_many([check])[0] if batch else world.pdp.decide(check)
    records = world.records()
    revoked_at = next(r["seq"] for r in records if r.get("event") == "grant.revoked")
    later_allows = [r for r in records
                    if r.get("record_type") == "decision" and r["seq"] > revoked_at and r["decision"] == "ALLOW"]
    assert later_allows == []
    assert result.reason is Reason.CROSS_TENANT
    assert records[-1]["decision_id"] == result.decision_id and records[-1]["grant_id"] == grant.id
