"""The callgrind probe of scenario 2 runs its calls (here without valgrind, a handful of calls): a broken probe
would otherwise only show in `make bench` as 'a callgrind run failed'."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", ["setup", "raw", "decide"])
def test_the_instruction_probe_runs_each_mode(tmp_path, mode):
    done = subprocess.run([sys.executable, "-m", "bench.instructions", mode, "3", str(tmp_path / mode)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_instruction_probe_refuses_an_unknown_mode(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench.instructions", "nope", "1", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "mode must be one of" in done.stderr
