"""``serve`` keeps gRPC's C core to errors, and does so before gRPC is imported (it reads the variable then)."""

import os
import subprocess
import sys

from tenantgate.cli.serve import quiet_grpc_core

PROBE = """
import os, sys
from tenantgate.cli import main, serve
main._parser()  # every command registered: what runs before serve's handler
assert "grpc" not in sys.modules, "gRPC imported before serve could set GRPC_VERBOSITY"
serve.quiet_grpc_core()
print(os.environ["GRPC_VERBOSITY"])
"""


def _probe(**env: str) -> str:
    kept = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "PYTHONPATH")}
    clean = {**kept, **env}
    result = subprocess.run([sys.executable, "-c", PROBE], env=clean, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_grpc_is_not_imported_before_serve_sets_its_verbosity_to_errors():
    assert _probe() == "ERROR"


def test_an_operators_own_grpc_verbosity_wins(monkeypatch):
    assert _probe(GRPC_VERBOSITY="DEBUG") == "DEBUG"
    monkeypatch.setenv("GRPC_VERBOSITY", "INFO")
    quiet_grpc_core()
    assert os.environ["GRPC_VERBOSITY"] == "INFO"


def test_serve_called_after_grpc_was_imported_says_the_setting_came_too_late(monkeypatch):
    # Review finding: embedded (gRPC already imported), setting the variable silently did nothing. serve logs a
    # warning once its logging is set up (so a configuration error still comes first, and alone).
    import grpc  # noqa: F401 - imported first, as an embedding program would

    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)
    assert quiet_grpc_core() is True
    monkeypatch.setenv("GRPC_VERBOSITY", "ERROR")  # set by the operator: nothing to say
    assert quiet_grpc_core() is False
