"""`tenantgate serve --workers N`: real supervisor and worker processes sharing loopback ports.

Every process is started here and stopped here; each wait is bounded. Many separate channels (each with its
own connection) are needed for the kernel to spread calls over the workers.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.request import urlopen

import grpc
import pytest

from support.issuers import TestIssuer
from support.policies import FORBID_READ, single_policy_dir, with_poll, write_atomically
from support.server import stop_process, write_config
from support.waiting import eventually
from tenantgate import config
from tenantgate.errors import ConfigError
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc

TENANTGATE = [sys.executable, "-m", "tenantgate.cli.main"]
CHANNELS = 20
# `tenantgate serve` with a crash limit reached in seconds: 2 deaths, 0.1 s apart.
FAST_CRASH_LIMIT = [sys.executable, "-c", """import sys
from tenantgate.cli import main, restarts
restarts.RESTART_DELAYS = (0.1,)
restarts.CRASH_LIMIT = 2
sys.exit(main.main(sys.argv[1:]))"""]
BROKEN = "permit(principal, action, resource) when {"


@dataclass
class Cluster:
    proc: subprocess.Popen
    address: str
    metrics_url: str
    audit: Path  # worker 0's chain; worker K writes audit-wK.jsonl beside it
    stderr: Path

    def workers(self) -> set[int]:
        return _children(self.proc.pid) - {self.metrics_process()}

    def metrics_process(self) -> int | None:
        """The supervisor's child listening on the /metrics port (not a worker)."""
        port = int(self.metrics_url.rpartition(":")[2].split("/")[0])
        return next((pid for pid in _children(self.proc.pid) if port in _listeners(_sockets(pid))), None)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            self.proc.kill()


@pytest.fixture()
def issuer(tmp_path):
    return TestIssuer(tmp_path)


@pytest.fixture()
def policy_dir(tmp_path):
    return single_policy_dir(tmp_path)


@contextmanager
def serving(tmp_path, issuer, policy_dir, workers=2, extra="", launcher=TENANTGATE, **env) -> Iterator[Cluster]:
    """``serve --workers N`` (polling off, /metrics on a free port) until its banner is out."""
    cfg = with_poll(write_config(tmp_path, issuer.settings, policies=policy_dir, extra=extra), policy_dir, 0)
    stderr = tmp_path / "stderr.log"
    with stderr.open("w") as err:
        proc = subprocess.Popen([*launcher, "serve", "--config", str(cfg), "--workers", str(workers)],
                                env=_env(TENANTGATE_SERVER_METRICS_LISTEN="127.0.0.1:0", **env), stdout=subprocess.PIPE,
                                stderr=err, text=True)
    watchdog = threading.Timer(60, proc.kill)  # a supervisor that never prints its banner cannot hang the suite
    watchdog.start()
    try:
        banner = _banner(proc)
        assert "serving gRPC on" in banner[0], stderr.read_text()
        address = banner[0].split("serving gRPC on ")[1].split()[0]
        metrics = next(line.split()[1] for line in banner if line.strip().startswith("metrics"))
        audit = Path(next(line.split()[2] for line in banner if "audit log" in line).rstrip(","))
        assert f"{workers} processes sharing the ports" in "".join(banner)
        yield Cluster(proc, address, metrics, audit, stderr)
    finally:
        watchdog.cancel()
        stop_process(proc)


def _banner(proc) -> list[str]:
    """The banner's lines, up to "Stop with ..." (fewer when the process ends first)."""
    lines = []
    for line in iter(proc.stdout.readline, ""):
        lines.append(line)
        if line.startswith("Stop with"):
            break
    return lines or [""]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TENANTGATE_", "PROMETHEUS_"))}
    env.update(extra)
    return env


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def _metrics_dir(worker: int) -> Path:
    """The multiprocess metrics directory the supervisor gave its workers (where their open files are)."""
    opened = [Path(os.readlink(fd)) for fd in Path(f"/proc/{worker}/fd").iterdir()]
    return next(p.parent for p in opened if p.parent.name.startswith("tenantgate-metrics-"))


def _files_of_others(files_dir: Path, worker: int) -> set[str]:
    """The metric files that are not ``worker``'s own (the ones the others and the supervisor have open)."""
    own = {os.readlink(fd) for fd in Path(f"/proc/{worker}/fd").iterdir()}
    return {f for f in os.listdir(files_dir) if str(files_dir / f) not in own}


def _sockets(pid: int) -> set[str]:
    try:
        return {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    except OSError:  # exited meanwhile
        return set()


def _listeners(inodes: set[str]) -> dict[int, int]:
    """Listening TCP sockets among ``inodes`` ("socket:[N]"), counted by port."""
    ports: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and f"socket:[{fields[9]}]" in inodes:  # 0A: LISTEN
                port = int(fields[1].rpartition(":")[2], 16)
                ports[port] = ports.get(port, 0) + 1
    return ports


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _check(address: str, token: str, tenant: str = "acme") -> pb.CheckResponse:
    """One Check on a connection of its own (no subchannel shared with other channels of this process)."""
    with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        return pb_grpc.AuthorizerStub(channel).Check(
            pb.CheckRequest(token=token, action="read", resource=pb.Resource(type="Invoice", id="i", tenant=tenant)),
            timeout=10)


def _decisions(live: Path) -> dict[Path, list[dict]]:
    """Decision records of every worker's chain, by file."""
    files = [live, *sorted(live.parent.glob(f"{live.stem}-w*{live.suffix}"))]
    return {f: [r for r in map(json.loads, f.read_text().splitlines()) if r["record_type"] == "decision"]
            for f in files}


def _answers(url: str) -> bool:
    try:
        urlopen(url, timeout=5).read()
    except OSError:
        return False
    return True


def _metric_sum(url: str, name: str) -> float:
    text = urlopen(url, timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ")))


def _verify_all_workers(audit: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*TENANTGATE, "audit", "verify", "--all-workers", str(audit)], env=_env(),
                          capture_output=True, text=True, timeout=60)


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


def test_sighup_to_the_supervisor_reloads_the_policies_of_every_worker(tmp_path, issuer, policy_dir):
    token = issuer.mint(roles=["viewer"])
    with serving(tmp_path, issuer, policy_dir) as cluster:
        assert all(_check(cluster.address, token).decision == pb.ALLOW for _ in range(CHANNELS))
        write_atomically(policy_dir / "p.cedar", FORBID_READ)
        cluster.proc.send_signal(signal.SIGHUP)
        eventually(lambda: all(_check(cluster.address, token).reason == "policy_forbid" for _ in range(CHANNELS)),
                   "every worker deciding with the new policies", attempts=100)
        assert cluster.stop() == 0
    for path, records in _decisions(cluster.audit).items():
        assert records[-1]["reason"] == "policy_forbid", f"{path.name} still decides with the old policies"


def test_sigterm_stops_the_supervisor_and_every_worker_with_exit_0(tmp_path, issuer, policy_dir):
    with serving(tmp_path, issuer, policy_dir) as cluster:
        supervisor, workers, metrics = cluster.proc.pid, cluster.workers(), cluster.metrics_process()
        assert len(workers) == 2
        # Forked before any gRPC object existed: the supervisor never loads gRPC and runs a single thread.
        assert "cygrpc" not in Path(f"/proc/{supervisor}/maps").read_text()
        assert len(list(Path(f"/proc/{supervisor}/task").iterdir())) == 1
        assert metrics and "cygrpc" not in Path(f"/proc/{metrics}/maps").read_text()
        files_dir = _metrics_dir(min(workers))
        assert files_dir.is_dir() and files_dir.stat().st_mode & 0o077 == 0
        assert cluster.stop() == 0
    assert not [pid for pid in (*workers, metrics) if _alive(pid)]
    assert not files_dir.exists()
    assert "worker 1" in cluster.stderr.read_text() and '"worker": 1' in cluster.stderr.read_text()


def test_a_killed_worker_is_restarted_and_serving_resumes(tmp_path, issuer, policy_dir):
    token = issuer.mint(roles=["viewer"])
    with serving(tmp_path, issuer, policy_dir) as cluster:
        before = cluster.workers()
        victim = min(before)
        files_dir = _metrics_dir(victim)
        assert all(_check(cluster.address, token).decision == pb.ALLOW for _ in range(CHANNELS))
        eventually(lambda: _metric_sum(cluster.metrics_url, "tenantgate_decisions_total") == CHANNELS,
                   "the decisions before the kill on /metrics")
        victims_files = {f for f in os.listdir(files_dir) if f.endswith(".db")} - _files_of_others(files_dir, victim)
        os.kill(victim, signal.SIGKILL)
        eventually(lambda: len(cluster.workers()) == 2 and victim not in cluster.workers(), "a new worker")
        eventually(lambda: _metric_sum(cluster.metrics_url, "tenantgate_workers") == 2, "the new worker serving")
        assert all(_check(cluster.address, token).decision == pb.ALLOW for _ in range(CHANNELS))
        assert _metric_sum(cluster.metrics_url, "tenantgate_worker_restarts_total") == 1
        # Review finding: an exited worker's counter and histogram files stayed for good (two per restart, each
        # read by every scrape). They are folded into one archive at the next scrape, its counts kept.
        assert _metric_sum(cluster.metrics_url, "tenantgate_decisions_total") == 2 * CHANNELS
        assert victims_files and not victims_files & set(os.listdir(files_dir))
        assert "archive.json" in os.listdir(files_dir)
        # A /metrics process restarted after a crash starts from the archive, not from nothing.
        first = cluster.metrics_process()
        os.kill(first, signal.SIGKILL)
        eventually(lambda: cluster.metrics_process() not in (None, first), "a new /metrics process")
        eventually(lambda: _answers(cluster.metrics_url), "/metrics answering again")
        assert _metric_sum(cluster.metrics_url, "tenantgate_decisions_total") == 2 * CHANNELS
        assert cluster.stop() == 0
    assert f"(pid {victim}) was killed by SIGKILL; restarting it" in cluster.stderr.read_text()
    assert _verify_all_workers(cluster.audit).returncode == 0


@contextmanager
def _trickling(metrics_url: str) -> Iterator[list[int]]:
    """A client sending its /metrics request one byte every 0.2 s (reconnecting when cut off) until the block
    ends; yields the count of bytes it could send, so far."""
    host, _, port = metrics_url.split("/")[2].rpartition(":")
    sent, stop = [0], threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection((host, int(port)), timeout=5) as slow:
                    slow.sendall(b"GET /metrics")
                    while not stop.wait(0.2):
                        slow.sendall(b"x")
                        sent[0] += 1
            except OSError:
                stop.wait(0.2)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        stop.set()
        thread.join(10)


def test_a_client_trickling_bytes_to_metrics_holds_up_neither_sighup_nor_restarts_nor_sigterm(
        tmp_path, issuer, policy_dir):
    token = issuer.mint(roles=["viewer"])
    with serving(tmp_path, issuer, policy_dir) as cluster, _trickling(cluster.metrics_url) as sent:
        time.sleep(0.3)  # its request under way
        write_atomically(policy_dir / "p.cedar", FORBID_READ)
        cluster.proc.send_signal(signal.SIGHUP)
        eventually(lambda: all(_check(cluster.address, token).reason == "policy_forbid" for _ in range(CHANNELS)),
                   "every worker deciding with the new policies", attempts=100)
        os.kill(min(cluster.workers()), signal.SIGKILL)
        eventually(lambda: _metric_sum(cluster.metrics_url, "tenantgate_worker_restarts_total") == 1
                   and _metric_sum(cluster.metrics_url, "tenantgate_workers") == 2, "the killed worker serving again")
        assert sent[0] >= 3, "the slow client never got going"
        started = time.monotonic()
        assert cluster.stop() == 0
        assert time.monotonic() - started < 5, "SIGTERM waited for the slow client"
    for path, records in _decisions(cluster.audit).items():
        assert records[-1]["reason"] == "policy_forbid", f"{path.name} still decides with the old policies"


def test_a_killed_metrics_process_is_restarted_and_is_not_counted_as_a_worker(tmp_path, issuer, policy_dir):
    with serving(tmp_path, issuer, policy_dir) as cluster:
        first = cluster.metrics_process()
        assert first is not None
        os.kill(first, signal.SIGKILL)
        eventually(lambda: cluster.metrics_process() not in (None, first), "a new /metrics process")
        eventually(lambda: _metric_sum(cluster.metrics_url, "tenantgate_workers") == 2, "/metrics answering again")
        assert _metric_sum(cluster.metrics_url, "tenantgate_worker_restarts_total") == 0
        assert len(cluster.workers()) == 2
        second = cluster.metrics_process()
        assert cluster.stop() == 0
    assert not _alive(second)
    assert f"/metrics process (pid {first}) was killed by SIGKILL; restarting it" in cluster.stderr.read_text()


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


def test_a_worker_that_cannot_restart_is_retried_while_another_serves_until_the_files_are_fixed(
        tmp_path, issuer, policy_dir):
    # Invalid files on disk: a serving worker keeps its policies, a restarted one cannot start (exit 3).
    token = issuer.mint(roles=["viewer"])
    with serving(tmp_path, issuer, policy_dir, launcher=FAST_CRASH_LIMIT) as cluster:
        (policy_dir / "broken.cedar").write_text(BROKEN)
        os.kill(min(cluster.workers()), signal.SIGKILL)
        retrying = "1 of 2 workers still serve, so it keeps being restarted every 0.1 s until it starts"
        eventually(lambda: cluster.stderr.read_text().count(retrying) >= 2,
                   "two failed restarts past the crash limit (2)", attempts=300)
        assert cluster.proc.poll() is None
        assert _check(cluster.address, token).decision == pb.ALLOW
        assert _metric_sum(cluster.metrics_url, "tenantgate_workers") == 1
        (policy_dir / "broken.cedar").unlink()
        eventually(lambda: _metric_sum(cluster.metrics_url, "tenantgate_workers") == 2,
                   "the worker starting once the files are fixed", attempts=300)
        assert all(_check(cluster.address, token).decision == pb.ALLOW for _ in range(CHANNELS))
        assert cluster.stop() == 0
    logged = cluster.stderr.read_text()
    assert "broken.cedar:1" in logged
    assert "exited with code 3 before serving (see its own error above), 2 times within 60 s" in logged


def test_a_worker_restarted_while_a_tenant_is_held_back_comes_back_with_that_tenant_quarantined(
        tmp_path, issuer, policy_dir):
    # Review finding (session 16, F): start-up was strict for restarted workers too, so while a tenant was held
    # back a crashed worker never came back (and the supervisor stopped once every worker had crashed).
    evil = policy_dir / "tenants" / "evil"
    evil.mkdir(parents=True)
    (evil / "own.cedar").write_text('@id("evil-no-read")\nforbid (principal, action == Action::"read", resource);\n')
    alice, eve = issuer.mint(roles=["viewer"]), issuer.mint(tenant="evil", roles=["viewer"])
    with serving(tmp_path, issuer, policy_dir) as cluster:
        (evil / "oops.cedar").write_text(BROKEN)
        cluster.proc.send_signal(signal.SIGHUP)
        eventually(lambda: _metric_sum(cluster.metrics_url, "tenantgate_policy_reloads_total") >= 2,
                   "both workers holding evil back")
        os.kill(min(cluster.workers()), signal.SIGKILL)
        eventually(lambda: _metric_sum(cluster.metrics_url, "tenantgate_worker_restarts_total") == 1
                   and _metric_sum(cluster.metrics_url, "tenantgate_workers") == 2, "the killed worker serving again")
        assert _metric_sum(cluster.metrics_url, "tenantgate_policy_quarantined_tenants") == 1
        assert all(_check(cluster.address, alice).decision == pb.ALLOW for _ in range(CHANNELS))
        # One worker answers from evil's last valid files, the restarted one denies it all: never an allow.
        reasons = {_check(cluster.address, eve, tenant="evil").reason for _ in range(CHANNELS)}
        assert reasons <= {"policy_forbid", "tenant_policies_unavailable"}, reasons
        assert cluster.stop() == 0
    logged = cluster.stderr.read_text()
    assert "tenant(s) evil quarantined" in logged and "oops.cedar" in logged


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


def test_workers_do_not_outlive_a_killed_supervisor(tmp_path, issuer, policy_dir):
    with serving(tmp_path, issuer, policy_dir) as cluster:
        workers = cluster.workers()
        files_dir = _metrics_dir(min(workers))
        cluster.proc.kill()
        cluster.proc.wait(10)
        eventually(lambda: not [pid for pid in workers if _alive(pid)], "the workers exiting with the supervisor")
    shutil.rmtree(files_dir)  # a killed supervisor cannot remove it

def test_a_worker_that_cannot_start_stops_everything_with_its_exit_code(tmp_path, issuer, policy_dir):
    (policy_dir / "broken.cedar").write_text(BROKEN)
    cfg = write_config(tmp_path, issuer.settings, policies=policy_dir)
    out = subprocess.run([*TENANTGATE, "serve", "--config", str(cfg), "--workers", "2"], env=_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 3
    assert "broken.cedar:1" in out.stderr
    assert "worker 1 started" not in out.stderr  # worker 0 failed alone, before any other was forked


def _stand_in(work: str) -> list[str]:
    """The supervisor with a stand-in worker (the body of ``work(settings, index, announce)``), fast restarts
    and stops: its crash limit and exit codes, in a second."""
    body = "\n".join("    " + line for line in work.strip().splitlines())
    return [sys.executable, "-c", f"""
import signal, sys, time
from tenantgate import config
from tenantgate.cli import restarts, supervisor

restarts.RESTART_DELAYS = (0.01,)
supervisor.STOP_MARGIN_SECONDS = 1.0  # long enough for a drain that exits at once

def work(settings, index, announce):
{body}

settings = config.load(None, env={{"TENANTGATE_SERVER_METRICS_LISTEN": "", "TENANTGATE_SERVER_WORKERS": "2",
                                  "TENANTGATE_SERVER_LISTEN": "127.0.0.1:0", "TENANTGATE_SERVER_GRACE_SECONDS": "0"}})
sys.exit(supervisor.Supervisor(settings, work, lambda report, port: print("ready", flush=True)).run())
"""]


def test_a_worker_dying_again_and_again_stops_the_supervisor_with_exit_1(tmp_path):
    command = _stand_in("""
announce({"grpc": 1, "health": 0, "http": 0})
time.sleep(0.2)
return 7
""")
    out = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert out.stdout == "ready\n"
    assert ("died 5 times within 60 s (last: exited with code 7) and no other worker serves; stopping all workers"
            in out.stderr)


@pytest.mark.parametrize(("on_sigterm", "code", "logged"), [
    ("lambda *_: sys.exit(0)", 0, None),
    ("lambda *_: sys.exit(5)", 1, "exited with code 5 instead of draining cleanly"),
    ("signal.SIG_IGN", 1, "was killed by SIGKILL instead of draining cleanly"),  # a drain that never ends
], ids=["drained", "drain-failed", "drain-hung"])
def test_sigterm_exits_1_when_a_worker_fails_its_drain_or_must_be_killed(tmp_path, on_sigterm, code, logged):
    command = _stand_in(f"""
signal.signal(signal.SIGTERM, {on_sigterm})
announce({{"grpc": 1, "health": 0, "http": 0}})
while True:
    time.sleep(1)
""")
    proc = subprocess.Popen(command, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    if logged:
        assert err.count(logged) == 2, err  # both workers
    else:
        assert "instead of draining cleanly" not in err


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
