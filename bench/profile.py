"""Profile the server's Check path under load: ``python -m bench.profile [--seconds 15] [--concurrency 16]``.

Starts the server of scenario 1 (its own process), drives it with the closed-loop client, and samples the
server with py-spy (``pip install py-spy``; attaching needs ptrace rights, e.g. root or
``kernel.yama.ptrace_scope=0``). Prints where the server's samples go: by innermost TenantGate function
(its own code plus the libraries it calls), by leaf function, and inclusive; writes the raw collapsed
stacks to ``--out``/profile-<rpc>.txt. Use it before and after a change to the Check path.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from .context import RunContext
from .fixture import FULL, REPO, child_python, python_env

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")


def _frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for frame in stack.split(";"):
        match = _FRAME.match(frame.strip())
        out.append((match["func"], match["file"]) if match else (frame.strip(), ""))
    return out


def _owner(frames: list[tuple[str, str]]) -> str:
    """The innermost TenantGate frame of a stack (root first), else the leaf's module: who spends it."""
    for func, file in reversed(frames):
        if "tenantgate" in file and "/v1/" not in file:
            return f"{func} ({file})"
    func, file = frames[-1] if frames else ("?", "")
    return f"[no TenantGate frame] {file or func}"


def summarize(raw: Path, top: int) -> str:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    owners: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = _frames(stack)
        total += n
        self_time[f"{frames[-1][0]} ({frames[-1][1]})"] += n
        owners[_owner(frames)] += n
        for name in {f"{func} ({file})" for func, file in frames}:
            inclusive[name] += n
    if not total:
        return "no samples (is py-spy allowed to attach?)"

    def table(title: str, counts: Counter[str]) -> list[str]:
        rows = [f"\n{title}", f"{'share':>7}  function"]
        rows += [f"{100 * n / total:6.1f}%  {name}" for name, n in counts.most_common(top)]
        return rows

    lines = [f"{total:,} samples of the server process (threads with work; idle waits excluded)"]
    lines += table("By innermost TenantGate function (its own code + the libraries it calls):", owners)
    lines += table("By leaf function (self time):", self_time)
    lines += table("Inclusive (anywhere on the stack):", inclusive)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rpc", choices=("check", "health", "batch"), default="check")
    p.add_argument("--items", type=int, default=100, help="items per BatchCheck with --rpc batch")
    p.add_argument("--native", action="store_true", help="also sample native frames (grpc core, cedarpy)")
    p.add_argument("--gil", action="store_true", help="only samples holding the GIL (Python work, no waits)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / f"profile-{args.rpc}.txt"
    with tempfile.TemporaryDirectory(prefix="tenantgate-profile-") as tmp:
        ctx = RunContext(FULL, False, Path(tmp))
        try:
            server = ctx.shared_server()
            run = {"name": "profile", "rpc": args.rpc, "items": args.items, "concurrency": args.concurrency,
                   "warmup_s": 1.0, "run_s": args.seconds + 3.0, "max_calls": 10_000_000}
            client = subprocess.Popen([child_python(), "-m", "bench.client"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, env=python_env())
            assert client.stdin is not None
            client.stdin.write(json.dumps(server.spec(runs=[run])))
            client.stdin.close()
            time.sleep(1.5)
            common = ["--pid", str(server.process.pid), "--duration", str(int(args.seconds)), "--rate", "250",
                      *(["--native"] if args.native else ["--nonblocking"]), *(["--gil"] if args.gil else [])]
            recorded = subprocess.run([spy, "record", *common, "--format", "raw", "-o", str(raw)],
                                      capture_output=True, text=True, timeout=args.seconds + 120)
            assert client.stdout is not None
            out = client.stdout.read()
            client.wait(timeout=60)
        finally:
            ctx.close()
    if recorded.returncode != 0:
        print(f"py-spy failed: {recorded.stderr[-1500:]}", file=sys.stderr)
        return 1
    result = json.loads(out)[0]
    print(f"load: {result['calls']:,} {args.rpc} calls at {args.concurrency} in flight in {result['seconds']:.1f} s "
          f"({result['calls'] / result['seconds']:,.0f}/s), server CPU/call "
          f"{1e6 * result['server_cpu_s'] / max(1, result['calls']):,.0f} µs (while sampled)")
    print(summarize(raw, args.top))
    print(f"\nraw stacks: {raw}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
