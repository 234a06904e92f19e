"""Read the schema and ``*.cedar`` files of a policy directory and compile them into an ``Engine``."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tenantgate.core.compiler import (
    DEFAULT_TENANT_LIMITS,
    CompiledPolicies,
    FileCache,
    PolicySource,
    TenantLimits,
    compile_policies,
)
from tenantgate.errors import PolicyDiagnostic, PolicyError
from tenantgate.paths import NotRegularFile, open_regular
from tenantgate.policy.tenantdirs import (
    ENTITIES_FILE,
    TENANTS_DIR,
    UNREADABLE_MESSAGE,
    display,
    policy_files,
    present,
    shared_tenant_dirs,
    tenant_directories,
    tenant_entries,
    tenant_files,
)

MAX_POLICY_FILE_BYTES = 8 * 1024 * 1024


DEFAULT_SCHEMA = "schema.cedarschema"
SNAPSHOT_LINK = "..data"
# Non-blocking: opening a FIFO for reading would otherwise wait for a writer forever (review finding: the blocked
# open held the reload lock and no later change was ever applied). No effect on reads of regular files.
_READ_CHUNK = 1024 * 1024
NOT_REGULAR_MESSAGE = ("not a regular file (a FIFO, device, socket or directory): policy, schema and entity files "
                       "must be regular files")
OUTSIDE_SNAPSHOT_MESSAGE = ("not read: this policy directory has a ..data link (a Kubernetes ConfigMap layout), so "
                            "only what ..data holds is read, and this is not a link into ..data; put it into the "
                            "ConfigMap, or remove it (tenant files: mount them through the same volume, e.g. a "
                            "projected volume with items paths tenants/<tenant>/<file>, as deploy/kubernetes does)")
ESCAPING_LINK_MESSAGE = ("not walked: a directory link in a tenant's directory that resolves outside the policy "
                         "directory and that tenant's own; a tenant's files must be inside tenants/<tenant>/")
STRAY_MESSAGE = ("policy file in a directory TenantGate does not read: policies live in *.cedar directly in the "
                 "policy directory (global) or in tenants/<tenant>/*.cedar (that tenant's); move it there, or "
                 "give it another extension if it is not a policy")


@dataclass(frozen=True, slots=True)
class TenantFiles:
    """What a tenant's directory held when its set was loaded: its policy files and its entity file, and where
    the directory resolved to then (``directory``, "" when not known)."""

    policies: tuple[PolicySource, ...]
    entities: PolicySource | None
    directory: str = ""


def load_policies(policy_dir: str | Path, schema_file: str | Path | None = None,
                  cache: FileCache | None = None,
                  limits: TenantLimits = DEFAULT_TENANT_LIMITS, *,
                  held: Mapping[str, TenantFiles | None] | None = None,
                  used: dict[str, TenantFiles] | None = None, known: Collection[str] = ()) -> CompiledPolicies:
    """Load and validate the policy directory with the schema.

    Layout: ``*.cedar`` directly in ``policy_dir`` are global (sorted by name); ``tenants/<tenant>/*.cedar``
    are that tenant's own policies, evaluated only for its resources. ``entities.json`` (global) and
    ``tenants/<tenant>/entities.json`` are entity data (``core.entities``). Symlinks are followed (a Kubernetes
    ConfigMap mount is a tree of symlinks); with a ``..data`` link everything, the default schema included, is
    read from the one directory it resolves to (``snapshot_dir``), and a top-level entry that is not a link into
    it is refused (``outside_snapshot``). A ``*.cedar`` file anywhere else (outside ``tests/``) is refused
    (``stray_policy_files``), and so is a policy, schema or entity file that is not a regular file (a FIFO, a
    device, a dangling or looping symlink): every file is read by ``read_text_file``. Raises ``PolicyError``
    with file:line diagnostics; an invalid set is never partially returned.

    ``held`` (``holdback.load_holding_back``): tenants whose directories are not read; each is compiled from the files
    given instead (None: as having no directory). ``used``, when given, receives every tenant's files as
    compiled. ``known``: tenants served, held back or quarantined so far, whose name on anything but a directory
    is their problem, not their removal (``tenantdirs.tenant_entries``).
    """
    held = held or {}
    given = Path(policy_dir)
    root = snapshot_dir(given)
    # The directory's own schema is read from the snapshot and shown (and hashed into policy_version) by its
    # name, whichever way it was named: `validate --policies DIR` and the server (which passes
    # DIR/schema.cedarschema) then report the same version (review finding: they differed with ..data).
    schema_path = root / DEFAULT_SCHEMA if _is_default_schema(given, schema_file) else Path(str(schema_file))
    if not root.is_dir():
        raise PolicyError(f"policy directory not found: {root}")
    schema = _read(schema_path, root)
    try:
        files = policy_files(root)
    except OSError as err:
        raise PolicyError(f"cannot list policy directory {root}: {err.strerror or err}") from err
    tenant_root = root / TENANTS_DIR
    tenants: dict[str, list[PolicySource]] = {}
    entities: dict[str, PolicySource] = {}
    if present(root / ENTITIES_FILE):
        entities[""] = _read(root / ENTITIES_FILE, root)
    escaped: list[PolicyDiagnostic] = []
    tenant_dirs: list[Path] = []
    if present(tenant_root):
        try:
            tenant_dirs, unreadable = tenant_entries(tenant_root, root, known)
            escaped += [d for d in unreadable if Path(d.path).name not in held]
        except OSError:
            # Review findings: a dangling, unreadable or unsearchable tenants/ (a volume not mounted, mode 0444)
            # read as "no tenant has files of its own", so every tenant lost its own forbids and the reload was OK.
            escaped.append(PolicyDiagnostic(TENANTS_DIR, 1, UNREADABLE_MESSAGE.format(what="every tenant's")))
    if tenant_dirs:
        # Held directories are not read: they neither overlap another nor count as overlapped (review finding:
        # evil re-linked to acme's directory got acme held back too, and acme's changes never applied).
        escaped += shared_tenant_dirs([d for d in tenant_dirs if d.name not in held], root)
        for tenant_dir in tenant_dirs:
            if tenant_dir.name in held:
                continue
            try:
                own, outside = tenant_files(tenant_dir, root)
            except OSError:  # listing it failed: its files are unknown, which is not "it has none"
                escaped.append(PolicyDiagnostic(display(tenant_dir, root), 1,
                                                UNREADABLE_MESSAGE.format(what="this tenant's")))
                continue
            escaped += outside
            tenants[tenant_dir.name] = [_read(p, root) for p in own if p.name != ENTITIES_FILE]
            entity_files = [p for p in own if p.name == ENTITIES_FILE]
            if entity_files:
                entities[tenant_dir.name] = _read(entity_files[0], root)
    for name, kept in held.items():
        if kept is not None:
            tenants[name] = list(kept.policies)
            if kept.entities is not None:
                entities[name] = kept.entities
    strays = [*escaped, *outside_snapshot(given, root), *stray_policy_files(root, held.keys())]
    if root != given:  # files beside the snapshot that nothing links to (review finding: silently ignored)
        shown = {d.path for d in strays}
        strays += [d for d in stray_policy_files(given, held.keys()) if d.path not in shown]
    if not files and not tenants and not strays:
        raise PolicyError(f"no *.cedar policy files in {root}")
    try:
        compiled = compile_policies(schema, [_read(p, root) for p in files], tenants, cache, entities, limits)
    except PolicyError as err:
        if not strays or not err.diagnostics:
            raise
        # One run shows every problem: the files in the wrong place and those of the files read.
        problems = [*strays, *err.diagnostics]
        raise PolicyError(f"{len(problems)} problem(s) in the policy set", problems) from err
    if strays:
        raise PolicyError(f"{len(strays)} problem(s) in the policy set", strays)
    if used is not None:  # a held tenant's are the files it was given
        used.update({name: held.get(name) or TenantFiles(tuple(files), entities.get(name),
                                                         os.path.realpath(tenant_root / name))
                     for name, files in tenants.items()})
    return compiled


def _is_default_schema(policy_dir: Path, schema_file: str | Path | None) -> bool:
    if not schema_file:
        return True
    return os.path.abspath(schema_file) == os.path.abspath(policy_dir / DEFAULT_SCHEMA)


def outside_snapshot(root: Path, snapshot: Path) -> list[PolicyDiagnostic]:
    """With a ``..data`` snapshot (``snapshot != root``), a diagnostic for each top-level entry of ``root`` that
    the loader would read were it in the snapshot but that is not a symlink resolving into it: a ``*.cedar``,
    the schema, ``entities.json``, or a directory (``tenants/``, ``sub/``, ...).

    Such an entry is not read (everything is read from the snapshot), so it would silently not apply: a new
    top-level forbid, an editor's rename-save that replaced ``roles.cedar -> ..data/roles.cedar`` by a regular
    file (review finding). Not refused: ``..``-prefixed entries (the ConfigMap's internals) and ``tests/``
    (suites, read from ``root`` by ``tenantgate test``). A link resolving into what ``..data`` points to now is
    accepted too (kubelet may swap it while we read; the reloading store then reads again).
    """
    if snapshot == root:
        return []
    into = {os.path.realpath(snapshot), os.path.realpath(root / SNAPSHOT_LINK)}
    problems: list[PolicyDiagnostic] = []
    for name in sorted(os.listdir(root)):
        path = root / name
        if name.startswith(".."):
            continue
        is_dir = path.is_dir()
        if is_dir and name == "tests":
            continue
        if not (is_dir or name.endswith(".cedar") or name in (DEFAULT_SCHEMA, ENTITIES_FILE)):
            continue
        target = os.path.realpath(path)
        if path.is_symlink() and any(target.startswith(base + os.sep) for base in into):
            continue
        problems.append(PolicyDiagnostic(name, 1, OUTSIDE_SNAPSHOT_MESSAGE))
    return problems


def stray_policy_files(root: Path, skip: Collection[str] = ()) -> list[PolicyDiagnostic]:
    """A diagnostic for every ``*.cedar`` file under ``root`` that ``load_policies`` would not read.

    Read are ``root/*.cedar`` and ``root/tenants/<tenant>/*.cedar``; a policy anywhere else (``sub/x.cedar``,
    ``tenants/acme/guards/x.cedar``, ``tenants/x.cedar``) would silently not apply while ``tenantgate fmt``
    formats it, so it is refused. Not searched: ``root/tests/`` (policy test suites and their fixtures) and
    ``..``-prefixed directories (Kubernetes' ConfigMap internals, ``..data`` and ``..<timestamp>``, whose
    files are what the top-level names link to). Other files (``*.json``, ``README.md``, ...) are ignored.
    Symlinks are followed, each directory visited once (a link back up the tree cannot loop). The directories of
    the tenants in ``skip`` (held back) are not walked: a directory another tenant links to is then reached,
    and its strays named, by its own tenant's path (review finding: evil's link to zzz's subdirectory took
    the blame for zzz's misplaced forbid, and zzz went on without it).
    """
    strays: list[PolicyDiagnostic] = []
    top = os.fspath(root)
    tenant_root = os.path.join(top, TENANTS_DIR)
    # The directories read, by identity: a tenant directory may be a symlink to one elsewhere in the tree,
    # which the walk (each directory once) may reach first by its own name (review finding: `src/acme` with
    # `tenants/acme -> ../src/acme` was refused, `zsrc/acme` was not).
    try:
        tenant_dirs = tenant_directories(Path(tenant_root)) if os.path.isdir(tenant_root) else []
    except OSError:
        tenant_dirs = []  # reported by the loader as tenants/ that cannot be read
    read = {_identity(top)} | {_identity(os.fspath(d)) for d in tenant_dirs}
    skipped = {os.path.join(tenant_root, name) for name in skip}
    escaping: list[str] = []
    for dirpath, filenames in policy_tree(root, skipped, escaping):
        if _identity(dirpath) in read:
            continue
        for name in sorted(filenames):
            path = Path(dirpath, name)
            # Not only regular files: a dangling link or a FIFO named *.cedar is as misplaced.
            if name.endswith(".cedar") and not path.is_dir():
                strays.append(PolicyDiagnostic(display(path, root), 1, STRAY_MESSAGE))
    strays += [PolicyDiagnostic(display(Path(link), root), 1, ESCAPING_LINK_MESSAGE) for link in escaping]
    return strays


def _identity(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_dev, st.st_ino)


def policy_tree(root: Path, skip: Collection[str] = (), escaping: list[str] | None = None
                ) -> Iterator[tuple[str, list[str]]]:
    """``(directory, sorted file names)`` for every directory under ``root`` that may hold policy files,
    following symlinks. Each directory is visited once, by (device, inode): a symlink back up the tree
    (``tenants/acme/up -> ..``) would otherwise make the walk exponential and never end (review finding: the
    server hung). Left out: the top-level ``tests/`` (suites; a tenant named ``tests`` is walked) and
    ``..``-prefixed directories (Kubernetes' ConfigMap internals, whose files the top-level names link to), and
    the directories named in ``skip`` (as walked: ``root`` joined with the names on the way).

    Nor is a directory link inside a tenant's directory that resolves outside both the policy directory and that
    tenant's own directory: its path is appended to ``escaping`` (when given) instead. Review finding: a tenant's
    ``tenants/evil/d -> /`` made every walk (the fingerprint's at each poll, the stray check's at each reload)
    cover the host's whole file system: 9 s a poll and 11,000 "strays" here, every tenant's decisions waiting on
    the GIL meanwhile. Tenant files must be inside its directory anyway (``tenantdirs.tenant_files``)."""
    seen: set[tuple[int, int]] = set()
    top = os.fspath(root)
    inside = os.path.realpath(top) + os.sep
    tenants_prefix = os.path.join(top, TENANTS_DIR) + os.sep
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
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("..") and (d != "tests" or dirpath != top)
                             and os.path.join(dirpath, d) not in skip)
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))] \
            if dirpath.startswith(tenants_prefix) else []
        if links:  # inside a tenant's directory: its links stay in the tree (resolved only when there are links)
            tenant = dirpath[len(tenants_prefix):].split(os.sep, 1)[0]
            own = os.path.realpath(tenants_prefix + tenant) + os.sep
            for d in links:
                target = os.path.realpath(os.path.join(dirpath, d)) + os.sep
                if not target.startswith((inside, own)):
                    dirnames.remove(d)
                    if escaping is not None:
                        escaping.append(os.path.join(dirpath, d))
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
    shown = display(path, root)
    return PolicySource(shown, read_text_file(path, shown))


def read_text_file(path: Path, shown: str) -> str:
    """The UTF-8 text of the regular file at ``path``, with universal newlines (as ``Path.read_text``).

    The one way the loader reads a file (policies, schema, entity data). The file is opened without blocking and
    checked on the open descriptor, so what is read is what was checked: anything that is not a regular file
    (a FIFO, ``/dev/zero``, a socket, a directory) is refused, and at most ``MAX_POLICY_FILE_BYTES`` + 1 bytes
    are read, so a file larger than that, or growing past it while read, is refused too (review finding: a
    FIFO at the schema path blocked the reload forever; a schema linked to /dev/zero was read until
    MemoryError). Raises ``PolicyError`` naming ``shown``: not found, a dangling symlink, not a regular file,
    too large, not UTF-8, or unreadable.
    """
    too_large = PolicyError("policy file too large", [PolicyDiagnostic(shown, 1, "larger than 8 MiB")])
    try:
        fd = open_regular(path, follow_symlinks=True)
    except NotRegularFile as err:
        raise PolicyError(f"not a regular file: {shown}", [PolicyDiagnostic(shown, 1, NOT_REGULAR_MESSAGE)]) from err
    except FileNotFoundError as err:
        if os.path.islink(path):
            raise PolicyError(f"dangling symlink: {shown}",
                              [PolicyDiagnostic(shown, 1, "a symlink whose target does not exist")]) from err
        raise PolicyError(f"file not found: {shown}") from err
    except OSError as err:
        raise PolicyError(f"cannot read {shown}: {err.strerror}",
                          [PolicyDiagnostic(shown, 1, f"cannot read: {err.strerror}")]) from err
    try:
        if os.fstat(fd).st_size > MAX_POLICY_FILE_BYTES:
            raise too_large
        chunks: list[bytes] = []
        remaining = MAX_POLICY_FILE_BYTES + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, _READ_CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as err:
        raise PolicyError(f"cannot read {shown}: {err.strerror}",
                          [PolicyDiagnostic(shown, 1, f"cannot read: {err.strerror}")]) from err
    finally:
        os.close(fd)
    if remaining <= 0:
        raise too_large
    try:
        text = b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as err:
        raise PolicyError("policy file is not UTF-8", [PolicyDiagnostic(shown, 1, str(err))]) from err
    # Universal newlines, as the loader always read (Path.read_text): policy_version and line numbers unchanged.
    return text.replace("\r\n", "\n").replace("\r", "\n")


