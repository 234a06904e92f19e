"""Grant stores under races and outages: one winner among racing approvers, bounded waits, and recovery without
a new store. PostgreSQL outages are made with a loopback proxy that can be cut and restored."""

import socket
import sqlite3
import threading
import time
from urllib.parse import urlsplit

import pytest

from support.pg import admin_dsn, pg_database, url_with
from support.tcpproxy import TcpProxy
from tenantgate.core.grants import Grant, GrantState
from tenantgate.errors import GrantStoreUnavailable
from tenantgate.grants import PostgresGrantStore, SqliteGrantStore, open_store

T0 = 1_700_000_000.0
SECRET = "hunter2-not-shown"
OUTAGE_BOUND = 10.0  # seconds; the store must give up well before this, we do not assert anything tighter


def make_grant(grant_id, *, duration=600):
    return Grant(id=grant_id, operator="alice", operator_tenant="platform", target_tenant="tenant-b",
                 actions=("read",), reason="incident", ticket="INC-1", duration_seconds=duration,
                 state=GrantState.PENDING, requested_at=T0, pending_until=T0 + 3600)


def ignore(grant):
    pass


def find(store, now=T0 + 20):
    return store.find_active("alice", "platform", "tenant-b", "read", now)


def run_together(*calls):
    """Run the calls in threads released at the same instant; return their results (or exceptions) in order."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(index, call):
        barrier.wait()
        try:
            results[index] = call()
        except Exception as err:
            results[index] = err

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


@pytest.fixture
def pg_url():
    with pg_database() as url:
        yield url


# --- races --------------------------------------------------------------------------------------------------------

def test_two_stores_racing_to_activate_one_grant_have_exactly_one_winner(store_url):
    first, second = open_store(store_url), open_store(store_url)
    try:
        for round_no in range(5):
            grant_id = f"g-{round_no}"
            first.create(make_grant(grant_id), ignore)
            hooked = []

            def approve(store, approver, grant_id=grant_id, hooked=hooked):
                def hold_the_transaction_briefly(grant):
                    hooked.append(grant.approved_by)
                    time.sleep(0.01)
                return store.activate(grant_id, approver, T0 + 10, hold_the_transaction_briefly)

            results = run_together(lambda: approve(first, "bob"), lambda: approve(second, "carol"))
            winners = [r for r in results if r is not None]
            assert len(winners) == 1, results
            assert isinstance(winners[0], Grant)
            assert hooked == [winners[0].approved_by]
            assert first.get(grant_id) == second.get(grant_id) == winners[0]
    finally:
        first.close()
        second.close()


def test_stores_opened_concurrently_on_a_fresh_database_all_start(store_url):
    results = run_together(*[lambda: open_store(store_url) for _ in range(4)])
    try:
        assert all(not isinstance(r, Exception) for r in results), results
        results[0].create(make_grant("g-1"), ignore)
        assert all(r.get("g-1") is not None for r in results)
    finally:
        for store in results:
            if not isinstance(store, Exception):
                store.close()


def test_sqlite_stores_starting_together_on_fresh_files_never_fail_the_switch_to_wal(tmp_path):
    # SQLite fails the switch to WAL at once ("database is locked") when another connection is switching the
    # same fresh file, instead of waiting through busy_timeout: about 1 round in 60 failed before the retry.
    for round_ in range(200):
        path = tmp_path / f"grants-{round_}.db"
        results = run_together(*[lambda path=path: SqliteGrantStore(path) for _ in range(4)])
        for store in results:
            if not isinstance(store, Exception):
                store.close()
        assert not [r for r in results if isinstance(r, Exception)], (round_, results)


def test_threads_sharing_one_store_all_succeed(store_url):
    store = open_store(store_url)
    try:
        def worker(worker_no):
            for i in range(10):
                store.create(make_grant(f"g-{worker_no}-{i}"), ignore)
                store.activate(f"g-{worker_no}-{i}", "bob", T0 + 10, ignore)
                assert find(store) is not None
            return worker_no

        assert run_together(*[lambda n=n: worker(n) for n in range(6)]) == list(range(6))
        assert len(store.list("tenant-b", GrantState.ACTIVE, T0 + 20)) == 60
    finally:
        store.close()


def test_a_caller_stuck_behind_a_held_store_gives_up_with_unavailable_while_lookups_still_answer(tmp_path):
    store = SqliteGrantStore(tmp_path / "grants.db", lock_timeout=0.2)
    store.create(make_grant("g-1"), ignore)
    store.create(make_grant("g-2"), ignore)
    store.activate("g-2", "bob", T0 + 5, ignore)
    entered, release = threading.Event(), threading.Event()

    def hold(grant):
        entered.set()
        release.wait(10)

    holder = threading.Thread(target=store.activate, args=("g-1", "bob", T0 + 10, hold))
    holder.start()
    try:
        assert entered.wait(10)  # the holder is inside its transaction
        with pytest.raises(GrantStoreUnavailable, match="busy"):
            store.get("g-1")
        assert not store.healthy()
        # Lookups have a connection of their own: they answer with what is committed, never "busy".
        assert find(store).id == "g-2"
    finally:
        release.set()
        holder.join()
    assert store.get("g-1").approved_by == "bob"
    store.close()


# --- SQLite faults ------------------------------------------------------------------------------------------------

def test_sqlite_store_under_a_regular_file_is_unavailable_at_construction(tmp_path):
    (tmp_path / "not-a-dir").write_text("x")
    with pytest.raises(GrantStoreUnavailable, match="grant store unavailable"):
        open_store(f"sqlite:///{tmp_path / 'not-a-dir' / 'grants.db'}")


def test_sqlite_writer_blocked_by_another_process_lock_is_unavailable_then_recovers(tmp_path):
    path = tmp_path / "grants.db"
    store = SqliteGrantStore(path, busy_timeout_ms=100)
    store.create(make_grant("g-1"), ignore)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(GrantStoreUnavailable, match="locked"):
            store.activate("g-1", "bob", T0 + 10, ignore)
        other.execute("ROLLBACK")
        assert store.activate("g-1", "bob", T0 + 10, ignore).state is GrantState.ACTIVE
        assert store.healthy()
    finally:
        other.close()
        store.close()


# --- PostgreSQL faults --------------------------------------------------------------------------------------------

@pytest.fixture
def proxied(pg_url):
    """(store reached through a cuttable proxy, proxy); the URL carries a password trust auth ignores."""
    server = urlsplit(admin_dsn())
    with TcpProxy(server.hostname or "127.0.0.1", server.port or 5432) as proxy:
        url = url_with(pg_url, host="127.0.0.1", port=proxy.port)
        user = urlsplit(url).username or "postgres"
        url = url.replace(f"//{urlsplit(url).netloc.rpartition('@')[0]}@", f"//{user}:{SECRET}@", 1)
        store = PostgresGrantStore(url)
        yield store, proxy
        store.close()


@pytest.mark.postgres
def test_postgres_cut_off_raises_unavailable_promptly_and_recovers_on_a_later_call(proxied):
    store, proxy = proxied
    store.create(make_grant("g-1"), ignore)
    store.activate("g-1", "bob", T0 + 10, ignore)
    assert find(store).id == "g-1"

    proxy.cut()
    started = time.monotonic()
    with pytest.raises(GrantStoreUnavailable) as raised:
        find(store)
    assert time.monotonic() - started < OUTAGE_BOUND
    assert SECRET not in str(raised.value) and str(raised.value).startswith("grant store unavailable: ")
    assert not store.healthy()
    with pytest.raises(GrantStoreUnavailable):
        store.revoke("g-1", "carol", "stop", T0 + 20, ignore)

    proxy.restore()
    assert find(store).id == "g-1"
    assert store.healthy()
    assert store.get("g-1").state is GrantState.ACTIVE


@pytest.mark.postgres
def test_postgres_change_whose_commit_is_cut_off_does_not_happen(proxied):
    store, proxy = proxied
    store.create(make_grant("g-1"), ignore)
    with pytest.raises(GrantStoreUnavailable):
        store.activate("g-1", "bob", T0 + 10, lambda grant: proxy.cut())
    proxy.restore()
    assert store.get("g-1").state is GrantState.PENDING


def test_postgres_store_on_a_closed_port_is_unavailable_at_construction_without_the_password():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(GrantStoreUnavailable) as raised:
        open_store(f"postgresql://tg:{SECRET}@127.0.0.1:{port}/grants")
    assert time.monotonic() - started < OUTAGE_BOUND
    assert SECRET not in str(raised.value)
    assert SECRET not in repr(raised.value.__cause__)
