"""Read the schema and ``*.cedar`` files of a policy directory and compile them into an ``Engine``."""

from __future__ import annotations

import os
from pathlib import Path

from tenantgate.core.compiler import CompiledPolicies, FileCache, PolicySource, compile_policies
from tenantgate.errors import PolicyDiagnostic, PolicyError

MAX_POLICY_FILE_BYTES = 8 * 1024 * 1024


TENANTS_DIR = "tenants"
ENTITIES_FILE = "entities.json"


def load_policies(policy_dir: str | Path, schema_file: str | Path | None = None,
                  cache: FileCache | None = None) -> CompiledPolicies:
    """Load and validate the policy directory with the schema.

    Layout: ``*.cedar`` directly in ``policy_dir`` are global (sorted by name); ``tenants/<tenant>/*.cedar``
    are that tenant's own policies, evaluated only for its resources. ``entities.json`` (global) and
    ``tenants/<tenant>/entities.json`` are entity data (``core.entities``). Symlinks are followed (a Kubernetes
    ConfigMap mount is a tree of symlinks). Raises ``PolicyError`` with file:line diagnostics; an invalid set
    is never partially returned.
    """
    root = snapshot_dir(Path(policy_dir))
    schema_path = Path(schema_file) if schema_file else root / "schema.cedarschema"
    if not root.is_dir():
        raise PolicyError(f"policy directory not found: {root}")
    schema = _read(schema_path, root)
    files = sorted(p for p in root.glob("*.cedar") if p.is_file())
    tenant_root = root / TENANTS_DIR
    tenants: dict[str, list[PolicySource]] = {}
    entities: dict[str, PolicySource] = {}
    if (root / ENTITIES_FILE).is_file():
        entities[""] = _read(root / ENTITIES_FILE, root)
    if tenant_root.is_dir():
        for tenant_dir in sorted(d for d in tenant_root.iterdir() if d.is_dir() and not d.name.startswith(".")):
            tenants[tenant_dir.name] = [_read(p, root) for p in sorted(tenant_dir.glob("*.cedar")) if p.is_file()]
            if (tenant_dir / ENTITIES_FILE).is_file():
                entities[tenant_dir.name] = _read(tenant_dir / ENTITIES_FILE, root)
    if not files and not tenants:
        raise PolicyError(f"no *.cedar policy files in {root}")
    return compile_policies(schema, [_read(p, root) for p in files], tenants, cache, entities)


def snapshot_dir(root: Path) -> Path:
    """The directory to read one consistent snapshot from.

    A Kubernetes ConfigMap mount is ``root/<file> -> ..data/<file>`` with ``..data -> ..<timestamp>/``, which
    kubelet swaps atomically. Reading through ``root`` file by file could mix two versions if the swap lands
    in between; resolving ``..data`` once and reading everything from that directory cannot.
    """
    data = root / "..data"
    if data.is_symlink() and data.is_dir():
        return Path(os.path.realpath(data))
    return root


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
