"""Two real server processes sharing one PostgreSQL grant store: a grant or revocation made through one
replica is enforced by the other at its next Check."""

import os
import shutil
import signal
import subprocess
import sys

import grpc
import pytest

from support.issuers import TestIssuer
from support.pg import pg_database
from support.server import BUNDLED_POLICIES, write_config
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc
from tenantgate.v1 import breakglass_pb2 as bg
from tenantgate.v1 import breakglass_pb2_grpc as bg_grpc

pytestmark = pytest.mark.postgres


def _start(tmp_path, name, issuer, store_url):
    home = tmp_path / name
    home.mkdir()
    config = write_config(home, issuer.settings, policies=BUNDLED_POLICIES,
                          extra=f'\n[grants]\nstore = "{store_url}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTGATE_")}
    proc = subprocess.Popen([sys.executable, "-m", "tenantgate.cli.main", "serve", "--config", str(config)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    banner = proc.stdout.readline()
    if "serving gRPC on" not in banner:
        proc.kill()
        raise AssertionError(f"{name} did not start: {banner}{proc.stderr.read()}")
    address = banner.split("serving gRPC on ")[1].split()[0]
    return proc, address


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(30) == 0
    finally:
        proc.kill()


def _check(channel, token):
    return pb_grpc.AuthorizerStub(channel).Check(pb.CheckRequest(
        token=token, action="read", resource=pb.Resource(type="Invoice", id="inv-1", tenant="acme")))


def test_grant_and_revoke_on_one_replica_are_enforced_by_the_other(tmp_path):
    if shutil.which(sys.executable) is None:  # pragma: no cover
        pytest.skip("no interpreter")
    issuer = TestIssuer(tmp_path)
    oscar = issuer.mint(tenant="platform", sub="oscar", roles=["breakglass-operator"])
    ada = issuer.mint(tenant="platform", sub="ada", roles=["breakglass-approver"])
    with pg_database() as store_url:
        one, addr1 = _start(tmp_path, "replica1", issuer, store_url)
        try:
            two, addr2 = _start(tmp_path, "replica2", issuer, store_url)
            try:
                with grpc.insecure_channel(addr1) as ch1, grpc.insecure_channel(addr2) as ch2:
                    md = lambda token: [("authorization", f"Bearer {token}")]  # noqa: E731
                    assert _check(ch2, oscar).reason == "cross_tenant"
                    grant = bg_grpc.BreakGlassStub(ch1).RequestGrant(bg.RequestGrantRequest(
                        target_tenant="acme", actions=["read"], reason="INC-9", ticket="INC-9",
                        duration_seconds=600), metadata=md(oscar))
                    bg_grpc.BreakGlassStub(ch1).ApproveGrant(bg.ApproveGrantRequest(grant_id=grant.id),
                                                             metadata=md(ada))
                    allowed = _check(ch2, oscar)
                    assert (allowed.reason, allowed.audit.grant_id) == ("allow_break_glass", grant.id)
                    assert _check(ch1, oscar).reason == "allow_break_glass"
                    bg_grpc.BreakGlassStub(ch2).RevokeGrant(bg.RevokeGrantRequest(grant_id=grant.id,
                                                                                  reason="done"), metadata=md(ada))
                    assert _check(ch1, oscar).reason == "cross_tenant"
                    assert _check(ch2, oscar).reason == "cross_tenant"
            finally:
                _stop(two)
        finally:
            _stop(one)
