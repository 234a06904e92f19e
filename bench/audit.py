"""Scenario 9: audit appends one record at a time vs batched, in both durability modes.

Issue #7 asks for audit writes batched without weakening the durability mode. ``JsonlAuditSink`` batches
two ways: concurrent writers share one append (group commit: one lock, one ``write`` and, in ``"fsync"``
mode, one ``fsync``; each writer returns only once its own record is in the log), and ``write_many``
appends a whole list (``decide_many``: a BatchCheck chunk). For each durability mode, on a fresh log each:

- **one at a time** (the before): ``WRITERS`` threads call ``write``, serialised by a lock of their own
  around the call, so every record is an append (and an fsync) of its own;
- **group commit** (the after, Check): the same threads call ``write`` concurrently;
- **write_many** (the after, BatchCheck): one thread appends 50 records per call.

Afterwards each log is verified (``verify_log``: chain intact, every record counted) and the sink's own
counters give records per append and fsyncs per record.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tenantgate.audit import JsonlAuditSink, verify_log
from tenantgate.audit.sink import DURABILITIES
from tenantgate.core.model import AuditEvent
from tenantgate.rpc.authorizer import BATCH_CHUNK

from .context import RunContext
from .results import Chart, Section
from .stats import rate, summarize, us

GOALS: list[tuple[str, str]] = []  # no goal of its own: the before/after rows of "audit writes batched"
WRITERS = 8
MANY = BATCH_CHUNK  # records per write_many call: what BatchCheck decides (and audits) together


def _event(n: int) -> AuditEvent:
    """A realistic decision record (what the realistic Check writes), with its own decision id."""
    return AuditEvent(
        decision_id=f"00000000-0000-4000-8000-{n:012d}", time="2026-12-03T10:00:00.000Z", decision="ALLOW",
        reason="allow", message="permitted by policy", api="check", subject="alice", actor="",
        principal_type="User", principal_tenant="acme", resource_type="Invoice", resource_id=f"inv-{n}",
        resource_tenant="acme", action="read", intent="", policy_ids=("viewer-can-read",), grant_id="",
        policy_version="sha256:" + "ab" * 32, issuer="https://issuer.bench.test", token_id="jti-bench")


def _measure(sink: JsonlAuditSink, how: str, seconds: float, max_records: int) -> dict[str, Any]:
    """Append records for ``seconds`` (or ``max_records``); per-call latencies and the record count."""
    latencies: list[float] = []
    counter = {"next": 0}
    guard = threading.Lock()  # hands out record numbers and collects the latencies
    stop_at = time.perf_counter() + seconds

    def claim(count: int) -> int | None:
        with guard:
            if counter["next"] >= max_records or time.perf_counter() >= stop_at:
                return None
            first = counter["next"]
            counter["next"] = first + count
            return first

    def writer(call: Callable[[int], None], count: int) -> None:
        mine: list[float] = []
        while (first := claim(count)) is not None:
            started = time.perf_counter()
            call(first)
            mine.append(time.perf_counter() - started)
        with guard:
            latencies.extend(mine)

    serial = threading.Lock()  # "one at a time": every write waits for the previous one to return

    def one_at_a_time(n: int) -> None:
        with serial:
            sink.write(_event(n))

    def concurrent(n: int) -> None:
        sink.write(_event(n))

    def many(first: int) -> None:
        errors = sink.write_many([_event(first + k) for k in range(MANY)])
        if any(errors):
            raise RuntimeError(f"write_many failed: {next(e for e in errors if e)}")

    plans = {"one at a time": (one_at_a_time, 1, WRITERS), "group commit": (concurrent, 1, WRITERS),
             f"write_many({MANY})": (many, MANY, 1)}
    call, count, threads = plans[how]
    started = time.perf_counter()
    workers = [threading.Thread(target=writer, args=(call, count), name=f"bench-audit-{i}") for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {"latencies": latencies, "records": counter["next"], "seconds": time.perf_counter() - started,
            "threads": threads}


def run(ctx: RunContext) -> Section:
    budget = ctx.budget
    section = Section("audit", "9. Audit appends: one at a time vs batched",
                      ["durability", "how", "writers", "records", "records/s", "p50 per call", "p99 per call",
                       "records per append", "fsyncs per record", "log verified"])
    seconds = max(0.2, budget.run_s / 2.5)
    max_records = budget.max_calls
    labels: list[str] = []
    values: list[float] = []
    for durability in DURABILITIES:
        for how in ("one at a time", "group commit", f"write_many({MANY})"):
            path = ctx.tmp / "audit" / durability / how.replace(" ", "-").strip(")").replace("(", "-") / "a.jsonl"
            sink = JsonlAuditSink(path, durability=durability)
            sink.open()
            try:
                result = _measure(sink, how, seconds, max_records)
                stats = sink.stats()
            finally:
                sink.close()
            report = verify_log(path)
            verified = (report.intact and report.records == result["records"] == stats.records)
            lat = summarize(result["latencies"])
            per_s = result["records"] / result["seconds"] if result["seconds"] else float("nan")
            section.add(durability, how, result["threads"], f"{result['records']:,}", rate(per_s), us(lat.p50),
                        us(lat.p99), f"{stats.records / stats.batches:.1f}" if stats.batches else "–",
                        f"{stats.fsyncs / stats.records:.3f}" if stats.records else "–",
                        "intact, all records" if verified else
                        f"NOT VERIFIED: intact {report.intact}, {report.records} records in the log, "
                        f"{result['records']} written")
            section.data[f"{durability}/{how}"] = {**{k: v for k, v in result.items() if k != "latencies"},
                                                   "latency": lat.to_dict(), "records_per_s": per_s,
                                                   "batches": stats.batches, "fsyncs": stats.fsyncs,
                                                   "verified": verified}
            labels.append(f"{durability}: {how}")
            values.append(per_s)
    section.notes.append(f"{WRITERS} writer threads (one at a time: each write serialised by a lock of the bench's "
                         "own, so every record is its own append, the way the sink worked before batching; group "
                         "commit: the same threads writing concurrently), or one thread calling "
                         f"write_many with {MANY} records. Every write returns only once its record is in the "
                         "log, and in fsync mode on disk; 'fsyncs per record' shows how many records shared each.")
    section.charts.append(Chart("Audit records per second", "records/s", labels, values, log=True))
    return section
