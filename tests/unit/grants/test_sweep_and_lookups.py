"""A sweep that expires many grants at once cannot starve the Checks that look grants up.

Review finding (MEDIUM): with ``audit.durability = "fsync"``, one operator's ACTIVE grant and 2,000 PENDING requests
of another operator expiring together, 19 of 1,143 break-glass Checks under the valid grant were denied
``grant_store_unavailable`` over 1.76 s: the sweep held the store's lock and its transaction while it wrote (and
fsynced) one audit event per grant, and the lookups waited for the same lock past ``lookup_timeout``. Now lookups
have a connection of their own, and a sweep expires at most ``EXPIRE_BATCH`` grants per transaction, writing their
events with one ``write_many`` call.
"""

import threading
import time
import uuid

from support.grants import NOW, make_world
from tenantgate.core.breakglass import BreakGlass, GrantRules
from tenantgate.core.grants import EXPIRE_BATCH, SWEEP_MARGIN_SECONDS, Grant, GrantState
from tenantgate.core.model import CheckInput, Reason, Resource
from tenantgate.grants import GuardedStore, open_store

PENDING_SECONDS = 60
# When the flood has been due long enough for a sweep to expire it (the sweep's margin).
SWEPT = PENDING_SECONDS + SWEEP_MARGIN_SECONDS
HANG = 30.0  # seconds after which a blocked call counts as hung (the test fails instead of waiting on)


def flood(store, count, target="globex"):
    """``count`` PENDING requests of another operator, all expiring at NOW + PENDING_SECONDS (stored directly:
    their grant.requested events are not what these tests are about)."""
    ids = []
    for i in range(count):
        grant = Grant(id=str(uuid.uuid4()), operator="olga", operator_tenant="platform", target_tenant=target,
                      actions=("read",), reason="flood", ticket="T-1", duration_seconds=60,
                      state=GrantState.PENDING, requested_at=NOW + i * 1e-3, pending_until=NOW + PENDING_SECONDS)
        store.create(grant, lambda _grant: None)
        ids.append(grant.id)
    return ids


def replica(world, *, audit, store=None):
    """Another BreakGlass on the world's store (or ``store``), writing to ``audit``."""
    return BreakGlass(store=store or world.service.store, audit=audit, clock=world.clock, rules=GrantRules(),
                      verifier=world.service._verifier)


def check(world):
    token = world.token("platform", "oscar", "breakglass-operator")
    return world.pdp.decide(CheckInput(token=token, action="read", resource=Resource("Invoice", "inv-1", "acme")))


def expired_events(world):
    return [r["grant_id"] for r in world.records() if r.get("event") == "grant.expired"]


class GatedSink:
    """The world's sink, holding the first write of a grant.expired event (``write`` or ``write_many``) until
    ``release`` is set: the sweep stays inside its store transaction, as when an fsync stalls."""

    def __init__(self, sink):
        self._sink = sink
        self.entered, self.release = threading.Event(), threading.Event()

    def _gate(self, events):
        if any(getattr(e, "event", "") == "grant.expired" for e in events):
            self.entered.set()
            self.release.wait(HANG)

    def write(self, event):
        self._gate([event])
        self._sink.write(event)

    def write_many(self, events):
        self._gate(events)
        return self._sink.write_many(events)

    def healthy(self):
        return self._sink.healthy()


class SlowSink:
    """The world's sink, each call (not each record) taking ``seconds`` longer: what an fsync costs."""

    def __init__(self, sink, seconds):
        self._sink, self._seconds = sink, seconds

    def write(self, event):
        time.sleep(self._seconds)
        self._sink.write(event)

    def write_many(self, events):
        time.sleep(self._seconds)
        return self._sink.write_many(events)

    def healthy(self):
        return self._sink.healthy()


def in_thread(call):
    """Start ``call()`` on a daemon thread; returns (thread, outcome list that gets its result or exception)."""
    outcome = []

    def run():
        try:
            outcome.append(call())
        except Exception as err:  # handed to the test, which asserts on it
            outcome.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_check_under_a_valid_grant_is_answered_while_a_sweep_holds_the_store_writing_its_events(
        tmp_path, store_url):
    world = make_world(tmp_path, store_url=store_url)
    world.active_grant(duration=3600)
    flooded = flood(world.service.store, 250)
    world.clock.advance(SWEPT)
    gated = GatedSink(world.sink)
    sweeper, swept = in_thread(replica(world, audit=gated).sweep)
    try:
        assert gated.entered.wait(HANG), "the sweep never wrote a grant.expired event"
        # The sweep is inside its transaction, its audit write not done. A Check issued now is answered now.
        checker, decided = in_thread(lambda: check(world))
        checker.join(HANG / 3)
        assert decided, "the Check waited for the sweep"
        assert decided[0].reason is Reason.ALLOW_BREAK_GLASS, decided[0]
        assert sweeper.is_alive() and not swept  # ... before the sweep ended
    finally:
        gated.release.set()
        sweeper.join(HANG)
    assert sorted(g.id for g in swept[0]) == sorted(flooded)
    assert sorted(expired_events(world)) == sorted(flooded)
    world.service.store.close()


class BatchWatcher:
    """The world's sink, noting for each ``write_many`` of grant.expired events the grants it names and the state
    each flooded grant has in the store at that moment, as another connection (another replica) sees it."""

    def __init__(self, sink, store_url, flooded):
        self._sink, self._flooded = sink, flooded
        self._observer = open_store(store_url)
        self.batches, self.states, self.single_writes = [], [], 0

    def write(self, event):
        self.single_writes += getattr(event, "event", "") == "grant.expired"
        self._sink.write(event)

    def write_many(self, events):
        self.batches.append([e.grant_id for e in events if e.event == "grant.expired"])
        stored = {g.id: g.state for g in self._observer.list("globex", None, 0.0, limit=10_000)}
        self.states.append(stored)
        return self._sink.write_many(events)

    def healthy(self):
        return self._sink.healthy()

    def close(self):
        self._observer.close()


def test_a_sweep_writes_each_batch_of_events_with_one_call_before_that_batch_commits(tmp_path, store_url):
    world = make_world(tmp_path, store_url=store_url)
    count = 2 * EXPIRE_BATCH + 50
    flooded = flood(world.service.store, count)
    world.clock.advance(SWEPT)
    watcher = BatchWatcher(world.sink, store_url, flooded)
    try:
        swept = replica(world, audit=watcher).sweep()
    finally:
        watcher.close()
    assert [g.id for g in swept] == flooded  # oldest requested first
    assert watcher.single_writes == 0
    assert watcher.batches == [flooded[:EXPIRE_BATCH], flooded[EXPIRE_BATCH:2 * EXPIRE_BATCH],
                               flooded[2 * EXPIRE_BATCH:]]
    done = []
    for batch, states in zip(watcher.batches, watcher.states, strict=True):
        # INVARIANT: a batch's events are on record before it commits; the batches before it have committed
        # (the store was free in between).
        assert {states[grant_id] for grant_id in batch} == {GrantState.PENDING}
        assert {states[grant_id] for grant_id in done} <= {GrantState.EXPIRED}
        done += batch
    assert sorted(expired_events(world)) == sorted(flooded)
    assert replica(world, audit=world.sink).sweep() == []
    world.service.store.close()


def test_racing_sweeps_on_two_replicas_record_each_expiry_exactly_once(tmp_path, store_url):
    world = make_world(tmp_path, store_url=store_url)
    flooded = flood(world.service.store, 3 * EXPIRE_BATCH + 50)
    world.clock.advance(SWEPT)
    stores = [open_store(store_url), open_store(store_url)]
    replicas = [replica(world, audit=SlowSink(world.sink, 0.02), store=store) for store in stores]
    start = threading.Barrier(len(replicas))

    def sweep(service):
        start.wait()
        return service.sweep()

    try:
        runs = [in_thread(lambda service=service: sweep(service)) for service in replicas]
        for thread, _ in runs:
            thread.join(HANG)
        results = [outcome[0] for _, outcome in runs]
    finally:
        for store in stores:
            store.close()
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(g.id for result in results for g in result) == sorted(flooded)  # each by one replica
    assert sorted(expired_events(world)) == sorted(flooded)
    assert not world.events("grant.failed")
    world.service.store.close()


def test_guarded_lookups_during_a_long_sweep_are_all_answered_without_waiting_for_it(tmp_path, store_url):
    world = make_world(tmp_path, store_url=store_url)
    world.active_grant(duration=3600)
    flood(world.service.store, 2 * EXPIRE_BATCH)
    world.clock.advance(SWEPT)
    # A generous deadline (the server's is 0.25 s): only waiting behind the sweep's writes can exceed it.
    guarded = GuardedStore(lambda: open_store(store_url), lookup_timeout=1.0)
    service = replica(world, audit=SlowSink(world.sink, 0.2), store=guarded)
    operator = world.operator()
    try:
        sweep_started = time.monotonic()
        sweeper, swept = in_thread(service.sweep)
        waits, answers = [], []
        while sweeper.is_alive():
            asked = time.monotonic()
            try:
                answers.append(service.find(operator, "acme", "read"))
            except Exception as err:  # the symptom: grant_store_unavailable
                answers.append(err)
            waits.append(time.monotonic() - asked)
            time.sleep(0.005)
        sweep_seconds = time.monotonic() - sweep_started
        sweeper.join(HANG)
    finally:
        guarded.close()
    assert len(swept[0]) == 2 * EXPIRE_BATCH
    assert waits, "no lookup ran during the sweep"
    assert all(isinstance(answer, Grant) for answer in answers), [a for a in answers if not isinstance(a, Grant)]
    assert max(waits) < sweep_seconds / 2, (max(waits), sweep_seconds)
    world.service.store.close()
