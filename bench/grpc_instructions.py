"""Scenario 1's instruction rows: the server's instructions per call, empty RPC vs ``Authorizer.Check``.

CPU seconds per call move with the machine's load; instruction counts do not. Four servers, configured
as the shared one, run one after the other under ``valgrind --tool=callgrind``: each starts, is warmed up
with both RPCs, then makes ``CALLS`` calls of one RPC at ``IN_FLIGHT`` in flight (none for ``setup``), and
stops. A run's total minus the setup run's, over ``CALLS``, is the server's instructions per call, every
thread included (grpc.aio's poller, the event loop, the handler). (Zeroing and dumping one server's counters
with callgrind_control needs ptrace to reach an idle process, which containers often refuse.)
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any

import grpc

from .client import Call, make_call
from .context import READ_REQUEST
from .fixture import BenchIssuer, free_port, write_config
from .serverproc import ServerProcess

CALLS = 1000
IN_FLIGHT = 16
WARMUP = 200
_COLLECTED = re.compile(r"Collected : ([\d,]+)")


def measure(directory: Path, calls: int = CALLS) -> dict[str, Any]:
    """``{"health": server instructions per call, "check": ..., "check_new": ..., "calls": calls, "errors": n}``
    (``check_new``: a resource never asked for before on every call; one server per RPC). Raises
    RuntimeError when valgrind is missing or a step fails."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind is not installed (Debian: apt-get install valgrind)")
    totals, errors = {}, 0
    for run, rpc_calls in (("setup", 0), ("health", calls), ("check", calls), ("check_new", calls)):
        total, failed = _server_run(valgrind, directory / run, run, rpc_calls)
        totals[run] = total
        errors += failed
    return {**{rpc: (totals[rpc] - totals["setup"]) / calls for rpc in ("health", "check", "check_new")},
            "calls": calls, "errors": errors}


def _server_run(valgrind: str, directory: Path, rpc: str, calls: int) -> tuple[int, int]:
    """Start a server under callgrind, warm it up with both RPCs, make ``calls`` calls of ``rpc`` (none for
    ``setup``), stop it: (instructions it executed in all, calls that failed)."""
    directory.mkdir(parents=True, exist_ok=True)
    issuer = BenchIssuer(directory, "ES256")
    address = f"127.0.0.1:{free_port()}"
    server = ServerProcess(["--config", str(write_config(directory, issuer, listen=address))], cwd=directory,
                           address=address, log_dir=directory / "logs",
                           wrapper=[valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null"])
    spec = {"token": issuer.mint("acme", "alice", ("viewer",)), "request": READ_REQUEST, "deadline_s": 300.0}
    server.start(timeout=600)
    try:
        failed = asyncio.run(_calls(address, spec, rpc, calls))
    finally:
        server.stop(timeout=600)  # valgrind prints its total when the server has drained and exited
    found = _COLLECTED.search(server.stderr_tail(4000))
    if found is None:
        raise RuntimeError(f"no callgrind total in the {rpc} server's output")
    return int(found.group(1).replace(",", "")), failed


async def _calls(address: str, spec: dict[str, Any], rpc: str, calls: int) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        failed = sum([await _drive(make_call(channel, spec, warm), WARMUP) for warm in ("health", "check")])
        if calls:
            failed += await _drive(make_call(channel, spec, rpc), calls)
        return failed


async def _drive(call: Call, calls: int) -> int:
    """``calls`` calls with ``IN_FLIGHT`` in flight; the number that failed or answered wrongly."""
    left, failed = iter(range(calls)), 0

    async def task() -> None:
        nonlocal failed
        for _ in left:
            try:
                ok, _n, _ids = await call()
            except grpc.aio.AioRpcError:
                ok = False
            failed += not ok

    await asyncio.gather(*(task() for _ in range(IN_FLIGHT)))
    return failed
