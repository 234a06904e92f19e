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
    __slots__ = ("done", "errors", "items", "wake")

    def __init__(self, items: list[Item]) -> None:
        self.items = items
        self.done = False
        self.errors: list[BaseException | None] = []
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
        # Stays set if flush is interrupted by a BaseException, so the caller never hears its item was written.
        # Made before leading, so nothing that could be interrupted runs between taking the lead and the try.
        error: BaseException | None = RuntimeError("audit batch interrupted")
        with self._mutex:
            alone = not self._leading
            self._leading = True
        if not alone:
            return self.submit_many([item])[0]
        # Nobody is writing: flush this one item as a batch of its own, no ticket (the uncontended common case).
        try:
            errors = self._flush([item])
            error = errors[0] if len(errors) == 1 else RuntimeError("audit batch flush returned a wrong result")
        except Exception as err:  # noqa: BLE001 - a bug in flush must fail the batch, not hang the waiters
            error = err
        finally:
            self._pass_on()
        return error

    def submit_many(self, items: list[Item]) -> list[BaseException | None]:
        """Queue ``items`` (kept together, in order) and return once they are flushed: one entry per item."""
        ticket = _Ticket(items)
        with self._mutex:
            self._queue.append(ticket)
            leader = not self._leading
            self._leading = True
        if not leader:
            ticket.wake.acquire()  # released when done, or when promoted to lead the next batch
        if not ticket.done:
            self._lead(ticket)
        return ticket.errors

    def _lead(self, own: _Ticket[Item]) -> None:
        with self._mutex:
            batch, self._queue = self._queue, []
        items = [item for ticket in batch for item in ticket.items]
        # Stays set if flush is interrupted by a BaseException, so no waiter believes its item was written.
        errors: Sequence[BaseException | None] = [RuntimeError("audit batch interrupted")] * len(items)
        try:
            errors = self._flush(items)
            if len(errors) != len(items):
                errors = [RuntimeError("audit batch flush returned a wrong result")] * len(items)
        except Exception as err:  # noqa: BLE001 - a bug in flush must fail the batch, not hang the waiters
            errors = [err] * len(items)
        finally:
            start = 0
            for ticket in batch:
                ticket.errors = list(errors[start:start + len(ticket.items)])
                start += len(ticket.items)
                ticket.done = True
                if ticket is not own:
                    ticket.wake.release()
            self._pass_on()

    def _pass_on(self) -> None:
        """Hand the leadership to the first thread that queued meanwhile, or give it up when nobody did."""
        with self._mutex:
            if self._queue:
                self._queue[0].wake.release()  # promoted: it leads the next batch
            else:
                self._leading = False
