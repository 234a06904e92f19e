"""`serve --workers N` with its temp directory on a full filesystem: a real 2 MiB tmpfs, mounted in a user and
mount namespace of the server's own (no root needed; skipped where user namespaces are not allowed).

Review finding: prometheus-client's multiprocess files were sparse, so once the filesystem was full, a worker's
first write to a new page of one was answered with SIGBUS, and a restarted worker died the same way before
serving, again and again. The filesystem is filled from outside through ``/proc/PID/root``; every process is
started and stopped here, and each wait is bounded.
"""

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from urllib.request import urlopen

import grpc
import pytest

from support.policies import single_policy_dir, with_poll
from support.server import stop_process, write_config
from support.waiting import eventually
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc

CHANNELS = 20  # each its own connection: the kernel spreads them over the workers
# Mounts a small tmpfs on $0 in the new mount namespace, then runs the rest of the command line there.
IN_SMALL_TMPFS = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                  'mount -t tmpfs -o size=2m tmpfs "$0" && exec "$@"']


def _namespaces_allowed() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = pytest.mark.skipif(not _namespaces_allowed(), reason="no unprivileged user and mount namespaces")


def _fill(directory: Path) -> None:
    with (directory / "fill").open("wb") as fill:
        try:
            while True:
                fill.write(bytes(65536))
                fill.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC


def _started(log: Path, worker: int) -> list[int]:
    """The pids worker ``worker`` was started with, in order (from the supervisor's log)."""
    return [int(pid) for pid in re.findall(rf"worker {worker} started \(pid (\d+)\)", log.read_text())]


def _check(address: str, token: str) -> pb.CheckResponse:
    with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        return pb_grpc.AuthorizerStub(channel).Check(
            pb.CheckRequest(token=token, action="read", resource=pb.Resource(type="Invoice", id="i", tenant="acme")),
            timeout=10)


def test_a_worker_restarted_on_a_full_temp_directory_serves_with_its_metrics_in_memory(tmp_path, issuer):
    policies = single_policy_dir(tmp_path)
    cfg = with_poll(write_config(tmp_path, issuer.settings, policies=policies), policies, 0)
    small = tmp_path / "small"
    small.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TENANTGATE_", "PROMETHEUS_"))}
    env.update(TMPDIR=str(small), TENANTGATE_SERVER_METRICS_LISTEN="127.0.0.1:0")
    stderr = tmp_path / "stderr.log"
    with stderr.open("w") as err:
        proc = subprocess.Popen([*IN_SMALL_TMPFS, str(small), sys.executable, "-m", "tenantgate.cli.main", "serve",
                                 "--config", str(cfg), "--workers", "2"], env=env, stdout=subprocess.PIPE,
                                stderr=err, text=True)
    watchdog = threading.Timer(120, proc.kill)  # a server that hangs cannot hang the suite
    watchdog.start()
    try:
        banner = []
        for line in iter(proc.stdout.readline, ""):
            banner.append(line)
            if line.startswith("Stop with"):
                break
        assert banner and "serving gRPC on" in banner[0], stderr.read_text()
        address = banner[0].split("serving gRPC on ")[1].split()[0]
        metrics_url = next(line.split()[1] for line in banner if line.strip().startswith("metrics"))
        token = issuer.mint(roles=["viewer"])
        assert all(_check(address, token).decision == pb.ALLOW for _ in range(CHANNELS))

        _fill(Path(f"/proc/{proc.pid}/root") / small.relative_to("/"))  # the tmpfs, as the server sees it
        [victim] = _started(stderr, 1)
        os.kill(victim, signal.SIGKILL)
        eventually(lambda: len(_started(stderr, 1)) == 2, "worker 1 restarted", attempts=400)
        restarted = _started(stderr, 1)[1]
        try:
            eventually(lambda: f"worker 1 (pid {restarted}) serving" in stderr.read_text(),
                       "the restarted worker serving", attempts=400)
        except AssertionError as failure:
            raise AssertionError(f"{failure}; the server's log:\n{stderr.read_text()}") from None

        assert all(_check(address, token).decision == pb.ALLOW for _ in range(CHANNELS))
        assert "tenantgate_decisions_total" in urlopen(metrics_url, timeout=5).read().decode()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        watchdog.cancel()
        stop_process(proc)
    log = stderr.read_text()
    assert "SIGBUS" not in log
    assert "KiB free for the metrics files" in log  # warned at start: 2 MiB is little
    assert "cannot be allocated" in log and str(small) in log
