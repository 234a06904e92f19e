"""Scenario 1: the gRPC floor (empty unary RPC, grpc.health.v1.Health/Check) vs Authorizer.Check.

Both RPCs are served by the same server process (same grpc.aio server, options and process model) and
driven by the same client process at the same concurrency levels, interleaved level by level. Server CPU
per call comes from the server process's own accounting (/proc/<pid>/stat utime + stime).
"""

from __future__ import annotations

import math
from typing import Any

from . import grpc_instructions
from .context import RunContext, run_client
from .results import Chart, Goal, Section
from .stats import rate, ratio, times, us

GOAL_CONCURRENCY = 16
CPU_GOAL = 1.5
GOALS = [("server CPU per Check vs per empty RPC", f"≤ {CPU_GOAL}x"),
         ("the same, a new resource every call (Cedar asked)", f"≤ {CPU_GOAL}x")]


LABEL = {"health": "floor: Health/Check", "check": "Authorizer.Check",
         "check_new": "Authorizer.Check, a new resource every call"}
RATIO_LABEL = {"check": "ratio Check / floor", "check_new": "ratio Check (new resource) / floor"}


def _rpcs(concurrency: int) -> tuple[str, ...]:
    """The RPCs measured at ``concurrency``: the floor first; requests never seen before at the goal's level."""
    return ("health", "check", "check_new") if concurrency == GOAL_CONCURRENCY else ("health", "check")


def _per_call(run: dict[str, Any], key: str) -> float:
    return run[key] / run["calls"] if run["calls"] else math.nan


def run(ctx: RunContext) -> Section:
    section = Section("grpc", "1. gRPC floor (empty RPC) vs Authorizer.Check",
                      ["RPC", "in flight", "calls", "throughput", "p50", "p99", "server CPU/call",
                       "client CPU/call", "errors"])
    budget = ctx.budget
    server = ctx.shared_server()
    runs = [{"name": f"{rpc}@{c}", "rpc": rpc, "concurrency": c, "warmup_s": budget.warmup_s,
             "run_s": budget.run_s, "max_calls": budget.max_calls}
            for c in budget.concurrency for rpc in _rpcs(c)]
    timeout = 120 + len(runs) * (budget.warmup_s + budget.run_s) * 3
    results = run_client(server.spec(runs=runs), timeout)
    section.data["runs"] = results
    by = {(r["rpc"], r["concurrency"]): r for r in results}
    for c in budget.concurrency:
        for rpc in _rpcs(c):
            r = by[(rpc, c)]
            lat = r["latency"]
            section.add(LABEL[rpc], c, f"{r['calls']:,}", rate(r["calls"] / r["seconds"]), us(lat["p50"]),
                        us(lat["p99"]), us(_per_call(r, "server_cpu_s")), us(_per_call(r, "client_cpu_s")),
                        r["errors"] + r["unexpected"])
        floor = by[("health", c)]
        for rpc in _rpcs(c)[1:]:
            check = by[(rpc, c)]
            cpu_ratio = ratio(_per_call(check, "server_cpu_s"), _per_call(floor, "server_cpu_s"))
            section.data[f"cpu_ratio@{c}" + ("" if rpc == "check" else "_new")] = cpu_ratio
            section.add(RATIO_LABEL[rpc], c, "",
                        times(ratio(check["calls"] / check["seconds"], floor["calls"] / floor["seconds"])),
                        times(ratio(check["latency"]["p50"], floor["latency"]["p50"])),
                        times(ratio(check["latency"]["p99"], floor["latency"]["p99"])),
                        times(cpu_ratio),
                        times(ratio(_per_call(check, "client_cpu_s"), _per_call(floor, "client_cpu_s"))), "")
    floor = by.get(("health", GOAL_CONCURRENCY))
    for (name, target), rpc, suffix in zip(GOALS, ("check", "check_new"), ("", "_new"), strict=True):
        goal_ratio = section.data.get(f"cpu_ratio@{GOAL_CONCURRENCY}{suffix}", math.nan)
        check = by.get((rpc, GOAL_CONCURRENCY))
        measured = "–"
        if check and floor:
            measured = (f"{times(goal_ratio)} ({us(_per_call(check, 'server_cpu_s'))} vs "
                        f"{us(_per_call(floor, 'server_cpu_s'))}, {GOAL_CONCURRENCY} in flight)")
        section.goals.append(Goal(name, target, measured,
                                  None if not math.isfinite(goal_ratio) else goal_ratio <= CPU_GOAL, "grpc"))
    section.notes.append("Server and client are separate processes on the same 2-core machine, so throughput "
                         "is bounded by both; CPU per call is the server's own (all its threads).")
    section.notes.append("Authorizer.Check repeats one realistic request, as an enforcement point asking again "
                         "for the same caller and resource does: after the first call Cedar's outcome comes from "
                         "the decision memo (policies.decision_cache_size); the token is verified from its cache, "
                         "and every call is still checked and audited. The 'new resource every call' row asks "
                         f"about a resource never asked for before ({GOAL_CONCURRENCY} in flight): Cedar on every "
                         "call, with the caller's parsed entity reused and the resource's parsed and validated. "
                         "Each has its own verdict.")
    _add_instructions(section, ctx)
    section.charts.append(Chart("Server CPU per call", "µs",
                                [f"{LABEL[r['rpc']]} @{r['concurrency']}" for r in results],
                                [_per_call(r, "server_cpu_s") * 1e6 for r in results]))
    section.charts.append(Chart("Throughput (calls/s)", "calls/s",
                                [f"{LABEL[r['rpc']]} @{r['concurrency']}" for r in results],
                                [r["calls"] / r["seconds"] if r["seconds"] else math.nan for r in results]))
    return section


def _add_instructions(section: Section, ctx: RunContext) -> None:
    """The server's instructions per call under callgrind (``grpc_instructions``): the same ratio without the
    machine's load, cache misses and kernel time. Full runs only (about four minutes)."""
    if ctx.quick:
        section.notes.append("Server instruction counts: not taken in --quick mode.")
        return
    try:
        counts = grpc_instructions.measure(ctx.tmp / "grpc-instructions")
    except (RuntimeError, OSError) as err:
        section.notes.append(f"Server instruction counts: not taken ({err}).")
        return
    section.data["instructions"] = counts
    calls, c = f"{counts['calls']:,}", grpc_instructions.IN_FLIGHT
    section.add("floor: Health/Check, server instructions (callgrind)", c, calls, "", "", "",
                f"{counts['health'] / 1000:,.0f}k instr.", "", counts["errors"])
    section.add("Authorizer.Check, server instructions (callgrind)", c, calls, "", "", "",
                f"{counts['check'] / 1000:,.0f}k instr.", "", "")
    section.add("ratio Check / floor, instructions", c, "", "", "", "", times(ratio(counts["check"], counts["health"])),
                "", "")
    section.add("Authorizer.Check, a new resource every call, server instructions (callgrind)", c, calls, "", "", "",
                f"{counts['check_new'] / 1000:,.0f}k instr.", "", "")
    section.add("ratio Check (new resource) / floor, instructions", c, "", "", "", "",
                times(ratio(counts["check_new"], counts["health"])), "", "")
    section.notes.append("Instruction rows: servers configured alike under valgrind's callgrind (one per RPC and "
                         f"one making no calls, subtracted); {calls} calls at {c} in flight after a warm-up, every "
                         "server thread counted. Repeatable whatever else the machine does (an idle server also "
                         "runs about 1M instructions per second of its timers, about 2% here); blind to cache "
                         "misses and kernel time, which the CPU rows include. The goal is judged on the CPU rows.")
