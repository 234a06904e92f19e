"""The load gate's second generator: h2load (nghttp2's HTTP/2 load tool, C) sending gRPC calls.

Cerbos runs its gate with ghz, a compiled generator that costs little CPU per call; our Python generator
(``bench.client``) costs about as much CPU per call as the server's own gRPC floor, and on 2 shared cores
that alone limits the rate. h2load sends the same ``Authorizer.Check`` as raw gRPC frames over HTTP/2
(prior knowledge, ``te: trailers``), paced by a timing script: each of ``connections`` clients sends its
share of the calls at fixed offsets (open loop), at most ``ceil(concurrency / connections)`` in flight each.

h2load sees HTTP statuses, not gRPC trailers, so the gRPC outcome of every call is read from the server's
own metrics (``tenantgate_grpc_server_handled_total`` by code, before and after) and every decision from its
audit log (the caller checks those). Latency is h2load's per-call time from send to the end of the response
(what ghz reports too). h2load's pacing is not exact (it drifts 1-2% behind its script here), so latency from the
*scheduled* time is not taken; a server that falls behind shows as a lower achieved rate and as calls sent late
(``send_lag``: how far each call's send trailed the ideal schedule).
"""

from __future__ import annotations

import math
import os
import re
import resource
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from tenantgate.v1 import authorizer_pb2 as pb

from .procstat import cpu_seconds
from .stats import summarize

CHECK_PATH = "/tenantgate.v1.Authorizer/Check"
_HANDLED = re.compile(r'^tenantgate_grpc_server_handled_total\{([^}]*)\} ([0-9.e+]+)$', re.M)


def available() -> str | None:
    """The h2load executable, or None (Debian/Ubuntu package ``nghttp2-client``)."""
    return shutil.which("h2load")


def grpc_frame(message: bytes) -> bytes:
    """One uncompressed gRPC length-prefixed message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def handled_by_code(metrics_url: str) -> dict[str, float]:
    """``Authorizer/Check`` calls the server has completed so far, by gRPC status code (from /metrics)."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode("utf-8", "replace")
    counts: dict[str, float] = {}
    for labels, value in _HANDLED.findall(text):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if fields.get("method") == CHECK_PATH:
            counts[fields.get("code", "?")] = counts.get(fields.get("code", "?"), 0.0) + float(value)
    return counts


def run(*, address: str, metrics_url: str, server_pid: int, token: str, request: dict[str, Any], rate: float,
        seconds: float, concurrency: int, connections: int, warmup_s: float, work: Path) -> dict[str, Any]:
    """Offer ``rate`` Checks/s for ``seconds`` (after a ``warmup_s`` warm-up) and summarise what came back.

    Returns the keys of ``bench.client.open_loop``'s result where they apply (``latency`` is from send, like
    ``service_latency``; achieved calls, server and client CPU) plus ``send_lag``, ``grpc_codes`` (the server's
    count per status code in the measured window), ``answered_total`` (OK since the server started) and
    ``h2load_summary`` (its closing lines). Raises RuntimeError when h2load fails.
    """
    exe = available()
    if exe is None:
        raise RuntimeError("h2load is not installed (Debian/Ubuntu: apt-get install nghttp2-client)")
    resource = request["resource"]
    body = pb.CheckRequest(token=token, action=request["action"],
                           resource=pb.Resource(type=resource["type"], id=resource["id"], tenant=resource["tenant"]))
    data = work / "check.grpc"
    data.write_bytes(grpc_frame(body.SerializeToString()))
    os.chmod(data, 0o600)  # holds a (development) token: readable by us only, removed below
    per_client = rate / connections
    streams = max(1, math.ceil(concurrency / connections))
    uri = f"http://{address}{CHECK_PATH}"
    try:
        if warmup_s > 0:
            _h2load(exe, work / "warmup", uri, data, per_client, warmup_s, connections, streams)
        codes_before = handled_by_code(metrics_url)
        cpu0, client0 = cpu_seconds(server_pid), _children_cpu()
        started = time.monotonic()
        log, summary = _h2load(exe, work / "measured", uri, data, per_client, seconds, connections, streams)
        elapsed = time.monotonic() - started
        cpu1, client1 = cpu_seconds(server_pid), _children_cpu()
        codes_after = handled_by_code(metrics_url)
    finally:
        data.unlink(missing_ok=True)
    scheduled = sorted(k / per_client for k in range(int(per_client * seconds)) for _ in range(connections))
    rows = _log_rows(log)
    first = min((start for start, _, _ in rows), default=0.0)
    # How far behind the ideal schedule each call was sent: h2load's own pacing drifts (about 1-2% here) and a
    # client whose streams are all busy waits, so this is an indicator, not a latency; n-th earliest start
    # against the n-th earliest scheduled time (every client replays the same script).
    lag = [max(0.0, (start - first) - due) for (start, _, _), due in zip(sorted(rows), scheduled, strict=False)]
    service = [duration for _, _, duration in rows]
    ok_http = sum(1 for _, status, _ in rows if status == 200)
    codes = {code: codes_after.get(code, 0.0) - codes_before.get(code, 0.0) for code in codes_after}
    codes = {code: int(n) for code, n in codes.items() if n}
    span = (max((s + d for s, _, d in rows), default=first) - first) if rows else math.nan
    return {
        "offered": len(scheduled),
        "answered": codes.get("OK", 0),
        "answered_total": int(codes_after.get("OK", 0.0)),  # since the server started: warm-up included
        "http_ok": ok_http,
        "seconds": span if rows else elapsed,
        "latency": summarize(service).to_dict(),
        "service_latency": summarize(service).to_dict(),
        "send_lag": summarize(lag).to_dict(),
        "not_sent": len(scheduled) - len(rows),
        "http_errors": len(rows) - ok_http,
        "grpc_codes": codes,
        "late_starts": sum(1 for late in lag if late > 0.005),
        "server_cpu_s": cpu1 - cpu0,
        "client_cpu_s": client1 - client0,
        "h2load_summary": summary,
    }


def _h2load(exe: str, stem: Path, uri: str, data: Path, per_client: float, seconds: float, connections: int,
            streams: int) -> tuple[Path, str]:
    count = max(1, int(per_client * seconds))
    script = stem.with_suffix(".script")
    script.write_text("".join(f"{k * 1000.0 / per_client:.3f}\t{uri}\n" for k in range(count)), encoding="ascii")
    log = stem.with_suffix(".log")
    command = [exe, "--timing-script-file", str(script), "-n", str(count), "-c", str(connections),
               "-m", str(streams), "-t", "1", "-d", str(data), "--log-file", str(log),
               "-H", "content-type: application/grpc", "-H", "te: trailers"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds * 3 + 60, check=False)
    if done.returncode != 0 or not log.exists():
        raise RuntimeError(f"h2load exited {done.returncode}: {(done.stderr or done.stdout)[-600:]}")
    summary = "\n".join(line for line in done.stdout.splitlines()
                        if line.startswith(("finished in", "requests:", "status codes:")))
    return log, summary


def _log_rows(log: Path) -> list[tuple[float, int, float]]:
    """(start s, HTTP status, duration s) per request from h2load's --log-file."""
    rows = []
    for line in log.read_text(encoding="ascii", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[0].isdigit():
            rows.append((int(parts[0]) / 1e6, int(parts[1]) if parts[1].lstrip("-").isdigit() else -1,
                         int(parts[2]) / 1e6))
    return rows


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
