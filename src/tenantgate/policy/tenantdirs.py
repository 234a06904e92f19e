"""A tenant's directory under ``tenants/``: which entries are tenant directories, which files of one are its
own (never a link out of it), which stand for a tenant whose files cannot be read, and which directories
overlap. ``loader`` reads what these name; ``holdback`` blames tenants by them."""

from __future__ import annotations

import os
import stat
from collections.abc import Collection
from pathlib import Path

from tenantgate.errors import PolicyDiagnostic

TENANTS_DIR = "tenants"
ENTITIES_FILE = "entities.json"
OUTSIDE_TENANT_MESSAGE = ("not read: resolves outside its tenant's directory; a tenant's policy and entity files "
                          "must be inside tenants/<tenant>/ (a link to another tenant's files would give this "
                          "tenant their policies or entity data)")
SHARED_TENANT_MESSAGE = ("this tenant directory is the same directory as {others}, or inside or around it: each "
                         "tenant's files must be its own")
SHARED_PREFIX = SHARED_TENANT_MESSAGE.partition("{")[0]
UNREADABLE_MESSAGE = ("cannot be read (not a directory, a link that cannot be followed, or a directory that cannot "
                      "be listed): {what} files are unknown, so this is not taken as having none")


def policy_files(directory: Path) -> list[Path]:
    """The ``*.cedar`` entries of ``directory`` that are not directories, sorted by name. A FIFO, a device or a
    dangling or looping symlink is included, so that reading it refuses it by name (review finding: they
    were skipped silently). Hidden names are not policies (review finding: an editor's lock link
    ``.#roles.cedar``, dangling, made the whole set invalid). Raises ``OSError`` when it cannot be listed
    (``Path.glob`` gave no files for a directory it could not read: review finding)."""
    return sorted(directory / name for name in os.listdir(directory)
                  if name.endswith(".cedar") and not name.startswith(".") and not (directory / name).is_dir())


def present(path: Path) -> bool:
    """True when something is at ``path`` (a dangling link included), False when nothing is; raises ``OSError``
    when that cannot be told (``os.path.lexists`` said False for a file in a directory that cannot be searched,
    and a tenant's entities.json went missing unreported: review finding)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def tenant_files(tenant_dir: Path, root: Path) -> tuple[list[Path], list[PolicyDiagnostic]]:
    """A tenant directory's policy files and entity file (last), and a diagnostic for each of them that resolves
    outside the directory (after symlinks): those are not read.

    Review finding: ``tenants/evil/entities.json -> ../acme/entities.json`` gave evil's decisions acme's users,
    roles and groups (and a linked ``*.cedar`` ran acme's policies in evil's partition), wherever tenant
    directories come from sources their tenants control. The directory itself may be a link (``tenants/acme
    -> ../src/acme``), and files may link within it (a per-tenant ConfigMap's ``own.cedar -> ..data/own.cedar``).
    """
    files = policy_files(tenant_dir)
    if present(tenant_dir / ENTITIES_FILE):
        files.append(tenant_dir / ENTITIES_FILE)
    base = os.path.realpath(tenant_dir) + os.sep
    own: list[Path] = []
    outside: list[PolicyDiagnostic] = []
    for p in files:
        # An entry of the directory that is not a link is in it; only a link is followed to see where it leads.
        if not os.path.islink(p) or os.path.realpath(p).startswith(base):
            own.append(p)
        else:
            outside.append(PolicyDiagnostic(display(p, root), 1, OUTSIDE_TENANT_MESSAGE))
    return own, outside


def tenant_entries(tenant_root: Path, root: Path, known: Collection[str] = ()
                   ) -> tuple[list[Path], list[PolicyDiagnostic]]:
    """The tenant directories under ``tenants/`` (every directory or link to one, not hidden), by name, and a
    diagnostic for each entry that stands for a tenant whose files cannot be read, which is not "it has none":
    a link that cannot be followed (dangling, looping, not permitted), or anything but a directory under the
    name of a ``known`` tenant (one served, held back or quarantined). Review findings: a dangling
    ``tenants/acme`` link, or a file put in place of acme's directory, served acme by the global policies alone
    with the reload OK. A link to a file under another name is not a tenant (``README.md``). Raises ``OSError``
    when ``tenants/`` cannot be listed or an entry that is not a link cannot be examined (review finding: at
    mode 0444 every entry was taken as "not a directory")."""
    found: list[Path] = []
    unreadable: list[PolicyDiagnostic] = []
    for name in sorted(os.listdir(tenant_root)):
        path = tenant_root / name
        if name.startswith("."):
            continue
        try:
            is_dir = stat.S_ISDIR(os.stat(path).st_mode)
        except OSError:
            if not os.path.islink(path):
                raise
            is_dir = None  # a link that cannot be followed
        if is_dir:
            found.append(path)
        elif is_dir is None or name in known:
            unreadable.append(PolicyDiagnostic(display(path, root), 1, UNREADABLE_MESSAGE.format(what="this tenant's")))
    return found, unreadable


def tenant_directories(tenant_root: Path) -> list[Path]:
    """The tenant directories under ``tenants/`` (``tenant_entries``)."""
    return tenant_entries(tenant_root, tenant_root.parent)[0]


def shared_tenant_dirs(tenant_dirs: list[Path], root: Path) -> list[PolicyDiagnostic]:
    """A diagnostic for each tenant directory that is a link resolving to another's, or into or around it (review
    finding: ``tenants/evil -> acme`` would read acme's policies and entity data as evil's). Only the link is
    refused: the directory it points at is not at fault (and is not held back for it)."""
    # Sorted by resolved path, the directories inside one (its path a prefix of theirs) follow it in one run, so
    # each overlap is found by scanning forward (review finding: comparing every pair took 13 s a reload at 3,000
    # tenants, and most of a 10,000-tenant reload).
    resolved = sorted((os.path.realpath(d) + os.sep, d.name, d) for d in tenant_dirs)
    overlapping: dict[str, set[str]] = {}
    for i, (path, name, _d) in enumerate(resolved):
        for other_path, other, _o in resolved[i + 1:]:
            if not other_path.startswith(path):
                break
            overlapping.setdefault(name, set()).add(other)
            overlapping.setdefault(other, set()).add(name)
    return [PolicyDiagnostic(display(d, root), 1, SHARED_TENANT_MESSAGE.format(
                others=", ".join(f"{TENANTS_DIR}/{other}" for other in sorted(overlapping[d.name]))))
            for d in tenant_dirs if d.name in overlapping and d.is_symlink()]


def display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
