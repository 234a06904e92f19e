"""GroupCommitter: one batch at a time, every waiter told exactly what happened to its items, never a hang."""

from __future__ import annotations

import threading
import time

import pytest

from tenantgate.audit.commit import GroupCommitter


def _within(seconds: float, call):
    """``call()``'s result, failing (instead of hanging the suite) when it does not return in time."""
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked: the leadership was never handed back"
    return result[0]


def test_an_uncontended_item_is_flushed_alone_and_reported_written():
    batches: list[list[int]] = []
    committer = GroupCommitter(lambda items: batches.append(list(items)) or [None] * len(items))
    assert committer.submit(1) is None
    assert _within(10, lambda: committer.submit(2)) is None
    assert batches == [[1], [2]]


def test_a_flush_that_raises_fails_the_item_and_the_next_submit_still_leads():
    calls: list[list[int]] = []

    def flush(items: list[int]) -> list[BaseException | None]:
        calls.append(list(items))
        if items == [1]:
            raise OSError("disk gone")
        return [None] * len(items)

    committer = GroupCommitter(flush)
    error = committer.submit(1)
    assert isinstance(error, OSError) and str(error) == "disk gone"
    assert _within(10, lambda: committer.submit(2)) is None  # leadership handed back: no hang, no stale error
    assert _within(10, lambda: committer.submit_many([3, 4])) == [None, None]
    assert calls == [[1], [2], [3, 4]]


def test_a_flush_answering_for_the_wrong_number_of_items_is_an_error_for_each():
    committer = GroupCommitter(lambda items: [])
    error = committer.submit(1)
    assert isinstance(error, RuntimeError) and "wrong result" in str(error)
    errors = _within(10, lambda: committer.submit_many([1, 2]))
    assert len(errors) == 2 and all(isinstance(e, RuntimeError) for e in errors)


def test_an_interrupted_flush_propagates_and_never_reports_the_item_written():
    state = {"interrupt": True}

    def flush(items: list[int]) -> list[BaseException | None]:
        if state["interrupt"]:
            state["interrupt"] = False
            raise KeyboardInterrupt
        return [None] * len(items)

    committer = GroupCommitter(flush)
    with pytest.raises(KeyboardInterrupt):
        committer.submit(1)
    assert _within(10, lambda: committer.submit(2)) is None  # the interrupted leader gave up the leadership


def test_items_queued_while_a_batch_is_flushing_form_the_next_batch_in_order():
    entered, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def flush(items: list[int]) -> list[BaseException | None]:
        batches.append(list(items))
        if items == [0]:
            entered.set()
            assert release.wait(10)
        return [None if item % 5 else ValueError(f"bad {item}") for item in items]

    committer = GroupCommitter(flush)
    results: dict[int, BaseException | None] = {}
    leader = threading.Thread(target=lambda: results.__setitem__(0, committer.submit(0)), daemon=True)
    leader.start()
    assert entered.wait(10)
    waiters = []
    for item in range(1, 11):  # queued one by one while item 0's batch is being flushed
        thread = threading.Thread(target=lambda i=item: results.__setitem__(i, committer.submit(i)), daemon=True)
        thread.start()
        waiters.append(thread)
        deadline = time.monotonic() + 10
        while sum(len(t.items) for t in committer._queue) < item:  # wait until it is queued
            assert time.monotonic() < deadline, f"item {item} was never queued"
            time.sleep(0.001)
    release.set()
    for thread in [leader, *waiters]:
        thread.join(10)
        assert not thread.is_alive()
    assert batches == [[0], list(range(1, 11))]  # one batch for all that queued meanwhile, in order
    assert isinstance(results[0], ValueError) and isinstance(results[5], ValueError)
    assert isinstance(results[10], ValueError)
    assert all(results[i] is None for i in range(1, 11) if i % 5)


def test_an_interrupt_while_taking_the_lead_does_not_leave_the_lead_taken(monkeypatch):
    """Found in review: a signal handled between taking the lead and entering the try (there, while the
    sentinel error was made) left the committer led by nobody, and every later write hung."""
    from tenantgate.audit import commit

    committer = GroupCommitter(lambda items: [None] * len(items))
    armed = {"on": True}
    real_error = RuntimeError

    def error(message: str) -> RuntimeError:
        if armed.pop("on", False):
            raise KeyboardInterrupt  # the first call submit makes stands for "a signal lands here"
        return real_error(message)

    monkeypatch.setattr(commit, "RuntimeError", error, raising=False)
    with pytest.raises(KeyboardInterrupt):
        committer.submit(1)
    assert _within(10, lambda: committer.submit(2)) is None
