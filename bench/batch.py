"""Scenario 6: BatchCheck with 1, 10, 100 and 1,000 items vs single Checks, on the server of scenario 1.

Every item is the realistic request (acme viewer reads an acme invoice; ids differ) under the batch's
shared token. Single Checks are measured in the same run on the same server at 1 and 16 in flight, batches
at 1 and 2 in flight; the goal compares the better BatchCheck(100) rate with the better single-Check rate.
"""

from __future__ import annotations

import math
from typing import Any

from .context import RunContext, run_client
from .results import Chart, Goal, Section
from .stats import rate, ratio, times, us

GOALS = [("BatchCheck(100) decisions/s vs single Checks", "≥ 3x")]
BATCH_GOAL = 3.0
GOAL_ITEMS = 100


def _dps(r: dict[str, Any]) -> float:
    return r["decisions"] / r["seconds"] if r["seconds"] else math.nan


def run(ctx: RunContext) -> Section:
    budget = ctx.budget
    section = Section("batch", "6. BatchCheck vs single Checks",
                      ["call", "items", "in flight", "calls", "decisions/s", "p50 per call", "p99 per call",
                       "server CPU/decision", "vs best single Check", "errors"])
    server = ctx.shared_server()
    base = {"warmup_s": budget.warmup_s, "run_s": budget.run_s, "max_calls": budget.max_calls}
    runs = [{"name": "check@1", "rpc": "check", "concurrency": 1, **base},
            {"name": "check@16", "rpc": "check", "concurrency": 16, **base}]
    runs += [{"name": f"batch{n}@{c}", "rpc": "batch", "items": n, "concurrency": c, **base}
             for c in budget.batch_concurrency for n in budget.batch_sizes]
    timeout = 180 + len(runs) * (budget.warmup_s + budget.run_s) * 4
    results = run_client(server.spec(runs=runs), timeout)
    section.data["runs"] = results
    singles = [r for r in results if r["rpc"] == "check"]
    best_single = max((_dps(r) for r in singles), default=math.nan)
    section.data["best_single_decisions_per_s"] = best_single
    for r in results:
        lat = r["latency"]
        cpu = r["server_cpu_s"] / r["decisions"] if r["decisions"] else math.nan
        name = "Check" if r["rpc"] == "check" else "BatchCheck"
        section.add(name, r.get("items", 1), r["concurrency"], f"{r['calls']:,}", rate(_dps(r)), us(lat["p50"]),
                    us(lat["p99"]), us(cpu), times(ratio(_dps(r), best_single)), r["errors"] + r["unexpected"])
    targets = [r for r in results if r["rpc"] == "batch" and r.get("items") == GOAL_ITEMS]
    target = max(targets, key=_dps, default=None)
    value = ratio(_dps(target), best_single) if target else math.nan
    section.data["goal_ratio"] = value
    measured = (f"{times(value)} ({rate(_dps(target))} at {target['concurrency']} in flight vs "
                f"{rate(best_single)})" if target else "–")
    section.goals.append(Goal(GOALS[0][0], GOALS[0][1], measured,
                              None if not math.isfinite(value) else value >= BATCH_GOAL, "batch"))
    section.notes.append("'vs best single Check' divides by the better single-Check rate of this run; the goal "
                         "takes the better BatchCheck(100) rate of the in-flight levels run.")
    section.charts.append(Chart("Decisions/s: single Checks vs BatchCheck", "decisions/s",
                                [f"Check @{r['concurrency']}" if r["rpc"] == "check"
                                 else f"Batch {r['items']} @{r['concurrency']}" for r in results],
                                [_dps(r) for r in results]))
    return section
