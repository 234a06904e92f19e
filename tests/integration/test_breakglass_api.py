"""The BreakGlass gRPC API and its effect on Check, through a real server (SQLite store)."""

import base64
import hashlib
import json

import grpc
import pytest

from support.audit import audit_lines
from support.issuers import TestIssuer
from support.server import running_server, write_config
from support.waiting import eventually
from tenantgate import config
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc
from tenantgate.v1 import breakglass_pb2 as bg
from tenantgate.v1 import breakglass_pb2_grpc as bg_grpc


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bg")
    issuer = TestIssuer(tmp)
    settings = config.load(write_config(tmp, issuer.settings), env={})
    with running_server(settings) as (address, app), grpc.insecure_channel(address) as channel:
        yield issuer, app, pb_grpc.AuthorizerStub(channel), bg_grpc.BreakGlassStub(channel), address


def _md(token):
    return [("authorization", f"Bearer {token}")]


def _check(stub, token, action="read", tenant="acme"):
    return stub.Check(pb.CheckRequest(token=token, action=action,
                                      resource=pb.Resource(type="Invoice", id="inv-1", tenant=tenant)))


def _request(bgs, token, **kw):
    msg = bg.RequestGrantRequest(target_tenant=kw.get("target", "acme"), actions=kw.get("actions", ["read"]),
                                 reason=kw.get("reason", "INC-1: wrong totals"), ticket=kw.get("ticket", "INC-1"),
                                 duration_seconds=kw.get("duration", 900))
    return bgs.RequestGrant(msg, metadata=_md(token))


def _code(call):
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def test_full_flow_over_grpc(env):
    issuer, app, authz, bgs, _address = env
    oscar = issuer.mint(tenant="platform", sub="oscar", roles=["breakglass-operator"])
    ada = issuer.mint(tenant="platform", sub="ada", roles=["breakglass-approver"])
    assert _check(authz, oscar).reason == "cross_tenant"
    grant = _request(bgs, oscar)
    assert grant.state == bg.PENDING and grant.operator == "oscar" and grant.requested_at.seconds > 0
    assert not grant.HasField("expires_at")
    assert _code(lambda: bgs.ApproveGrant(bg.ApproveGrantRequest(grant_id=grant.id), metadata=_md(oscar))) == \
        grpc.StatusCode.PERMISSION_DENIED
    active = bgs.ApproveGrant(bg.ApproveGrantRequest(grant_id=grant.id), metadata=_md(ada))
    assert active.state == bg.ACTIVE and active.approved_by == "ada"
    assert active.expires_at.seconds - active.approved_at.seconds == 900
    allowed = _check(authz, oscar)
    assert (allowed.decision, allowed.reason, allowed.audit.grant_id) == (pb.ALLOW, "allow_break_glass", grant.id)
    assert audit_lines(app)[allowed.decision_id]["grant_id"] == grant.id
    assert _check(authz, oscar, action="update").reason == "cross_tenant"
    assert _code(lambda: bgs.ApproveGrant(bg.ApproveGrantRequest(grant_id=grant.id), metadata=_md(ada))) == \
        grpc.StatusCode.FAILED_PRECONDITION
    listed = bgs.ListGrants(bg.ListGrantsRequest(tenant="acme", state=bg.ACTIVE), metadata=_md(ada)).grants
    assert [g.id for g in listed] == [grant.id]
    revoked = bgs.RevokeGrant(bg.RevokeGrantRequest(grant_id=grant.id, reason="closed"), metadata=_md(oscar))
    assert revoked.state == bg.REVOKED and revoked.revoke_reason == "closed"
    assert _check(authz, oscar).reason == "cross_tenant"
    events = [json.loads(line)["event"] for line in open(app.settings.audit.path)
              if '"grant_event"' in line and grant.id in line]
    # refused: oscar's self-approval, then ada's second approval of a grant no longer pending
    assert events == ["grant.requested", "grant.refused", "grant.approved", "grant.refused", "grant.revoked"]


@pytest.mark.parametrize("kw,code", [
    ({"duration": 3601}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"reason": ""}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"ticket": ""}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"target": "not a tenant"}, grpc.StatusCode.INVALID_ARGUMENT),
])
def test_bad_requests_are_invalid_argument(env, kw, code):
    issuer, _app, _authz, bgs, _address = env
    oscar = issuer.mint(tenant="platform", sub="oscar", roles=["breakglass-operator"])
    assert _code(lambda: _request(bgs, oscar, **kw)) == code


def test_callers_are_authenticated_and_authorised(env):
    issuer, _app, _authz, bgs, _address = env
    customer_admin = issuer.mint(tenant="acme", sub="alice", roles=["admin", "breakglass-operator"])
    assert _code(lambda: _request(bgs, customer_admin, target="globex")) == grpc.StatusCode.PERMISSION_DENIED
    assert _code(lambda: _request(bgs, "garbage")) == grpc.StatusCode.UNAUTHENTICATED
    assert _code(lambda: bgs.ListGrants(bg.ListGrantsRequest())) == grpc.StatusCode.UNAUTHENTICATED
    assert _code(lambda: bgs.ApproveGrant(bg.ApproveGrantRequest(grant_id="nope"), metadata=_md(
        issuer.mint(tenant="platform", sub="ada", roles=["breakglass-approver"])))) == grpc.StatusCode.NOT_FOUND


def test_breakglass_health_is_reported(env):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    *_rest, address = env
    with grpc.insecure_channel(address) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="tenantgate.v1.BreakGlass")).status
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_a_certificate_bound_token_without_its_certificate_changes_and_reads_no_grant(env):
    issuer, app, authz, bgs, _address = env
    oscar = issuer.mint(tenant="platform", sub="oscar", roles=["breakglass-operator"])
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(b"ada's certificate").digest()).rstrip(b"=").decode()
    stolen = issuer.mint(tenant="platform", sub="ada", roles=["breakglass-approver", "breakglass-operator"],
                         cnf={"x5t#S256": thumbprint})
    assert _check(authz, stolen, tenant="platform").reason == "token_binding_mismatch"  # as Check refuses it
    grant = _request(bgs, oscar)
    calls = [lambda: bgs.ListGrants(bg.ListGrantsRequest(), metadata=_md(stolen)),
             lambda: bgs.ApproveGrant(bg.ApproveGrantRequest(grant_id=grant.id), metadata=_md(stolen)),
             lambda: bgs.RevokeGrant(bg.RevokeGrantRequest(grant_id=grant.id, reason="x"), metadata=_md(stolen)),
             lambda: _request(bgs, stolen)]
    assert [_code(call) for call in calls] == [grpc.StatusCode.UNAUTHENTICATED] * 4
    listed = bgs.ListGrants(bg.ListGrantsRequest(), metadata=_md(oscar)).grants
    assert [g.state for g in listed if g.id == grant.id] == [bg.PENDING]
    # The refused changes are on record (the read is not): who is unknown, why is not.
    refused = [json.loads(line) for line in open(app.settings.audit.path) if '"grant.refused"' in line
               and '"(unauthenticated)"' in line]
    assert [(r["detail"].split(":")[0], r["grant_id"]) for r in refused][-3:] == [
        ("approve", grant.id), ("revoke", grant.id), ("request", "")]
    assert all("token_binding_mismatch" in r["detail"] for r in refused[-3:])


def test_list_grants_refuses_an_unknown_state_filter(env):
    issuer, _app, _authz, bgs, _address = env
    ada = issuer.mint(tenant="platform", sub="ada", roles=["breakglass-approver"])
    assert _code(lambda: bgs.ListGrants(bg.ListGrantsRequest(state=99), metadata=_md(ada))) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert bgs.ListGrants(bg.ListGrantsRequest(state=bg.GRANT_STATE_UNSPECIFIED), metadata=_md(ada)) is not None


def _not_utf8(message):
    """``message`` on the wire with its one string "caf\u00e9" made invalid UTF-8 (same length)."""
    wire = message.SerializeToString()
    assert wire.count("caf\u00e9".encode()) == 1
    return wire.replace("caf\u00e9".encode(), b"caf\xff\xfe")


def test_a_change_that_cannot_be_decoded_is_refused_on_record_and_every_method_answers_clearly(env, caplog):
    # Review finding: a string field that is not UTF-8 failed protobuf decoding before any servicer ran: a
    # bare UNKNOWN "Exception deserializing request!", a traceback in the log, and no grant.refused record.
    issuer, app, _authz, _bgs, address = env
    oscar = issuer.mint(tenant="platform", sub="oscar", roles=["breakglass-operator"])
    calls = [("RequestGrant", bg.RequestGrantRequest(target_tenant="acme", actions=["read"], reason="caf\u00e9",
                                                     ticket="INC-1", duration_seconds=900)),
             ("ApproveGrant", bg.ApproveGrantRequest(grant_id="caf\u00e9")),
             ("RevokeGrant", bg.RevokeGrantRequest(grant_id="g", reason="caf\u00e9")),
             ("ListGrants", bg.ListGrantsRequest(tenant="caf\u00e9"))]
    with grpc.insecure_channel(address) as channel:
        for method, message in calls:
            raw = channel.unary_unary(f"/tenantgate.v1.BreakGlass/{method}", request_serializer=lambda b: b,
                                      response_deserializer=lambda b: b)
            with pytest.raises(grpc.RpcError) as info:
                raw(_not_utf8(message), metadata=_md(oscar), timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert "cannot be decoded (a string field that is not UTF-8)" in info.value.details()
        status = channel.unary_unary("/tenantgate.v1.Admin/Status", request_serializer=lambda b: b,
                                     response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as info:
            status(b"\xff\xff\xff", timeout=5)  # not protobuf at all
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    refused = [json.loads(line) for line in open(app.settings.audit.path) if '"grant.refused"' in line
               and "cannot be decoded" in line]
    assert [(r["detail"].split(":")[0], r["actor"]) for r in refused] == [
        ("request", "oscar"), ("approve", "oscar"), ("revoke", "oscar")]
    assert not [r for r in caplog.records if r.exc_info]
    # Review finding: the refusals were answered outside the metrics wrapper, so never counted.
    from prometheus_client import generate_latest

    def counted():  # recorded once the handler has returned, which may be just after the client got its answer
        text = generate_latest(app.registry).decode()
        return all(f'code="INVALID_ARGUMENT",method="/tenantgate.v1.{method}"' in text
                   for method in ("BreakGlass/ListGrants", "BreakGlass/RequestGrant", "Admin/Status"))

    eventually(counted, "the refused calls counted under INVALID_ARGUMENT")


def test_a_grant_for_actions_the_policy_schema_does_not_declare_is_refused_on_record(env):
    # Review finding: "*", "Delete", 'Action::"read"' and "admin" were granted: they match no Check today and
    # would open an action of that name added to the schema later.
    issuer, app, _authz, bgs, _address = env
    oscar = issuer.mint(tenant="platform", sub="oscar", roles=["breakglass-operator"])
    undeclared = ["*", "Delete", 'Action::"read"', "admin"]
    with pytest.raises(grpc.RpcError) as info:
        _request(bgs, oscar, actions=["read", *undeclared], reason="INC-6 undeclared actions")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    named = ", ".join(repr(a) for a in undeclared)
    assert f"action(s) {named} not declared by the policy schema" in info.value.details()
    refused = [json.loads(line) for line in open(app.settings.audit.path) if '"grant.refused"' in line]
    assert refused[-1]["detail"].startswith(f"request: GrantInvalid: action(s) {named} not declared")
    granted = _request(bgs, oscar, actions=["read", "update"], reason="INC-6 declared actions")
    assert list(granted.actions) == ["read", "update"]
