"""The batch writer behind ``JsonlAuditSink``: it seals, appends, rotates and syncs the chain, one batch at a time.

Each batch of records (see ``commit.py``) is appended under an exclusive ``flock`` on the live file, so
several sinks on one file (a CLI ``check`` beside the server) still form one valid chain: a writer that
finds the file grown by someone else re-reads the chain head from its tail (``livechain.py``). Within the
lock a batch is sealed onto the chain (``chain.py``), rotated into a new file if it would pass
``rotate_bytes``, written with one ``os.write`` loop, fsynced in ``"fsync"`` mode, and the head sidecar is
updated.

A failed batch is cut back so the log stays line-aligned, and the next one starts afresh (reopen, re-read
the tail). The public side (``write``, health, the mapping of errors to ``AuditUnavailable``) is ``sink.py``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tenantgate.audit.chain import SealedRecord, seal
from tenantgate.audit.checkpoint import ChainIdentity, checkpoint_fields
from tenantgate.audit.fileio import append_all, close_quietly, rotate, unlock
from tenantgate.audit.files import ChainHead, encode_head, head_path, rotated_path, same_file
from tenantgate.audit.livechain import LiveChain, LiveFileMoved
from tenantgate.core.model import hot_record, rfc3339
from tenantgate.core.ports import Clock
from tenantgate.errors import AuditUnavailable
from tenantgate.paths import open_regular

log = logging.getLogger("tenantgate.audit")


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


@hot_record
class BatchItem:
    """One entry of a batch for ``ChainWriter.flush``: a record's fields, or a request to open, sign or close."""

    fields: dict[str, Any] | None  # None: no record, just open/recover (or checkpoint when ``checkpoint``)
    checkpoint: bool = False
    close: bool = False  # close the files after this batch (no I/O of its own)


class _Adopted(Exception):
    """Rotation found another writer's records in the new live file (``fd``, locked); seal the batch again."""

    def __init__(self, fd: int) -> None:
        super().__init__(fd)
        self.fd = fd


class ChainWriter(LiveChain):
    """Appends batches to the live file at ``path`` (already the worker's own, see ``worker_path``); counts them.

    ``flush`` is the ``GroupCommitter``'s flush of ``JsonlAuditSink``: only the batch leader calls it, one batch
    at a time, so nothing here is locked against threads (``flock`` guards the file against other writers).
    ``sync``: fsync each batch, the head file and set-aside evidence (``"fsync"`` durability). ``key``: sign
    checkpoints of ``chain`` every ``checkpoint_every`` records and after ``checkpoint_seconds`` (see
    ``JsonlAuditSink``).
    """

    def __init__(self, path: Path, *, sync: bool, rotate_bytes: int, keep_files: int,
                 key: Ed25519PrivateKey | None, chain: ChainIdentity, checkpoint_every: int,
                 checkpoint_seconds: float, clock: Clock, lock_timeout: float,
                 monotonic: Callable[[], float]) -> None:
        super().__init__(path, sync=sync, clock=clock, lock_timeout=lock_timeout)
        self._rotate_bytes = rotate_bytes
        self._keep_files = keep_files
        self._key = key
        self._identity = chain
        self._every = checkpoint_every
        self._seconds = checkpoint_seconds
        self._monotonic = monotonic  # when a timed checkpoint is due
        self.ok = True  # False after a failed batch, until one succeeds
        # On ``monotonic``, not the wall clock: after a step back by X seconds, ``now - last`` stayed below
        # ``checkpoint_seconds`` for X seconds more and no timed checkpoint was written (review finding).
        self._last_checkpoint = self._monotonic()
        self._head_failing = False
        self._counts = dict.fromkeys(AuditStats.__slots__, 0)

    @property
    def signs(self) -> bool:
        """True with a checkpoint key."""
        return self._key is not None

    def timed_checkpoint_due(self) -> bool:
        """True with a key when ``checkpoint_seconds`` have passed and the tail is unsigned."""
        return self._key is not None and bool(self._seconds) and bool(self._since_checkpoint) and \
            self._monotonic() - self._last_checkpoint >= self._seconds

    def closing_checkpoint_due(self) -> bool:
        """True with a key when the file is open and records were added since the last checkpoint."""
        return self._key is not None and self._fd is not None and bool(self._since_checkpoint)

    def stats(self) -> AuditStats:
        return AuditStats(**self._counts)

    def flush(self, items: list[BatchItem]) -> list[BaseException | None]:
        closing = [i.close for i in items]
        if not any(closing):
            return self._write_batch(items)
        errors = self._write_batch(items) if not all(closing) else [None] * len(items)
        self._close_files()
        return [None if close else error for close, error in zip(closing, errors, strict=True)]

    def _write_batch(self, items: list[BatchItem]) -> list[BaseException | None]:
        try:
            fd = self._acquire()
            errors = self._append_batch(fd, items)
            self.ok = True
            return errors
        except (OSError, AuditUnavailable, ValueError, TypeError) as err:
            self.ok = False
            self._counts["failures"] += 1
            self._close_files()  # start afresh next time: reopen, re-read the tail
            return [err] * len(items)
        finally:
            if self._fd is not None:
                unlock(self._fd)  # after a rotation this is the new file, locked since it was created

    def _append_batch(self, fd: int, items: list[BatchItem], rotate: bool = True) -> list[BaseException | None]:
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
            sync = self._sync
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

    def _checkpoint_wanted(self, items: list[BatchItem], tick: float) -> bool:
        """True when the unsigned tail (not empty) is to be signed now: its time has come (``tick`` is the
        ``monotonic`` time), or it was asked for."""
        timed = bool(self._seconds) and tick - self._last_checkpoint >= self._seconds
        return timed or any(i.checkpoint for i in items)

    def _seal_checkpoint(self, key: Ed25519PrivateKey, head: ChainHead, now: float) -> SealedRecord:
        fields = checkpoint_fields(key, count=head.seq, chain_head=head.hash, time=rfc3339(now), chain=self._identity)
        return seal(fields, head.seq + 1, head.hash)

    def _maybe_rotate(self, fd: int, size: int) -> int:
        """``fd``, or the new live file (locked) after a rotation. Raises ``_Adopted`` when the chain no longer
        ends where the batch was sealed (only without hard links): the new live file already holds another
        writer's records, or that writer rotated its file to ``.1`` meanwhile. The batch must be sealed again."""
        if not self._rotate_bytes or self._end <= 0 or self._end + size <= self._rotate_bytes:
            return fd
        old = os.fstat(fd)
        new_fd = rotate(self.path, self._keep_files, self._sync, self._lock_timeout)
        self._fd = new_fd  # from here on closed by ``_close_files`` if anything fails
        try:
            st = os.fstat(new_fd)
            self._ident, self._end, self._other_links = (st.st_dev, st.st_ino), 0, 1
            self._counts["rotations"] += 1
            if st.st_size:
                try:
                    self._sync_chain(new_fd, st)  # the chain now ends in that writer's records
                except LiveFileMoved:
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

    def _write_head(self) -> None:
        if self._chain is None:
            return
        try:
            if self._head_fd is None:
                # Never through a symlink (it would overwrite any file the server may write) nor into a FIFO.
                self._head_fd = open_regular(head_path(self.path), os.O_RDWR | os.O_CREAT)
            os.pwrite(self._head_fd, encode_head(self._chain), 0)
            if self._sync:
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
