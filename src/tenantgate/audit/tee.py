"""A second copy of the audit stream (e.g. JSON lines on stdout for a log shipper) that never fails a decision.

``TeeAuditSink(primary, secondary)``: ``write`` returns when the primary has the record (its failure is the
decision's failure, as always). The record is then queued for the secondary, written by one background
thread: a slow, blocked or failing secondary never delays or fails a decision. Its failures and the records
it could not take (queue full) are logged and counted, never silent. Nor does it delay a shutdown: ``close``
closes the primary first and abandons a secondary still blocked after its timeout (logged).
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

from tenantgate.audit.jsonl import encode_event
from tenantgate.core.ports import AuditRecord, AuditSink
from tenantgate.errors import AuditUnavailable

log = logging.getLogger("tenantgate.audit")

_STOP = object()


def write_each(sink: AuditSink, events: Sequence[AuditRecord]) -> list[AuditUnavailable | None]:
    """``write_many`` for a sink without a batch write: ``write`` each event, collecting the failures."""
    errors: list[AuditUnavailable | None] = []
    for event in events:
        try:
            sink.write(event)
            errors.append(None)
        except AuditUnavailable as err:
            errors.append(err)
    return errors


class StreamAuditSink:
    """Writes each record as one plain JSON line (``encode_event``, no chain fields) to a text stream.

    ``write`` returns after the stream is flushed; it raises ``AuditUnavailable`` when the stream fails
    (closed pipe, full disk). Use it as a ``TeeAuditSink`` secondary so a stalled reader cannot stall
    decisions.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()
        self._ok = True

    def write(self, event: AuditRecord) -> None:
        line = encode_event(event).decode("ascii")
        with self._lock:
            try:
                self._stream.write(line)
                self._stream.flush()
            except (OSError, ValueError) as err:  # ValueError: write to a closed stream
                self._ok = False
                raise AuditUnavailable(f"cannot write audit record to stream: {err}") from err
            self._ok = True

    def write_many(self, events: Sequence[AuditRecord]) -> list[AuditUnavailable | None]:
        return write_each(self, events)

    def healthy(self) -> bool:
        return self._ok

    def close(self, timeout: float = 2.0) -> None:
        """Flush the stream, waiting at most ``timeout`` seconds for a ``write`` in progress (one blocked on a
        pipe nobody reads would hold it forever: then nothing is flushed, and a warning is logged)."""
        if not self._lock.acquire(timeout=timeout):
            log.warning("audit stream still blocked in a write after %.1fs: closed without flushing", timeout)
            return
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass
        finally:
            self._lock.release()


class TeeAuditSink:
    """Writes to ``primary`` (which decides success), then hands the record to ``secondary`` in the background.

    At most ``max_pending`` records wait for the secondary; beyond that they are skipped for the secondary
    only (counted in ``secondary_dropped``). ``secondary_failures`` counts records the secondary refused.
    """

    def __init__(self, primary: AuditSink, secondary: AuditSink, *, max_pending: int = 10_000) -> None:
        self.primary = primary
        self.secondary = secondary
        self._queue: queue.Queue[Any] = queue.Queue(max_pending)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._failing = False
        self._dropping = False
        self._writing = False  # the drain thread is inside secondary.write (only it sets this)
        self.secondary_failures = 0
        self.secondary_dropped = 0

    def open(self) -> None:
        """Open the primary now (if it has ``open``), raising its ``AuditUnavailable``."""
        opener = getattr(self.primary, "open", None)
        if opener is not None:
            opener()

    def write(self, event: AuditRecord) -> None:
        """Raises ``AuditUnavailable`` only when the primary fails; the secondary is never waited for."""
        self.primary.write(event)
        self._forward(event)

    def write_many(self, events: Sequence[AuditRecord]) -> Sequence[Exception | None]:
        """Like ``write`` for each event: the primary's entries decide; written events go to the secondary."""
        errors = self.primary.write_many(events)
        for event, error in zip(events, errors, strict=True):
            if error is None:
                self._forward(event)
        return errors

    def _forward(self, event: AuditRecord) -> None:
        self._ensure_thread()
        try:
            self._queue.put_nowait(event)
            self._dropping = False
        except queue.Full:
            self.secondary_dropped += 1
            if not self._dropping:
                log.warning("secondary audit sink is behind: records are skipped for it (the primary has them)")
            self._dropping = True

    def healthy(self) -> bool:
        """The primary's health: the secondary never makes the PDP unready."""
        return self.primary.healthy()

    def checkpoint_if_due(self) -> None:
        """Forwarded to the primary (a timer's hook for signed checkpoints), if it has one."""
        hook = getattr(self.primary, "checkpoint_if_due", None)
        if hook is not None:
            hook()

    def close(self, timeout: float = 2.0) -> None:
        """Close the primary, then give the secondary up to ``timeout`` seconds to catch up and close it.

        The primary goes first: its closing checkpoint must not wait for the copy. A secondary still busy
        after ``timeout`` (a stdout nobody reads blocks its write for good) is abandoned, not closed: closing
        it would wait for that write. Its daemon thread is left behind and a warning says how many records
        it did not get (the primary has them). Review finding: a stalled stdout reader made SIGTERM hang.
        """
        try:
            closer = getattr(self.primary, "close", None)
            if closer is not None:
                closer()
        finally:
            self._close_secondary(timeout)

    def _close_secondary(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        thread = self._thread
        if thread is not None:
            stop_queued = True
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                stop_queued = False
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                missed = self._queue.qsize() - stop_queued + self._writing
                log.warning("secondary audit sink still blocked after %.1fs at close: abandoned; it did not get "
                            "%d record(s) (the primary has them)", timeout, missed)
                return
        closer = getattr(self.secondary, "close", None)
        if closer is not None:
            closer()

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain, name="audit-secondary", daemon=True)
                self._thread.start()

    def _drain(self) -> None:
        while True:
            event = self._queue.get()
            if event is _STOP:
                return
            self._writing = True
            try:
                self.secondary.write(event)
            except Exception as err:  # noqa: BLE001 - a secondary failure is counted, never fatal
                self._writing = False
                self.secondary_failures += 1
                if not self._failing:
                    log.warning("secondary audit sink failed (records are still in the primary): %s", err)
                self._failing = True
                continue
            self._writing = False
            if self._failing:
                log.info("secondary audit sink recovered after %d failure(s)", self.secondary_failures)
            self._failing = False
