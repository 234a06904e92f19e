"""The hash-chained JSON Lines audit sink: every record is in the chain before ``write`` returns.

Concurrent writes share one batch (``commit.py``); the batch leader's ``ChainWriter`` (``writer.py``) seals
each batch onto the chain under an exclusive ``flock`` on the live file, rotates, writes, fsyncs and updates
the head sidecar, so several sinks on one file (a CLI ``check`` beside the server) still form one valid chain.

Failures raise ``AuditUnavailable`` from ``write``; nothing is dropped silently. A failed write is cut back
so the log stays line-aligned, and the next write starts afresh (reopen, re-read the tail), so the sink
recovers by itself once the disk has room or the path is writable again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tenantgate.audit.chain import CHAIN_FIELDS
from tenantgate.audit.checkpoint import ChainIdentity, load_private_key
from tenantgate.audit.commit import GroupCommitter
from tenantgate.audit.files import worker_path
from tenantgate.audit.writer import AuditStats, BatchItem, ChainWriter
from tenantgate.core.model import rfc3339
from tenantgate.core.ports import AuditRecord, Clock, SystemClock
from tenantgate.errors import AuditUnavailable

log = logging.getLogger("tenantgate.audit")

Durability = Literal["flush", "fsync"]
DURABILITIES: tuple[Durability, ...] = ("flush", "fsync")


def _fields(event: AuditRecord) -> dict[str, Any]:
    fields = event.to_dict()
    clash = [name for name in CHAIN_FIELDS if name in fields]
    if clash:
        raise ValueError(f"audit record must not set chain field(s) {', '.join(clash)}")
    return fields


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
    a chain (they serialise on its lock). Each checkpoint signs which chain it is: ``worker`` and
    ``deployment`` (``audit.deployment_id``), so verify can tell it from another chain signed with the same
    key (``verify.py``).

    The live file, its head file and rotated files must be regular files: a symbolic link at their own name is
    not followed and a FIFO or device is never written to or waited on (the live file: ``AuditUnavailable``;
    the head file: not updated, logged and counted in ``head_failures``). When the log does not end where the
    chain was known to end (its own last batch in this very file, or the head file), an ``audit_recovered``
    record says so before anything else is written (see ``LiveChain._sync_chain`` in ``livechain.py``).

    Raises ``ValueError`` for impossible parameters and ``ConfigError`` for an unusable key.
    """

    def __init__(self, path: str | os.PathLike[str], *, durability: Durability = "flush", rotate_bytes: int = 0,
                 keep_files: int = 10, checkpoint_key: str | os.PathLike[str] | Ed25519PrivateKey | None = None,
                 checkpoint_every: int = 1000, checkpoint_seconds: float = 0.0, worker: int = 0,
                 deployment: str = "", clock: Clock | None = None, lock_timeout: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {', '.join(DURABILITIES)}, not {durability!r}")
        if rotate_bytes < 0 or keep_files < 0 or checkpoint_every < 1 or checkpoint_seconds < 0:
            raise ValueError("rotate_bytes, keep_files, checkpoint_seconds must be >= 0 and checkpoint_every >= 1")
        self.path = worker_path(path, worker)
        self.durability = durability
        key = None if checkpoint_key is None else load_private_key(checkpoint_key)
        self._clock = clock or SystemClock()  # the checkpoint record's ``time``, the probe's
        self._writer = ChainWriter(self.path, sync=durability == "fsync", rotate_bytes=rotate_bytes,
                                   keep_files=keep_files, key=key, chain=ChainIdentity(deployment, worker),
                                   checkpoint_every=checkpoint_every,
                                   checkpoint_seconds=checkpoint_seconds, clock=self._clock,
                                   lock_timeout=lock_timeout, monotonic=monotonic)
        self._committer: GroupCommitter[BatchItem] = GroupCommitter(self._writer.flush)

    def open(self) -> None:
        """Open (or create) the log now and recover a torn tail, raising ``AuditUnavailable`` if impossible."""
        self._submit(BatchItem(None))

    def write(self, event: AuditRecord) -> None:
        """Append ``event`` to the chain; returns once it is written (and fsynced in ``"fsync"`` mode).

        Raises ``AuditUnavailable`` when it is not in the log (disk full, unwritable path, lock timeout);
        ``ValueError`` when the event itself uses a chain field name (a programming error).
        """
        self._submit(BatchItem(_fields(event)))

    def write_many(self, events: Sequence[AuditRecord]) -> list[AuditUnavailable | None]:
        """Append ``events`` together (one write, one fsync, one lock); returns once they are written.

        One entry per event: None when it is in the log, else why not (the whole batch fails together,
        except an event that cannot be encoded, which fails alone). ``ValueError`` as for ``write``.
        """
        errors = self._committer.submit_many([BatchItem(_fields(event)) for event in events])
        return [None if error is None else self._unavailable(error) for error in errors]

    def checkpoint(self) -> None:
        """Write a signed checkpoint now if records were added since the last one (no-op without a key)."""
        if self._writer.signs:
            self._submit(BatchItem(None, checkpoint=True))

    def checkpoint_if_due(self) -> None:
        """For a timer: checkpoint when ``checkpoint_seconds`` have passed and the tail is unsigned."""
        if self._writer.timed_checkpoint_due():
            self.checkpoint()

    def healthy(self) -> bool:
        """True when records can be written to the log itself.

        After a failed write, health is probed by appending a small ``audit_probe`` record to the actual log
        (not a side file, which could succeed while the log cannot grow); only a successful append restores
        health, so it recovers without a restart once the log is writable again.
        """
        if self._writer.ok:
            return True
        try:
            self.write(_Probe(self._clock))
        except AuditUnavailable:
            return False
        return True

    def stats(self) -> AuditStats:
        return self._writer.stats()

    def close(self) -> None:
        """Checkpoint the unsigned tail (with a key), then close the files. A later write reopens them."""
        if self._writer.closing_checkpoint_due():
            try:
                self.checkpoint()
            except AuditUnavailable as err:
                log.warning("no closing checkpoint: %s", err)
        self._committer.submit(BatchItem(None, close=True))  # in turn, so no batch is cut off mid-write

    # -- submitting to the batch leader (``ChainWriter.flush``) --------------------------------------------

    def _submit(self, item: BatchItem) -> None:
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
