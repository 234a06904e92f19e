"""A replica whose clock is ahead of the grant store's by more than the sweep's margin does not sweep.

Review finding (MEDIUM): two replicas on one PostgreSQL database, one stepped 2 days ahead: its sweep expired every
active grant and pending request for good (approving a 1-second-old request then failed "is EXPIRED"), and
stamped their grant.expired events with times that had not happened. The margin alone cannot stop a step larger
than itself; PostgreSQL has a clock of its own (``clock_timestamp()``), so the sweep asks it first.
"""

import logging
import time

import pytest

from support.grants import make_world
from support.issuers import FixedClock
from support.pg import pg_database
from tenantgate.core.breakglass import BreakGlass, GrantRules
from tenantgate.core.grants import SWEEP_MARGIN_SECONDS, GrantState
from tenantgate.grants import GuardedStore, open_store

TWO_DAYS = 2 * 86_400.0


@pytest.fixture
def pg_url():
    with pg_database() as url:
        yield url


def test_sqlite_has_no_clock_of_its_own_and_postgres_reports_its_own(store_url):
    store = open_store(store_url)
    guarded = GuardedStore(lambda: open_store(store_url))
    try:
        before = time.time()
        answers = [store.database_time(), guarded.database_time()]
    finally:
        guarded.close()
        store.close()
    if store_url.startswith("sqlite"):
        assert answers == [None, None]
    else:
        # The same host's clock (a loopback server): seconds apart at most, however slow the test machine.
        assert all(abs(answer - before) < 60 for answer in answers), (answers, before)


def test_a_replica_two_days_ahead_of_postgres_does_not_sweep_and_says_so_once(tmp_path, pg_url, caplog):
    world = make_world(tmp_path, store_url=pg_url, pending_ttl_seconds=60)
    world.clock.t = time.time()  # this replica's clock is right
    grant = world.active_grant(duration=900)
    pending = world.request(target="globex")
    stepped = FixedClock(world.clock.now() + TWO_DAYS)
    fast = BreakGlass(store=open_store(pg_url), audit=world.sink, clock=stepped, rules=GrantRules(),
                      verifier=world.service._verifier)
    try:
        world.clock.advance(1)
        with caplog.at_level(logging.WARNING, logger="tenantgate.grants"):
            assert [fast.sweep() for _ in range(3)] == [[], [], []]
        assert world.service.store.get(grant.id).state is GrantState.ACTIVE
        assert world.service.approve(world.approver(), pending.id).state is GrantState.ACTIVE
        assert not world.events("grant.expired")
        lines = [r.getMessage() for r in caplog.records if r.name == "tenantgate.grants"]
        assert len(lines) == 1, lines  # rate-limited: one line, then one a minute counting
        assert "grant sweep skipped" in lines[0] and "ahead of the grant store's" in lines[0]
        caplog.clear()
        stepped.t = world.clock.now()  # its clock is corrected: it sweeps again, and says so
        with caplog.at_level(logging.WARNING, logger="tenantgate.grants"):
            assert fast.sweep() == []
        lines = [r.getMessage() for r in caplog.records if r.name == "tenantgate.grants"]
        assert len(lines) == 1, lines
        assert lines[0].startswith("grant sweeps run again: this replica's clock agrees with the grant store's (2 more")
    finally:
        fast.store.close()
        world.service.store.close()


def test_a_replica_ahead_of_postgres_within_the_margin_sweeps_only_what_is_due_by_both(tmp_path, pg_url):
    world = make_world(tmp_path, store_url=pg_url, pending_ttl_seconds=60)
    world.clock.t = time.time() - 3600  # an hour behind the store: the grant is due by both clocks once swept
    grant = world.active_grant(duration=60)
    world.clock.advance(60 + SWEEP_MARGIN_SECONDS)
    try:
        assert [g.id for g in world.service.sweep()] == [grant.id]
        assert [e["grant_id"] for e in world.events("grant.expired")] == [grant.id]
    finally:
        world.service.store.close()
