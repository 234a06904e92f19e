"""Hostile and random requests against a real server: never an allow that should not be, never an unhandled
error or an unset decision, always an audit record, and nothing crosses from one request to another."""

import asyncio
import json
import threading
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.issuers import TestIssuer
from support.server import running_server, write_config
from tenantgate import config
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc

ACTIONS = ["read", "update", "delete", "approve", "reconcile", "share", "comment"]
TYPES = ["Invoice", "Document", "Ticket"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    issuer = TestIssuer(tmp)
    cfg = write_config(tmp, issuer.settings)
    cfg.write_text(cfg.read_text().replace("grace_seconds = 2", "grace_seconds = 2\nmax_concurrent_rpcs = 4"))
    settings = config.load(cfg, env={})
    with running_server(settings) as (address, app), grpc.insecure_channel(address) as channel:
        valid = {
            "acme": issuer.mint(tenant="acme", sub="alice", roles=["admin", "viewer", "editor"]),
            "globex": issuer.mint(tenant="globex", sub="gina", roles=["admin"]),
        }
        yield address, app, pb_grpc.AuthorizerStub(channel), valid


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                      st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)), max_leaves=20)
attrs = st.dictionaries(st.one_of(st.sampled_from(["tenant", "status", "mfa", "__entity", "intent",
                                                   "breakGlass", "owner"]), st.text(max_size=12)),
                        json_value, max_size=5)


def _struct(data):
    s = struct_pb2.Struct()
    try:
        s.update(data)
    except (ValueError, TypeError):  # values protobuf itself cannot hold (e.g. huge ints): send without them
        for key, value in data.items():
            try:
                s.update({key: value})
            except (ValueError, TypeError):
                pass
    return s


@st.composite
def check_requests(draw, tokens):
    token_kind = draw(st.sampled_from(["acme", "globex", "garbage", "empty", "truncated"]))
    token = {"garbage": draw(st.text(max_size=60)), "empty": "",
             "truncated": tokens["acme"][: draw(st.integers(0, len(tokens["acme"]) - 1))]}.get(token_kind) \
        or tokens.get(token_kind, "")
    req = pb.CheckRequest(
        token=token,
        action=draw(st.one_of(st.sampled_from(ACTIONS), st.text(max_size=30))),
        intent=draw(st.one_of(st.just(""), st.text(max_size=30))),
        resource=pb.Resource(type=draw(st.one_of(st.sampled_from(TYPES), st.text(max_size=20))),
                             id=f"r-{uuid.uuid4().hex}",
                             tenant=draw(st.one_of(st.sampled_from(["acme", "globex", "ACME", "acme "]),
                                                   st.text(max_size=20))),
                             attributes=_struct(draw(attrs))),
        context=_struct(draw(attrs)),
    )
    return token_kind, req


def _audit(app):
    return {r["decision_id"]: r for r in map(json.loads, Path(app.settings.audit.path).read_text().splitlines())
            if r.get("record_type") == "decision"}


def _allowed_only_if_sane(token_kind, req, resp):
    """The oracle: an allow needs a valid token of the resource's own tenant and a bundled action/type."""
    assert resp.decision in (pb.ALLOW, pb.DENY)
    assert resp.decision_id and resp.reason
    if resp.decision == pb.ALLOW:
        assert token_kind in ("acme", "globex") and req.resource.tenant == token_kind
        assert req.action in ACTIONS and req.resource.type in TYPES


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_random_check_requests_never_allow_wrongly_and_are_always_audited(env, data):
    _address, app, stub, tokens = env
    token_kind, req = data.draw(check_requests(tokens))
    resp = stub.Check(req)
    _allowed_only_if_sane(token_kind, req, resp)
    record = _audit(app)[resp.decision_id]
    assert record["decision"] == pb.Decision.Name(resp.decision) and record["reason"] == resp.reason
    assert resp.audit.resource_id == req.resource.id[:256] or resp.audit.resource_id.startswith(req.resource.id[:256])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_random_batches_answer_every_item_in_order(env, data):
    _address, app, stub, tokens = env
    items = [data.draw(check_requests(tokens)) for _ in range(data.draw(st.integers(0, 12)))]
    shared = data.draw(st.sampled_from(["", tokens["acme"], "garbage"]))
    resp = stub.BatchCheck(pb.BatchCheckRequest(token=shared, items=[r for _k, r in items]))
    assert len(resp.results) == len(items)
    audit = _audit(app)
    for (kind, req), result in zip(items, resp.results, strict=True):
        effective = kind if req.token else ("acme" if shared == tokens["acme"] else "garbage")
        _allowed_only_if_sane(effective, req, result)
        assert result.audit.resource_id == req.resource.id  # results come back in order, nothing crossed
        assert audit[result.decision_id]["resource_id"] == req.resource.id


def test_deeply_nested_and_oversized_structs_are_refused_cleanly(env):
    _address, _app, stub, tokens = env
    deep = struct_pb2.Struct()
    node = deep
    for _ in range(30):  # 60 protobuf levels: within protobuf's limit, beyond TenantGate's
        node = node.fields["x"].struct_value
    resp = stub.Check(pb.CheckRequest(token=tokens["acme"], action="read", context=deep,
                                      resource=pb.Resource(type="Invoice", id="i", tenant="acme")))
    assert (resp.decision, resp.reason) == (pb.DENY, "invalid_request")
    huge = pb.CheckRequest(token=tokens["acme"], action="read", intent="x" * 2_000_000,
                           resource=pb.Resource(type="Invoice", id="i", tenant="acme"))
    with pytest.raises(grpc.RpcError) as info:
        stub.Check(huge)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_metadata_flood_is_rejected_without_an_allow(env):
    _address, _app, stub, tokens = env
    flood = [(f"x-junk-{i}", "v" * 200) for i in range(200)]
    with pytest.raises(grpc.RpcError) as info:
        stub.Check(pb.CheckRequest(token=tokens["acme"], action="read",
                                   resource=pb.Resource(type="Invoice", id="i", tenant="acme")), metadata=flood)
    assert info.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL,
                                 grpc.StatusCode.UNAVAILABLE)


def test_ten_times_the_concurrency_limit_gets_resource_exhausted_never_allow(env):
    address, _app, _stub, tokens = env
    slow = pb.BatchCheckRequest(token=tokens["acme"], items=[pb.CheckRequest(
        action="read", resource=pb.Resource(type="Invoice", id="i", tenant="globex"))] * 1000)

    async def run():
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.AuthorizerStub(channel)
            return await asyncio.gather(*(stub.BatchCheck(slow, timeout=60) for _ in range(40)),
                                        return_exceptions=True)

    outcomes = asyncio.run(run())
    exhausted = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    answered = [o for o in outcomes if not isinstance(o, BaseException)]
    assert exhausted and all(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for e in exhausted)
    assert all(r.decision == pb.DENY for resp in answered for r in resp.results)


def test_tiny_deadlines_and_cancellations_never_mix_up_answers(env):
    address, app, _stub, tokens = env

    async def run():
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.AuthorizerStub(channel)
            calls = []
            for i in range(300):
                rid = f"dl-{i}-{uuid.uuid4().hex}"
                tenant = "acme" if i % 2 else "globex"
                req = pb.CheckRequest(token=tokens["acme"], action="read",
                                      resource=pb.Resource(type="Invoice", id=rid, tenant=tenant))
                call = stub.Check(req, timeout=0.001 * (1 + i % 10))
                calls.append((req, call))
            for _req, call in calls[::7]:
                call.cancel()
            results = []
            for req, call in calls:
                try:
                    results.append((req, await call))
                except (grpc.aio.AioRpcError, asyncio.CancelledError):
                    pass
            return results

    answered = asyncio.run(run())
    audit = _audit(app)
    for req, resp in answered:
        assert resp.audit.resource_id == req.resource.id
        assert audit[resp.decision_id]["resource_id"] == req.resource.id
        assert (resp.decision == pb.ALLOW) == (req.resource.tenant == "acme")


def test_concurrent_clients_get_their_own_answers(env):
    address, _app, _stub, tokens = env
    mismatches = []

    def client(n):
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.AuthorizerStub(channel)
            for i in range(50):
                rid = f"c{n}-{i}"
                tenant = "acme" if (n + i) % 2 else "globex"
                resp = stub.Check(pb.CheckRequest(token=tokens["acme"], action="read",
                                                  resource=pb.Resource(type="Invoice", id=rid, tenant=tenant)))
                if resp.audit.resource_id != rid or (resp.decision == pb.ALLOW) != (tenant == "acme"):
                    mismatches.append((rid, resp.decision))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert mismatches == []
