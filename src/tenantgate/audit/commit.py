"""Group commit: concurrent writers share one write (and one fsync) instead of queueing for a lock each.

The first thread that finds no batch in progress becomes the leader: it takes every queued item, runs
``flush`` on them (one write, one fsync), marks them done, wakes exactly their threads, and hands the
leadership to the first thread that queued meanwhile (or gives it up when nobody did). Threads are the
concurrency model because ``decide()`` runs on the event loop thread or on worker threads alike.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")


class _Ticket(Generic[Item]):
    __slots__ = ("done", "error", "item", "wake")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.done = False
        self.error: BaseException | None = None
        self.wake = threading.Lock()  # held until the ticket is done or its thread is promoted to leader
        self.wake.acquire()


class GroupCommitter(Generic[Item]):
    """Runs ``flush(batch)`` for queued items, one batch at a time, in the order they were queued.

    ``flush`` returns one entry per item: None when that item is written, else the error that kept it out.
    If ``flush`` raises, every item of the batch fails with that error (none is reported as written).
    """

    def __init__(self, flush: Callable[[list[Item]], Sequence[BaseException | None]]) -> None:
        self._flush = flush
        self._mutex = threading.Lock()
        self._queue: list[_Ticket[Item]] = []
        self._leading = False

    def submit(self, item: Item) -> BaseException | None:
        """Queue ``item`` and return once its batch is flushed: None when written, else the batch's error."""
        ticket = _Ticket(item)
        with self._mutex:
            self._queue.append(ticket)
            leader = not self._leading
            self._leading = True
        if not leader:
            ticket.wake.acquire()  # released when done, or when promoted to lead the next batch
        if not ticket.done:
            self._lead(ticket)
        return ticket.error

    def _lead(self, own: _Ticket[Item]) -> None:
        with self._mutex:
            batch, self._queue = self._queue, []
        # Stays set if flush is interrupted by a BaseException, so no waiter believes its item was written.
        errors: Sequence[BaseException | None] = [RuntimeError("audit batch interrupted")] * len(batch)
        try:
            errors = self._flush([t.item for t in batch])
            if len(errors) != len(batch):
                errors = [RuntimeError("audit batch flush returned a wrong result")] * len(batch)
        except Exception as err:  # noqa: BLE001 - a bug in flush must fail the batch, not hang the waiters
            errors = [err] * len(batch)
        finally:
            for ticket, error in zip(batch, errors, strict=True):
                ticket.error = error
                ticket.done = True
                if ticket is not own:
                    ticket.wake.release()
            with self._mutex:
                if self._queue:
                    self._queue[0].wake.release()  # promoted: it leads the next batch
                else:
                    self._leading = False
