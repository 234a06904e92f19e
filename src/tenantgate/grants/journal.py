"""The grant change journal on disk (``core.grants.ChangeJournal``): one file per process, beside the audit log.

A process that changes grants notes each change in its own journal file before writing the change's audit
event (``begin``: one JSON line, written, and fsynced when the audit log is: a killed process's writes survive
in the page cache, only a lost machine needs the fsync) and after the change settled (``end``: one line, not
synced; a lost one only makes a later reconciliation ask the store again). The file is named
``<audit log name>.grant-journal-<random>`` and the process holds an exclusive ``flock`` on it as long as it
lives, so the kernel itself says when its owner has ended: ``abandoned`` takes every such file whose lock it can
get, that is, whose process died (SIGKILL, OOM) or ended without settling a change, and hands over the changes
begun and never ended in it. Whoever holds the lock deletes the file (``discard``) once those changes are on
record; a second reconciler that opened the same file meanwhile gets the lock only after it is gone, sees it
gone, and skips it.

The owner creates its file under a hidden temporary name, locks it, and only then renames it into place, so a
reconciler can never take a live process's journal between its creation and its lock. Once nothing is in
flight the owner empties its file again, so it stays small however many changes the process makes.

Everything here raises ``AuditUnavailable`` (``begin``) or logs (``end``, ``abandoned``): a journal that cannot
be written stops the change, as an audit log that cannot be written does.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import logging
import os
import secrets
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from tenantgate.core.grantevents import STEP_EVENTS
from tenantgate.core.grants import AbandonedChanges, Grant, GrantState, PendingChange
from tenantgate.errors import AuditUnavailable

log = logging.getLogger("tenantgate.grants")

# A journal holds what a process had in flight when it died: a few changes, or a sweep's batch of at most
# EXPIRE_BATCH. Anything far larger was not written by TenantGate; it is left alone, not read into memory.
MAX_JOURNAL_BYTES = 4 << 20
_GRANT_FIELDS = tuple(f.name for f in fields(Grant))


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
        self._fd: int | None = None  # this process's own journal, opened at the first change
        self._own = ""
        self._open: set[str] = set()  # event ids begun and not ended
        self._left_alone: set[str] = set()  # names in the journals' place that are not journals

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
            self._open.update(change.event_id for change in changes)

    def end(self, changes: Sequence[PendingChange]) -> None:
        ids = [change.event_id for change in changes]
        with self._lock:
            self._open.difference_update(ids)
            fd = self._fd
            if fd is None:
                return
            try:
                if self._open:
                    _write_all(fd, _line({"end": ids}))
                else:
                    os.ftruncate(fd, 0)  # nothing in flight: start the file afresh (O_APPEND writes at its end)
            except OSError as err:  # a change not forgotten is asked about again, harmlessly
                log.warning("grant change journal %s not updated (its changes will be checked again): %s",
                            self._own, err)

    def abandoned(self) -> Iterator[AbandonedChanges]:
        try:
            names = sorted(n for n in os.listdir(self._dir) if n.startswith(self._prefix) and n != self._own)
        except OSError as err:
            log.warning("grant change journals not looked for in %s: %s", self._dir, err)
            return
        for name in names:
            path = self._dir / name
            if name in self._left_alone:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue  # gone meanwhile (another reconciler), or not ours to open
            try:
                try:
                    held = _take(fd, path)
                except ValueError as err:  # not TenantGate's: said once, not at every sweep
                    self._left_alone.add(name)
                    log.warning("grant change journal %s left alone: %s", name, err)
                    continue
                if held is None:
                    continue
                changes = _unsettled(held, name)
                yield AbandonedChanges(name, changes, functools.partial(_discard, path))
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

    def _own_fd(self) -> int:
        if self._fd is None:
            token = secrets.token_hex(8)
            hidden = self._dir / f".{self._prefix}{token}.new"
            fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.rename(hidden, self._dir / f"{self._prefix}{token}")
                if self._sync:  # the file's name too must survive a lost machine
                    directory = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    try:
                        os.fsync(directory)
                    finally:
                        os.close(directory)
            except OSError:
                os.close(fd)
                _discard(hidden)
                raise
            self._fd, self._own = fd, f"{self._prefix}{token}"
        return self._fd


def _take(fd: int, path: Path) -> bytes | None:
    """The journal's bytes if its owner has ended (its lock is free) and it is still at ``path``; else None.
    ValueError when it is no journal TenantGate wrote (not a regular file, or too large)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            log.warning("grant change journal %s not locked: %s", path.name, err)
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
            raise ValueError("not a regular file")
        if held.st_size > MAX_JOURNAL_BYTES:
            raise ValueError(f"{held.st_size} bytes, more than any process leaves")
        return os.pread(fd, held.st_size, 0)
    except OSError as err:
        log.warning("grant change journal %s not read: %s", path.name, err)
        return None


def _unsettled(data: bytes, name: str) -> tuple[PendingChange, ...]:
    """The changes begun and not ended in a journal's ``data``. A line cut short (the process died while
    writing it, before its fsync returned, so before its event was written) or otherwise unreadable is skipped."""
    begun: dict[str, PendingChange] = {}
    ended: set[str] = set()
    for raw in data.splitlines():
        try:
            entry = json.loads(raw)
            for item in entry.get("begin", ()):
                change = _change_from(item)
                begun[change.event_id] = change
            ended.update(str(event_id) for event_id in entry.get("end", ()))
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            log.warning("grant change journal %s: a line skipped (%s)", name, err)
    return tuple(change for event_id, change in begun.items() if event_id not in ended)


def _change_dict(change: PendingChange) -> dict[str, Any]:
    grant = {name: getattr(change.grant, name) for name in _GRANT_FIELDS}
    grant["state"], grant["actions"] = change.grant.state.value, list(change.grant.actions)
    return {"step": change.step, "event_id": change.event_id, "grant": grant}


def _change_from(item: dict[str, Any]) -> PendingChange:
    if item["step"] not in STEP_EVENTS:
        raise ValueError(f"unknown step {item['step']!r}")
    grant = dict(item["grant"])
    grant["state"], grant["actions"] = GrantState(grant["state"]), tuple(grant["actions"])
    return PendingChange(str(item["step"]), Grant(**{name: grant[name] for name in _GRANT_FIELDS}),
                         str(item["event_id"]))


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
