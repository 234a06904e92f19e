"""Scenario 7: the load gate with Cerbos' parameters (2,000 req/s offered for 30 s, 50 concurrent).

The server is started like ``make serve``: embedded defaults (development issuer, audit log, grant store and
metrics as a fresh clone gets them) in a temporary working copy holding a copy of ``policies/``, with a
free port through ``TENANTGATE_SERVER_LISTEN`` (and ``TENANTGATE_SERVER_METRICS_LISTEN``, so a running
``make serve`` is not disturbed). The token comes from ``tenantgate token mint``. The open-loop load
generator (``bench.client``) runs on the same machine; latency is measured from each call's scheduled time.
Afterwards the server is stopped (SIGTERM, drain) and its audit log is read: every answered decision id must
be there as a ``record_type: decision`` line.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

from . import h2load
from .context import READ_REQUEST, RunContext, run_client
from .fixture import REPO, child_python, free_port, python_env
from .results import Chart, Goal, Section
from .serverproc import ServerProcess
from .stats import ms, rate, us

GOALS = [("load gate p50", "≤ 5 ms"), ("load gate p95", "≤ 15 ms"), ("load gate p99", "≤ 30 ms"),
         ("load gate achieved rate", "≥ 1,800 req/s"), ("load gate errors", "0"),
         ("load gate lost audit records", "0")]
P50, P95, P99 = 0.005, 0.015, 0.030
ACHIEVED_SHARE = 0.9  # 1,800 of 2,000 offered
# h2load: 25 connections x 2 streams = the 50 concurrent calls (a central PDP is reached by many sidecars).
# SO_REUSEPORT places each connection on a worker by hash: with --workers 2, four connections split 3:1 or 4:0
# in 5 cases of 8, ten split 7:3 or worse in 1 case of 3; 25 stay within 60:40 in about 3 cases of 4.
H2LOAD_CONNECTIONS = 25


def audit_records(state_dir: Path, per_file: dict[str, int] | None = None) -> dict[str, str]:
    """Decision id -> decision of every ``record_type: decision`` line in the audit log(s) under ``state_dir``.

    Relies only on one JSON object per line with ``record_type``, ``decision_id`` and ``decision`` (rotated and
    per-worker files included); lines that are not JSON objects are skipped. ``per_file`` (if given) receives
    the number of decision records in each file (one chain per worker: how the workers shared the calls).
    """
    records: dict[str, str] = {}
    for path in sorted(state_dir.rglob("*.jsonl*")):
        before = len(records)
        with open(path, encoding="utf-8", errors="replace") as log:
            for line in log:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("record_type") == "decision":
                    records[str(record.get("decision_id", ""))] = str(record.get("decision", ""))
        if per_file is not None and len(records) > before:
            per_file[path.name] = len(records) - before
    return records


def run(ctx: RunContext) -> Section:
    budget = ctx.budget
    section = Section("gate", "7. Load gate (Cerbos' parameters)", ["measure", "value", "note"])
    for workers in budget.gate_workers:
        _run_gate(ctx, section, workers)
    if h2load.available() is None:
        section.notes.append("h2load is not installed (Debian/Ubuntu: `apt-get install nghttp2-client`; `make bench` "
                             "tries): the gate ran with the Python generator only.")
    else:
        for workers in budget.gate_workers:
            _run_gate(ctx, section, workers, generator="h2load")
    return section


def server_label(workers: int, generator: str = "python") -> str:
    """How a gate run is named in rows and goals: the server, and the generator unless it is the Python one."""
    label = "make serve, 1 process" if workers == 1 else f"serve --workers {workers}"
    return label if generator == "python" else f"{label}, {generator}"


def _run_gate(ctx: RunContext, section: Section, workers: int, generator: str = "python") -> None:
    """One gate run against ``tenantgate serve`` (``--workers N`` when ``workers`` > 1)."""
    budget = ctx.budget
    label = server_label(workers, generator)
    name = f"gate-{workers}-{generator}"
    work = ctx.tmp / name
    work.mkdir()
    shutil.copytree(REPO / "policies", work / "policies")
    address, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = python_env(TENANTGATE_SERVER_LISTEN=address, TENANTGATE_SERVER_METRICS_LISTEN=metrics)
    args = [] if workers == 1 else ["--workers", str(workers)]
    server = ServerProcess(args, cwd=work, address=address, log_dir=ctx.tmp / f"{name}-logs", env=env).start()
    ids_file = ctx.tmp / f"{name}-ids.txt"
    try:
        mint = subprocess.run([child_python(), "-m", "tenantgate.cli.main", "token", "mint", "--tenant", "acme",
                               "--sub", "alice", "--roles", "viewer"], cwd=work, env=env, capture_output=True,
                              text=True, timeout=60)
        if mint.returncode != 0:
            raise RuntimeError(f"token mint failed: {mint.stderr[-800:]}")
        token = mint.stdout.strip()
        if generator == "h2load":
            result = h2load.run(address=address, metrics_url=f"http://{metrics}/metrics", server_pid=server.pid,
                                token=token, request=READ_REQUEST, rate=budget.gate_rate, seconds=budget.gate_seconds,
                                concurrency=budget.gate_concurrency, connections=H2LOAD_CONNECTIONS,
                                warmup_s=1.0 if not ctx.quick else 0.2, work=work)
        else:
            spec = {"address": address, "server_pid": server.pid, "token": token, "request": READ_REQUEST,
                    "deadline_s": 5.0,
                    "open_loop": {"rate": budget.gate_rate, "seconds": budget.gate_seconds,
                                  "concurrency": budget.gate_concurrency, "connections": budget.gate_connections,
                                  "warmup_s": 1.0 if not ctx.quick else 0.2, "ids_file": str(ids_file)}}
            result = run_client(spec, timeout=budget.gate_seconds * 4 + 120)
        rss = server.rss_mib(tree=True)
    finally:
        exit_code = server.stop()
    per_worker: dict[str, int] = {}
    records = audit_records(work / ".tenantgate", per_worker)
    achieved = result["answered"] / result["seconds"] if result["seconds"] else math.nan
    lat, service = result["latency"], result["service_latency"]
    cpu_per = result["server_cpu_s"] / result["answered"] if result["answered"] else math.nan
    if generator == "h2load":
        # Every decided call has its record (written before the answer); calls the server answered OK must
        # all be decisions: fewer ALLOW records than OK answers is a lost record.
        allowed = sum(1 for decision in records.values() if decision == "ALLOW")
        unexpected = len(records) - allowed
        not_ok = sum(n for code, n in result["grpc_codes"].items() if code != "OK")
        errors = not_ok + result["http_errors"] + result["not_sent"] + unexpected
        lost, extra = max(0, result["answered_total"] - allowed), max(0, allowed - result["answered_total"])
        answered_note = f"Checks answered OK incl. warm-up (server metrics): {result['answered_total']:,}"
        error_note = (f"gRPC codes other than OK {not_ok} (server metrics: {result['grpc_codes']}), HTTP errors "
                      f"{result['http_errors']}, unexpected decisions {unexpected}, not sent: {result['not_sent']:,}")
        answered_total = result["answered_total"]
    else:
        answered_ids = {line for line in ids_file.read_text().split() if line}
        errors = result["errors"] + result["unexpected"] + result["not_sent"]
        lost, extra = len(answered_ids - records.keys()), len(records.keys() - answered_ids)
        answered_note = f"answered decisions incl. warm-up: {len(answered_ids):,}"
        error_note = (f"RPC errors {result['error_codes'] or 0}, unexpected decisions {result['unexpected']}, not sent "
                      f"within 2x the duration + 5 s: {result['not_sent']:,}")
        answered_total = len(answered_ids)
    section.data[f"workers={workers}" + ("" if generator == "python" else f",{generator}")] = dict(
        result=result, achieved_per_s=achieved, audit_records=len(records), lost=lost, extra=extra,
        server_exit=exit_code, server_rss_mib=rss)
    rows = [
        ("server", label, ("processes sharing the port with SO_REUSEPORT" if workers > 1 else "as `make serve`")
         + ("; generator h2load (C)" if generator == "h2load" else "; generator Python grpc.aio")),
        ("offered", f"{rate(budget.gate_rate)} for {budget.gate_seconds:.0f} s, {budget.gate_concurrency} concurrent",
         f"{result['offered']:,} calls scheduled over "
         f"{budget.gate_connections if generator == 'python' else H2LOAD_CONNECTIONS} connections"),
        ("achieved", rate(achieved), f"{result['answered']:,} answered in {result['seconds']:.1f} s"),
        *([("latency from scheduled time p50 / p95 / p99",
            f"{ms(lat['p50'])} / {ms(lat['p95'])} / {ms(lat['p99'])}", f"max {ms(lat['max'])}"),
           ("latency from send p50 / p95 / p99",
            f"{ms(service['p50'])} / {ms(service['p95'])} / {ms(service['p99'])}",
            "excludes waiting for a free stream")] if generator == "python" else
          [("latency from send p50 / p95 / p99 (judged)",
            f"{ms(service['p50'])} / {ms(service['p95'])} / {ms(service['p99'])}",
            f"max {ms(service['max'])}; h2load's own per-call time, as ghz reports it"),
           ("send lag behind the schedule p50 / p99", f"{ms(result['send_lag']['p50'])} / "
            f"{ms(result['send_lag']['p99'])}", "h2load's pacing drifts 1-2%; busy streams delay sends further")]),
        ("errors", f"{errors}", error_note),
        ("calls that found all streams busy", f"{result['late_starts']:,}",
         "sent late: their wait counts as latency" if generator == "python" else "sent more than 5 ms behind schedule"),
        ("server CPU per call", us(cpu_per),
         f"server busy {result['server_cpu_s'] / result['seconds']:.0%} of one core (all its processes)"),
        ("client CPU", f"{result['client_cpu_s'] / result['seconds']:.0%} of one core", "the load generator's own"),
        ("audit decision records", f"{len(records):,}", answered_note + (
            "; per worker (its own chain): " + " / ".join(f"{n:,}" for n in per_worker.values())
            if workers > 1 else "")),
        ("lost audit records", f"{lost}", f"records without an answered call: {extra} (e.g. timed out)"),
        ("server exit after SIGTERM", str(exit_code), f"RSS under load {rss:,.0f} MiB (all its processes)"),
    ]
    for row in rows:
        section.add(*row)
    need = ACHIEVED_SHARE * budget.gate_rate
    quick = "" if not ctx.quick else f" (quick: {budget.gate_rate:,.0f} req/s offered for {budget.gate_seconds:.0f} s)"
    checks = [(lat["p50"], P50, ms), (lat["p95"], P95, ms), (lat["p99"], P99, ms)]
    for (name, target), (value, bound, fmt) in zip(GOALS[:3], checks, strict=True):
        section.goals.append(Goal(f"{name} ({label})", target, fmt(value) + quick,
                                  None if not math.isfinite(value) else value <= bound, "gate"))
    section.goals.append(Goal(f"{GOALS[3][0]} ({label})", f"≥ {need:,.0f} req/s", rate(achieved) + quick,
                              None if not math.isfinite(achieved) else achieved >= need, "gate"))
    section.goals.append(Goal(f"{GOALS[4][0]} ({label})", GOALS[4][1], str(errors), errors == 0, "gate"))
    section.goals.append(Goal(f"{GOALS[5][0]} ({label})", GOALS[5][1], f"{lost} of {answered_total:,}",
                              lost == 0, "gate"))
    section.charts.append(Chart(f"Load gate latency (ms), {label}", "ms",
                                ["p50 from schedule", "p95 from schedule", "p99 from schedule", "p99 from send"],
                                [lat["p50"] * 1e3, lat["p95"] * 1e3, lat["p99"] * 1e3, service["p99"] * 1e3]))
