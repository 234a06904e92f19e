"""Policy reloads triggered by SIGHUP and polling run on their own threads, one at a time, and a hung reload
neither piles up threads nor touches the event loop's default executor (review finding: seven SIGHUPs during
a hung reload filled that executor, and health, status and SIGTERM stopped working)."""

import asyncio
import gc
import threading
import weakref

from tenantgate.background import Reloads, settle_heap
from tenantgate.policy import ReloadResult


class _HangingStore:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[bool] = []

    def reload(self, *, force: bool = False) -> str:
        self.calls.append(force)
        self.release.wait(timeout=30)
        return "reloaded"


def test_sighups_during_a_hung_reload_are_folded_and_the_default_executor_stays_free():
    store = _HangingStore()
    reloads = Reloads(store)  # type: ignore[arg-type]

    async def scenario() -> tuple[int, int]:
        before = threading.active_count()
        for _ in range(20):
            reloads.soon()
            await asyncio.sleep(0.01)
        # The default executor still answers at once: nothing of the reloads waits in it.
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), timeout=10) == 42
        grown, calls = threading.active_count() - before, len(store.calls)
        store.release.set()
        return grown, calls

    grown, calls = asyncio.run(scenario())
    assert calls == 1  # the first reload hung; the other nineteen SIGHUPs were folded into one waiting reload
    assert grown <= 3  # the hung reload, one waiting behind it, and the to_thread worker
    for _ in range(1000):  # the waiting reload runs once the hung one ends, and only it
        if len(store.calls) == 2:
            break
        threading.Event().wait(0.01)
    assert store.calls == [True, True]


def test_a_poll_waits_for_its_reload_and_runs_after_a_hung_one_ends():
    store = _HangingStore()
    reloads = Reloads(store)  # type: ignore[arg-type]

    async def scenario() -> None:
        reloads.soon()
        poll = asyncio.create_task(reloads.poll())
        await asyncio.sleep(0.05)
        assert not poll.done()
        store.release.set()
        await asyncio.wait_for(poll, timeout=10)

    asyncio.run(scenario())
    assert store.calls == [True, False]


def test_a_poll_cancelled_while_its_reload_waits_ends_quietly():
    # Review finding: at shutdown serve() cancels the poll task; its reload thread then failed with
    # InvalidStateError (a traceback on stderr) when it set the result of the cancelled future.
    store = _HangingStore()
    reloads = Reloads(store)  # type: ignore[arg-type]
    errors = []
    previous = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    try:
        async def scenario() -> None:
            reloads.soon()
            poll = asyncio.create_task(reloads.poll())
            await asyncio.sleep(0.05)
            poll.cancel()
            await asyncio.sleep(0)

        asyncio.run(scenario())
        store.release.set()
        for _ in range(500):
            if threading.active_count() == 1:
                break
            threading.Event().wait(0.01)
    finally:
        threading.excepthook = previous
    assert errors == [] and store.calls == [True]  # the cancelled poll's reload never ran


class _ChangingStore:
    """Answers reloads with the given ``changed`` flags, in turn."""

    def __init__(self, *changed: bool) -> None:
        self.answers = [ReloadResult(ok=True, changed=c, version="v", message="") for c in changed]

    def reload(self, *, force: bool = False) -> ReloadResult:
        return self.answers.pop(0)


def test_the_heap_is_settled_after_a_reload_that_replaced_the_set_and_only_then():
    settled: list[int] = []
    reloads = Reloads(_ChangingStore(False, True, False), settle=lambda: settled.append(1))  # type: ignore[arg-type]

    async def scenario() -> None:
        await reloads.poll()  # nothing changed
        assert settled == []
        await reloads.poll()  # a new set
        assert settled == [1]
        await reloads.poll()
        assert settled == [1]

    asyncio.run(scenario())


class _Node:
    def __init__(self) -> None:
        self.other: object = self  # a reference cycle: only the cyclic collector frees it


def test_settle_heap_freezes_what_is_alive_and_frees_frozen_cycles_dropped_since():
    try:
        kept = _Node()
        dropped = _Node()
        gone = weakref.ref(dropped)
        settle_heap()
        # Frozen: no later collection walks them (gc.get_objects lists the collected generations only).
        assert gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects())
        del dropped
        gc.collect()
        assert gone() is not None  # a frozen cycle is not collected ...
        settle_heap()
        # ... until the next settle (a reload): a replaced policy set's cycles are not kept for ever.
        assert gone() is None
        assert kept.other is kept
    finally:
        gc.unfreeze()
