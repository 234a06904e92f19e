"""A PostgreSQL grant store that is down at start, comes back, and goes down again mid-run: cross-tenant
Checks are denied meanwhile, same-tenant Checks are unaffected, and the server recovers by itself."""

import time
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



def test_store_outage_denies_cross_tenant_only_and_recovers(tmp_path):
    issuer = TestIssuer(tmp_path)
    oscar = issuer.mint(tenant="platform", sub="oscar", roles=["breakglass-operator"], exp=int(time.time()) + 280)
    ada = issuer.mint(tenant="platform", sub="ada", roles=["breakglass-approver"], exp=int(time.time()) + 280)
    alice = issuer.mint(tenant="acme", sub="alice", roles=["viewer"], exp=int(time.time()) + 280)
    md = [("authorization", f"Bearer {oscar}")]
    with pg_database() as url:
        target = urlsplit(url)
        with TcpProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
            proxy.cut()
            extra = f'\n[grants]\nstore = "{url_with(url, host="127.0.0.1", port=proxy.port)}"\n'
            settings = config.load(write_config(tmp_path, issuer.settings, extra=extra), env={})
            with running_server(settings) as (address, _app), grpc.insecure_channel(address) as channel:
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
