"""Read the schema and ``*.cedar`` files of a policy directory and compile them into an ``Engine``."""

from __future__ import annotations

import threading
from pathlib import Path

from tenantgate.core.engine import CompiledPolicies, Engine, PolicySource, compile_policies
from tenantgate.errors import PolicyDiagnostic, PolicyError

MAX_POLICY_FILE_BYTES = 8 * 1024 * 1024


def load_policies(policy_dir: str | Path, schema_file: str | Path | None = None) -> CompiledPolicies:
    """Load and validate every ``*.cedar`` file directly in ``policy_dir`` (sorted by name) with the schema.

    Raises ``PolicyError`` with file:line diagnostics; an invalid set is never partially returned.
    """
    root = Path(policy_dir)
    schema_path = Path(schema_file) if schema_file else root / "schema.cedarschema"
    if not root.is_dir():
        raise PolicyError(f"policy directory not found: {root}")
    schema = _read(schema_path, root)
    files = sorted(p for p in root.glob("*.cedar") if p.is_file())
    if not files:
        raise PolicyError(f"no *.cedar policy files in {root}")
    return compile_policies(schema, [_read(p, root) for p in files])


def _read(path: Path, root: Path) -> PolicySource:
    shown = _display(path, root)
    try:
        if path.stat().st_size > MAX_POLICY_FILE_BYTES:
            raise PolicyError("policy file too large", [PolicyDiagnostic(shown, 1, "larger than 8 MiB")])
        return PolicySource(shown, path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise PolicyError(f"file not found: {shown}") from err
    except UnicodeDecodeError as err:
        raise PolicyError("policy file is not UTF-8", [PolicyDiagnostic(shown, 1, str(err))]) from err
    except OSError as err:
        raise PolicyError(f"cannot read {shown}: {err.strerror}") from err


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


class PolicyStore:
    """Holds the current ``Engine``; ``current()`` is what ``DecisionPoint`` calls once per decision.

    ``replace`` swaps in a new engine atomically (a single reference assignment); decisions already
    running keep the engine they read.
    """

    def __init__(self, compiled: CompiledPolicies) -> None:
        self._engine = Engine(compiled)
        self._lock = threading.Lock()

    def current(self) -> Engine:
        return self._engine

    def replace(self, compiled: CompiledPolicies) -> None:
        with self._lock:
            self._engine = Engine(compiled)
