"""`tenantgate serve --workers N` and its signals: SIGHUP reloading every worker's policies, SIGTERM stopping them
all (exit 1 when a worker fails its drain), a killed supervisor taking its workers along, and a client trickling
bytes to /metrics holding up none of it.

Every process is started here and stopped here; each wait is bounded.
"""

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support import workers
from support.policies import FORBID_READ, write_atomically
from support.procfs import _alive, _metrics_dir
from support.waiting import eventually
from support.worker_records import _decisions, _metric_sum
from support.workers import CHANNELS, _check, _env, _stand_in, serving
from tenantgate.v1 import authorizer_pb2 as pb

issuer = workers.issuer  # function-scoped: each test's own issuer and policies
policy_dir = workers.policy_dir


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


def test_workers_do_not_outlive_a_killed_supervisor(tmp_path, issuer, policy_dir):
    with serving(tmp_path, issuer, policy_dir) as cluster:
        workers = cluster.workers()
        files_dir = _metrics_dir(min(workers))
        cluster.proc.kill()
        cluster.proc.wait(10)
        eventually(lambda: not [pid for pid in workers if _alive(pid)], "the workers exiting with the supervisor")
    shutil.rmtree(files_dir)  # a killed supervisor cannot remove it


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
