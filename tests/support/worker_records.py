"""What a `serve --workers N` cluster leaves behind: each worker's audit chain (its decisions, `audit verify
--all-workers`) and the sums on the supervisor's /metrics."""

import json
import subprocess
from pathlib import Path
from urllib.request import urlopen

from support.workers import TENANTGATE, _env


def _decisions(live: Path) -> dict[Path, list[dict]]:
    """Decision records of every worker's chain, by file."""
    files = [live, *sorted(live.parent.glob(f"{live.stem}-w*{live.suffix}"))]
    return {f: [r for r in map(json.loads, f.read_text().splitlines()) if r["record_type"] == "decision"]
            for f in files}


def _metric_sum(url: str, name: str) -> float:
    text = urlopen(url, timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ")))


def _verify_all_workers(audit: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*TENANTGATE, "audit", "verify", "--all-workers", str(audit)], env=_env(),
                          capture_output=True, text=True, timeout=60)
