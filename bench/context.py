"""What scenarios share in one run: the budget, a temp directory, and the gRPC server of scenarios 1 and 6."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fixture import BenchIssuer, Budget, child_python, free_port, python_env, write_config
from .serverproc import ServerProcess

# The realistic request: a viewer of acme reads one of acme's invoices (bundled policies: ALLOW).
READ_REQUEST = {"action": "read", "resource": {"type": "Invoice", "id": "inv-1", "tenant": "acme"}}


class ClientError(RuntimeError):
    pass


def run_client(spec: dict[str, Any], timeout: float) -> Any:
    """Run ``bench.client`` in its own process with ``spec``; its JSON answer. Raises ClientError."""
    try:
        out = subprocess.run([child_python(), "-m", "bench.client"], input=json.dumps(spec), text=True,
                             capture_output=True, env=python_env(), timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise ClientError(f"load client did not finish within {timeout:.0f} s") from err
    if out.returncode != 0:
        raise ClientError(f"load client exited with {out.returncode}: {out.stderr[-1500:]}")
    return json.loads(out.stdout)


@dataclass(slots=True)
class SharedServer:
    """A server on the bundled policies with a test issuer (ES256), audit in a temp dir, metrics off."""

    process: ServerProcess
    token: str
    directory: Path

    def spec(self, **extra: Any) -> dict[str, Any]:
        return {"address": self.process.address, "server_pid": self.process.pid, "token": self.token,
                "request": READ_REQUEST, **extra}


class RunContext:
    def __init__(self, budget: Budget, quick: bool, tmp: Path) -> None:
        self.budget, self.quick, self.tmp = budget, quick, tmp
        self._server: SharedServer | None = None

    def shared_server(self) -> SharedServer:
        """Started on first use, reused by later scenarios of the run, stopped by ``close``."""
        if self._server is None:
            directory = self.tmp / "server"
            directory.mkdir(parents=True, exist_ok=True)
            issuer = BenchIssuer(directory, "ES256")
            address = f"127.0.0.1:{free_port()}"
            config = write_config(directory, issuer, listen=address)
            process = ServerProcess(["--config", str(config)], cwd=directory, address=address,
                                    log_dir=directory / "logs").start()
            self._server = SharedServer(process, issuer.mint("acme", "alice", ("viewer",)), directory)
        return self._server

    def close(self) -> None:
        if self._server is not None:
            self._server.process.stop()
            self._server = None
