"""Scenario 8 (issue #7): the server model, grpc.aio (production) vs sync grpc.server on a thread pool.

The same Check work is served by one server process per model, started one after the other (never two at
once), each on the same generated config (own state directory and port) and driven by the same client
process at the same concurrency levels. Server CPU per call comes from the server process's own
accounting. The "kept" note is computed from the run: at 16 in flight, the sync server is kept only when it
is both cheaper per call and faster than grpc.aio *without* the gRPC call metrics (like for like: a sync
production server would need its own call metrics too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .context import READ_REQUEST, RunContext, run_client
from .fixture import BenchIssuer, child_python, free_port, write_config
from .results import Chart, Section
from .serverproc import ServerProcess
from .stats import rate, ratio, times, us

GOALS: list[tuple[str, str]] = []  # no goal: the scenario decides which model to keep
CONCURRENCY = (16, 64)
DECISION_CONCURRENCY = 16
AIO, AIO_BARE = "aio", "aio-bare"


class ModelServerProcess(ServerProcess):
    """``python -m bench.modelserver ARGS``, started, waited for and stopped like ``tenantgate serve``."""

    def __init__(self, args: Sequence[str], *, cwd: Path, address: str, log_dir: Path) -> None:
        super().__init__(args, cwd=cwd, address=address, log_dir=log_dir)
        self.args = [child_python(), "-m", "bench.modelserver", *args]


@dataclass(frozen=True, slots=True)
class Model:
    key: str
    label: str
    args: tuple[str, ...]  # bench.modelserver arguments after --config; () = the real `tenantgate serve`


def models(threads: Sequence[int]) -> list[Model]:
    return [Model(AIO, "grpc.aio (tenantgate serve)", ()),
            Model(AIO_BARE, "grpc.aio, no gRPC call metrics", ("--model", "aio")),
            *(Model(f"sync-{w}", f"sync grpc.server, {w} threads", ("--model", "sync", "--threads", str(w)))
              for w in threads)]


def _measure(ctx: RunContext, model: Model, issuer: BenchIssuer, token: str) -> list[dict[str, Any]]:
    """Start ``model``'s server, run the closed-loop client at every level, stop it (SIGTERM)."""
    budget = ctx.budget
    directory = ctx.tmp / "models" / model.key
    directory.mkdir(parents=True)
    address = f"127.0.0.1:{free_port()}"
    args = ["--config", str(write_config(directory, issuer, listen=address))]
    logs = directory / "logs"
    server = (ModelServerProcess([*args, *model.args], cwd=directory, address=address, log_dir=logs)
              if model.args else ServerProcess(args, cwd=directory, address=address, log_dir=logs))
    runs = [{"name": f"{model.key}@{c}", "rpc": "check", "concurrency": c, "warmup_s": budget.warmup_s,
             "run_s": budget.run_s, "max_calls": budget.max_calls} for c in CONCURRENCY]
    server.start()
    try:
        spec = {"address": address, "server_pid": server.pid, "token": token, "request": READ_REQUEST, "runs": runs}
        results: list[dict[str, Any]] = run_client(spec, 120 + len(runs) * (budget.warmup_s + budget.run_s) * 3)
    finally:
        exit_code = server.stop()
    for r in results:
        r.update(model=model.key, server_exit=exit_code)
    return results


def _cpu(r: dict[str, Any]) -> float:
    return r["server_cpu_s"] / r["calls"] if r["calls"] else math.nan


def _throughput(r: dict[str, Any]) -> float:
    return r["calls"] / r["seconds"] if r["seconds"] else math.nan


def _compare(section: Section, label: str, c: int, r: dict[str, Any], base: dict[str, Any]) -> None:
    """A ratio row ``r / base``, and its figures in ``section.data``."""
    figures = {"throughput": ratio(_throughput(r), _throughput(base)),
               "p50": ratio(r["latency"]["p50"], base["latency"]["p50"]),
               "p99": ratio(r["latency"]["p99"], base["latency"]["p99"]),
               "server_cpu_per_call": ratio(_cpu(r), _cpu(base))}
    section.data.setdefault("ratios", {})[f"{r['model']}/{base['model']}@{c}"] = figures
    section.add(label, c, "", *(times(v) for v in figures.values()), "")


def _kept(by: dict[tuple[str, int], dict[str, Any]], labels: dict[str, str]) -> tuple[str, str]:
    """(kept model key, the sentence saying why), from the figures at DECISION_CONCURRENCY in flight."""
    c = DECISION_CONCURRENCY
    syncs = [r for (key, level), r in by.items() if level == c and key.startswith("sync-")]
    aio = by.get((AIO_BARE, c)) or by.get((AIO, c))
    if not syncs or aio is None:
        return AIO, "kept: grpc.aio (nothing to compare at 16 in flight)"
    best = min(syncs, key=_cpu)
    cpu = ratio(_cpu(best), _cpu(aio))
    speed = ratio(_throughput(best), _throughput(aio))
    production = by.get((AIO, c))
    vs_production = ("" if production is None or production is aio else
                     f"; against tenantgate serve with its call metrics: "
                     f"{times(ratio(_cpu(best), _cpu(production)))} "
                     f"CPU/call, {times(ratio(_throughput(best), _throughput(production)))} throughput")
    sync_wins = cpu < 1.0 and speed > 1.0
    kept = best["model"] if sync_wins else AIO
    verdict = f"{'cheaper' if cpu < 1.0 else 'costlier'} per call and {'faster' if speed > 1.0 else 'slower'}"
    return kept, (f"kept: {labels[kept]}. At {c} in flight the best sync server ({labels[best['model']]}) costs "
                  f"{times(cpu)} the server CPU per call of {labels[aio['model']]} "
                  f"({us(_cpu(best))} vs {us(_cpu(aio))}) at "
                  f"{times(speed)} its throughput ({rate(_throughput(best))} vs {rate(_throughput(aio))}): "
                  f"sync is {verdict}{vs_production}. Sync is kept only when cheaper per call and faster.")


def run(ctx: RunContext) -> Section:
    section = Section("models", "8. Server model: grpc.aio vs sync grpc.server (thread pool)",
                      ["model", "in flight", "calls", "throughput", "p50", "p99", "server CPU/call", "errors"])
    directory = ctx.tmp / "models"
    directory.mkdir(parents=True, exist_ok=True)
    issuer = BenchIssuer(directory, "ES256")
    token = issuer.mint("acme", "alice", ("viewer",))
    chosen = models(ctx.budget.model_threads)
    labels = {m.key: m.label for m in chosen}
    results = [r for model in chosen for r in _measure(ctx, model, issuer, token)]
    section.data["runs"] = results
    by = {(r["model"], r["concurrency"]): r for r in results}
    for c in CONCURRENCY:
        for model in chosen:
            r = by[(model.key, c)]
            section.add(model.label, c, f"{r['calls']:,}", rate(_throughput(r)), us(r["latency"]["p50"]),
                        us(r["latency"]["p99"]), us(_cpu(r)), r["errors"] + r["unexpected"])
        aio = by[(AIO, c)]
        _compare(section, "ratio aio without call metrics / aio", c, by[(AIO_BARE, c)], aio)
        for model in (m for m in chosen if m.key.startswith("sync-")):
            _compare(section, f"ratio sync {model.key.removeprefix('sync-')} threads / aio", c,
                     by[(model.key, c)], aio)
    kept, why = _kept(by, labels)
    section.data["kept"] = kept
    section.notes.append(why + (" (quick run: too short to decide anything)" if ctx.quick else ""))
    section.notes.append("Each model runs in its own server process, one after the other, on the same config "
                         "(own state directory and port) with the same client. `tenantgate serve` carries its gRPC "
                         "call metrics (async wrappers of the servicer methods) and background loops (policy "
                         "polling, grant sweep); the sync server cannot use those async wrappers, so it has none "
                         "(compare it with the row without them). Every model runs the production "
                         "AuthorizerService.Check, decision metrics included.")
    section.charts.append(Chart("Server model: server CPU per Check", "µs",
                                [f"{labels[r['model']]} @{r['concurrency']}" for r in results],
                                [_cpu(r) * 1e6 for r in results]))
    return section
