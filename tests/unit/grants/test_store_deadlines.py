"""How long a grant store may keep its caller: a silent PostgreSQL (a proxy that accepts bytes and never answers),
a table locked by another session, a connection the server dropped while idle, and a SQLite file whose write
lock another process holds. Every wait is bounded here by a helper thread, so a regression fails, never hangs."""

import sqlite3
import threading
import time
from urllib.parse import urlsplit

import psycopg
import pytest

from support.pg import admin_dsn, pg_database, url_with
from support.tcpproxy import TcpProxy
from support.waiting import eventually
from tenantgate.core.grants import Grant, GrantState
from tenantgate.errors import GrantStoreUnavailable
from tenantgate.grants import GuardedStore, PostgresGrantStore, SqliteGrantStore

T0 = 1_700_000_000.0
HANG = 15.0  # seconds after which a call counts as hung (the test fails instead of waiting on)


def make_grant(grant_id):
    return Grant(id=grant_id, operator="alice", operator_tenant="platform", target_tenant="tenant-b",
                 actions=("read",), reason="incident", ticket="INC-1", duration_seconds=600,
                 state=GrantState.PENDING, requested_at=T0, pending_until=T0 + 3600)


def ignore(grant):
    pass


def find(store, now=T0 + 20):
    return store.find_active("alice", "platform", "tenant-b", "read", now)


def timed(call):
    """(seconds taken, result or the exception raised) of ``call()``, run on a helper thread; fails the test
    when the call has not returned within ``HANG`` seconds."""
    outcome = []

    def run():
        started = time.monotonic()
        try:
            result = call()
        except Exception as err:
            result = err
        outcome.append((time.monotonic() - started, result))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG)
    assert outcome, f"the call hung (no answer within {HANG}s)"
    return outcome[0]


def active_grant(store):
    store.create(make_grant("g-1"), ignore)
    store.activate("g-1", "bob", T0 + 10, ignore)
    assert find(store).id == "g-1"


@pytest.fixture
def pg_url():
    with pg_database() as url:
        yield url


@pytest.fixture
def proxy(pg_url):
    """A stalling proxy to the test database. Tests stop it before closing their store: without a client-side
    deadline, closing would wait for the hung call forever, and this test fail by hanging."""
    server = urlsplit(admin_dsn())
    with TcpProxy(server.hostname or "127.0.0.1", server.port or 5432) as stalling:
        yield stalling


def through(proxy, pg_url):
    return url_with(pg_url, host="127.0.0.1", port=proxy.port)


# --- PostgreSQL: a server that never answers ----------------------------------------------------------------------

@pytest.mark.postgres
def test_postgres_call_to_a_silent_server_fails_by_the_client_deadline_and_the_store_reconnects(proxy, pg_url):
    # statement_timeout 0.5 s + grace 0.5 s: an unanswered round trip is broken after about a second.
    store = PostgresGrantStore(through(proxy, pg_url), statement_timeout_ms=500, network_grace=0.5)
    try:
        active_grant(store)
        proxy.stall()
        for call in (lambda: find(store), lambda: store.revoke("g-1", "carol", "stop", T0 + 20, ignore)):
            took, result = timed(call)
            assert isinstance(result, GrantStoreUnavailable), result
            assert 0.9 < took < 2.5, took  # not retried: a reconnect would wait out connect_timeout too
        proxy.resume()
        # The broken connection was dropped: the next call gets a new one and the revocation did not happen.
        assert find(store).id == "g-1"
        assert store.healthy()
    finally:
        proxy.stop()
        store.close()


@pytest.mark.postgres
def test_closing_a_store_stuck_on_a_silent_server_does_not_wait_for_it(proxy, pg_url):
    store = PostgresGrantStore(through(proxy, pg_url))  # default deadline: 2 s + 3 s
    active_grant(store)
    proxy.stall()
    outcome = []
    stuck = threading.Thread(target=lambda: outcome.append(timed(lambda: find(store))), daemon=True)
    stuck.start()
    time.sleep(0.2)  # let it send its query
    try:
        took, _ = timed(store.close)
        assert took < 2, took
    finally:
        proxy.stop()
    stuck.join(HANG)
    assert isinstance(outcome[0][1], GrantStoreUnavailable), outcome


@pytest.mark.postgres
def test_guarded_lookup_on_a_silent_server_is_denied_within_the_lookup_timeout(proxy, pg_url):
    store = GuardedStore(lambda: PostgresGrantStore(through(proxy, pg_url), network_grace=1.0),
                         retry_seconds=0.1, lookup_timeout=0.25)
    try:
        active_grant(store)
        proxy.stall()
        took, result = timed(lambda: find(store))
        # The message says the guard answered at its deadline; the bound only catches a hang (load-proof).
        assert isinstance(result, GrantStoreUnavailable) and "no answer within 0.25s" in str(result), result
        assert took < 5.0, took
        # The lookup is still waiting in the lookup thread: later ones fail at once, even past the retry
        # window, instead of queueing behind it; health says so without asking the store.
        time.sleep(0.2)
        for _ in range(3):
            took, result = timed(lambda: find(store))
            assert isinstance(result, GrantStoreUnavailable) and "still waiting" in str(result), result
            assert took < 5.0, took  # the message says it did not queue; the bound only catches a hang
        took, result = timed(store.healthy)
        assert result is False and took < 5.0, (took, result)
        proxy.resume()
        # The store's deadline (2 s + 1 s) breaks the stuck connection; the next lookup gets a new one.
        eventually(lambda: timed(lambda: isinstance(find(store), Grant))[1] is True, "lookups answered again")
        # The other connection (changes, health), idle through the stall, is stalled too: the first probe finds
        # out by the same deadline, a later one reconnects.
        eventually(lambda: timed(store.healthy)[1] is True, "the store healthy again", attempts=5)
    finally:
        proxy.stop()
        store.close()


@pytest.mark.postgres
def test_guarded_lookup_behind_a_locked_table_is_denied_quickly_and_recovers_when_it_is_released(pg_url):
    store = GuardedStore(lambda: PostgresGrantStore(pg_url), retry_seconds=0.1, lookup_timeout=0.25)
    try:
        active_grant(store)
        with psycopg.connect(pg_url, autocommit=False) as locker:
            locker.execute("LOCK TABLE tenantgate_grants IN ACCESS EXCLUSIVE MODE")
            # Eight callers at once (the event loop, batch and HTTP workers): none queues past its deadline.
            results = [None] * 8
            callers = [threading.Thread(target=lambda i=i: results.__setitem__(i, timed(lambda: find(store))))
                       for i in range(len(results))]
            for caller in callers:
                caller.start()
            for caller in callers:
                caller.join(HANG)
            for took, result in results:
                assert isinstance(result, GrantStoreUnavailable), result
                assert took < 5.0, took  # not queued behind the lock (that waits until HANG): load-proof bound
            locker.rollback()
        eventually(lambda: timed(lambda: isinstance(find(store), Grant))[1] is True, "lookups answered again")
    finally:
        store.close()


# --- PostgreSQL: an idle connection dropped by the server ----------------------------------------------------------

def terminate_store_backends(pg_url):
    """pg_terminate_backend every TenantGate session on the test database; return once they are gone."""
    database = urlsplit(pg_url).path.lstrip("/")
    query = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'tenantgate'"
    with psycopg.connect(admin_dsn(), autocommit=True) as admin:
        pids = [row[0] for row in admin.execute(query, (database,)).fetchall()]
        assert pids
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        eventually(lambda: not admin.execute(query, (database,)).fetchall(), "sessions terminated")


@pytest.mark.postgres
def test_postgres_read_on_a_connection_the_server_dropped_reconnects_transparently(pg_url):
    store = PostgresGrantStore(pg_url)
    try:
        active_grant(store)
        terminate_store_backends(pg_url)
        assert find(store).id == "g-1"
        terminate_store_backends(pg_url)
        assert store.get("g-1").state is GrantState.ACTIVE
        terminate_store_backends(pg_url)
        assert store.healthy()
    finally:
        store.close()


@pytest.mark.postgres
def test_guarded_lookup_after_an_idle_drop_answers_without_opening_the_fail_fast_window(pg_url):
    store = GuardedStore(lambda: PostgresGrantStore(pg_url), retry_seconds=60)
    try:
        active_grant(store)
        terminate_store_backends(pg_url)
        assert find(store).id == "g-1"
        assert find(store).id == "g-1"  # a window opened by a failure would fail this for a minute
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_write_on_a_connection_the_server_dropped_is_not_retried(pg_url):
    store = PostgresGrantStore(pg_url)
    try:
        active_grant(store)
        terminate_store_backends(pg_url)
        with pytest.raises(GrantStoreUnavailable):
            store.create(make_grant("g-2"), ignore)
        # Nothing was done twice, or behind the caller's back; the next call reconnects.
        assert store.get("g-2") is None
        assert store.create(make_grant("g-2"), ignore).id == "g-2"
    finally:
        store.close()


# --- SQLite: another process holds the write lock -----------------------------------------------------------------

def test_sqlite_reads_after_a_failed_write_do_not_wait_for_the_write_lock(tmp_path):
    path = tmp_path / "grants.db"
    store = SqliteGrantStore(path, busy_timeout_ms=1000)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        active_grant(store)
        other.execute("BEGIN IMMEDIATE")  # another process writing for a while
        with pytest.raises(GrantStoreUnavailable, match="locked"):
            store.revoke("g-1", "carol", "stop", T0 + 20, ignore)
        # The failed write dropped the connection; reopening the file (schema current) needs no write lock.
        for call in (lambda: find(store).id, lambda: store.get("g-1").state, store.healthy):
            took, result = timed(call)
            assert result in ("g-1", GrantState.ACTIVE, True), result
            assert took < 0.5, took
        took, second = timed(lambda: SqliteGrantStore(path, busy_timeout_ms=1000))
        assert isinstance(second, SqliteGrantStore) and took < 0.5, (took, second)
        assert find(second).id == "g-1"
        second.close()
    finally:
        other.close()
        store.close()


def test_sqlite_store_on_a_newer_schema_is_still_refused_when_reopened(tmp_path):
    from tenantgate.grants._sql import COMPONENT, VERSION_TABLE

    path = tmp_path / "grants.db"
    SqliteGrantStore(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"UPDATE {VERSION_TABLE} SET version = 99 WHERE component = ?", (COMPONENT,))
    db.close()
    with pytest.raises(GrantStoreUnavailable, match="newer"):
        SqliteGrantStore(path)


@pytest.mark.postgres
def test_a_store_that_cannot_open_leaves_no_watchdog_thread_behind(pg_url):
    # Review finding: a database migrated by a newer TenantGate (or a role without CREATE) failed each open
    # after the watchdog thread had started; nothing closed the half-built store, so every retry (the health
    # probe's, once a second) leaked one thread.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE tenantgate_schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        conn.execute("INSERT INTO tenantgate_schema_version VALUES ('grants', 99)")

    def watchdogs():
        return sum(t.name == "tenantgate-pg-watchdog" and t.is_alive() for t in threading.enumerate())

    before = watchdogs()
    for _ in range(3):
        with pytest.raises(GrantStoreUnavailable):
            PostgresGrantStore(pg_url)
    eventually(lambda: watchdogs() == before, "no watchdog thread left by the failed opens")
