"""The hash-chained JSON Lines audit sink: every record is in the chain before ``write`` returns.

Each batch of records (see ``commit.py``) is appended under an exclusive ``flock`` on the live file, so
several sinks on one file (a CLI ``check`` beside the server) still form one valid chain: a writer that
finds the file grown by someone else re-reads the chain head from its tail. Within the lock a batch is
sealed onto the chain (``chain.py``), rotated into a new file if it would pass ``rotate_bytes``, written
with one ``os.write`` loop, fsynced in ``"fsync"`` mode, and the head sidecar is updated.

Failures raise ``AuditUnavailable`` from ``write``; nothing is dropped silently. A failed write is cut back
so the log stays line-aligned, and the next write starts afresh (reopen, re-read the tail), so the sink
recovers by itself once the disk has room or the path is writable again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tenantgate.audit.chain import CHAIN_FIELDS, SealedRecord, seal
from tenantgate.audit.checkpoint import CHECKPOINT, checkpoint_fields, load_private_key
from tenantgate.audit.commit import GroupCommitter
from tenantgate.audit.fileio import (
    append_all,
    close_quietly,
    forget_half_rotation,
    lock_exclusive,
    rotate,
    unlock,
)
from tenantgate.audit.files import (
    ChainHead,
    encode_head,
    head_path,
    known_head,
    resume_point,
    rotated_path,
    same_file,
    scan_tail,
    worker_path,
)
from tenantgate.audit.recovery import Recovery, check_end, move_unchained, set_aside_tail
from tenantgate.core.model import rfc3339
from tenantgate.core.ports import AuditRecord, Clock, SystemClock
from tenantgate.errors import AuditUnavailable
from tenantgate.paths import NotRegularFile, make_private_dirs, open_regular

log = logging.getLogger("tenantgate.audit")

Durability = Literal["flush", "fsync"]
DURABILITIES: tuple[Durability, ...] = ("flush", "fsync")


@dataclass(frozen=True, slots=True)
class AuditStats:
    """Counters since the sink was created (for metrics and tests)."""

    records: int
    batches: int
    fsyncs: int
    checkpoints: int
    rotations: int
    recoveries: int
    failures: int
    head_failures: int


@dataclass(frozen=True, slots=True)
class _Item:
    fields: dict[str, Any] | None  # None: no record, just open/recover (or checkpoint when ``checkpoint``)
    checkpoint: bool = False
    close: bool = False  # close the files after this batch (no I/O of its own)


def _fields(event: AuditRecord) -> dict[str, Any]:
    fields = event.to_dict()
    clash = [name for name in CHAIN_FIELDS if name in fields]
    if clash:
        raise ValueError(f"audit record must not set chain field(s) {', '.join(clash)}")
    return fields


class _Moved(Exception):
    """The live file was moved aside (unchained legacy log); open the path again."""


class _Adopted(Exception):
    """Rotation found another writer's records in the new live file (``fd``, locked); seal the batch again."""

    def __init__(self, fd: int) -> None:
        super().__init__(fd)
        self.fd = fd


class _Probe:
    """A record written only to test that the log can grow again after a failure."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def to_dict(self) -> dict[str, str]:
        return {"record_type": "audit_probe", "time": rfc3339(self._clock.now())}


class JsonlAuditSink:
    """Appends audit records to a hash-chained JSON Lines file (created 0600, parent directories 0700).

    ``durability``: ``"flush"`` hands each record to the OS before ``write`` returns (survives a process
    crash); ``"fsync"`` also waits for the disk, concurrent writers sharing one fsync (group commit).
    ``rotate_bytes`` > 0 renames the live file to ``.1`` (shifting older ones, keeping ``keep_files`` of
    them; 0 keeps all) before a batch would make it larger; the chain continues in the new file.
    ``checkpoint_key`` (an Ed25519 PEM file or key) turns on signed checkpoints every ``checkpoint_every``
    records and, when ``checkpoint_seconds`` > 0, at the first write after that many seconds (measured on
    ``monotonic``, so a step of the wall clock ``clock`` neither delays nor hastens it); at close; and
    before anything else it writes on a chain it did not write last (restart, another writer) that does not
    end in one, so every unsigned run is one keyed writer's, at most ``checkpoint_every`` records.
    ``worker`` > 0 writes worker N's own chain to ``<stem>-wN<suffix>``: separate processes should not share
    a chain (they serialise on its lock).

    The live file, its head file and rotated files must be regular files: a symbolic link at their own name is
    not followed and a FIFO or device is never written to or waited on (the live file: ``AuditUnavailable``;
    the head file: not updated, logged and counted in ``head_failures``). When the log does not end where the
    chain was known to end (its own last batch in this very file, or the head file), an ``audit_recovered``
    record says so before anything else is written (see ``_sync_chain``).

    Raises ``ValueError`` for impossible parameters and ``ConfigError`` for an unusable key.
    """

    def __init__(self, path: str | os.PathLike[str], *, durability: Durability = "flush", rotate_bytes: int = 0,
                 keep_files: int = 10, checkpoint_key: str | os.PathLike[str] | Ed25519PrivateKey | None = None,
                 checkpoint_every: int = 1000, checkpoint_seconds: float = 0.0, worker: int = 0,
                 clock: Clock | None = None, lock_timeout: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {', '.join(DURABILITIES)}, not {durability!r}")
        if rotate_bytes < 0 or keep_files < 0 or checkpoint_every < 1 or checkpoint_seconds < 0:
            raise ValueError("rotate_bytes, keep_files, checkpoint_seconds must be >= 0 and checkpoint_every >= 1")
        self.path = worker_path(path, worker)
        self._path_text = os.fspath(self.path)  # for os.stat on every batch (a Path costs a conversion each time)
        self.durability = durability
        self._rotate_bytes = rotate_bytes
        self._keep_files = keep_files
        self._key = None if checkpoint_key is None else load_private_key(checkpoint_key)
        self._every = checkpoint_every
        self._seconds = checkpoint_seconds
        self._clock = clock or SystemClock()  # the checkpoint record's ``time``
        self._monotonic = monotonic  # when a timed checkpoint is due
        self._lock_timeout = lock_timeout
        self._committer: GroupCommitter[_Item] = GroupCommitter(self._flush)
        self._ok = True
        # State below is touched only by the batch leader (one at a time, see GroupCommitter).
        self._fd: int | None = None
        self._head_fd: int | None = None
        self._ident: tuple[int, int] = (-1, -1)
        self._other_links = 1  # a link count of our file checked not to be a half rotation (see ``_unchanged``)
        self._chain: ChainHead | None = None  # the chain head as of our last batch
        self._end = -1  # file size after our last batch; anything else means someone else wrote
        self._preamble: list[dict[str, Any]] = []  # recovery records not yet written
        self._since_checkpoint = 0
        self._checkpoint_due = False
        # On ``monotonic``, not the wall clock: after a step back by X seconds, ``now - last`` stayed below
        # ``checkpoint_seconds`` for X seconds more and no timed checkpoint was written (review finding).
        self._last_checkpoint = self._monotonic()
        self._head_failing = False
        self._counts = dict.fromkeys(AuditStats.__slots__, 0)

    def open(self) -> None:
        """Open (or create) the log now and recover a torn tail, raising ``AuditUnavailable`` if impossible."""
        self._submit(_Item(None))

    def write(self, event: AuditRecord) -> None:
        """Append ``event`` to the chain; returns once it is written (and fsynced in ``"fsync"`` mode).

        Raises ``AuditUnavailable`` when it is not in the log (disk full, unwritable path, lock timeout);
        ``ValueError`` when the event itself uses a chain field name (a programming error).
        """
        self._submit(_Item(_fields(event)))

    def write_many(self, events: Sequence[AuditRecord]) -> list[AuditUnavailable | None]:
        """Append ``events`` together (one write, one fsync, one lock); returns once they are written.

        One entry per event: None when it is in the log, else why not (the whole batch fails together,
        except an event that cannot be encoded, which fails alone). ``ValueError`` as for ``write``.
        """
        errors = self._committer.submit_many([_Item(_fields(event)) for event in events])
        return [None if error is None else self._unavailable(error) for error in errors]

    def checkpoint(self) -> None:
        """Write a signed checkpoint now if records were added since the last one (no-op without a key)."""
        if self._key is not None:
            self._submit(_Item(None, checkpoint=True))

    def checkpoint_if_due(self) -> None:
        """For a timer: checkpoint when ``checkpoint_seconds`` have passed and the tail is unsigned."""
        if self._key is not None and self._seconds and self._since_checkpoint and \
                self._monotonic() - self._last_checkpoint >= self._seconds:
            self.checkpoint()

    def healthy(self) -> bool:
        """True when records can be written to the log itself.

        After a failed write, health is probed by appending a small ``audit_probe`` record to the actual log
        (not a side file, which could succeed while the log cannot grow); only a successful append restores
        health, so it recovers without a restart once the log is writable again.
        """
        if self._ok:
            return True
        try:
            self.write(_Probe(self._clock))
        except AuditUnavailable:
            return False
        return True

    def stats(self) -> AuditStats:
        return AuditStats(**self._counts)

    def close(self) -> None:
        """Checkpoint the unsigned tail (with a key), then close the files. A later write reopens them."""
        if self._key is not None and self._fd is not None and self._since_checkpoint:
            try:
                self.checkpoint()
            except AuditUnavailable as err:
                log.warning("no closing checkpoint: %s", err)
        self._committer.submit(_Item(None, close=True))  # in turn, so no batch is cut off mid-write

    # -- the batch leader ----------------------------------------------------------------------------------

    def _submit(self, item: _Item) -> None:
        error = self._committer.submit(item)
        if error is not None:
            raise self._unavailable(error) from error

    def _unavailable(self, error: BaseException) -> AuditUnavailable:
        if isinstance(error, OSError):
            problem = AuditUnavailable(f"cannot append to audit log {self.path}: {error.strerror or error}")
        elif isinstance(error, AuditUnavailable):
            problem = AuditUnavailable(str(error))
        elif isinstance(error, (ValueError, TypeError)):
            problem = AuditUnavailable(f"audit record cannot be encoded: {error}")
        else:
            problem = AuditUnavailable(f"audit log {self.path}: unexpected error {error!r}")
        problem.__cause__ = error
        return problem

    def _flush(self, items: list[_Item]) -> list[BaseException | None]:
        closing = [i.close for i in items]
        if not any(closing):
            return self._write_batch(items)
        errors = self._write_batch(items) if not all(closing) else [None] * len(items)
        self._close_files()
        return [None if close else error for close, error in zip(closing, errors, strict=True)]

    def _write_batch(self, items: list[_Item]) -> list[BaseException | None]:
        try:
            fd = self._acquire()
            errors = self._append_batch(fd, items)
            self._ok = True
            return errors
        except (OSError, AuditUnavailable, ValueError, TypeError) as err:
            self._ok = False
            self._counts["failures"] += 1
            self._close_files()  # start afresh next time: reopen, re-read the tail
            return [err] * len(items)
        finally:
            if self._fd is not None:
                unlock(self._fd)  # after a rotation this is the new file, locked since it was created

    def _append_batch(self, fd: int, items: list[_Item], rotate: bool = True) -> list[BaseException | None]:
        """Seal the preamble, the items and due checkpoints onto the chain and append them in one write.

        Returns one entry per item: an item that cannot be encoded fails alone. Raises ``OSError`` when the
        batch is not written (then nothing of it is in the log and the chain head is unchanged). ``rotate``
        False: do not rotate before this batch (it was just done).
        """
        assert self._chain is not None
        errors: list[BaseException | None] = [None] * len(items)
        seq, last_hash = self._chain.seq, self._chain.hash  # the chain head as the batch grows
        lines: list[bytes] = []
        key, since, checkpoints, records = self._key, self._since_checkpoint, 0, 0
        now = self._clock.now() if key is not None else 0.0
        tick = self._monotonic() if key is not None else 0.0
        if key is not None and self._checkpoint_due and seq > 0:
            # The chain we found (restart, another writer, a rotation) does not end in a checkpoint: seal it
            # before anything of ours, so its unsigned records are not counted together with ours.
            sealed = self._seal_checkpoint(key, ChainHead(seq, last_hash), now)
            lines.append(sealed.line)
            seq, last_hash, since, checkpoints = sealed.seq, sealed.hash, 0, 1
        preamble = self._preamble
        for fields in preamble:  # our own recovery records: always encodable
            sealed = seal(fields, seq + 1, last_hash)
            lines.append(sealed.line)
            seq, last_hash, since = sealed.seq, sealed.hash, since + 1
        for index, item in enumerate(items):
            if item.fields is None:
                continue
            try:
                sealed = seal(item.fields, seq + 1, last_hash)
            except (ValueError, TypeError) as err:
                errors[index] = err
                continue
            lines.append(sealed.line)
            seq, last_hash, since, records = sealed.seq, sealed.hash, since + 1, records + 1
            if key is not None and since >= self._every:
                sealed = self._seal_checkpoint(key, ChainHead(seq, last_hash), now)
                lines.append(sealed.line)
                seq, last_hash, since, checkpoints = sealed.seq, sealed.hash, 0, checkpoints + 1
        if key is not None and since and self._checkpoint_wanted(items, tick):
            sealed = self._seal_checkpoint(key, ChainHead(seq, last_hash), now)
            lines.append(sealed.line)
            seq, last_hash, since, checkpoints = sealed.seq, sealed.hash, 0, checkpoints + 1
        counts = self._counts
        if lines:
            data = b"".join(lines)  # one line: join returns it as it is, no copy
            if rotate:
                try:
                    fd = self._maybe_rotate(fd, len(data))
                except _Adopted as adopted:  # sealed on a chain head that is no longer the last: seal again
                    return self._append_batch(adopted.fd, items, rotate=False)
            sync = self.durability == "fsync"
            end = append_all(fd, data, start=self._end, sync=sync)
            # The head first, then the size: if this is interrupted between the two, the size on disk no
            # longer matches ``_end`` and the next batch re-reads the chain head from the file.
            self._chain = ChainHead(seq, last_hash)
            self._end = end
            counts["batches"] += 1
            counts["fsyncs"] += sync
        counts["records"] += records
        if preamble:
            counts["recoveries"] += len(preamble)
            self._preamble = []
        self._since_checkpoint, self._checkpoint_due = since, False
        if checkpoints:
            self._last_checkpoint = tick
            counts["checkpoints"] += checkpoints
        if lines:
            self._write_head()
        return errors

    def _checkpoint_wanted(self, items: list[_Item], tick: float) -> bool:
        """True when the unsigned tail (not empty) is to be signed now: its time has come (``tick`` is the
        ``monotonic`` time), or it was asked for."""
        timed = bool(self._seconds) and tick - self._last_checkpoint >= self._seconds
        return timed or any(i.checkpoint for i in items)

    @staticmethod
    def _seal_checkpoint(key: Ed25519PrivateKey, head: ChainHead, now: float) -> SealedRecord:
        fields = checkpoint_fields(key, count=head.seq, chain_head=head.hash, time=rfc3339(now))
        return seal(fields, head.seq + 1, head.hash)

    def _acquire(self) -> int:
        """The live file, open and exclusively locked, its chain head known (recovering a torn tail)."""
        for _attempt in range(10):
            fd = self._ensure_open()
            lock_exclusive(fd, self._lock_timeout, self.path)
            if self._unchanged():
                return fd  # the common case, one stat: our file is still the live one and nobody wrote to it
            st = os.fstat(fd)
            if not self._is_live(st):
                unlock(fd)  # rotated, replaced or deleted (before or while we waited for the lock): reopen
                self._close_files()
                continue
            try:
                self._sync_chain(fd, st)
            except _Moved:
                unlock(fd)
                self._close_files()
                continue
            except BaseException:
                unlock(fd)
                raise
            return fd
        raise AuditUnavailable(f"audit log {self.path} keeps being replaced; giving up on this batch")

    def _unchanged(self) -> bool:
        """Called with the lock held. True when the file at our path is the one we have open, of the size
        we left it (so the chain head in memory is current); False when unsure (then the full checks run)."""
        if self._chain is None:
            return False
        try:
            on_disk = os.stat(self._path_text)
        except OSError:
            return False
        if (on_disk.st_dev, on_disk.st_ino) != self._ident or on_disk.st_size != self._end:
            return False
        # A second name (nlink > 1) may mean a writer was killed mid-rotation, leaving ``.1`` linked to this very
        # file: the slow path removes it. A count the slow path found to be other names (a hard-link backup)
        # is accepted while it holds, or every batch would take the slow path for as long as they exist; a
        # new count (a half rotation on top of them) means looking again, and so does one after seeing 1. Left
        # unseen: the backup's name gone and a half rotation made between two of our batches (same count);
        # readers skip such a ``.1`` and our next rotation, or next slow path, removes it.
        links = on_disk.st_nlink
        if links < 2:
            self._other_links = 1
            return True
        return links == self._other_links

    def _sync_chain(self, fd: int, st: os.stat_result) -> None:
        """Learn where the chain ends from the file ``fd`` (locked, ``st`` its fstat) when someone else may have
        written to it: a restart, another writer, a rotation, a failure. Sets ``_chain`` and ``_end``; queues
        an ``audit_recovered`` record when the end is not what the chain reached. Raises ``_Moved``,
        ``AuditUnavailable`` (no intact record in the tail window), ``OSError``."""
        ident = (st.st_dev, st.st_ino)
        self._other_links = 1  # it belongs to ``_ident``, which becomes ``ident`` below
        # Even when we wrote last: the half rotation may be someone else's. When ``.1`` is another file, the
        # extra names are not a half rotation: the fast path may accept this count again.
        if st.st_nlink > 1 and not forget_half_rotation(self.path):
            self._other_links = st.st_nlink
        if self._chain is not None and ident == self._ident and st.st_size == self._end:
            return  # we wrote last: the head in memory is current
        # Our own last batch went to this very file (open all along, so not a reused inode): its record is a head
        # nobody can rewrite in memory. (Right after our own rotation it went to ``.1``: the new file's records
        # can only follow it, so it is never found there and nothing is set aside.)
        ours = self._chain if ident == self._ident else None
        self._ident = ident
        forget_half_rotation(self.path)
        # Records we did not write may follow our last checkpoint: counting on would understate the unsigned
        # run. The chain found ends in a checkpoint, or ``_checkpoint_due`` seals it first in the next batch.
        self._since_checkpoint = 0
        if st.st_size == 0:
            self._chain = resume_point(self.path, self._chain)
            self._checkpoint_due = self._chain.seq > 0
        else:
            scan = scan_tail(fd, st.st_size)
            if scan.last is None and scan.legacy:
                self._preamble.append(move_unchained(self.path, self._clock.now(), self.durability == "fsync"))
                raise _Moved
            if scan.last is None and not scan.whole_file:
                raise AuditUnavailable(f"no intact record in the last {st.st_size - scan.intact_end} bytes of "
                                       f"{self.path}; inspect it with `tenantgate audit verify`")
            known = known_head(self.path, ours)
            if scan.last is None:  # nothing intact in the whole file: continue from what else there is
                recovery = Recovery(self.path, fd, scan.intact_end, st.st_size,
                                    resume_point(self.path, self._chain), known)
            else:
                recovery = check_end(self.path, fd, scan, known, ours)
            if recovery.cut < recovery.size or recovery.reason != "torn_tail":
                self._preamble.append(set_aside_tail(recovery, self._clock.now(), self.durability == "fsync"))
            self._chain = recovery.resume
            self._checkpoint_due = scan.last is None or recovery.reason == "head_mismatch" or \
                scan.last.record_type != CHECKPOINT
        self._end = os.fstat(fd).st_size

    def _maybe_rotate(self, fd: int, size: int) -> int:
        """``fd``, or the new live file (locked) after a rotation. Raises ``_Adopted`` when the chain no longer
        ends where the batch was sealed (only without hard links): the new live file already holds another
        writer's records, or that writer rotated its file to ``.1`` meanwhile. The batch must be sealed again."""
        if not self._rotate_bytes or self._end <= 0 or self._end + size <= self._rotate_bytes:
            return fd
        old = os.fstat(fd)
        new_fd = rotate(self.path, self._keep_files, self.durability == "fsync", self._lock_timeout)
        self._fd = new_fd  # from here on closed by ``_close_files`` if anything fails
        try:
            st = os.fstat(new_fd)
            self._ident, self._end, self._other_links = (st.st_dev, st.st_ino), 0, 1
            self._counts["rotations"] += 1
            if st.st_size:
                try:
                    self._sync_chain(new_fd, st)  # the chain now ends in that writer's records
                except _Moved:
                    raise AuditUnavailable(f"audit log {self.path} was replaced by an unchained file during "
                                           "rotation; retry") from None
                raise _Adopted(new_fd)
            # Without hard links an empty new file does not prove the chain still ends where we left it: in the
            # gap another writer may have created a file, appended to it and rotated it to ``.1`` itself. Then
            # ``.1`` is not our old file (still open here, so its inode cannot have been reused).
            if not same_file(rotated_path(self.path, 1), old):
                self._follow_rotated()
                raise _Adopted(new_fd)
        finally:
            unlock(fd)
            close_quietly(fd)
        return new_fd

    def _follow_rotated(self) -> None:
        """Continue the chain from wherever it now ends (``.1``'s tail, the head file), as someone else wrote
        last: nothing of ours is counted as signed-for, and a tail without a checkpoint is sealed first."""
        self._chain = resume_point(self.path, self._chain)
        self._since_checkpoint = 0
        self._checkpoint_due = self._chain.seq > 0

    def _write_head(self) -> None:
        if self._chain is None:
            return
        try:
            if self._head_fd is None:
                # Never through a symlink (it would overwrite any file the server may write) nor into a FIFO.
                self._head_fd = open_regular(head_path(self.path), os.O_RDWR | os.O_CREAT)
            os.pwrite(self._head_fd, encode_head(self._chain), 0)
            if self.durability == "fsync":
                os.fsync(self._head_fd)
            self._head_failing = False
        except OSError as err:
            # The records are in the log; only end-truncation detection is weakened. Not a failed decision.
            self._counts["head_failures"] += 1
            if not self._head_failing:
                log.warning("audit head file %s not updated: %s", head_path(self.path), err.strerror)
            self._head_failing = True
            close_quietly(self._head_fd)
            self._head_fd = None

    def _ensure_open(self) -> int:
        if self._fd is None:
            try:
                make_private_dirs(self.path.parent)
                # A regular file only: records written to a FIFO nobody reads, to /dev/null or through a symlink
                # planted at the path would be acknowledged and kept nowhere (review finding).
                self._fd = open_regular(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
            except NotRegularFile as err:
                raise AuditUnavailable(f"audit log {self.path} is {err.strerror}: no record is written to it") \
                    from err
            except OSError as err:
                raise AuditUnavailable(f"cannot open audit log {self.path}: {err.strerror}") from err
        return self._fd

    def _is_live(self, ours: os.stat_result) -> bool:
        """True when our open file is still the one at the configured path (not renamed away or deleted)."""
        try:
            on_disk = os.stat(self.path)
        except OSError:
            return False
        return (on_disk.st_ino, on_disk.st_dev) == (ours.st_ino, ours.st_dev)

    def _close_files(self) -> None:
        close_quietly(self._fd)
        close_quietly(self._head_fd)
        self._fd = self._head_fd = None
        self._end = -1
        self._ident = (-1, -1)  # a file opened later is not the one our chain head was written to, even at this inode

