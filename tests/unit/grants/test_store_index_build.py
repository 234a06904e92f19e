"""PostgreSQL builds the grant table's later indexes (``SCHEMA_INDEXES``) in the background, never while opening
(review finding: on a table of 2.2M rows the connect's plain CREATE INDEX outlasted the 2 s statement_timeout, so
the new release never opened its store, and every attempt held the old replicas' writes back). The build is
``CREATE INDEX CONCURRENTLY`` on its own connection, one session at a time (an advisory lock), and replaces an
invalid index an interrupted build left. Throwaway databases; skipped when no PostgreSQL is reachable."""

import logging
import threading
import time

import psycopg
import pytest

from support.pg import pg_database
from support.waiting import eventually
from tenantgate.core.grants import Grant, GrantState
from tenantgate.grants import open_store, redact_url
from tenantgate.grants._sql import COMPONENT, SCHEMA_V1, SCHEMA_V2, TABLE, VERSION_DDL, VERSION_TABLE

pytestmark = pytest.mark.postgres

INDEX = f"{TABLE}_by_operator"
COLUMNS = "operator, operator_tenant, operator_issuer, requested_at"
T0 = 1_700_000_000.0
BUILD_WAIT = 200  # polls of 50 ms: far above the milliseconds a build of a few rows takes


def previous_release_database(url, rows=20):
    """Give the database at ``url`` the previous release's schema (version 2, no operator index) and ``rows``
    ended grants, so the build has something to read."""
    with psycopg.connect(url, autocommit=True) as db:
        for ddl in (VERSION_DDL, *SCHEMA_V1, *SCHEMA_V2):
            db.execute(ddl)
        db.execute(f"INSERT INTO {VERSION_TABLE} VALUES (%s, 2)", (COMPONENT,))
        db.execute(f"""INSERT INTO {TABLE} (id, operator, operator_tenant, target_tenant, actions, reason, ticket,
                duration_seconds, state, requested_at, pending_until)
            SELECT 'old-' || i, 'op' || mod(i, 3), 'platform', 'acme', '["read"]', 'r', 'T', 60, 'EXPIRED',
                %s + i, %s + i FROM generate_series(1, %s) AS i""", (T0, T0, rows))


def index_state(url):
    """(valid, unique) of the operator index, or None when there is none."""
    with psycopg.connect(url, autocommit=True) as db:
        return db.execute("SELECT indisvalid, indisunique FROM pg_index WHERE indexrelid = to_regclass(%s)",
                          (INDEX,)).fetchone()


def concurrent_builds(url):
    """How many sessions are running CREATE INDEX CONCURRENTLY on the database at ``url`` now."""
    with psycopg.connect(url, autocommit=True) as db:
        return db.execute("""SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
            AND state = 'active' AND query ILIKE 'CREATE INDEX CONCURRENTLY%%'""").fetchone()[0]


def hold_row_exclusive(url):
    """A session inside a transaction that wrote the table (ROW EXCLUSIVE, uncommitted): a plain CREATE INDEX
    waits for it, and so does a concurrent build's end (but not its start, and no other writer)."""
    writer = psycopg.connect(url)
    writer.execute(f"UPDATE {TABLE} SET state = state")
    return writer


def pending(grant_id, operator="oscar"):
    return Grant(id=grant_id, operator=operator, operator_tenant="platform", target_tenant="acme", actions=("read",),
                 reason="INC-1 outage", ticket="INC-1", duration_seconds=600, state=GrantState.ACTIVE,
                 requested_at=time.time(), pending_until=time.time() + 600, approved_by="(approval not required)",
                 approved_at=time.time(), expires_at=time.time() + 600, operator_issuer="https://idp.example")


def test_opening_an_old_store_does_not_wait_for_the_index_which_follows_once_the_writer_ends():
    with pg_database() as url:
        previous_release_database(url)
        writer = hold_row_exclusive(url)
        try:
            # The premise: a plain CREATE INDEX (what opening used to run) waits for that writer.
            with psycopg.connect(url, autocommit=True) as db:
                db.execute("SET lock_timeout = '200ms'")
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    db.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON {TABLE} ({COLUMNS})")
            started = time.monotonic()
            store = open_store(url)
            try:
                assert time.monotonic() - started < 1.0
                # Without the index the store answers all the same: the hourly count, writes, lookups.
                store.create(pending("new-1"), lambda grant: None, pending_limit=10, hourly_limit=30)
                assert store.find_active("oscar", "platform", "acme", "read", time.time(),
                                         "https://idp.example").id == "new-1"
                # The build started in the background and waits for the writer, holding nobody back.
                eventually(lambda: concurrent_builds(url) == 1, "a concurrent build waiting", BUILD_WAIT)
                assert index_state(url) == (False, False)  # in progress: not usable yet
                writer.rollback()
                eventually(lambda: index_state(url) == (True, False), "a valid index", BUILD_WAIT)
            finally:
                store.close()
        finally:
            writer.close()


def test_an_invalid_index_left_by_a_failed_concurrent_build_is_replaced_by_a_valid_one():
    with pg_database() as url:
        previous_release_database(url)
        with psycopg.connect(url, autocommit=True) as db:
            # Two requests of one operator at one instant: a UNIQUE concurrent build fails and leaves its index
            # behind, invalid, as an interrupted (cancelled, terminated) build does.
            db.execute(f"""INSERT INTO {TABLE} SELECT 'twin-' || i, operator, operator_tenant, target_tenant,
                actions, reason, ticket, duration_seconds, state, requested_at, pending_until, approved_by,
                approved_at, expires_at, revoked_by, revoked_at, revoke_reason, operator_issuer
                FROM {TABLE}, generate_series(1, 1) AS i WHERE id = 'old-1'""")
            with pytest.raises(psycopg.errors.UniqueViolation):
                db.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {INDEX} ON {TABLE} ({COLUMNS})")
        assert index_state(url) == (False, True)
        store = open_store(url)
        try:
            eventually(lambda: index_state(url) == (True, False), "the invalid index replaced by a valid one",
                       BUILD_WAIT)
        finally:
            store.close()


def test_a_second_replica_finds_the_build_busy_and_leaves_the_index_being_built_alone():
    from tenantgate.grants._pg_indexes import IndexBuild, build_missing_indexes

    with pg_database() as url:
        previous_release_database(url)
        writer = hold_row_exclusive(url)
        first: list[object] = []
        building = threading.Thread(target=lambda: first.append(build_missing_indexes(url)), daemon=True)
        try:
            building.start()
            eventually(lambda: concurrent_builds(url) == 1, "the first replica's build waiting", BUILD_WAIT)
            assert index_state(url) == (False, False)  # invalid while it is being built
            second: list[object] = []
            other = threading.Thread(target=lambda: second.append(build_missing_indexes(url)), daemon=True)
            other.start()
            other.join(5)
            # At once, without dropping the invalid index the first one is building (that would wait for it).
            assert second == [IndexBuild.BUSY]
            assert index_state(url) == (False, False)
            writer.rollback()
            building.join(10)
            assert first == [IndexBuild.BUILT]
            assert index_state(url) == (True, False)
            assert build_missing_indexes(url) is IndexBuild.PRESENT
        finally:
            writer.close()


def test_stores_opening_at_once_all_open_and_the_index_is_built_once(caplog):
    caplog.set_level(logging.INFO, logger="tenantgate.grants")

    def messages(url, level=logging.INFO):
        return [r.getMessage() for r in caplog.records
                if r.levelno >= level and r.getMessage().startswith(f"grant store {redact_url(url)}:")]

    with pg_database() as url:
        previous_release_database(url)
        writer = hold_row_exclusive(url)  # so the builds the stores start would overlap
        stores: list[object] = []
        try:
            openers = [threading.Thread(target=lambda: stores.append(open_store(url))) for _ in range(3)]
            for opener in openers:
                opener.start()
            for opener in openers:
                opener.join(5)
            assert len(stores) == 3  # every opener returned a store (a failed open raises in its thread)
            eventually(lambda: concurrent_builds(url) == 1, "one build waiting", BUILD_WAIT)
            writer.rollback()
            eventually(lambda: index_state(url) == (True, False), "a valid index", BUILD_WAIT)
            eventually(lambda: any(f"index {INDEX} built in" in m for m in messages(url)), "the build reported",
                       BUILD_WAIT)
        finally:
            writer.close()
            for store in stores:
                store.close()
        # Other tests' builds (on other databases) may log meanwhile: only this database's records count.
        assert sum(f"index {INDEX} built in" in m for m in messages(url)) == 1
        assert not messages(url, logging.WARNING)
