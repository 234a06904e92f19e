"""The Authorizer over a real gRPC server on a loopback port: tenant isolation, tokens, intents, audit."""

import itertools
import json
import time

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from google.protobuf import struct_pb2

from support.audit import audit_lines
from support.issuers import TestIssuer
from support.server import swapping_engines
from tenantgate.v1 import authorizer_pb2 as pb

# Every bundled action with the resource types it applies to (policies/schema.cedarschema).
ACTIONS = {
    "read": ("Invoice", "Document", "Ticket"),
    "update": ("Invoice", "Document", "Ticket"),
    "delete": ("Invoice", "Document", "Ticket"),
    "approve": ("Invoice",),
    "reconcile": ("Invoice",),
    "share": ("Document",),
    "comment": ("Ticket",),
}
PAIRS = [(a, t) for a, types in ACTIONS.items() for t in types]
ATTACKER_TENANT_HEADERS = [("x-tenant-id", "acme"), ("tenant", "acme"), ("x-tenantgate-tenant", "acme"),
                           ("x-org-id", "acme")]


def _struct(data):
    s = struct_pb2.Struct()
    s.update(data)
    return s


def request(token="", action="read", rtype="Invoice", rid="inv-1", tenant="acme", intent="", context=None,
            attributes=None):
    return pb.CheckRequest(token=token, action=action, intent=intent,
                           resource=pb.Resource(type=rtype, id=rid, tenant=tenant,
                                                attributes=_struct(attributes or {})),
                           context=_struct(context or {}))


@pytest.fixture(scope="module")
def admin(issuer):
    return issuer.mint(tenant="acme", sub="alice", roles=["admin"])


def _both(stub, req, metadata=()):
    """Ask the same question through Check and through BatchCheck; return both answers."""
    single = stub.Check(req, metadata=metadata)
    (batched,) = stub.BatchCheck(pb.BatchCheckRequest(items=[req]), metadata=metadata).results
    return single, batched


def test_same_tenant_admin_is_allowed_every_bundled_action(stub, admin):
    for action, rtype in PAIRS:
        for resp in _both(stub, request(admin, action, rtype, context={"mfa": True})):
            assert (resp.decision, resp.reason) == (pb.ALLOW, "allow"), (action, rtype, resp)


@pytest.mark.parametrize("placement", ["plain", "attributes", "context", "metadata", "all"])
def test_tenant_a_token_never_gets_allow_on_tenant_b_resource(stub, admin, placement):
    for action, rtype in PAIRS:
        attrs = {"tenant": "acme"} if placement in ("attributes", "all") else {}
        ctx = {"mfa": True}
        if placement in ("context", "all"):
            ctx.update({"tenant": "acme", "principal_tenant": "acme"})
        metadata = ATTACKER_TENANT_HEADERS if placement in ("metadata", "all") else ()
        req = request(admin, action, rtype, tenant="globex", context=ctx, attributes=attrs)
        for resp in _both(stub, req, metadata):
            assert resp.decision == pb.DENY, (placement, action, rtype)
            expected = "invalid_request" if attrs else "cross_tenant"
            if placement == "context":
                expected = "cross_tenant"
            assert resp.reason == expected, (placement, action, rtype, resp.message)


def test_cross_tenant_denial_is_recorded_with_both_tenants(server, stub, admin):
    _address, app = server
    resp = stub.Check(request(admin, tenant="globex"))
    record = audit_lines(app)[resp.decision_id]
    assert (record["principal_tenant"], record["resource_tenant"], record["reason"]) == ("acme", "globex",
                                                                                        "cross_tenant")


def test_token_in_metadata_is_used_when_the_request_has_none(stub, admin):
    resp = stub.Check(request(), metadata=[("authorization", f"Bearer {admin}")])
    assert resp.decision == pb.ALLOW


def test_duplicate_authorization_metadata_is_denied(stub, admin):
    md = [("authorization", f"Bearer {admin}"), ("authorization", f"Bearer {admin}")]
    for resp in _both(stub, request(), md):
        assert (resp.decision, resp.reason) == (pb.DENY, "token_invalid")


def test_the_requests_own_token_wins_over_any_authorization_metadata(stub, admin, issuer):
    # The metadata of a request that carries its token is never read: not a second token, nor a malformed one.
    stranger = issuer.mint(tenant="globex", roles=["admin"])
    for md in ([("authorization", f"Bearer {stranger}")], [("authorization", "Basic x"), ("authorization", "y")]):
        for resp in _both(stub, request(admin), md):
            assert (resp.decision, resp.audit.principal_tenant) == (pb.ALLOW, "acme")


def test_missing_token_is_token_missing(stub):
    for resp in _both(stub, request()):
        assert (resp.decision, resp.reason) == (pb.DENY, "token_missing")


def _hostile_tokens(issuer, tmp_path_factory):
    now = int(time.time())
    other = TestIssuer(tmp_path_factory.mktemp("other"), alg="ES256", issuer="https://evil.test")
    good = issuer.mint(tenant="acme", sub="alice", roles=["admin"])
    head, body, sig = good.split(".")
    tampered_sig = sig[:-4] + ("AAAA" if sig[-4:] != "AAAA" else "BBBB")
    rsa = TestIssuer(tmp_path_factory.mktemp("rsa"), alg="RS256", issuer="https://rsa.test")
    public_pem = rsa.private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    claims = {"iss": rsa.settings.issuer, "sub": "alice", "aud": "tenantgate", "tenant": "acme", "roles": ["admin"],
              "exp": now + 300, "iat": now}
    hs_with_public_key = _hs256(claims, public_pem, kid=rsa.kid)
    payload = dict(claims, iss=issuer.settings.issuer)
    alg_none = _b64(json.dumps({"alg": "none", "typ": "JWT"})) + "." + _b64(json.dumps(payload)) + "."
    return rsa, {
        "expired": (issuer.mint(tenant="acme", sub="alice", roles=["admin"], iat=now - 600, nbf=now - 600,
                                exp=now - 300), "token_expired"),
        "wrong_issuer": (other.mint(tenant="acme", sub="alice", roles=["admin"]), "issuer_untrusted"),
        "wrong_audience": (issuer.mint(tenant="acme", sub="alice", roles=["admin"], aud="someone-else"),
                           "audience_mismatch"),
        "alg_none": (alg_none, "token_invalid"),
        "tampered_signature": (f"{head}.{body}.{tampered_sig}", "token_invalid"),
        "tampered_claims": (f"{head}.{_b64(json.dumps(dict(payload, tenant='globex')))}.{sig}", "token_invalid"),
        "hs256_with_public_key": (hs_with_public_key, "token_invalid"),
        "garbage": ("not.a.jwt", "token_invalid"),
    }


def _b64(text):
    import base64

    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _hs256(claims, secret, kid):
    import hashlib
    import hmac

    signing_input = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid})) + "." + _b64(json.dumps(claims))
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    import base64

    return signing_input + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


def test_hostile_tokens_are_denied_with_their_reason_codes(tmp_path_factory, issuer):
    from support.server import running_server, write_config
    from tenantgate import config

    rsa, tokens = _hostile_tokens(issuer, tmp_path_factory)
    tmp = tmp_path_factory.mktemp("hostile")
    # Trust both the ES256 issuer and the RS256 one, so HS256-with-the-RSA-public-key meets a real RSA key.
    extra = f"""
[[tokens.issuers]]
issuer = "{rsa.settings.issuer}"
audiences = ["tenantgate"]
algorithms = ["RS256"]
jwks_file = "{rsa.settings.jwks_file}"
"""
    settings = config.load(write_config(tmp, issuer.settings, extra=extra), env={})
    with running_server(settings) as (address, app), grpc.insecure_channel(address) as channel:
        from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc

        stub = pb_grpc.AuthorizerStub(channel)
        for name, (token, reason) in tokens.items():
            for resp in _both(stub, request(token, context={"mfa": True})):
                assert (resp.decision, resp.reason) == (pb.DENY, reason), (name, resp.message)
                assert resp.decision_id
        text = open(app.settings.audit.path).read()
        for name, (token, _reason) in tokens.items():
            assert token not in text, f"raw {name} token written to the audit log"
    assert jwt  # PyJWT is what the server uses; the hostile tokens above are hand-built


def test_intent_binding_both_ways(stub, issuer):
    bound = issuer.mint(tenant="acme", sub="alice", roles=["viewer"], intents=["support.read"])
    unbound = issuer.mint(tenant="acme", sub="alice", roles=["viewer"])
    assert stub.Check(request(bound, intent="support.read")).reason == "allow"
    assert stub.Check(request(bound)).reason == "intent_missing"
    assert stub.Check(request(bound, intent="billing.export")).reason == "intent_not_bound"
    # A token without an intents claim does not bind: any stated intent passes to the policies.
    assert stub.Check(request(unbound, intent="anything")).reason == "allow"


def test_agent_needs_a_bound_intent_and_a_permitting_policy(stub, issuer):
    agent = issuer.mint(tenant="acme", sub="alice", roles=["admin"], intents=["billing.reconcile"],
                        act={"sub": "billing-bot"})
    no_intents = issuer.mint(tenant="acme", sub="alice", roles=["admin"], act={"sub": "billing-bot"})
    allowed = stub.Check(request(agent, "reconcile", intent="billing.reconcile"))
    assert (allowed.decision, allowed.policy_ids) == (pb.ALLOW, ["agent-billing-reconcile"])
    assert allowed.audit.principal_type == "Agent" and allowed.audit.actor == "billing-bot"
    assert stub.Check(request(agent, "update", intent="billing.reconcile")).reason == "no_permit"
    assert stub.Check(request(agent, "delete", intent="billing.reconcile")).reason == "policy_forbid"
    assert stub.Check(request(no_intents, "reconcile", intent="billing.reconcile")).reason == "intent_not_bound"
    assert stub.Check(request(agent, "reconcile", tenant="globex", intent="billing.reconcile")).reason == \
        "cross_tenant"


def test_policy_reasons_carry_policy_ids(stub, issuer):
    viewer = issuer.mint(tenant="acme", sub="bob", roles=["viewer"])
    editor = issuer.mint(tenant="acme", sub="eve", roles=["editor"])
    assert stub.Check(request(viewer, "update")).reason == "no_permit"
    forbid = stub.Check(request(editor, "update", attributes={"status": "paid"}))
    assert (forbid.reason, list(forbid.policy_ids)) == ("policy_forbid", ["paid-invoices-are-immutable"])


def test_every_response_has_a_decision_id_and_a_matching_audit_line(server, stub, admin, issuer):
    _address, app = server
    viewer = issuer.mint(tenant="acme", sub="bob", roles=["viewer"])
    reqs = [request(admin), request(admin, tenant="globex"), request(viewer, "delete"), request("bad"),
            request(admin, rtype="Spaceship"), request(admin, context={"intent": "x"})]
    responses = [stub.Check(r) for r in reqs]
    responses += list(stub.BatchCheck(pb.BatchCheckRequest(items=reqs)).results)
    records = audit_lines(app)
    ids = [r.decision_id for r in responses]
    assert len(set(ids)) == len(ids)
    for resp in responses:
        assert resp.decision in (pb.ALLOW, pb.DENY)
        record = records[resp.decision_id]
        assert record["decision"] == pb.Decision.Name(resp.decision)
        assert record["reason"] == resp.reason
        assert record == {k: (list(v) if k == "policy_ids" else v) for k, v in
                          ((f.name, getattr(resp.audit, f.name)) for f in resp.audit.DESCRIPTOR.fields)}
    assert admin not in open(app.settings.audit.path).read()


def test_batch_items_are_independent_and_use_the_shared_token(stub, admin, issuer):
    other_tenant_token = issuer.mint(tenant="globex", sub="gina", roles=["admin"])
    items = [request(), request(tenant="globex"), request(other_tenant_token, tenant="globex"),
             request(rtype=""), request()]
    results = stub.BatchCheck(pb.BatchCheckRequest(token=admin, items=items)).results
    assert [r.reason for r in results] == ["allow", "cross_tenant", "allow", "invalid_request", "allow"]
    assert results[2].audit.principal_tenant == "globex"


def test_batch_over_1000_items_is_invalid_argument(stub, admin):
    with pytest.raises(grpc.RpcError) as info:
        stub.BatchCheck(pb.BatchCheckRequest(token=admin, items=[request()] * 1001))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_batch_of_exactly_1000_items_is_answered(stub, admin):
    results = stub.BatchCheck(pb.BatchCheckRequest(token=admin, items=[request()] * 1000)).results
    assert len(results) == 1000 and all(r.decision == pb.ALLOW for r in results)


def test_malformed_requests_are_denied_not_errors(stub, admin):
    cases = [request(admin, action=""), request(admin, tenant=""), request(admin, tenant="acme\x00"),
             request(admin, attributes={"amount_cents": 1.5}), request(admin, context={"__entity": "x"}),
             request(admin, context={"breakGlass": True})]
    for req in cases:
        for resp in _both(stub, req):
            assert (resp.decision, resp.reason) == (pb.DENY, "invalid_request"), resp.message


def test_a_request_protobuf_cannot_decode_is_an_audited_denial_and_a_batch_a_clear_error(server, admin, caplog):
    # Review finding: a string field that is not UTF-8 failed protobuf decoding before the servicer ran: a bare
    # UNKNOWN "Exception deserializing request!" with a traceback in the log, no decision id, no audit record.
    address, app = server
    single = request(admin, intent="caf\u00e9").SerializeToString().replace("caf\u00e9".encode(), b"caf\xff\xfe")
    batch = pb.BatchCheckRequest(items=[request(admin, intent="caf\u00e9")]).SerializeToString()
    batch = batch.replace("caf\u00e9".encode(), b"caf\xff\xfe")
    with grpc.insecure_channel(address) as channel:
        check = channel.unary_unary("/tenantgate.v1.Authorizer/Check", request_serializer=lambda b: b,
                                    response_deserializer=pb.CheckResponse.FromString)
        answer = check(single, metadata=[("authorization", f"Bearer {admin}")], timeout=5)
        assert (answer.decision, answer.reason) == (pb.DENY, "invalid_request")
        assert answer.message == "the CheckRequest cannot be decoded (a string field that is not UTF-8)"
        record = audit_lines(app)[answer.decision_id]
        assert (record["decision"], record["reason"], record["subject"]) == ("DENY", "invalid_request", "alice")
        # No token to be read anywhere: not "no token presented" (review finding: misleading, the body may hold one).
        unread = check(b"\xff\xff\xff", timeout=5)
        assert unread.reason == "token_invalid" and "could not be decoded" in unread.message
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/tenantgate.v1.Authorizer/BatchCheck", request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)(batch, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "the BatchCheckRequest cannot be decoded (a string field that is not UTF-8)"
    assert not [r for r in caplog.records if r.exc_info]


def test_health_is_serving_and_reflection_lists_the_services(server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    address, _app = server
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "tenantgate.v1.Authorizer"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == \
                health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        (answer,) = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for s in answer.list_services_response.service}
        assert {"tenantgate.v1.Authorizer", "grpc.health.v1.Health"} <= names


def test_no_response_leaves_with_decision_unspecified(stub, admin, issuer):
    tokens = [admin, "", "x", issuer.mint(tenant="acme", sub="a", roles=["viewer"], intents=["x"])]
    reqs = [request(t, a, r, tenant=ten, intent=i) for t, (a, r), ten, i in
            itertools.product(tokens, PAIRS[:4], ["acme", "globex", ""], ["", "x"])]
    for resp in stub.BatchCheck(pb.BatchCheckRequest(items=reqs)).results:
        assert resp.decision in (pb.ALLOW, pb.DENY)


def test_a_batch_past_its_deadline_stops_deciding(server, stub, admin):
    _address, app = server
    before = len(audit_lines(app))
    with pytest.raises(grpc.RpcError) as info:
        stub.BatchCheck(pb.BatchCheckRequest(token=admin, items=[request()] * 1000), timeout=0.002)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(0.5)  # let the worker notice; then far fewer than 1,000 records were written
    assert len(audit_lines(app)) - before < 1000


def test_checks_are_answered_while_a_large_batch_runs(server, stub, admin, issuer):
    import threading

    forged = []
    for i in range(1000):  # distinct, well-formed tokens with a wrong signature: every item is a full verify
        head, body, _sig = issuer.mint(tenant="acme", sub=f"u{i}").split(".")
        forged.append(f"{head}.{body}.{admin.split('.')[2]}")
    batch_done = threading.Event()
    order = []

    def big_batch():
        stub.BatchCheck(pb.BatchCheckRequest(items=[request(t) for t in forged]))
        order.append("batch")
        batch_done.set()

    worker = threading.Thread(target=big_batch)
    worker.start()
    time.sleep(0.02)
    assert stub.Check(request(admin)).decision == pb.ALLOW
    order.append("check")
    worker.join(60)
    assert batch_done.is_set()
    assert order == ["check", "batch"]  # the Check did not wait for the batch


def test_concurrent_batches_take_turns_so_a_small_one_is_not_stuck_behind_a_large_one(server, stub, admin, issuer):
    import threading

    forged = []
    for i in range(1000):  # every item a full signature check: the large batch runs for a while
        head, body, _sig = issuer.mint(tenant="acme", sub=f"v{i}").split(".")
        forged.append(f"{head}.{body}.{admin.split('.')[2]}")
    order = []

    def large():
        answer = stub.BatchCheck(pb.BatchCheckRequest(items=[request(t) for t in forged]))
        assert [r.reason for r in answer.results] == ["token_invalid"] * 1000
        order.append("large")

    worker = threading.Thread(target=large)
    worker.start()
    time.sleep(0.05)
    small = stub.BatchCheck(pb.BatchCheckRequest(token=admin, items=[request()] * 10))
    order.append("small")
    worker.join(60)
    assert [r.decision for r in small.results] == [pb.ALLOW] * 10
    assert order == ["small", "large"]  # batches share one thread chunk by chunk, in turn


def test_a_struct_number_past_2_to_the_53_is_refused_not_rounded(stub, admin):
    # Review finding: a Struct number is a double: 9007199254740993 arrived as 9007199254740992.0 and was decided
    # as exact, so a policy comparing amounts answered differently here than through AuthZEN (JSON integers).
    for amount in (9007199254740993, 2**53, -(2**60)):
        for resp in _both(stub, request(admin, attributes={"amount_cents": amount})):
            assert (resp.decision, resp.reason) == (pb.DENY, "invalid_request"), resp.message
            assert "resource.attributes.amount_cents" in resp.message and "2^53 - 1" in resp.message
    for resp in _both(stub, request(admin, attributes={"amount_cents": 2**53 - 1})):
        assert resp.decision == pb.ALLOW, resp.message


def test_every_item_of_a_batch_is_decided_on_one_policy_version_while_reloads_swap_the_set(
        server, stub, admin, tmp_path, monkeypatch):
    # Review finding: during SIGHUP reloads 7 of 227 BatchChecks held items decided on two policy versions (each
    # chunk and each item read the current set anew). 120 items: three chunks.
    _address, app = server
    monkeypatch.setattr(app.pdp, "_engine", swapping_engines(app, tmp_path))
    for _ in range(2):
        results = stub.BatchCheck(pb.BatchCheckRequest(token=admin, items=[request()] * 120)).results
        assert len({r.audit.policy_version for r in results}) == 1 and {r.reason for r in results} == {"allow"}
    singles = {stub.Check(request(admin)).audit.policy_version for _ in range(4)}
    assert len(singles) == 2  # the swap is real: single Checks see both versions
