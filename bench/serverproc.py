"""A TenantGate server in its own process: started, waited for (health SERVING), measured, stopped."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .fixture import child_python, python_env
from .procstat import cpu_seconds, rss_mib


class ServerError(RuntimeError):
    pass


class ServerProcess:
    """``python -m tenantgate.cli.main serve ARGS`` in ``cwd``; ``address`` is where it will listen.
    ``wrapper`` prefixes the command (e.g. valgrind, which runs it in the same process: ``pid`` stays the server's).

    stdout/stderr go to files in ``log_dir`` (quoted in errors). ``stop()`` sends SIGTERM (the server drains)
    and kills only if it has not exited within ``timeout`` seconds.
    """

    def __init__(self, args: Sequence[str], *, cwd: Path, address: str, log_dir: Path,
                 env: dict[str, str] | None = None, wrapper: Sequence[str] = ()) -> None:
        self.args = [*wrapper, child_python(), "-m", "tenantgate.cli.main", "serve", *args]
        self.cwd, self.address, self.log_dir = cwd, address, log_dir
        self.env = env if env is not None else python_env()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / "server.out", "wb") as out, open(self.log_dir / "server.err", "wb") as err:
            self._proc = subprocess.Popen(self.args, cwd=self.cwd, env=self.env, stdout=out, stderr=err,
                                          stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise ServerError(f"server exited with {self._proc.returncode}: {self.stderr_tail()}")
                try:
                    answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return self
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise ServerError(f"server not SERVING on {self.address} within {timeout:.0f} s: {self.stderr_tail()}")

    def cpu_seconds(self) -> float:
        """CPU seconds of the server and its worker processes so far."""
        return cpu_seconds(self.pid)

    def rss_mib(self, *, tree: bool = False) -> float:
        return rss_mib(self.pid, tree=tree)

    def stderr_tail(self, chars: int = 1500) -> str:
        try:
            return (self.log_dir / "server.err").read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s for the drain, then SIGKILL. Returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        return proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
