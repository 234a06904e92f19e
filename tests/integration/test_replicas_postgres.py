"""Two real server processes sharing one PostgreSQL grant store: a grant or revocation made through one
replica is enforced by the other at its next Check."""

import os
import shutil
import signal
import subprocess
import sys
from urllib.parse import urlsplit

import grpc
import psycopg
import pytest

from support.grants import make_world
from support.issuers import TestIssuer, verifier_for
from support.pg import admin_dsn, pg_database
from support.server import BUNDLED_POLICIES, write_config
from tenantgate.core.breakglass import BreakGlass, GrantRequest, GrantRules
from tenantgate.core.grants import GrantState
from tenantgate.core.model import CheckInput, Reason, Resource
from tenantgate.errors import GrantConflict, GrantInvalid, GrantStoreUnavailable
from tenantgate.grants import open_store
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


# --- in-process replicas (BreakGlass + DecisionPoint) sharing one PostgreSQL store ----------------------------

class KillingSink:
    """A replica's audit sink that terminates the replica's store session right after writing a grant event
    named in ``kill`` (between the event and the COMMIT), as the reviewer did with pg_terminate_backend."""

    def __init__(self, sink, store_url):
        self._sink, self._database, self.kill = sink, urlsplit(store_url).path.lstrip("/"), set()

    def write(self, event):
        self._sink.write(event)
        if event.event in self.kill:
            with psycopg.connect(admin_dsn(), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = %s "
                              "AND state = 'idle in transaction' AND pid <> pg_backend_pid()", (self._database,))

    def write_many(self, events):
        return self._sink.write_many(events)

    def healthy(self):
        return self._sink.healthy()


def _replica(world, store_url, audit=None, **rules):
    return BreakGlass(store=open_store(store_url), audit=audit or world.sink, clock=world.clock,
                      rules=GrantRules(**rules), verifier=verifier_for(world.issuer, clock=world.clock,
                                                                       max_lifetime_seconds=90_000))


def _replayed(records):
    """grant id -> the state the grant events say it is in (``grant.failed`` names the state that stands)."""
    state = {}
    for record in records:
        if record.get("record_type") != "grant_event" or record["event"] == "grant.refused":
            continue
        if record["event"] == "grant.failed":
            assert record["state"], record  # every outcome was read back here: none unknown
        state[record["grant_id"]] = record["state"]
    return state


def test_the_log_of_replicas_whose_sessions_are_killed_before_commit_replays_to_the_store(tmp_path):
    # Review finding: 31 of 676 approvals in a kill loop appeared approved twice with two expiries, and a grant
    # logged as revoked kept allowing cross-tenant Checks.
    with pg_database() as store_url:
        world = make_world(tmp_path, store_url=store_url)
        sink = KillingSink(world.sink, store_url)
        one, two = _replica(world, store_url, sink), _replica(world, store_url, sink)
        oscar = world.operator()
        token = world.token("platform", "oscar", "breakglass-operator")
        try:
            for round_no in range(12):
                grant = one.request(oscar, GrantRequest("acme", ("read",), "INC-7 kill loop", "INC-7", 600))
                for step, event, call in (
                        ("approve", "grant.approved", lambda g=grant: two.approve(world.approver(), g.id)),
                        ("revoke", "grant.revoked", lambda g=grant: one.revoke(world.approver(), g.id, "done"))):
                    sink.kill = {event} if round_no % 3 != 2 else set()
                    if sink.kill:
                        with pytest.raises(GrantStoreUnavailable, match="it was not applied"):
                            call()
                        sink.kill = set()
                    call()
                    world.clock.advance(1)
                    check = world.pdp.decide(CheckInput(token=token, action="read",
                                                        resource=Resource("Invoice", "inv-1", "acme")))
                    expected = Reason.ALLOW_BREAK_GLASS if step == "approve" else Reason.CROSS_TENANT
                    assert check.reason is expected, (round_no, step)
            records = world.records()
            stored = {g.id: g.state.value for g in one.store.list(None, None, world.clock.now())}
            assert _replayed(records) == stored
            approvals = [r for r in records if r.get("event") == "grant.approved"]
            corrected = [r for r in records if r.get("event") == "grant.failed" and r["detail"].startswith("approve")]
            assert len(approvals) - len(corrected) == len(stored)  # one approval that stands per grant
        finally:
            for replica in (one, two, world.service):
                replica.store.close()


def test_a_replica_with_a_shorter_max_ttl_does_not_approve_a_longer_grant(tmp_path):
    with pg_database() as store_url:
        world = make_world(tmp_path, store_url=store_url)
        long_ttl = _replica(world, store_url, max_ttl_seconds=86_400)
        short_ttl = _replica(world, store_url, max_ttl_seconds=3_600)
        try:
            grant = long_ttl.request(world.operator(), GrantRequest("acme", ("read",), "INC-8", "INC-8", 86_400))
            with pytest.raises(GrantInvalid, match=r"above grants\.max_ttl_seconds"):
                short_ttl.approve(world.approver(), grant.id)
            assert world.service.store.get(grant.id).state is GrantState.PENDING
            refused = [r for r in world.records() if r.get("event") == "grant.refused"]
            assert refused[-1]["grant_id"] == grant.id and "max_ttl_seconds (3600)" in refused[-1]["detail"]
        finally:
            for replica in (long_ttl, short_ttl, world.service):
                replica.store.close()


class _RevokedMeanwhile:
    """A replica's store on which another replica revokes the grant just before this one's conditional UPDATE."""

    def __init__(self, inner, other):
        self._inner, self._other = inner, other

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def revoke(self, *args):
        self._other()
        return self._inner.revoke(*args)


def test_the_replica_losing_a_revocation_race_says_the_grant_is_already_revoked(tmp_path):
    with pg_database() as store_url:
        world = make_world(tmp_path, store_url=store_url)
        winner = _replica(world, store_url)
        loser = _replica(world, store_url)
        try:
            grant = world.active_grant()
            loser.store = _RevokedMeanwhile(loser.store, lambda: winner.revoke(world.approver("bea"), grant.id, "x"))
            with pytest.raises(GrantConflict) as lost:
                loser.revoke(world.approver(), grant.id, "incident closed")
            assert str(lost.value) == f"grant {grant.id} is already REVOKED"
            refused = [r for r in world.records() if r.get("event") == "grant.refused"]
            assert refused[-1]["detail"] == f"revoke: GrantConflict: grant {grant.id} is already REVOKED"
        finally:
            for replica in (winner, loser, world.service):
                replica.store.close()
