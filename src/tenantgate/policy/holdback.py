"""Reloading with some tenants held back: when every problem of a new policy set lies in some tenants' own
directories, those tenants keep the files they were last served with and every other change applies (README,
Hot reload). ``tenantgate validate`` loads strictly (``loader.load_policies``), and so does start-up unless
``policies.invalid_tenants_at_start`` is ``quarantine`` (or for a worker restarted by ``serve --workers``): then
a tenant whose files are invalid is quarantined, every decision about its resources denied."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from tenantgate.core.compiler import FileCache, TenantLimits
from tenantgate.core.engine import CompiledPolicies
from tenantgate.errors import PolicyDiagnostic, PolicyError
from tenantgate.policy.loader import TenantFiles, load_policies, snapshot_dir
from tenantgate.policy.tenantdirs import SHARED_PREFIX, TENANTS_DIR, tenant_entries

# At most this many tenants' directories are held back in one reload (one more pass over the directory each).
MAX_HELD_BACK = 16


@dataclass(frozen=True, slots=True)
class HeldBack:
    """A set loaded with some tenants' directories held back on their last valid files (``load_holding_back``).

    ``problems`` is the refusal of what those directories hold now (every tenant named in it is in ``tenants``).
    """

    compiled: CompiledPolicies
    tenants: tuple[str, ...]
    problems: PolicyError | None
    used: dict[str, TenantFiles]
    overlapping: tuple[str, ...] = ()  # held back for an overlapping linked directory (the next reload's hint)
    # Each quarantined tenant's directory (resolved) when it was quarantined: the next reload's ``known_dirs``.
    quarantined_dirs: Mapping[str, str] = field(default_factory=dict)


def load_holding_back(policy_dir: str | Path, schema_file: str | Path | None, cache: FileCache | None,
                      limits: TenantLimits, last_good: Mapping[str, TenantFiles], present: Collection[str],
                      overlapping: Collection[str] = (), known_dirs: Mapping[str, str] = {}) -> HeldBack:
    """Load the directory as ``load_policies`` does; when every problem lies in some tenants' own directories,
    load it again with those tenants held back on their files of ``last_good``, so one tenant's broken file does
    not hold back every other tenant's changes (review finding: a tenant's typo kept another's emergency forbid
    from applying). ``present``: the tenants with files of their own in the set now served; one of them
    missing from ``last_good`` is never held back (it would lose its policies, its forbids included): the load
    is refused instead.

    A held tenant with no files in ``last_good`` (new, gone and back, quarantined before, or any at start) is
    quarantined (``CompiledPolicies.quarantined``): the global set alone would lack its own forbids (review
    finding: a directory moved away and back with a broken file was served by the global set alone).

    Of linked tenant directories that overlap, the ones held back for an overlap by the last reload
    (``overlapping``, from ``HeldBack.overlapping``) are held back again while they still overlap; otherwise
    the ones whose directory moved since they were last served (``last_good``) or quarantined
    (``known_dirs``, from ``HeldBack.quarantined_dirs``); all of them when that tells none apart (at start).

    Each held tenant is compiled anew on the new schema and global files: a global change reaches it too. Raises
    ``PolicyError`` as ``load_policies`` does when a problem lies elsewhere (the schema, global files, the
    layout), when a held tenant's last valid files do not compile on the new set, or past ``MAX_HELD_BACK``.
    """
    held: dict[str, TenantFiles | None] = {}
    known = {*last_good, *known_dirs, *present}
    problems: list[PolicyDiagnostic] = []
    overlaps: set[str] = set()
    tenant_root = snapshot_dir(Path(policy_dir)) / TENANTS_DIR
    while True:
        used: dict[str, TenantFiles] = {}
        try:
            compiled = load_policies(policy_dir, schema_file, cache, limits, held=held, used=used, known=known)
        except PolicyError as err:
            names = _tenant_names(tenant_root, known)
            # Two linked tenant directories that overlap are both named. Review findings: blaming both let evil,
            # re-linked onto acme's directory, hold acme back; blaming the one that moved did too once acme
            # moved itself (a release swaps its link) while evil, already held for the overlap, kept its link.
            shared = {held_tenant(d.path, names) for d in err.diagnostics if d.message.startswith(SHARED_PREFIX)}
            moved = {name for name in shared if _known_dir(name, last_good, known_dirs)
                     != os.path.realpath(tenant_root / name)}
            culprits = (shared & set(overlapping)) or moved or shared
            overlaps |= culprits
            blamed = {held_tenant(d.path, names) for d in err.diagnostics if not d.message.startswith(SHARED_PREFIX)}
            blamed |= culprits
            unknown = {name for name in blamed if name in present and name not in last_good}
            confined = bool(err.diagnostics) and "" not in blamed and not blamed & held.keys() and not unknown
            too_many = confined and len(held) + len(blamed) > MAX_HELD_BACK
            if not confined or too_many:
                everything = [*problems, *err.diagnostics]  # what held tenants hold now, then what else failed
                if too_many:  # said, or an operator who chose quarantine would think it broken (review finding)
                    raise PolicyError(f"{len(everything)} problem(s) in the files of {len(held) + len(blamed)} "
                                      f"tenants, more than the {MAX_HELD_BACK} that may be held back or quarantined "
                                      "at once: the whole set is refused", everything) from err
                if not problems:
                    raise
                raise PolicyError(f"{len(everything)} problem(s) in the policy set", everything) from err
            problems += [d for d in err.diagnostics if held_tenant(d.path, names) in blamed]
            held.update({name: last_good.get(name) for name in blamed})
            continue
        refusal = PolicyError(f"{len(problems)} problem(s) in the files of tenant(s) held back or quarantined",
                              problems) \
            if held else None
        fenced = {name: _known_dir(name, last_good, known_dirs) or os.path.realpath(tenant_root / name)
                  for name, files in held.items() if files is None}
        if fenced:
            compiled = replace(compiled, quarantined=frozenset(fenced))
        return HeldBack(compiled, tuple(sorted(held)), refusal, used, tuple(sorted(overlaps)), fenced)


def _tenant_names(tenant_root: Path, known: Collection[str]) -> set[str]:
    """The tenants named by the entries of ``tenants/`` (their directories, and what stands for one that cannot be
    read); none when it cannot be listed (the loader refuses the whole set then)."""
    try:
        dirs, unreadable = tenant_entries(tenant_root, tenant_root.parent, known)
    except OSError:
        return set()
    return {d.name for d in dirs} | {Path(d.path).name for d in unreadable}


def _known_dir(name: str, last_good: Mapping[str, TenantFiles], known_dirs: Mapping[str, str]) -> str | None:
    """Where ``name``'s directory was when it was last served or quarantined (resolved), or None."""
    return last_good[name].directory if name in last_good else known_dirs.get(name)


def held_tenant(path: str, tenants: Collection[str]) -> str:
    """The tenant (one of ``tenants``, the names of the tenant directories) whose own directory a diagnostic's
    path lies in (``tenants/<tenant>``, or a file below it), or "" when it lies elsewhere (the schema, global
    files, a file directly in ``tenants/`` such as ``tenants/x.cedar``)."""
    parts = Path(path).parts
    return parts[1] if len(parts) >= 2 and parts[0] == TENANTS_DIR and parts[1] in tenants else ""
