"""A grant change whose commit fails after its audit event was written: the store reads the grant back and
says what stands (``CommitFailed``), and the log then tells the truth (``grant.failed`` unless it took effect).

Review finding: the log kept ``grant.revoked`` for a revocation that never happened (the grant went on opening
cross-tenant Checks) and ``grant.approved`` twice with two expiries for one grant, when the PostgreSQL session
was terminated between the event and the COMMIT.
"""

from urllib.parse import urlsplit

import psycopg
import pytest

from support.grants import make_world
from support.pg import admin_dsn, pg_database, url_with
from support.tcpproxy import TcpProxy
from tenantgate.core.breakglass import BreakGlass, GrantRules
from tenantgate.core.grants import SWEEP_MARGIN_SECONDS, CommitFailed, Grant, GrantState
from tenantgate.core.model import CheckInput, Reason, Resource
from tenantgate.errors import AuditUnavailable, GrantStoreUnavailable
from tenantgate.grants import GuardedStore, PostgresGrantStore, SqliteGrantStore, open_store

T0 = 1_700_000_000.0


def make_grant(grant_id="g-1"):
    return Grant(id=grant_id, operator="alice", operator_tenant="platform", target_tenant="tenant-b",
                 actions=("read",), reason="incident", ticket="INC-1", duration_seconds=600,
                 state=GrantState.PENDING, requested_at=T0, pending_until=T0 + 3600)


def ignore(grant):
    pass


@pytest.fixture
def pg_url():
    with pg_database() as url:
        yield url


def terminate_writer(store_url):
    """Terminate the session that sits inside a transaction on ``store_url``'s database (the store between its
    audit event and its COMMIT), waiting until it is gone: what the reviewer did with pg_terminate_backend."""
    database = urlsplit(store_url).path.lstrip("/")
    with psycopg.connect(admin_dsn(), autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = %s "
            "AND state = 'idle in transaction' AND pid <> pg_backend_pid()", (database,)).fetchall()
    assert killed == [(True,)], killed


def commit_then_fail(store, monkeypatch):
    """Make a SQLite store's write commits succeed but report a failure, as when only the answer to COMMIT is
    lost (reads, which open no transaction, are left alone)."""
    commit = store._commit

    def lost_answer():
        if not store._conn.in_transaction:
            return commit()
        commit()
        store._drop()
        raise GrantStoreUnavailable("grant store unavailable: connection lost after COMMIT")

    monkeypatch.setattr(store, "_commit", lost_answer)


class KillingSink:
    """The audit sink, terminating the store's session right after writing a chosen grant event."""

    def __init__(self, sink, store_url, events):
        self._sink, self._url, self.events = sink, store_url, set(events)

    def write(self, event):
        self._sink.write(event)
        if getattr(event, "event", "") in self.events:
            terminate_writer(self._url)

    def write_many(self, events):
        return self._sink.write_many(events)

    def healthy(self):
        return self._sink.healthy()


def replica(world, *, audit=None, store=None, **rules):
    """Another BreakGlass on the world's store (or ``store``), with its own audit wrapper and rules."""
    return BreakGlass(store=store or world.service.store, audit=audit or world.sink, clock=world.clock,
                      rules=GrantRules(**rules), verifier=world.service._verifier)


def grant_events(world, grant_id=None):
    return [r for r in world.records() if r.get("record_type") == "grant_event"
            and (grant_id is None or r["grant_id"] == grant_id)]


def check(world):
    token = world.token("platform", "oscar", "breakglass-operator")
    return world.pdp.decide(CheckInput(token=token, action="read", resource=Resource("Invoice", "inv-1", "acme")))


# --- the store: what stands after a failed commit -------------------------------------------------------------

@pytest.mark.postgres
def test_postgres_activation_whose_session_is_terminated_before_commit_reports_the_grant_still_pending(pg_url):
    store = open_store(pg_url)
    try:
        store.create(make_grant(), ignore)
        with pytest.raises(CommitFailed) as failed:
            store.activate("g-1", "bob", T0 + 10, lambda grant: terminate_writer(pg_url))
        assert [g.state for g in failed.value.written] == [GrantState.ACTIVE]
        assert failed.value.standing["g-1"].state is GrantState.PENDING and failed.value.unread == ""
        assert store.get("g-1").state is GrantState.PENDING
        assert store.activate("g-1", "bob", T0 + 11, ignore).state is GrantState.ACTIVE  # the store recovered
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_insert_whose_session_is_terminated_before_commit_reports_no_grant(pg_url):
    store = open_store(pg_url)
    try:
        with pytest.raises(CommitFailed) as failed:
            store.create(make_grant(), lambda grant: terminate_writer(pg_url))
        assert failed.value.standing == {"g-1": None}
        assert store.get("g-1") is None
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_commit_cut_off_with_the_store_unreachable_reports_the_outcome_unknown(pg_url):
    server = urlsplit(admin_dsn())
    with TcpProxy(server.hostname or "127.0.0.1", server.port or 5432) as proxy:
        store = PostgresGrantStore(url_with(pg_url, host="127.0.0.1", port=proxy.port))
        try:
            store.create(make_grant(), ignore)
            with pytest.raises(CommitFailed) as failed:
                store.activate("g-1", "bob", T0 + 10, lambda grant: proxy.cut())
            assert failed.value.standing == {} and failed.value.unread.startswith("grant store unavailable")
            proxy.restore()
            assert store.get("g-1").state is GrantState.PENDING
        finally:
            store.close()


def test_sqlite_commit_whose_answer_is_lost_reports_the_change_applied(tmp_path, monkeypatch):
    store = SqliteGrantStore(tmp_path / "grants.db")
    try:
        store.create(make_grant(), ignore)
        commit_then_fail(store, monkeypatch)
        with pytest.raises(CommitFailed) as failed:
            store.activate("g-1", "bob", T0 + 10, ignore)
        assert failed.value.standing["g-1"] == failed.value.written[0]
        assert failed.value.standing["g-1"].state is GrantState.ACTIVE
    finally:
        store.close()


def test_a_failed_commit_that_changed_nothing_is_a_plain_outage(tmp_path, monkeypatch):
    store = SqliteGrantStore(tmp_path / "grants.db")
    try:
        commit_then_fail(store, monkeypatch)
        with pytest.raises(GrantStoreUnavailable) as raised:
            store.activate("no-such-grant", "bob", T0 + 10, ignore)
        assert not isinstance(raised.value, CommitFailed)
    finally:
        store.close()


# --- the log: true after a failed commit ----------------------------------------------------------------------

@pytest.mark.postgres
def test_a_revocation_killed_before_commit_is_not_left_on_record_as_done(tmp_path, pg_url):
    world = make_world(tmp_path, store_url=pg_url)
    grant = world.active_grant()
    killer = replica(world, audit=KillingSink(world.sink, pg_url, {"grant.revoked"}))
    with pytest.raises(GrantStoreUnavailable, match="it was not applied"):
        killer.revoke(world.approver(), grant.id, "incident closed")
    assert check(world).reason is Reason.ALLOW_BREAK_GLASS  # the grant still opens Checks ...
    events = grant_events(world, grant.id)
    assert [e["event"] for e in events] == ["grant.requested", "grant.approved", "grant.revoked", "grant.failed"]
    failed = events[-1]  # ... and the log says so
    assert failed["state"] == "ACTIVE" and failed["actor"] == "ada"
    assert failed["detail"].startswith("revoke not applied: the commit failed (grant store unavailable")
    assert "the grant stands ACTIVE" in failed["detail"]
    assert not [e for e in events if e["event"] == "grant.refused"]
    world.service.revoke(world.approver(), grant.id, "incident closed")  # a retry works, and is recorded
    assert check(world).reason is Reason.CROSS_TENANT
    world.service.store.close()


@pytest.mark.postgres
def test_an_approval_killed_before_commit_cannot_appear_approved_twice(tmp_path, pg_url):
    world = make_world(tmp_path, store_url=pg_url)
    grant = world.request()
    killer = replica(world, audit=KillingSink(world.sink, pg_url, {"grant.approved"}))
    with pytest.raises(GrantStoreUnavailable):
        killer.approve(world.approver(), grant.id)
    world.clock.advance(5)
    approved = world.service.approve(world.approver(), grant.id)
    events = grant_events(world, grant.id)
    assert [(e["event"], e["state"]) for e in events] == [
        ("grant.requested", "PENDING"), ("grant.approved", "ACTIVE"), ("grant.failed", "PENDING"),
        ("grant.approved", "ACTIVE")]
    assert events[2]["expires_at"] == ""  # a pending grant expires at no time: the first expiry is void
    assert world.service.store.get(grant.id).expires_at == approved.expires_at
    world.service.store.close()


@pytest.mark.postgres
def test_a_request_killed_before_commit_is_on_record_as_not_stored(tmp_path, pg_url):
    world = make_world(tmp_path, store_url=pg_url)
    killer = replica(world, audit=KillingSink(world.sink, pg_url, {"grant.requested"}))
    from tenantgate.core.breakglass import GrantRequest

    with pytest.raises(GrantStoreUnavailable, match="it was not applied"):
        killer.request(world.operator(), GrantRequest("acme", ("read",), "INC-1 outage", "INC-1", 900))
    requested, failed = grant_events(world)
    assert (requested["event"], failed["event"], failed["grant_id"]) == (
        "grant.requested", "grant.failed", requested["grant_id"])
    assert failed["state"] == "" and failed["detail"].endswith("no such grant was stored")
    assert world.service.store.get(requested["grant_id"]) is None
    world.service.store.close()


@pytest.mark.postgres
def test_an_approval_whose_outcome_cannot_be_read_back_is_on_record_as_unknown(tmp_path, pg_url):
    server = urlsplit(admin_dsn())
    with TcpProxy(server.hostname or "127.0.0.1", server.port or 5432) as proxy:
        world = make_world(tmp_path, store_url=url_with(pg_url, host="127.0.0.1", port=proxy.port))
        grant = world.request()

        class CuttingSink(KillingSink):
            def write(self, event):
                self._sink.write(event)
                if event.event == "grant.approved":
                    proxy.cut()

        cutter = replica(world, audit=CuttingSink(world.sink, pg_url, ()))
        with pytest.raises(GrantStoreUnavailable, match="outcome unknown"):
            cutter.approve(world.approver(), grant.id)
        failed = grant_events(world, grant.id)[-1]
        assert (failed["event"], failed["state"], failed["expires_at"]) == ("grant.failed", "", "")
        assert failed["detail"].startswith("approve outcome unknown: the commit failed (")
        assert "the grant store's state decides" in failed["detail"]
        proxy.restore()
        assert world.service.store.get(grant.id).state is GrantState.PENDING
        world.service.store.close()


def test_an_approval_whose_commit_answer_is_lost_but_applied_needs_no_correction(tmp_path, monkeypatch):
    world = make_world(tmp_path)
    grant = world.request()
    commit_then_fail(world.service.store, monkeypatch)
    with pytest.raises(GrantStoreUnavailable, match="it was applied"):
        world.service.approve(world.approver(), grant.id)
    assert [e["event"] for e in grant_events(world, grant.id)] == ["grant.requested", "grant.approved"]
    assert world.service.store.get(grant.id).state is GrantState.ACTIVE


def test_a_sweep_rolled_back_by_a_later_event_corrects_the_events_it_wrote(tmp_path, monkeypatch):
    world = make_world(tmp_path)
    first = world.active_grant(duration=60)
    world.clock.advance(1)
    second = world.active_grant(duration=60, target="globex")
    world.clock.advance(120 + SWEEP_MARGIN_SECONDS)
    write_many = world.sink.write_many

    def second_expiry_unwritable(events):
        """The sweep's batch, with the second grant's event refused (the others written)."""
        refused = [e.event == "grant.expired" and e.grant_id == second.id for e in events]
        written = iter(write_many([e for e, no in zip(events, refused, strict=True) if not no]))
        return [AuditUnavailable("disk full") if no else next(written) for no in refused]

    monkeypatch.setattr(world.sink, "write_many", second_expiry_unwritable)
    with pytest.raises(AuditUnavailable):
        world.service.sweep()
    events = [(e["event"], e["grant_id"], e["state"]) for e in grant_events(world)][-2:]
    assert events == [("grant.expired", first.id, "EXPIRED"), ("grant.failed", first.id, "")]
    assert "expire not applied: rolled back (AuditUnavailable: disk full)" in grant_events(world)[-1]["detail"]
    assert world.service.store.get(first.id).state is GrantState.ACTIVE
    assert world.service.store.get(second.id).state is GrantState.ACTIVE


# --- refused for an outage: on record like any refusal --------------------------------------------------------

class Monotonic:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_a_revocation_refused_in_the_fail_fast_window_is_on_record(tmp_path):
    world = make_world(tmp_path)
    grant = world.active_grant()
    monotonic, attempts = Monotonic(), []

    def opener():
        attempts.append(monotonic.t)
        if len(attempts) <= 2:
            raise GrantStoreUnavailable("grant store unavailable: connection refused")
        return open_store(f"sqlite:///{tmp_path / 'grants.db'}")

    guarded = GuardedStore(opener, retry_seconds=1.0, monotonic=monotonic)
    service = replica(world, store=guarded)
    with pytest.raises(GrantStoreUnavailable, match="connection refused"):
        service.revoke(world.approver(), grant.id, "incident closed")  # opens the fail-fast window
    with pytest.raises(GrantStoreUnavailable) as fast:
        service.revoke(world.approver(), grant.id, "incident closed")
    # Said once, not "grant store unavailable (retrying shortly): grant store unavailable: ..." (review finding).
    assert str(fast.value) == "grant store unavailable (retrying shortly): connection refused"
    refused = [e for e in grant_events(world, grant.id) if e["event"] == "grant.refused"]
    assert [e["detail"].split(": ")[:2] for e in refused] == [["revoke", "GrantStoreUnavailable"]] * 2
    assert "retrying shortly" in refused[1]["detail"] and refused[1]["actor"] == "ada"
    monotonic.t += 1.0
    assert service.revoke(world.approver(), grant.id, "incident closed").state is GrantState.REVOKED
    guarded.close()
