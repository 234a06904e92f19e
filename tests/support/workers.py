"""`tenantgate serve --workers N` under test: a cluster of real processes (supervisor, workers, /metrics process).

    with serving(tmp_path, issuer, policy_dir) as cluster:   # supervisor + 2 workers, until its banner is out
        _check(cluster.address, token); cluster.workers(); cluster.stop()

What /proc says of its processes is in support.procfs; its audit chains and /metrics sums in support.worker_records.
``issuer`` and ``policy_dir`` are function-scoped fixtures: a test module takes them with ``issuer = workers.issuer``
(an import of a fixture would be flagged where a test names it), overriding the module-scoped ``issuer`` of
tests/integration/conftest.py.
"""

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from support.issuers import TestIssuer
from support.policies import single_policy_dir, with_poll
from support.procfs import _children, _listeners, _sockets
from support.server import stop_process, write_config
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc

TENANTGATE = [sys.executable, "-m", "tenantgate.cli.main"]
CHANNELS = 20
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


def _check(address: str, token: str, tenant: str = "acme") -> pb.CheckResponse:
    """One Check on a connection of its own (no subchannel shared with other channels of this process)."""
    with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        return pb_grpc.AuthorizerStub(channel).Check(
            pb.CheckRequest(token=token, action="read", resource=pb.Resource(type="Invoice", id="i", tenant=tenant)),
            timeout=10)



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
