"""The grant change journal on disk (``core.grants.ChangeJournal``): one file per process, beside the audit log.

A process that changes grants notes each change in its own journal file, as JSON lines: ``begin`` before
writing the change's audit event (the change as it would be committed; fsynced when the audit log is: a killed
process's writes survive in the page cache, only a lost machine needs the fsync), ``written`` once the event is
in the log, and ``end`` once the change settled (committed, rolled back, or put on record); a sweep's batch is
one line of each. ``written`` and ``end`` are not synced: a lost one only makes a later reconciliation ask the
store again, or word its ``grant.failed`` more cautiously. When nothing is in flight the file is emptied, and
when it passes ``COMPACT_BYTES`` with changes still in flight it is rewritten with only those, so it stays small
however many changes the process makes.

The file is named ``<audit log name>.grant-journal-<random>`` (the configured ``audit.path``'s name: every
worker's the same) and the process holds an exclusive ``flock`` on it as long as it lives, so the kernel itself
says when its owner has ended: ``abandoned`` takes every such file whose lock it can get, that is, whose process
died (SIGKILL, OOM) or ended with a change unsettled, and hands over the changes begun and never ended in it.
While it holds the lock the reconciler appends an ``end`` line for each change it put on record (so a retry after
a failure part-way does not record it twice), and deletes the file once all are; a second reconciler that opened
the same file meanwhile gets the lock only after it is gone, sees it gone, and skips it. The owner creates its
file under a hidden temporary name, locks it, and only then renames it into place, so a reconciler can never
take a live process's journal between its creation and its lock.

``begin`` raises ``AuditUnavailable`` (``GrantEvents`` then holds back a request or an approval, never a
revocation or an expiry); the rest logs. Whatever a journal file holds is checked line by line (types, sizes,
known steps): a line that is not a change TenantGate wrote is skipped (one warning per file), never trusted.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import logging
import math
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from tenantgate.core.grantevents import STEP_EVENTS
from tenantgate.core.grants import AbandonedChanges, Grant, GrantState, PendingChange
from tenantgate.core.problemlog import ProblemLog
from tenantgate.errors import AuditUnavailable

log = logging.getLogger("tenantgate.grants")

# A process's journal is rewritten with only its changes in flight once it passes this size: above what a
# sweep's batch in flight takes (EXPIRE_BATCH changes of at most about 22 KB each: the text limits below, with
# characters outside the BMP escaped as 12 bytes), so one such batch does not make every change compact it.
COMPACT_BYTES = 4 << 20
# A journal holds what a process had in flight when it died, below COMPACT_BYTES plus a batch. Anything far
# larger was not written by TenantGate; it is left alone, not read into memory.
MAX_JOURNAL_BYTES = 16 << 20
# A hidden file a process was making (``_new_file``) is its own for this long; older and unlocked, its maker
# died making it, and a reconciler deletes it.
STALE_NEW_SECONDS = 60.0
# Errors opening, locking or reading a journal that will not pass by themselves: it is then left alone for good
# (said once). Others (no descriptors left, I/O errors) are said at most once a minute and tried again.
_LASTING = (errno.EACCES, errno.EPERM)
_MAX_ID = 64  # grant and event ids
_MAX_TEXT = 4096  # other text fields (reasons are at most 1,024 characters, operators 1,024 bytes)
_TEXT = ("id", "operator", "operator_tenant", "target_tenant", "reason", "ticket", "approved_by", "revoked_by",
         "revoke_reason", "operator_issuer")
_TIMES = ("requested_at", "pending_until", "approved_at", "expires_at", "revoked_at")
_GRANT_FIELDS = tuple(f.name for f in fields(Grant))
assert set(_GRANT_FIELDS) == {*_TEXT, *_TIMES, "actions", "duration_seconds", "state"}, "a Grant field unchecked"


def journal_prefix(audit_path: Path) -> Path:
    """Where the journals of every process writing ``audit_path`` (or a worker chain beside it) live: the
    prefix ``<dir>/<name>.grant-journal-`` of their file names."""
    return audit_path.with_name(audit_path.name + ".grant-journal-")


class FileChangeJournal:
    """Implements ``ChangeJournal`` with files named ``<prefix><random>`` (see the module docstring)."""

    def __init__(self, prefix: Path, *, sync: bool = True) -> None:
        self._sync = sync
        self._dir = prefix.parent
        self._prefix = prefix.name
        self._lock = threading.Lock()
        self._fd: int | None = None  # this process's own journal, opened by ``start`` or the first change
        self._own = ""
        self._open: dict[str, PendingChange] = {}  # event id -> change begun and not ended
        self._written: set[str] = set()  # of those, the ones whose event is written
        self._left_alone: set[str] = set()  # names in the journals' place that are not journals (said once)
        self._problems = ProblemLog(log, now=time.monotonic, noun="grant change journal problems",
                                    summary="%d more grant change journal problems since the last line (latest: %s)")

    def start(self) -> None:
        """Create this process's journal now, so a directory where it cannot be is known at start. Raises
        ``AuditUnavailable``; a later change tries again."""
        with self._lock:
            try:
                self._own_fd()
            except OSError as err:
                raise AuditUnavailable(f"grant change journal cannot be created in {self._dir}: {err}") from err

    def begin(self, changes: Sequence[PendingChange]) -> None:
        line = _line({"begin": [_change_dict(change) for change in changes]})
        with self._lock:
            try:
                fd = self._own_fd()
                size = os.fstat(fd).st_size
            except OSError as err:
                raise AuditUnavailable(f"grant change journal not writable ({self._dir}): {err}") from err
            try:
                _write_all(fd, line)
                if self._sync:
                    os.fsync(fd)
            except OSError as err:
                try:  # a line cut short (disk full) would swallow the next one: cut it back
                    os.ftruncate(fd, size)
                except OSError:
                    pass
                raise AuditUnavailable(f"grant change journal not writable ({self._dir}): {err}") from err
            self._open.update((change.event_id, change) for change in changes)

    def written(self, changes: Sequence[PendingChange]) -> None:
        with self._lock:
            ids = [change.event_id for change in changes if change.event_id in self._open]
            if ids:
                self._written.update(ids)
                self._append({"written": ids})

    def end(self, changes: Sequence[PendingChange]) -> None:
        with self._lock:
            ids = [change.event_id for change in changes if change.event_id in self._open]
            if not ids:
                return  # ended already
            for event_id in ids:
                self._open.pop(event_id, None)
                self._written.discard(event_id)
            if self._fd is None:
                return
            try:
                if not self._open:
                    os.ftruncate(self._fd, 0)  # nothing in flight: start afresh (O_APPEND writes at the end)
                    return
                if os.fstat(self._fd).st_size > COMPACT_BYTES:
                    try:
                        self._compact(self._fd)
                        return
                    except OSError as err:  # no new file can be made: the end line still goes in
                        self._problems.occurred("grant change journal %s not compacted: %s", self._own, err,
                                                cause=f"compact: {err}")
                _write_all(self._fd, _line({"end": ids}))
            except OSError as err:  # a change not forgotten is asked about again, harmlessly
                self._problems.occurred("grant change journal %s not updated (its changes will be checked "
                                        "again): %s", self._own, err, cause=f"update: {err}")

    def abandoned(self) -> Iterator[AbandonedChanges]:
        listed = os.listdir(self._dir)
        self._delete_stale_new_files(listed)
        names = sorted(n for n in listed if n.startswith(self._prefix) and n != self._own and n not in self._left_alone)
        for name in names:
            path = self._dir / name
            try:
                fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as err:
                if err.errno not in (errno.ENOENT, errno.ELOOP):  # gone meanwhile, or a symbolic link: not ours
                    self._cannot_take(name, f"not opened: {err}", err.errno in _LASTING)
                continue
            try:
                try:
                    held = _take(fd, path)
                except _NotTaken as err:
                    self._cannot_take(name, str(err), err.lasting)
                    continue
                if held is None:
                    continue
                changes, written = _unsettled(held, name)
                yield AbandonedChanges(name, changes, written, functools.partial(_settled, fd, self._sync),
                                       functools.partial(_discard, path))
            finally:
                os.close(fd)  # releases the lock: after discard, on a file nobody will find again

    def close(self) -> None:
        """Delete this process's journal when nothing is in flight (a clean stop), and release it."""
        with self._lock:
            if self._fd is None:
                return
            if not self._open:
                _discard(self._dir / self._own)
            os.close(self._fd)
            self._fd = None

    def _append(self, entry: dict[str, Any]) -> None:
        if self._fd is None:
            return
        try:
            _write_all(self._fd, _line(entry))
        except OSError as err:
            self._problems.occurred("grant change journal %s not updated: %s", self._own, err,
                                    cause=f"update: {err}")

    def _compact(self, fd: int) -> None:
        """Replace the journal with one holding only the changes in flight (a long run of overlapping changes):
        a new file, locked and complete before it takes the name, so no moment lacks a change in flight."""
        data = _line({"begin": [_change_dict(change) for change in self._open.values()]})
        if self._written:
            data += _line({"written": sorted(self._written)})
        self._fd, self._own = self._new_file(data, self._own)
        os.close(fd)

    def _cannot_take(self, name: str, why: str, lasting: bool) -> None:
        if lasting:
            self._left_alone.add(name)
            log.warning("grant change journal %s left alone: %s", name, why)
        else:
            self._problems.occurred("grant change journal %s not settled now (tried again every sweep): %s", name,
                                    why, cause=f"take {name}")

    def _delete_stale_new_files(self, listed: list[str]) -> None:
        """Delete the hidden files of makers that died making them (``_new_file``): unlocked and stale."""
        for name in listed:
            if not (name.startswith(f".{self._prefix}") and name.endswith(".new")):
                continue
            path = self._dir / name
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = os.fstat(fd)
                if (stat.S_ISREG(held.st_mode) and time.time() - held.st_mtime > STALE_NEW_SECONDS
                        and os.stat(path, follow_symlinks=False).st_ino == held.st_ino):
                    path.unlink()
            except OSError:
                pass  # its maker lives, or it is gone: nothing to do
            finally:
                os.close(fd)

    def _own_fd(self) -> int:
        if self._fd is None:
            self._fd, self._own = self._new_file(b"", f"{self._prefix}{secrets.token_hex(8)}")
        return self._fd

    def _new_file(self, data: bytes, name: str) -> tuple[int, str]:
        """A journal holding ``data`` at ``name`` (replacing what is there), locked before it has the name."""
        hidden = self._dir / f".{name}.{secrets.token_hex(4)}.new"
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _write_all(fd, data)
            if self._sync and data:
                os.fsync(fd)
            os.rename(hidden, self._dir / name)
        except OSError:
            os.close(fd)
            _discard(hidden)
            raise
        # Named now: from here on it is this process's journal, held whatever else fails (review finding: closing
        # it when the directory sync failed unlocked a live process's journal for a reconciler to take).
        if self._sync:  # the file's name too must survive a lost machine
            try:
                directory = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
            except OSError as err:
                self._problems.occurred("grant change journal directory %s not synced: %s", self._dir, err,
                                        cause=f"sync: {err}")
        return fd, name


class _NotTaken(Exception):
    """A journal that cannot be taken: ``lasting`` when it will not pass by itself (it is then left alone)."""

    def __init__(self, why: str, lasting: bool) -> None:
        super().__init__(why)
        self.lasting = lasting


def _take(fd: int, path: Path) -> bytes | None:
    """The journal's bytes if its owner has ended (its lock is free) and it is still at ``path``; else None.
    ``_NotTaken`` when it cannot be: no journal TenantGate wrote (not a regular file, or too large), or an
    error locking or reading it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise _NotTaken(f"not locked: {err}", err.errno in _LASTING) from err
        return None  # its process lives (or another reconciler has it)
    try:
        held = os.fstat(fd)
        try:
            now_there = os.stat(path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            return None  # settled and deleted by another reconciler while we waited
        if now_there != held.st_ino:
            return None  # replaced meanwhile
        if not stat.S_ISREG(held.st_mode):
            raise _NotTaken("not a regular file", True)
        if held.st_size > MAX_JOURNAL_BYTES:
            raise _NotTaken(f"{held.st_size} bytes, more than any process leaves", True)
        return os.pread(fd, held.st_size, 0)
    except OSError as err:
        raise _NotTaken(f"not read: {err}", err.errno in _LASTING) from err


def _unsettled(data: bytes, name: str) -> tuple[tuple[PendingChange, ...], frozenset[str]]:
    """The changes begun and not ended in a journal's ``data``, and the event ids marked written. A line that
    is not what TenantGate writes (cut short by the death before its fsync returned, so before its event was
    written; or anything else) is skipped: one warning for the file."""
    begun: dict[str, PendingChange] = {}
    ended: set[str] = set()
    written: set[str] = set()
    skipped, why = 0, ""
    for raw in data.splitlines():
        if not raw:
            continue
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict) or len(entry) != 1:
                raise ValueError("not one entry")
            (kind, items), = entry.items()
            if not isinstance(items, list):
                raise ValueError("not a list")
            if kind == "begin":
                begun.update((change.event_id, change) for change in map(_change_from, items))
            elif kind in ("written", "end"):
                (written if kind == "written" else ended).update(_ids(items))
            else:
                raise ValueError(f"unknown entry {kind[:32]!r}")
        except Exception as err:  # noqa: BLE001 - anything in the file (deep nesting too) is skipped, not raised
            skipped, why = skipped + 1, why or f"{type(err).__name__}: {str(err)[:200]}"
    if skipped:
        log.warning("grant change journal %s: %d line(s) skipped, not written by TenantGate or cut short (first: "
                    "%s)", name, skipped, why)
    changes = tuple(change for event_id, change in begun.items() if event_id not in ended)
    return changes, frozenset(written.intersection(change.event_id for change in changes))


def _ids(items: list[Any]) -> list[str]:
    if not all(_is_text(item, _MAX_ID) for item in items):
        raise ValueError("an event id that is not one")
    return items


def _is_text(value: Any, limit: int) -> bool:
    return isinstance(value, str) and len(value) <= limit and "\x00" not in value


def _is_time(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _change_dict(change: PendingChange) -> dict[str, Any]:
    grant = {name: getattr(change.grant, name) for name in _GRANT_FIELDS}
    grant["state"], grant["actions"] = change.grant.state.value, list(change.grant.actions)
    return {"step": change.step, "event_id": change.event_id, "grant": grant}


def _change_from(item: Any) -> PendingChange:
    """A ``begin`` entry's change, checked field by field. ValueError for anything TenantGate would not write."""
    if not isinstance(item, dict) or item.get("step") not in STEP_EVENTS or not _is_text(item.get("event_id"), _MAX_ID):
        raise ValueError("not a change")
    grant = item.get("grant")
    if not isinstance(grant, dict) or set(grant) != set(_GRANT_FIELDS):
        raise ValueError("not a grant")
    actions, duration = grant["actions"], grant["duration_seconds"]
    if not (_is_text(grant["id"], _MAX_ID) and all(_is_text(grant[name], _MAX_TEXT) for name in _TEXT)
            and all(_is_time(grant[name]) for name in _TIMES)
            and isinstance(duration, int) and not isinstance(duration, bool)
            and isinstance(actions, list) and len(actions) <= 64 and all(_is_text(a, 256) for a in actions)
            and grant["state"] in {state.value for state in GrantState}):
        raise ValueError("a grant field of the wrong type or size")
    values = {**grant, "state": GrantState(grant["state"]), "actions": tuple(actions),
              **{name: float(grant[name]) for name in _TIMES}}
    return PendingChange(item["step"], Grant(**values), item["event_id"])


def _settled(fd: int, sync: bool, change: PendingChange) -> None:
    """Mark ``change`` of an abandoned journal (``fd``, held) as on record. Raises ``OSError``. The line starts
    on a line of its own: the dead process may have left its last line cut short (review finding: the mark was
    glued to it and skipped with it, and a retry recorded the change again)."""
    _write_all(fd, b"\n" + _line({"end": [change.event_id]}))
    if sync:
        os.fsync(fd)


def _line(entry: dict[str, Any]) -> bytes:
    return (json.dumps(entry, separators=(",", ":"), ensure_ascii=True) + "\n").encode("ascii")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _discard(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as err:
        log.warning("grant change journal %s not deleted: %s", path.name, err)
