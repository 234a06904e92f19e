"""The soak harness stays runnable: a few seconds of it, with its invariants, in make test."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_short_soak_passes_its_invariants():
    out = subprocess.run([sys.executable, "-m", "soak", "--minutes", "0.1", "--rate", "100"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "cross-tenant allows without a grant: 0" in out.stdout and "audit chain: verifies" in out.stdout
