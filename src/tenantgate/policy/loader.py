"""Read the schema and ``*.cedar`` files of a policy directory and compile them into an ``Engine``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from tenantgate.core.compiler import CompiledPolicies, FileCache, PolicySource, compile_policies
from tenantgate.errors import PolicyDiagnostic, PolicyError

MAX_POLICY_FILE_BYTES = 8 * 1024 * 1024


TENANTS_DIR = "tenants"
ENTITIES_FILE = "entities.json"
STRAY_MESSAGE = ("policy file in a directory TenantGate does not read: policies live in *.cedar directly in the "
                 "policy directory (global) or in tenants/<tenant>/*.cedar (that tenant's); move it there, or "
                 "give it another extension if it is not a policy")


def load_policies(policy_dir: str | Path, schema_file: str | Path | None = None,
                  cache: FileCache | None = None) -> CompiledPolicies:
    """Load and validate the policy directory with the schema.

    Layout: ``*.cedar`` directly in ``policy_dir`` are global (sorted by name); ``tenants/<tenant>/*.cedar``
    are that tenant's own policies, evaluated only for its resources. ``entities.json`` (global) and
    ``tenants/<tenant>/entities.json`` are entity data (``core.entities``). Symlinks are followed (a Kubernetes
    ConfigMap mount is a tree of symlinks). A ``*.cedar`` file anywhere else (outside ``tests/``) is refused
    (``stray_policy_files``). Raises ``PolicyError`` with file:line diagnostics; an invalid set is never
    partially returned.
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
    strays = stray_policy_files(root)
    if not files and not tenants and not strays:
        raise PolicyError(f"no *.cedar policy files in {root}")
    try:
        compiled = compile_policies(schema, [_read(p, root) for p in files], tenants, cache, entities)
    except PolicyError as err:
        if not strays or not err.diagnostics:
            raise
        # One run shows every problem: the files in the wrong place and those of the files read.
        problems = [*strays, *err.diagnostics]
        raise PolicyError(f"{len(problems)} problem(s) in the policy set", problems) from err
    if strays:
        raise PolicyError(f"{len(strays)} problem(s) in the policy set", strays)
    return compiled


def stray_policy_files(root: Path) -> list[PolicyDiagnostic]:
    """A diagnostic for every ``*.cedar`` file under ``root`` that ``load_policies`` would not read.

    Read are ``root/*.cedar`` and ``root/tenants/<tenant>/*.cedar``; a policy anywhere else (``sub/x.cedar``,
    ``tenants/acme/guards/x.cedar``, ``tenants/x.cedar``) would silently not apply while ``tenantgate fmt``
    formats it, so it is refused. Not searched: ``root/tests/`` (policy test suites and their fixtures) and
    ``..``-prefixed directories (Kubernetes' ConfigMap internals, ``..data`` and ``..<timestamp>``, whose
    files are what the top-level names link to). Other files (``*.json``, ``README.md``, ...) are ignored.
    Symlinks are followed, each directory visited once (a link back up the tree cannot loop).
    """
    strays: list[PolicyDiagnostic] = []
    top = os.fspath(root)
    tenant_root = os.path.join(top, TENANTS_DIR)
    # The directories read, by identity: a tenant directory may be a symlink to one elsewhere in the tree,
    # which the walk (each directory once) may reach first by its own name (review finding: `src/acme` with
    # `tenants/acme -> ../src/acme` was refused, `zsrc/acme` was not).
    read = {_identity(top)}
    if os.path.isdir(tenant_root):
        read |= {_identity(os.path.join(tenant_root, name)) for name in os.listdir(tenant_root)
                 if not name.startswith(".") and os.path.isdir(os.path.join(tenant_root, name))}
    for dirpath, filenames in policy_tree(root):
        if _identity(dirpath) in read:
            continue
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if name.endswith(".cedar") and path.is_file():
                strays.append(PolicyDiagnostic(_display(path, root), 1, STRAY_MESSAGE))
    return strays


def _identity(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_dev, st.st_ino)


def policy_tree(root: Path) -> Iterator[tuple[str, list[str]]]:
    """``(directory, sorted file names)`` for every directory under ``root`` that may hold policy files,
    following symlinks. Each directory is visited once, by (device, inode): a symlink back up the tree
    (``tenants/acme/up -> ..``) would otherwise make the walk exponential and never end (review finding: the
    server hung). Left out: the top-level ``tests/`` (suites; a tenant named ``tests`` is walked) and
    ``..``-prefixed directories (Kubernetes' ConfigMap internals, whose files the top-level names link to)."""
    seen: set[tuple[int, int]] = set()
    top = os.fspath(root)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("..") and (d != "tests" or dirpath != top))
        yield dirpath, sorted(filenames)


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
