"""The current policy set, and reloading it safely.

``PolicyStore.current()`` is what every decision reads once; ``reload()`` parses and validates the whole new
set before swapping it in with one reference assignment, so an invalid set never takes effect, the last
good set keeps answering, and decisions already running finish on the set they started with. Invalid files
confined to some tenants' own directories hold back only those tenants, on their last valid files.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tenantgate.core.compiler import DEFAULT_TENANT_LIMITS, FileCache, TenantLimits
from tenantgate.core.engine import DEFAULT_DECISION_CACHE, DEFAULT_PARTITION_CACHE, CompiledPolicies, Engine
from tenantgate.core.slowtenants import SlowHook, SlowTenants
from tenantgate.errors import PolicyError
from tenantgate.policy.holdback import load_holding_back
from tenantgate.policy.loader import TenantFiles, load_policies, policy_tree
from tenantgate.policy.tenantdirs import TENANTS_DIR

log = logging.getLogger("tenantgate.policy")


class _ChangedWhileReading(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    changed: bool
    version: str
    message: str
    # Tenants whose directories were held back on their last valid files (``ok`` is False, the rest applied).
    held_back: tuple[str, ...] = ()
    # Tenants quarantined in the set served after this attempt (``CompiledPolicies.quarantined``).
    quarantined: tuple[str, ...] = ()


class PolicyStore:
    """Holds the current ``Engine`` for a policy directory and reloads it on request.

    ``on_reload(result)`` is called after every reload attempt (metrics hang there); it must not raise.
    """

    def __init__(self, compiled: CompiledPolicies, *, policy_dir: str | Path | None = None,
                 schema_file: str | Path | None = None, partition_cache_size: int = DEFAULT_PARTITION_CACHE,
                 decision_cache_size: int = DEFAULT_DECISION_CACHE, cache: FileCache | None = None,
                 on_reload: Callable[[ReloadResult], None] | None = None,
                 limits: TenantLimits = DEFAULT_TENANT_LIMITS,
                 tenant_files: Mapping[str, TenantFiles] | None = None,
                 evaluation_budget: float = 0.0, on_slow: SlowHook | None = None) -> None:
        self._sizes = (partition_cache_size, decision_cache_size)  # of every engine this store builds
        self._slow = SlowTenants(evaluation_budget, on_slow) if evaluation_budget else None  # every engine's
        self._engine = self._new_engine(compiled)
        self._limits = limits
        self._dir = Path(policy_dir) if policy_dir is not None else None
        self._schema = schema_file
        self._cache: FileCache = cache if cache is not None else {}
        # Each tenant's files in the set served: what a reload holds a tenant back on when its files turn invalid.
        self._tenant_files = dict(tenant_files or {})
        self._overlapping: tuple[str, ...] = ()  # held back by the last reload for an overlapping linked directory
        self._quarantined_dirs: dict[str, str] = {}  # each quarantined tenant's directory then (``HeldBack``)
        self._reload_lock = threading.Lock()
        self._on_reload = on_reload
        self.last_result = ReloadResult(True, True, compiled.version, "loaded")
        self._fingerprint = self.fingerprint()

    @classmethod
    def load(cls, policy_dir: str | Path, schema_file: str | Path | None = None, *,
             partition_cache_size: int = DEFAULT_PARTITION_CACHE, decision_cache_size: int = DEFAULT_DECISION_CACHE,
             on_reload: Callable[[ReloadResult], None] | None = None,
             limits: TenantLimits = DEFAULT_TENANT_LIMITS, quarantine: bool = False,
             evaluation_budget: float = 0.0, on_slow: SlowHook | None = None) -> PolicyStore:
        """Load the directory (raising ``PolicyError`` when invalid) and keep it reloadable; ``limits`` bound
        each tenant's own files, at load and at every reload.

        ``quarantine``: when every problem lies in some tenants' own directories (at most ``MAX_HELD_BACK``),
        start anyway with those tenants quarantined (every decision about their resources denied) and
        ``last_result`` saying so (not ``ok``, ``held_back`` naming them); a later reload that finds their files
        valid serves them. Problems elsewhere still raise ``PolicyError``.

        ``evaluation_budget`` (seconds, 0 = off) and ``on_slow``: see ``core.slowtenants``."""
        cache: FileCache = {}
        options: dict[str, Any] = dict(policy_dir=policy_dir, schema_file=schema_file,
                                       partition_cache_size=partition_cache_size,
                                       decision_cache_size=decision_cache_size, cache=cache, on_reload=on_reload,
                                       limits=limits, evaluation_budget=evaluation_budget, on_slow=on_slow)
        if not quarantine:
            used: dict[str, TenantFiles] = {}
            compiled = load_policies(policy_dir, schema_file, cache, limits, used=used)
            return cls(compiled, tenant_files=used, **options)
        loaded = load_holding_back(policy_dir, schema_file, cache, limits, {}, ())
        store = cls(loaded.compiled, tenant_files=loaded.used, **options)
        store._overlapping, store._quarantined_dirs = loaded.overlapping, dict(loaded.quarantined_dirs)
        if loaded.problems is not None:
            store.last_result = ReloadResult(False, True, loaded.compiled.version, str(loaded.problems),
                                             loaded.tenants, tuple(sorted(loaded.compiled.quarantined)))
            log.error("policies loaded with tenant(s) %s quarantined: their files are invalid, and every decision "
                      "about their resources is denied (tenant_policies_unavailable) until they are fixed: %s",
                      ", ".join(loaded.tenants), loaded.problems)
        return store

    def current(self) -> Engine:
        return self._engine

    def replace(self, compiled: CompiledPolicies) -> None:
        self._engine = self._new_engine(compiled)

    def _new_engine(self, compiled: CompiledPolicies) -> Engine:
        """An engine for ``compiled``, sharing the store's slow-policy strikes and quarantines."""
        return Engine(compiled, *self._sizes, slow=self._slow)

    def reload(self, *, force: bool = False) -> ReloadResult:
        """Re-read the directory; swap in the new set when it is valid, or when what is not lies only in some
        tenants' own directories: those tenants are held back on their last valid files (``load_holding_back``)
        and the result says so (``ok`` False, ``held_back``). Never raises.

        Without ``force`` nothing is parsed when the directory's fingerprint (names, sizes, mtimes, inodes,
        ctimes, followed through symlinks) has not changed.
        """
        if self._dir is None:
            return ReloadResult(False, False, self._engine.version, "this policy store has no directory")
        with self._reload_lock:
            fingerprint = self.fingerprint()
            if not force and fingerprint == self._fingerprint:
                return ReloadResult(True, False, self._engine.version, "unchanged")
            try:
                candidate = dict(self._cache)
                try:
                    loaded = load_holding_back(self._dir, self._schema, candidate, self._limits, self._tenant_files,
                                               self._engine.compiled.tenant_versions.keys(), self._overlapping,
                                               self._quarantined_dirs)
                except PolicyError:
                    # A ConfigMap update can remove the directory we were reading from (kubelet deletes the old
                    # ..<timestamp> after the swap): not a broken set, just one that moved (review finding). Only
                    # files gone or replaced (another inode) count: a file merely written to (a heartbeat) must
                    # not keep a broken set from being reported.
                    if _replaced(fingerprint, self.fingerprint()):
                        raise _ChangedWhileReading from None
                    raise
                # Files edited in place while we read them could give a set that never existed on disk: only
                # a set read between two identical fingerprints is used; otherwise the next poll tries again.
                if self.fingerprint() != fingerprint:
                    raise _ChangedWhileReading
            except _ChangedWhileReading:
                # Nothing was decided: a held-back or quarantined set stays reported as such.
                result = ReloadResult(self.last_result.ok, False, self._engine.version,
                                      "policy files changed while being read; not used: the next poll (or SIGHUP) "
                                      "reads them again", self.last_result.held_back)
                log.warning("policy files changed during reload; still serving %s", self._engine.version)
            except PolicyError as err:
                # The files stay as they are until someone fixes them: remember the fingerprint so an
                # unchanged broken set is not re-parsed (and re-logged) at every poll.
                self._fingerprint = fingerprint
                result = ReloadResult(False, True, self._engine.version, str(err))
                log.error("policy reload refused; still serving %s: %s", self._engine.version, err)
            except Exception as err:  # a reload must never take the server down
                result = ReloadResult(False, True, self._engine.version, f"unexpected error: {err}")
                log.exception("policy reload failed; still serving %s", self._engine.version)
            else:
                compiled = loaded.compiled
                self._cache = candidate
                self._fingerprint = fingerprint
                self._tenant_files = loaded.used
                self._overlapping, self._quarantined_dirs = loaded.overlapping, dict(loaded.quarantined_dirs)
                # A tenant leaving quarantine without files of its own (its directory removed) leaves the version
                # as it was: the quarantine is compared too, or the old engine would go on denying it.
                changed = compiled.version != self._engine.version or \
                    compiled.quarantined != self._engine.compiled.quarantined
                if changed:
                    before = self._engine.closed_tenants
                    self._engine = self._new_engine(compiled)
                    log.info("policies reloaded: now %s (%d policies)", compiled.version, compiled.total_policies)
                    _log_quarantines(before, self._engine.closed_tenants - compiled.quarantined,
                                     self._engine.closed_tenants)
                if loaded.problems is not None:
                    result = ReloadResult(False, changed, compiled.version, str(loaded.problems), loaded.tenants)
                    kept = [t for t in loaded.tenants if t not in compiled.quarantined]
                    what = [f"tenant(s) {', '.join(kept)} held back on their last valid files"] if kept else []
                    if compiled.quarantined:
                        what.append(f"tenant(s) {', '.join(sorted(compiled.quarantined))} quarantined (no valid "
                                    "files to fall back on: every decision about their resources denied)")
                    log.error("policy reload: %s, their files being invalid; every other change applied (serving "
                              "%s): %s", "; ".join(what), compiled.version, loaded.problems)
                else:
                    result = ReloadResult(True, changed, compiled.version, "reloaded" if changed else "unchanged")
            self.last_result = result = replace(result, quarantined=tuple(sorted(self._engine.closed_tenants)))
        if self._on_reload is not None:
            self._on_reload(result)
        return result

    def fingerprint(self) -> tuple[tuple[str, int, int, int, int], ...]:
        """(path, size, mtime_ns, inode, ctime_ns) of every policy, schema and entity (``.json``) file under the
        directory, following symlinks. The ctime because a chmod, chown or ACL change moves no mtime: a file made
        readable again (its tenant quarantined or held back meanwhile) would otherwise wait for an unrelated edit.

        A Kubernetes ConfigMap update swaps the ``..data`` symlink to a new directory: every file then
        resolves to a new inode, so the change is seen even when sizes and mtimes match.
        """
        if self._dir is None:
            return ()
        entries = []
        for dirpath, filenames in policy_tree(self._dir):
            for name in filenames:
                if not name.endswith((".cedar", ".cedarschema", ".json")):  # .json: entity data
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                entries.append((path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
        # Each tenant directory by its own name too (lstat): the walk visits a directory once, so a new link to
        # another tenant's directory added no entry and went unnoticed until some other change (review finding).
        tenants = self._dir / TENANTS_DIR
        try:
            names = sorted(os.listdir(tenants))
        except OSError:
            names = []
        for name in names:
            try:
                st = os.lstat(tenants / name)
            except OSError:
                continue
            # Not its mtime (files inside count already); its mode and owner: a directory made listable again is a
            # change (not its ctime, which every file added or removed inside moves).
            entries.append((str(tenants / name), -2, 0, st.st_ino, hash((st.st_mode, st.st_uid, st.st_gid))))
        if self._schema:
            try:
                st = os.stat(self._schema)
                entries.append((str(self._schema), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
            except OSError:
                entries.append((str(self._schema), -1, -1, -1, -1))
        return tuple(entries)


def _log_quarantines(before: frozenset[str], slow: frozenset[str], after: frozenset[str]) -> None:
    """Say which quarantines a new engine ended, and which for slow policies it kept (review finding: an edit
    that left a slow tenant's policies as they were kept it quarantined without a word)."""
    if before - after:
        log.warning("tenant(s) %s no longer quarantined", ", ".join(sorted(before - after)))
    if slow & before:
        log.warning("tenant(s) %s stay quarantined for slow policies: their own policies are unchanged (comments "
                    "and whitespace between policies do not count)", ", ".join(sorted(slow & before)))


def _replaced(before: tuple[tuple[str, int, int, int, int], ...],
              after: tuple[tuple[str, int, int, int, int], ...]) -> bool:
    """True when a file of the ``before`` fingerprint is gone or is now another file (inode): a swap."""
    now = {path: inode for path, _size, _mtime, inode, _meta in after}
    return any(now.get(path) != inode for path, _size, _mtime, inode, _meta in before)
