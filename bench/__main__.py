"""``python -m bench [--quick] [--only NAME...] [--out DIR]``: run the scenarios, print the markdown table.

Writes ``results.md``, ``results.json`` and (with matplotlib) ``results.png`` into ``--out`` (default
``bench/results/``, gitignored). Exit code 0 when every selected scenario ran (whether or not its goals
were met), 1 when one failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import tenantgate

from . import audit, batch, core, grpc_floor, load_gate, models, peers, scale, tokens
from .context import RunContext
from .fixture import FULL, QUICK, REPO
from .results import Goal, Report, Section, render_markdown, write

# name -> (run, its goals (unmeasured rows if it fails), title); run in this order. The gRPC scenarios
# share one server, so batch runs right after grpc; sections print in the order (title numbers).
SCENARIOS: dict[str, tuple[Callable[[RunContext], Section], list[tuple[str, str]], str]] = {
    "grpc": (grpc_floor.run, grpc_floor.GOALS, "1. gRPC floor vs Authorizer.Check (server in its own process)"),
    "batch": (batch.run, batch.GOALS, "6. BatchCheck 1/10/100/1,000 items vs single Checks"),
    "core": (core.run, core.GOALS, "2. in-process decide() vs raw cedarpy"),
    "peers": (peers.run, peers.GOALS, "3. pycasbin and regorus on the same tenant-isolation workload"),
    "scale": (scale.run, scale.GOALS, "4. 1 / 100 / 10,000 tenants: latency, memory, load and reload"),
    "tokens": (tokens.run, tokens.GOALS, "5. token verification: cold per algorithm vs cache hit"),
    "audit": (audit.run, audit.GOALS, "9. audit appends: one at a time vs batched (flush and fsync)"),
    "gate": (load_gate.run, load_gate.GOALS, "7. load gate: 2,000 req/s for 30 s, 50 concurrent"),
    "models": (models.run, models.GOALS, "8. server model: grpc.aio vs sync grpc.server (thread pool)"),
}
_SERVER_SCENARIOS = ("grpc", "batch")
_PACKAGES = ("grpcio", "cedarpy", "PyJWT", "cryptography", "protobuf", "pycasbin", "celine-regorus")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=REPO, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head or 'unknown'}{' + uncommitted changes in src/' if dirty else ''}"


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _one_line(err: BaseException, limit: int = 400) -> str:
    """An error for a table cell: its first line and, for a quoted traceback, the last one."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = f"{type(err).__name__}: " + (lines[0] if lines else "")
    if len(lines) > 1:
        text += f" ... {lines[-1]}"
    return text if len(text) <= limit else text[:limit] + "..."


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description="TenantGate benchmarks (issue #7).")
    p.add_argument("--quick", action="store_true", help="run every scenario tiny (seconds): keeps the harness working")
    p.add_argument("--only", nargs="+", metavar="NAME", choices=list(SCENARIOS),
                   help=f"run only these scenarios ({', '.join(SCENARIOS)})")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="where results.* are written")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for name, (_run, _goals, title) in SCENARIOS.items():
            print(f"{name:8} {title}")
        return 0
    selected = [name for name in SCENARIOS if not args.only or name in args.only]
    budget = QUICK if args.quick else FULL
    report = Report(meta={
        "mode": "quick" if args.quick else "full",
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}; "
                   f"load average at start {_load()}",
        "python": platform.python_version(),
        "tenantgate": f"{_git()}, imported from {Path(tenantgate.__file__).parent}",
        "packages": ", ".join(f"{p} {_version(p)}" for p in _PACKAGES),
    })
    failed = 0
    with tempfile.TemporaryDirectory(prefix="tenantgate-bench-") as tmp:
        ctx = RunContext(budget, args.quick, Path(tmp))
        try:
            for index, name in enumerate(selected):
                run, goals, title = SCENARIOS[name]
                print(f"[bench] {name}: {title} ...", file=sys.stderr, flush=True)
                started = time.perf_counter()
                try:
                    section = run(ctx)
                except Exception as err:  # noqa: BLE001 - one broken scenario must not hide the others
                    failed += 1
                    traceback.print_exc(file=sys.stderr)
                    section = Section(name, title, ["scenario", "result"])
                    section.add(name, "FAILED: " + _one_line(err))
                    section.failed(_one_line(err))
                    section.data["traceback"] = traceback.format_exc()
                    section.goals = [Goal(goal, target, "–", None, name) for goal, target in goals]
                section.seconds = time.perf_counter() - started
                report.sections.append(section)
                print(f"[bench] {name}: done in {section.seconds:.1f} s", file=sys.stderr, flush=True)
                if not any(later in _SERVER_SCENARIOS for later in selected[index + 1:]):
                    ctx.close()  # the shared server must not idle beside the in-process scenarios
        finally:
            ctx.close()
    report.meta["load average at end"] = _load()
    report.sections.sort(key=lambda s: s.title)
    paths = write(report, args.out)
    print(render_markdown(report), end="")
    for kind, path in paths.items():
        print(f"{kind}: {path}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
