"""A PostgreSQL grant store that is down at start, comes back, and goes down again mid-run, or hangs (accepts
bytes, never answers): cross-tenant Checks are denied meanwhile, same-tenant Checks are unaffected, and the
server recovers by itself."""

import time
from contextlib import contextmanager
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from support.issuers import TestIssuer
from support.pg import pg_database, url_with
from support.server import running_server, write_config
from support.tcpproxy import TcpProxy
from support.waiting import eventually
from tenantgate import config
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc
from tenantgate.v1 import breakglass_pb2 as bg
from tenantgate.v1 import breakglass_pb2_grpc as bg_grpc

pytestmark = pytest.mark.postgres


@contextmanager
def _server_with_its_store_behind_a_proxy(tmp_path, *, cut_at_start=False):
    """A real server whose grant store (a throwaway PostgreSQL database) it reaches through a ``TcpProxy``;
    yields (tokens of oscar the operator, ada the approver and alice of acme, the proxy, a channel)."""
    issuer = TestIssuer(tmp_path)
    tokens = [issuer.mint(tenant=tenant, sub=sub, roles=[role], exp=int(time.time()) + 280)
              for tenant, sub, role in (("platform", "oscar", "breakglass-operator"),
                                        ("platform", "ada", "breakglass-approver"), ("acme", "alice", "viewer"))]
    with pg_database() as url:
        target = urlsplit(url)
        with TcpProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
            if cut_at_start:
                proxy.cut()
            extra = f'\n[grants]\nstore = "{url_with(url, host="127.0.0.1", port=proxy.port)}"\n'
            settings = config.load(write_config(tmp_path, issuer.settings, extra=extra), env={})
            with running_server(settings) as (address, _app), grpc.insecure_channel(address) as channel:
                yield (*tokens, proxy, channel)


def test_store_outage_denies_cross_tenant_only_and_recovers(tmp_path):
    with _server_with_its_store_behind_a_proxy(tmp_path, cut_at_start=True) as (oscar, ada, alice, proxy, channel):
        md = [("authorization", f"Bearer {oscar}")]
        authz, bgs = pb_grpc.AuthorizerStub(channel), bg_grpc.BreakGlassStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        def check(token):
            return authz.Check(pb.CheckRequest(token=token, action="read", resource=pb.Resource(
                type="Invoice", id="inv-1", tenant="acme"))).reason

        def bg_status():
            return health.Check(health_pb2.HealthCheckRequest(service="tenantgate.v1.BreakGlass")).status

        # Down since start: the server still serves same-tenant checks.
        assert check(alice) == "allow"
        assert check(oscar) == "grant_store_unavailable"
        assert bg_status() == health_pb2.HealthCheckResponse.NOT_SERVING
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING

        proxy.restore()
        eventually(lambda: bg_status() == health_pb2.HealthCheckResponse.SERVING, "BreakGlass SERVING")
        grant = bgs.RequestGrant(bg.RequestGrantRequest(target_tenant="acme", actions=["read"], reason="r",
                                                        ticket="t", duration_seconds=600), metadata=md)
        bgs.ApproveGrant(bg.ApproveGrantRequest(grant_id=grant.id),
                         metadata=[("authorization", f"Bearer {ada}")])
        assert check(oscar) == "allow_break_glass"

        proxy.cut()
        assert check(oscar) == "grant_store_unavailable"
        assert check(alice) == "allow"
        with pytest.raises(grpc.RpcError) as info:
            bgs.ListGrants(bg.ListGrantsRequest(), metadata=md)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE

        proxy.restore()
        eventually(lambda: check(oscar) == "allow_break_glass", "recovery without a restart")


def test_hung_store_denies_the_operator_quickly_and_never_holds_same_tenant_checks(tmp_path):
    with _server_with_its_store_behind_a_proxy(tmp_path) as (oscar, ada, alice, proxy, channel):
        md = [("authorization", f"Bearer {oscar}")]
        authz, bgs = pb_grpc.AuthorizerStub(channel), bg_grpc.BreakGlassStub(channel)

        def request(token):
            return pb.CheckRequest(token=token, action="read",
                                   resource=pb.Resource(type="Invoice", id="inv-1", tenant="acme"))

        def timed_check(token):
            started = time.monotonic()
            reason = authz.Check(request(token), timeout=10).reason
            return reason, time.monotonic() - started

        grant = bgs.RequestGrant(bg.RequestGrantRequest(target_tenant="acme", actions=["read"], reason="r",
                                                        ticket="t", duration_seconds=600), metadata=md)
        bgs.ApproveGrant(bg.ApproveGrantRequest(grant_id=grant.id),
                         metadata=[("authorization", f"Bearer {ada}")])
        assert authz.Check(request(oscar)).reason == "allow_break_glass"

        # The store's connection stays open and silent, like a stalled pgbouncer queue.
        proxy.stall()
        started = time.monotonic()
        operator = authz.Check.future(request(oscar), timeout=10)
        time.sleep(0.05)  # the operator's lookup is waiting on the store now
        reason, took = timed_check(alice)
        assert reason == "allow" and took < 1.0, (reason, took)
        assert operator.result().reason == "grant_store_unavailable"
        assert time.monotonic() - started < 2.0
        # While the abandoned lookup still waits on the hung store: operators are denied at once,
        # everybody else is served as usual.
        for token, expected in ((oscar, "grant_store_unavailable"), (alice, "allow")) * 3:
            reason, took = timed_check(token)
            assert reason == expected and took < 1.0, (token, reason, took)

        # The store's client-side deadline drops the hung connection; the next lookup opens a new one.
        proxy.resume()
        eventually(lambda: authz.Check(request(oscar)).reason == "allow_break_glass",
                   "recovery without a restart")
