"""The hourly request limit in ``GrantStore.create`` (review finding: an operator under the pending cap could request
and revoke in a loop, and every cycle stored a grant row, which is never purged, and wrote audit records). Every
request of the operator made in the last hour counts, whatever became of it; counted in the insert's own
transaction under the operator's lock, so racing creates on separate connections (other replicas) cannot exceed
it. The index that makes the count a range scan is added to databases created before it. Both stores: SQLite on a
temp file, PostgreSQL on a throwaway database (skipped when no PostgreSQL is reachable)."""

import sqlite3
import time

import psycopg
import pytest

from support.grants import race_creates
from support.pg import pg_database
from support.waiting import eventually
from tenantgate.core.grants import Grant, GrantState
from tenantgate.core.model import rfc3339
from tenantgate.errors import GrantConflict
from tenantgate.grants import open_store
from tenantgate.grants._sql import COMPONENT, SCHEMA_V1, SCHEMA_V2, TABLE, VERSION_DDL, VERSION_TABLE

T0 = 1_700_000_000.0
HOUR = 3600.0
INDEX = f"{TABLE}_by_operator"


def request(grant_id, *, at=T0, operator="oscar", tenant="platform", issuer="https://idp.example",
            state=GrantState.PENDING):
    active = state is GrantState.ACTIVE
    return Grant(id=grant_id, operator=operator, operator_tenant=tenant, target_tenant="acme", actions=("read",),
                 reason="INC-1 outage", ticket="INC-1", duration_seconds=600, state=state, requested_at=at,
                 pending_until=at + 86_400, approved_by="(approval not required)" if active else "",
                 approved_at=at if active else 0.0, expires_at=at + 600 if active else 0.0, operator_issuer=issuer)


def ignore(grant):
    pass


def ids_of(store, operator="oscar"):
    return {g.id for g in store.list(None, None, T0, 10_000) if g.operator == operator}


def test_an_operators_request_beyond_the_hourly_limit_is_refused_with_when_to_try_again(store):
    for n in range(3):
        store.create(request(f"g-{n}", at=T0 + n * 60), ignore, hourly_limit=3)
    shown = []
    now = T0 + 600
    with pytest.raises(GrantConflict) as refused:
        store.create(request("g-3", at=now), shown.append, hourly_limit=3)
    message = str(refused.value)
    assert "grants.max_requests_per_operator_per_hour (3)" in message
    assert f"try again after {rfc3339(T0 + HOUR)} (in {int(T0 + HOUR - now)} s)" in message  # the oldest + 1 h
    assert shown == []  # refused before anything was written: no grant.requested event
    assert store.get("g-3") is None
    assert ids_of(store) == {"g-0", "g-1", "g-2"}


def test_every_request_counts_whether_active_at_once_revoked_or_expired(store):
    store.create(request("expired", at=T0 - 600), ignore)
    assert [g.id for g in store.expire_due(T0 + 86_400, ignore)] == ["expired"]  # requested within the hour
    store.create(request("at-once", state=GrantState.ACTIVE), ignore, hourly_limit=4)
    store.create(request("revoked"), ignore, hourly_limit=4)
    store.revoke("revoked", "oscar", "oops", T0 + 1, ignore)
    store.create(request("approved"), ignore)
    store.activate("approved", "ada", T0 + 1, ignore)
    assert {g.id: g.state for g in store.list(None, None, T0, 10)} == {
        "expired": GrantState.EXPIRED, "at-once": GrantState.ACTIVE, "revoked": GrantState.REVOKED,
        "approved": GrantState.ACTIVE}
    with pytest.raises(GrantConflict, match=r"grants.max_requests_per_operator_per_hour \(4\)"):
        store.create(request("fifth", at=T0 + 2), ignore, hourly_limit=4)
    with pytest.raises(GrantConflict, match=r"grants.max_requests_per_operator_per_hour \(4\)"):
        store.create(request("fifth-active", at=T0 + 2, state=GrantState.ACTIVE), ignore, hourly_limit=4)
    assert store.get("fifth") is None and store.get("fifth-active") is None


def test_the_limit_is_per_operator_subject_tenant_and_issuer(store):
    for n in range(2):
        store.create(request(f"oscar-{n}"), ignore, hourly_limit=2)
    with pytest.raises(GrantConflict):
        store.create(request("oscar-2"), ignore, hourly_limit=2)
    # Another person, and the same subject at another issuer or in another tenant (someone else), have their own.
    store.create(request("mallory", operator="mallory"), ignore, hourly_limit=2)
    store.create(request("other-idp", issuer="https://other.example"), ignore, hourly_limit=2)
    store.create(request("other-tenant", tenant="staff"), ignore, hourly_limit=2)
    store.create(request("unlimited"), ignore)  # 0 is no limit
    assert store.get("mallory") and store.get("other-idp") and store.get("other-tenant") and store.get("unlimited")


def test_the_window_slides_a_request_leaves_it_an_hour_after_it_was_made(store):
    store.create(request("first", at=T0), ignore, hourly_limit=2)
    store.create(request("second", at=T0 + 1000), ignore, hourly_limit=2)
    with pytest.raises(GrantConflict, match=rf"try again after {rfc3339(T0 + HOUR)} \(in 1 s\)"):
        store.create(request("early", at=T0 + HOUR - 1), ignore, hourly_limit=2)
    store.create(request("third", at=T0 + HOUR), ignore, hourly_limit=2)  # "first" is an hour old: not counted
    with pytest.raises(GrantConflict, match=rf"try again after {rfc3339(T0 + 1000 + HOUR)}"):
        store.create(request("fourth", at=T0 + HOUR + 1), ignore, hourly_limit=2)
    store.create(request("fourth", at=T0 + 1000 + HOUR), ignore, hourly_limit=2)


def test_when_more_than_the_limit_were_made_the_retry_time_is_when_enough_have_left(store):
    # A lower limit than the one the requests were made under (a changed setting, or another replica's).
    for n in range(5):
        store.create(request(f"g-{n}", at=T0 + n * 100), ignore)
    with pytest.raises(GrantConflict, match=rf"try again after {rfc3339(T0 + 300 + HOUR)}"):
        store.create(request("g-5", at=T0 + 1000), ignore, hourly_limit=2)


def test_racing_creates_on_separate_connections_never_exceed_the_hourly_limit(store_url):
    # ACTIVE grants: the pending cap plays no part.
    limit, racers = 3, 8
    grants = [request(f"race-{index}", at=T0 + index, state=GrantState.ACTIVE) for index in range(racers)]
    assert race_creates(store_url, grants, hourly_limit=limit) == ["created"] * limit + ["refused"] * (racers - limit)
    opened = open_store(store_url)
    try:
        assert len(ids_of(opened)) == limit
    finally:
        opened.close()


# ---------------------------------------------------------------------------------- the index, old databases

def _previous_release_schema(run):
    """The schema as the previous release left it: version 2, without the operator index."""
    for ddl in (VERSION_DDL, *SCHEMA_V1, *SCHEMA_V2):
        run(ddl)
    run(f"INSERT INTO {VERSION_TABLE} VALUES ('{COMPONENT}', 2)")


def test_an_existing_sqlite_store_gains_the_index_and_the_count_uses_it(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        _previous_release_schema(db.execute)
    db.close()
    store = open_store(f"sqlite:///{path}")
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (INDEX,)).fetchall()
        assert db.execute(f"SELECT version FROM {VERSION_TABLE}").fetchall() == [(2,)]  # no new version needed
        plan = " ".join(str(row[-1]) for row in db.execute(
            f"""EXPLAIN QUERY PLAN SELECT requested_at FROM {TABLE} WHERE operator = ? AND operator_tenant = ?
                AND operator_issuer = ? AND requested_at > ? ORDER BY requested_at DESC LIMIT ?""",
            ("oscar", "platform", "https://idp.example", T0, 3)))
    db.close()
    assert f"USING COVERING INDEX {INDEX}" in plan and "requested_at>?" in plan
    assert "TEMP B-TREE" not in plan  # read in index order, not sorted


@pytest.mark.postgres
def test_an_existing_postgres_store_gains_the_index_and_the_count_uses_it():
    with pg_database() as url:
        with psycopg.connect(url, autocommit=True) as db:
            _previous_release_schema(db.execute)
        open_store(url).close()
        # Built in the background after the store opened (test_store_index_build.py), so not waited for here.
        eventually(lambda: _valid_postgres_index(url), "the index built", attempts=200)
        with psycopg.connect(url) as db:
            assert db.execute(f"SELECT version FROM {VERSION_TABLE}").fetchall() == [(2,)]
            db.execute("SET enable_seqscan = off")
            plan = " ".join(row[0] for row in db.execute(
                f"""EXPLAIN SELECT requested_at FROM {TABLE} WHERE operator = %s AND operator_tenant = %s
                    AND operator_issuer = %s AND requested_at > %s ORDER BY requested_at DESC LIMIT %s""",
                ("oscar", "platform", "https://idp.example", T0, 3)))
        assert f"Backward using {INDEX}" in plan and "Sort" not in plan


def _valid_postgres_index(url):
    with psycopg.connect(url, autocommit=True) as db:
        row = db.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (INDEX,)).fetchone()
    return bool(row and row[0])


@pytest.mark.postgres
def test_reopening_a_postgres_store_does_not_wait_for_writers_holding_the_table():
    # CREATE INDEX IF NOT EXISTS locks the table even when the index exists: run on every connect, it would
    # wait for every write in flight (and hold new ones back), failing the connect behind a slow writer.
    with pg_database() as url:
        open_store(url).close()
        writer = psycopg.connect(url)
        try:
            writer.execute(f"UPDATE {TABLE} SET state = state")  # holds ROW EXCLUSIVE on the table, uncommitted
            started = time.monotonic()
            store = open_store(url)
            store.close()
            assert time.monotonic() - started < 1.0
        finally:
            writer.close()
