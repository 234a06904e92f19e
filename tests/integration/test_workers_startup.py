"""`tenantgate serve --workers N` starting: workers sharing the loopback ports (gRPC, health, AuthZEN, /metrics),
each with its own audit chain, connections spread over them; and what refuses to start (a busy port, a worker that
cannot start, `server.workers` out of range).

Every process is started here and stopped here; each wait is bounded. Many separate channels (each with its
own connection) are needed for the kernel to spread calls over the workers.
"""

import socket
import subprocess
import time

import grpc
import pytest

from support import workers
from support.procfs import _listeners, _sockets
from support.server import write_config
from support.waiting import eventually
from support.worker_records import _decisions, _metric_sum, _verify_all_workers
from support.workers import BROKEN, CHANNELS, TENANTGATE, _check, _env, serving
from tenantgate import config
from tenantgate.errors import ConfigError
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc

issuer = workers.issuer  # function-scoped: each test's own issuer and policies
policy_dir = workers.policy_dir


def test_two_workers_share_one_port_each_with_its_own_audit_chain_and_summed_metrics(tmp_path, issuer, policy_dir):
    token = issuer.mint(roles=["viewer"])
    with serving(tmp_path, issuer, policy_dir) as cluster:
        assert len(cluster.workers()) == 2
        allowed = _check(cluster.address, token)
        denied = _check(cluster.address, token, tenant="globex")
        assert (allowed.decision, allowed.reason) == (pb.ALLOW, "allow")
        assert (denied.decision, denied.reason) == (pb.DENY, "cross_tenant")
        answers = [allowed, denied] + [_check(cluster.address, token) for _ in range(CHANNELS)]
        assert all(a.decision == pb.ALLOW for a in answers[2:])
        eventually(lambda: _metric_sum(cluster.metrics_url, "tenantgate_decisions_total") == len(answers),
                   "the supervisor's /metrics summing both workers' decisions")
        assert _metric_sum(cluster.metrics_url, "tenantgate_cross_tenant_denials_total") == 1
        assert _metric_sum(cluster.metrics_url, "tenantgate_workers") == 2
        eventually(lambda: _metric_sum(cluster.metrics_url, "tenantgate_audit_records_total") >= len(answers),
                   "the workers' audit counters on /metrics")
        assert cluster.stop() == 0
    chains = _decisions(cluster.audit)
    assert [f.name for f in chains] == ["audit.jsonl", "audit-w1.jsonl"]
    assert all(records for records in chains.values()), "one worker answered every connection"
    recorded = [r["decision_id"] for records in chains.values() for r in records]
    assert sorted(recorded) == sorted(a.decision_id for a in answers)
    verified = _verify_all_workers(cluster.audit)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.count("OK:") == 2


def test_a_busy_metrics_port_fails_at_start_before_any_worker(tmp_path, issuer, policy_dir):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        cfg = write_config(tmp_path, issuer.settings, policies=policy_dir)
        out = subprocess.run([*TENANTGATE, "serve", "--config", str(cfg), "--workers", "2"],
                             env=_env(TENANTGATE_SERVER_METRICS_LISTEN=f"127.0.0.1:{port}"), capture_output=True,
                             text=True, timeout=60)
    assert out.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in out.stderr
    assert "worker 0 started" not in out.stderr


def test_health_and_authzen_ports_picked_by_worker_0_are_shared_by_every_worker(tmp_path, issuer, policy_dir):
    with serving(tmp_path, issuer, policy_dir, workers=3, extra='[http]\nlisten = "127.0.0.1:0"\n',
                 TENANTGATE_SERVER_HEALTH_LISTEN="127.0.0.1:0") as cluster:
        grpc_port = int(cluster.address.rpartition(":")[2])
        inodes = {inode for pid in cluster.workers() for inode in _sockets(pid)}
        listening = _listeners(inodes)
        assert grpc_port in listening
        assert sorted(listening.values()) == [3, 3, 3], listening  # gRPC, health and AuthZEN: one socket each


def test_a_port_another_process_listens_on_is_refused_even_with_so_reuseport(tmp_path, issuer, policy_dir):
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # gRPC's bind would silently share it
        other.bind(("127.0.0.1", 0))
        other.listen()
        cfg = write_config(tmp_path, issuer.settings, policies=policy_dir)
        port = other.getsockname()[1]
        out = subprocess.run([*TENANTGATE, "serve", "--config", str(cfg), "--workers", "2"],
                             env=_env(TENANTGATE_SERVER_LISTEN=f"127.0.0.1:{port}"), capture_output=True, text=True,
                             timeout=60)
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (server.listen)" in out.stderr
    assert "worker 0 started" not in out.stderr


def test_a_worker_that_cannot_start_stops_everything_with_its_exit_code(tmp_path, issuer, policy_dir):
    (policy_dir / "broken.cedar").write_text(BROKEN)
    cfg = write_config(tmp_path, issuer.settings, policies=policy_dir)
    out = subprocess.run([*TENANTGATE, "serve", "--config", str(cfg), "--workers", "2"], env=_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 3
    assert "broken.cedar:1" in out.stderr
    assert "worker 1 started" not in out.stderr  # worker 0 failed alone, before any other was forked


@pytest.mark.parametrize(("value", "message"), [
    ("0", "server.workers must be between 1 and 64, got 0"),
    ("65", "server.workers must be between 1 and 64, got 65"),
    ('"4"', "server.workers must be an integer"),
])
def test_server_workers_out_of_range_or_not_an_integer_is_refused(tmp_path, value, message):
    path = tmp_path / "t.toml"
    path.write_text(f"[server]\nworkers = {value}\n[dev_issuer]\nenabled = true\n")
    with pytest.raises(ConfigError, match=message):
        config.load(path, env={})


def test_server_workers_from_the_environment_and_the_command_line(tmp_path):
    assert config.load(None, env={"TENANTGATE_SERVER_WORKERS": "4"}).server.workers == 4
    assert config.load(None, env={}).server.workers == 1
    out = subprocess.run([*TENANTGATE, "serve", "--workers", "0"], cwd=tmp_path, env=_env(), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert "server.workers must be between 1 and 64, got 0" in out.stderr


def test_with_a_connection_age_one_client_connection_reaches_every_worker_in_turn(tmp_path, issuer, policy_dir):
    # One channel holds one connection, which SO_REUSEPORT keeps on one worker; with an age the server asks
    # it to reconnect about every second, and each new connection is placed anew. Bounded: it stops as soon
    # as both workers' chains hold a decision (about 20 reconnections at most; a miss is (1/2)^19 likely).
    token = issuer.mint(roles=["viewer"])
    with serving(tmp_path, issuer, policy_dir, TENANTGATE_SERVER_MAX_CONNECTION_AGE_SECONDS="1") as cluster, \
            grpc.insecure_channel(cluster.address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        stub = pb_grpc.AuthorizerStub(channel)
        request = pb.CheckRequest(token=token, action="read", resource=pb.Resource(type="Invoice", id="i",
                                                                                    tenant="acme"))
        calls = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert stub.Check(request, timeout=10).decision == pb.ALLOW  # no call fails across reconnections
            calls += 1
            chains = _decisions(cluster.audit)
            if len(chains) == 2 and all(chains.values()):
                break
            time.sleep(0.1)
        chains = _decisions(cluster.audit)
        assert cluster.stop() == 0
    assert len(chains) == 2 and all(chains.values()), {f.name: len(r) for f, r in chains.items()}
    assert sum(len(r) for r in chains.values()) == calls
