"""The consistent snapshot of a rotating chain that its readers (verify, query, tail) take: every file of the
chain opened and held, checked under a brief shared lock of the live file (never held while reading) that no
rotation ran in between, and taken again when one did (``snapshot_chain``).

Everything here raises ``OSError`` (``RotatedWhileRead`` when rotations spoiled every attempt).
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from tenantgate.audit.chain import MalformedRecord
from tenantgate.audit.fileio import close_quietly, lock_shared, unlock
from tenantgate.audit.files import ChainHead, head_path, read_head, rotated_numbers, rotated_path
from tenantgate.paths import NotRegularFile, open_regular

SNAPSHOT_ATTEMPTS = 5  # a snapshot that a rotation spoiled is taken again at most this often in all
SNAPSHOT_LOCK_WAIT = 0.5  # seconds a reader polls for the live file's shared lock before it checks without it


class RotatedWhileRead(OSError):
    """The files of a chain kept being renamed (rotated) while a reader opened them, every attempt: nothing was
    read, so nothing was judged. Not tamper evidence: a rotation renames every ``.N`` to ``.N+1``."""


@dataclass(frozen=True, slots=True)
class ChainFile:
    """One file of a chain as a reader reads it: by its name (``fd`` None: opened when read), or held open by a
    ``ChainSnapshot`` (``fd``), read up to ``end`` (the live file's size in the snapshot; None: to its end).

    ``refused``: the file at ``path`` is not a regular file (a FIFO, a device, a directory), so it was not opened.
    """

    path: Path
    fd: int | None = None
    end: int | None = None
    refused: NotRegularFile | None = None


@dataclass(frozen=True, slots=True)
class ChainSnapshot:
    """The files of one chain (oldest first, the live file last), held open as they were at one instant, and its
    head file as read at that instant (``head``; None with ``head_error`` None: there is no head file). Close it
    (or use it in a ``with``) once read."""

    live: Path
    files: tuple[ChainFile, ...]
    head: ChainHead | None
    head_error: NotRegularFile | MalformedRecord | None
    # False: names kept changing through every attempt, the last under the live file's lock (when granted), where
    # TenantGate's own rotation cannot run: the files the last attempt holds are judged as they are.
    settled: bool = True

    @property
    def empty(self) -> bool:
        """True when no file of the chain exists, not even its head file."""
        return not self.files and self.head is None and self.head_error is None

    def close(self) -> None:
        # Two names of one file (a hard link) share one descriptor: closed once, never a number reused since.
        for fd in {file.fd for file in self.files}:
            close_quietly(fd)

    def __enter__(self) -> ChainSnapshot:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class _Member:
    path: Path
    fd: int | None
    ident: tuple[int, int]
    refused: NotRegularFile | None


def read_head_file(path: Path) -> tuple[ChainHead | None, NotRegularFile | MalformedRecord | None]:
    """``read_head(path)``, with a head file that is not a regular file or does not hold a head returned as the
    second value instead of raised (a reader reports it). Raises ``OSError`` when it cannot be read."""
    try:
        return read_head(path), None
    except (NotRegularFile, MalformedRecord) as err:
        return None, err


def snapshot_chain(live: Path, *, attempts: int = SNAPSHOT_ATTEMPTS,
                   lock_wait: float = SNAPSHOT_LOCK_WAIT) -> ChainSnapshot:
    """Every file of ``live``'s chain (``.N`` ... ``.1``, then ``live``) opened, as the chain was at one instant,
    with its head file read at that instant.

    Review finding: readers listed the files, then opened them one by one, while rotations renamed every
    ``.N`` to ``.N+1``: ``audit verify`` read a file twice or skipped one and called a busy log tampered. Here
    the live file is opened first, then the others; a file held open is read whole whatever it is renamed to.
    Then, under the live file's shared ``flock`` (the lock a writer holds exclusively to append or rotate), the
    live file must still be the one at the path, and every name must still name the file opened under it, no
    name added or removed. If not, a rotation ran meanwhile and the snapshot is taken again, at most
    ``attempts`` times in all; files opened before are kept (by device and inode), so a retry only looks at the
    names and opens the files new since. The first two attempts hold the lock for one stat, the head file's
    read and one fstat; a later one (the log rotates faster than its names can be looked at) holds it from
    before the listing until the names are checked: writers wait that long (a stat a file, an open for a new
    one). It is never held while the log is read. When the lock is not granted within ``lock_wait`` seconds the
    names are checked alone (they also catch what a writer that never takes the lock, e.g. ``logrotate``,
    renamed).

    The live file is read up to its size at that instant (``ChainFile.end``; rotated files to their end); with
    the lock, that is where the head file's last record ends or later. A ``.1`` that is a second name of the
    live file (a half rotation) is left out. When every attempt was spoiled, the last one's files are returned with
    ``settled`` False, to be judged as they are (review finding: a tamperer who kept replacing rotated files with
    copies made verify judge nothing, "not tamper evidence"; the last attempt holds the lock, so TenantGate's
    own rotation cannot be what changed them), but only when the last attempt was granted the lock: without it,
    ``RotatedWhileRead``. Raises ``OSError`` when a file cannot be listed, opened or read.
    """
    opened = _Opened()
    try:
        for attempt in range(attempts):
            snapshot = _snapshot_once(live, opened, lock_wait, hold=attempt >= 2, last=attempt == attempts - 1)
            if snapshot is not None:
                opened.release(snapshot)
                return snapshot
            time.sleep(0.001 * attempt)  # let a rotation in progress finish
    finally:
        opened.close()
    raise RotatedWhileRead(errno.EAGAIN, f"the log's files kept changing while it was read, {attempts} times in "
                           "a row; nothing was judged: run it again", str(live))


class _Opened:
    """The files a snapshot's attempts opened, by identity (device, inode): a file a rotation renamed since an
    attempt opened it is found at its new name, not opened again. Closes them all but the snapshot's."""

    def __init__(self) -> None:
        self._members: dict[tuple[int, int], _Member] = {}

    def member(self, path: Path) -> _Member | None:
        """The file at ``path`` (reused when already open), or None when there is none. Raises ``OSError``."""
        if self._members:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                return None
            known = self._members.get((st.st_dev, st.st_ino))
            if known is not None:
                return replace(known, path=path)
        member = _open_member(path)
        if member is None:
            return None
        known = self._members.setdefault(member.ident, member)
        if known is not member:  # a second descriptor of a file already open: keep one
            close_quietly(member.fd)
            return replace(known, path=path)
        return member

    def release(self, snapshot: ChainSnapshot) -> None:
        """The snapshot's descriptors are its own now: ``close`` leaves them open."""
        kept = {file.fd for file in snapshot.files}
        self._members = {ident: m for ident, m in self._members.items() if m.fd not in kept}

    def close(self) -> None:
        for member in self._members.values():
            close_quietly(member.fd)
        self._members = {}


def _snapshot_once(live: Path, opened: _Opened, lock_wait: float, *, hold: bool,
                   last: bool = False) -> ChainSnapshot | None:
    """One attempt of ``snapshot_chain`` (``hold``: under the lock from the listing on): the snapshot, or None
    when a rotation spoiled it (``last``: the files it holds, ``settled`` False, instead). Its files stay in
    ``opened``."""
    # The live file first: a rotation that renames the others replaces it too.
    current, locked = _locked_live(live, opened, lock_wait) if hold else (opened.member(live), False)
    # Files gone or renamed in the last attempt are judged as held only under the lock, where TenantGate's own
    # rotation cannot be what changed them. A reader the writers starved of the lock cannot tell: it takes no
    # verdict from what it holds (review finding: a busy log, whose writers held the lock through a reader's
    # wait, was reported TAMPERED, a file a rotation renamed away counted as missing).
    last = last and locked
    live_fd = current.fd if current is not None else None
    try:
        numbers = rotated_numbers(live)
        members: list[_Member] = []
        for number in reversed(numbers):
            member = opened.member(rotated_path(live, number))
            if member is None:
                if last:
                    continue  # gone under the lock in the last attempt: not a rotation; its records go missing
                return None  # listed, then gone: renamed or deleted by a rotation
            members.append(member)
        if current is not None:
            if members and members[-1].path == rotated_path(live, 1) and members[-1].ident == current.ident:
                members.pop()  # a half rotation: ``.1`` is the live file itself
            members.append(current)
        if not hold and live_fd is not None:
            locked = lock_shared(live_fd, lock_wait)
        head, head_error = read_head_file(head_path(live))
        end = os.fstat(live_fd).st_size if live_fd is not None else None
        stable = _names(live, current) and (not hold or _same_names(live, numbers, members))
    finally:
        if locked and live_fd is not None:
            unlock(live_fd)  # in an early attempt before the names are checked: writers wait for no more
    settled = stable and (hold or _same_names(live, numbers, members))
    if not settled and not last:
        return None
    # A rotated file is read to its end: a writer appends only to the file at the live path (checked under the lock).
    files = tuple(ChainFile(m.path, m.fd, end if m is current else None, m.refused) for m in members)
    return ChainSnapshot(live, files, head, head_error, settled)


def _locked_live(live: Path, opened: _Opened, lock_wait: float) -> tuple[_Member | None, bool]:
    """The live file opened and, if granted within ``lock_wait`` seconds, share-locked while it is still the one
    at ``live`` (True); a file rotated away while the lock was awaited is followed to the new live file."""
    deadline = time.monotonic() + lock_wait
    while True:
        current = opened.member(live)
        if current is None or current.fd is None:
            return current, False
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not lock_shared(current.fd, remaining):
            return current, False  # checked without the lock
        if _names(live, current):
            return current, True
        unlock(current.fd)


def _same_names(live: Path, numbers: list[int], members: list[_Member]) -> bool:
    """True when ``live``'s rotated files are still ``numbers`` and every member's name still names its file."""
    return rotated_numbers(live) == numbers and all(_names(member.path, member) for member in reversed(members))


def _open_member(path: Path) -> _Member | None:
    """``path`` opened for reading (a symlink followed, as readers do), or refused when it is not a regular file;
    None when there is no file at ``path``."""
    try:
        fd = open_regular(path, os.O_RDONLY, follow_symlinks=True)
    except FileNotFoundError:
        return None
    except NotRegularFile as err:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return _Member(path, None, (st.st_dev, st.st_ino), err)
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    return _Member(path, fd, (st.st_dev, st.st_ino), None)


def _names(path: Path, member: _Member | None) -> bool:
    """True when ``path`` still names ``member``'s file (for None: still names nothing)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return member is None
    return member is not None and (st.st_dev, st.st_ino) == member.ident
