"""The GrantStore contract, one suite run against both stores (SQLite on a temp file, PostgreSQL on a throwaway
database). The PostgreSQL half skips when no server is reachable (support.pg)."""

import os
import stat

import pytest

from support.pg import pg_database
from tenantgate.core.grants import CLOCK_SKEW_SECONDS, Grant, GrantState
from tenantgate.errors import ConfigError, GrantConflict, GrantInvalid
from tenantgate.grants import PostgresGrantStore, SqliteGrantStore, open_store, redact_url

T0 = 1_700_000_000.0
OPERATOR, OPERATOR_TENANT, TARGET = "alice", "platform", "tenant-b"


def make_grant(grant_id="g-1", *, operator=OPERATOR, operator_tenant=OPERATOR_TENANT, target_tenant=TARGET,
               actions=("read",), requested_at=T0, pending_seconds=3600, duration=600, **fields):
    return Grant(id=grant_id, operator=operator, operator_tenant=operator_tenant, target_tenant=target_tenant,
                 actions=tuple(actions), reason="incident 42", ticket="INC-42", duration_seconds=duration,
                 state=GrantState.PENDING, requested_at=requested_at, pending_until=requested_at + pending_seconds,
                 **fields)


class Recorder:
    """A before_commit hook that remembers what it was shown."""

    def __init__(self):
        self.seen = []

    def __call__(self, grant):
        self.seen.append(grant)


def ignore(grant):
    pass


class AuditDown(Exception):
    pass


def failing_hook(error):
    def hook(grant):
        raise error
    return hook


def create_active(store, grant_id="g-1", approved_at=T0 + 10, **kw):
    """A grant approved at ``approved_at``; with the default duration it expires at approved_at + 600."""
    store.create(make_grant(grant_id, **kw), ignore)
    return store.activate(grant_id, "bob", approved_at, ignore)


# --- create / get -----------------------------------------------------------------------------------------------

def test_created_grant_reads_back_field_for_field(store):
    grant = make_grant(actions=("read", "list"))
    hook = Recorder()
    assert store.create(grant, hook) == grant
    assert hook.seen == [grant]
    assert store.get("g-1") == grant


def test_get_of_unknown_id_returns_none(store):
    assert store.get("no-such-grant") is None


def test_creating_an_existing_id_is_a_conflict_and_keeps_the_first(store):
    store.create(make_grant(), ignore)
    with pytest.raises(GrantConflict):
        store.create(make_grant(operator="mallory"), ignore)
    assert store.get("g-1").operator == OPERATOR


def test_unicode_values_round_trip(store):
    grant = make_grant("g-ü", operator="zoë", target_tenant="tenant-ß", actions=("lire", "📄"))
    store.create(grant, ignore)
    assert store.get("g-ü") == grant
    assert store.find_active("zoë", OPERATOR_TENANT, "tenant-ß", "📄", T0) is None  # pending, not active


@pytest.mark.parametrize("value", ["nul\x00byte", "lone\ud800surrogate"])
def test_unstorable_text_is_refused_on_write_and_matches_nothing_on_read(store, value):
    with pytest.raises(GrantInvalid):
        store.create(make_grant(operator=value), ignore)
    create_active(store)
    assert store.find_active(value, OPERATOR_TENANT, TARGET, "read", T0 + 20) is None
    assert store.find_active(OPERATOR, OPERATOR_TENANT, TARGET, value, T0 + 20) is None
    assert store.get(value) is None
    assert store.list(value, None, T0) == []


# --- activate -----------------------------------------------------------------------------------------------------

def test_activate_sets_approver_approval_time_and_expiry(store):
    store.create(make_grant(duration=600), ignore)
    hook = Recorder()
    activated = store.activate("g-1", "bob", T0 + 10, hook)
    assert activated.state is GrantState.ACTIVE
    assert (activated.approved_by, activated.approved_at, activated.expires_at) == ("bob", T0 + 10, T0 + 610)
    assert hook.seen == [activated]
    assert store.get("g-1") == activated


def test_activate_of_an_active_or_revoked_grant_returns_none(store):
    create_active(store, "g-active")
    store.create(make_grant("g-revoked"), ignore)
    store.revoke("g-revoked", "carol", "not needed", T0 + 5, ignore)
    assert store.activate("g-active", "dave", T0 + 20, ignore) is None
    assert store.activate("g-revoked", "dave", T0 + 20, ignore) is None
    assert store.get("g-active").approved_by == "bob"
    assert store.get("g-revoked").state is GrantState.REVOKED


@pytest.mark.parametrize("offset", [0, 1])
def test_activate_at_or_after_the_pending_deadline_returns_none(store, offset):
    store.create(make_grant(pending_seconds=3600), ignore)
    assert store.activate("g-1", "bob", T0 + 3600 + offset, ignore) is None
    assert store.get("g-1").state is GrantState.PENDING


def test_activate_of_unknown_id_returns_none(store):
    assert store.activate("missing", "bob", T0, ignore) is None


# --- revoke -------------------------------------------------------------------------------------------------------

def test_revoke_of_a_pending_grant_records_who_when_and_why(store):
    store.create(make_grant(), ignore)
    hook = Recorder()
    revoked = store.revoke("g-1", "carol", "wrong tenant", T0 + 5, hook)
    assert (revoked.state, revoked.revoked_by, revoked.revoked_at, revoked.revoke_reason) == (
        GrantState.REVOKED, "carol", T0 + 5, "wrong tenant")
    assert hook.seen == [revoked] and store.get("g-1") == revoked


def test_revoke_of_an_active_grant_closes_it_at_once(store):
    create_active(store)
    assert store.revoke("g-1", "carol", "done", T0 + 20, ignore).state is GrantState.REVOKED
    assert store.find_active(OPERATOR, OPERATOR_TENANT, TARGET, "read", T0 + 21) is None


def test_revoke_of_revoked_or_effectively_expired_grants_returns_none(store):
    store.create(make_grant("g-revoked"), ignore)
    store.revoke("g-revoked", "carol", "first", T0 + 5, ignore)
    create_active(store, "g-active")  # expires at T0 + 610
    store.create(make_grant("g-pending", pending_seconds=100), ignore)
    assert store.revoke("g-revoked", "dave", "again", T0 + 6, ignore) is None
    assert store.revoke("g-active", "dave", "late", T0 + 610, ignore) is None  # stored ACTIVE, effectively EXPIRED
    assert store.revoke("g-pending", "dave", "late", T0 + 100, ignore) is None  # stored PENDING, effectively EXPIRED
    store.expire_due(T0 + 700, ignore)
    assert store.revoke("g-active", "dave", "late", T0 + 20, ignore) is None  # stored EXPIRED
    assert store.get("g-revoked").revoked_by == "carol"
    assert {g.state for g in store.list(TARGET, None, T0)} == {GrantState.REVOKED, GrantState.EXPIRED}


# --- find_active --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("operator", "operator_tenant", "target_tenant", "action"), [
    ("mallory", OPERATOR_TENANT, TARGET, "read"),
    (OPERATOR, "tenant-a", TARGET, "read"),
    (OPERATOR, OPERATOR_TENANT, "tenant-c", "read"),
    (OPERATOR, OPERATOR_TENANT, TARGET, "delete"),
    (OPERATOR, OPERATOR_TENANT, TARGET, "rea"),
    (OPERATOR, OPERATOR_TENANT, TARGET, "READ"),
], ids=["other-operator", "other-operator-tenant", "other-target-tenant-c", "other-action-delete",
        "action-prefix", "action-case"])
def test_find_active_matches_only_the_exact_operator_tenants_and_action(store, operator, operator_tenant,
                                                                       target_tenant, action):
    create_active(store)
    assert store.find_active(OPERATOR, OPERATOR_TENANT, TARGET, "read", T0 + 20) is not None
    assert store.find_active(operator, operator_tenant, target_tenant, action, T0 + 20) is None


def test_find_active_is_open_one_second_before_expiry_and_closed_at_and_after_it(store):
    grant = create_active(store)  # expires at T0 + 610
    assert store.find_active(OPERATOR, OPERATOR_TENANT, TARGET, "read", T0 + 609) == grant
    assert store.find_active(OPERATOR, OPERATOR_TENANT, TARGET, "read", T0 + 610) is None
    assert store.find_active(OPERATOR, OPERATOR_TENANT, TARGET, "read", T0 + 611) is None


def test_find_active_ignores_pending_and_revoked_grants(store):
    store.create(make_grant("g-pending"), ignore)
    create_active(store, "g-revoked")
    store.revoke("g-revoked", "carol", "stop", T0 + 15, ignore)
    assert store.find_active(OPERATOR, OPERATOR_TENANT, TARGET, "read", T0 + 20) is None


def test_find_active_returns_the_grant_that_expires_last(store):
    create_active(store, "g-short", duration=60)
    create_active(store, "g-long", duration=900)
    create_active(store, "g-mid", duration=300)
    assert store.find_active(OPERATOR, OPERATOR_TENANT, TARGET, "read", T0 + 20).id == "g-long"


def test_find_active_with_several_actions_opens_each_named_action(store):
    create_active(store, actions=("read", "list"))
    assert store.find_active(OPERATOR, OPERATOR_TENANT, TARGET, "list", T0 + 20) is not None
    assert store.find_active(OPERATOR, OPERATOR_TENANT, TARGET, "read", T0 + 20) is not None
    assert store.find_active(OPERATOR, OPERATOR_TENANT, TARGET, "read,list", T0 + 20) is None


# --- list ---------------------------------------------------------------------------------------------------------

def test_list_filters_by_target_tenant_and_effective_state_newest_first(store):
    create_active(store, "b-active", requested_at=T0)              # ACTIVE until T0 + 610
    create_active(store, "b-lapsed", requested_at=T0 + 1, duration=5)  # ACTIVE stored, EXPIRED at T0 + 100
    store.create(make_grant("b-pending", requested_at=T0 + 2), ignore)
    store.create(make_grant("b-stale", requested_at=T0 + 3, pending_seconds=50), ignore)  # EXPIRED at T0 + 100
    store.create(make_grant("b-revoked", requested_at=T0 + 4), ignore)
    store.revoke("b-revoked", "carol", "no", T0 + 5, ignore)
    store.create(make_grant("c-pending", target_tenant="tenant-c", requested_at=T0 + 5), ignore)
    now = T0 + 100

    def ids(tenant, state, limit=1000):
        return [g.id for g in store.list(tenant, state, now, limit)]

    assert ids(TARGET, None) == ["b-revoked", "b-stale", "b-pending", "b-lapsed", "b-active"]
    assert ids(TARGET, GrantState.ACTIVE) == ["b-active"]
    assert ids(TARGET, GrantState.PENDING) == ["b-pending"]
    assert ids(TARGET, GrantState.EXPIRED) == ["b-stale", "b-lapsed"]
    assert ids(TARGET, GrantState.REVOKED) == ["b-revoked"]
    assert ids("tenant-c", None) == ["c-pending"]
    assert ids(None, GrantState.PENDING) == ["c-pending", "b-pending"]
    assert ids(None, None, limit=2) == ["c-pending", "b-revoked"]
    assert ids("tenant-d", None) == []
    assert store.list(TARGET, GrantState.EXPIRED, now)[1].state is GrantState.ACTIVE  # stored state is kept


# --- expire_due ---------------------------------------------------------------------------------------------------

def test_expire_due_marks_and_returns_only_due_grants_and_calls_the_hook_once_with_all(store):
    create_active(store, "active-due", duration=30)        # expires T0 + 40
    create_active(store, "active-live", duration=600)      # expires T0 + 610
    store.create(make_grant("pending-due", requested_at=T0 + 1, pending_seconds=49), ignore)  # until T0 + 50
    store.create(make_grant("pending-live", pending_seconds=3600), ignore)
    store.create(make_grant("revoked"), ignore)
    store.revoke("revoked", "carol", "no", T0 + 5, ignore)
    hook = Recorder()
    expired = store.expire_due(T0 + 50, hook)
    assert [g.id for g in expired] == ["active-due", "pending-due"]  # oldest requested first
    assert all(g.state is GrantState.EXPIRED for g in expired)
    assert hook.seen == [expired]  # one call, with every grant of the change
    assert {g.id: g.state for g in store.list(TARGET, None, T0)} == {
        "active-due": GrantState.EXPIRED, "pending-due": GrantState.EXPIRED, "active-live": GrantState.ACTIVE,
        "pending-live": GrantState.PENDING, "revoked": GrantState.REVOKED}
    assert store.expire_due(T0 + 50, hook) == []
    assert hook.seen == [expired]  # nothing due: not called


def test_expire_due_expires_at_most_limit_grants_oldest_requested_first(store):
    for i in range(7):
        store.create(make_grant(f"g-{i}", requested_at=T0 + 6 - i, pending_seconds=10), ignore)  # g-6 oldest
    batches = [[g.id for g in store.expire_due(T0 + 100, ignore, limit=3)] for _ in range(4)]
    assert batches == [["g-6", "g-5", "g-4"], ["g-3", "g-2", "g-1"], ["g-0"], []]
    with pytest.raises(ValueError):
        store.expire_due(T0 + 100, ignore, limit=0)


# --- before_commit failures roll back -----------------------------------------------------------------------------

def _attempt(store, operation, hook):
    match operation:
        case "create":
            store.create(make_grant("g-new"), hook)
        case "activate":
            store.activate("g-pending", "bob", T0 + 20, hook)
        case "revoke":
            store.revoke("g-active", "carol", "stop", T0 + 20, hook)
        case "expire_due":
            store.expire_due(T0 + 5000, hook)


@pytest.mark.parametrize("operation", ["create", "activate", "revoke", "expire_due"])
def test_before_commit_failure_rolls_back_and_reraises_the_same_exception(store, operation):
    store.create(make_grant("g-pending"), ignore)
    create_active(store, "g-active")
    before = {g.id: g for g in store.list(None, None, T0)}
    error = AuditDown("audit log is full")
    with pytest.raises(AuditDown) as raised:
        _attempt(store, operation, failing_hook(error))
    assert raised.value is error
    assert {g.id: g for g in store.list(None, None, T0)} == before
    _attempt(store, operation, ignore)  # the store is still usable and the change can happen afterwards
    assert {g.id: g for g in store.list(None, None, T0)} != before


# --- hostile strings ----------------------------------------------------------------------------------------------

def test_sql_looking_ids_tenants_and_actions_are_stored_verbatim_and_match_only_themselves(store):
    hostile = make_grant("g'); DROP TABLE tenantgate_grants; --", operator="alice' OR '1'='1",
                         target_tenant="b\" OR 1=1 --", actions=("%", "_", "*", "read' OR 'x'='x"))
    store.create(hostile, ignore)
    assert store.get(hostile.id) == hostile
    store.activate(hostile.id, "bob", T0 + 10, ignore)
    assert store.find_active("alice' OR '1'='1", OPERATOR_TENANT, "b\" OR 1=1 --", "%", T0 + 20).id == hostile.id
    assert store.find_active("alice", OPERATOR_TENANT, "b\" OR 1=1 --", "%", T0 + 20) is None
    assert store.find_active("alice' OR '1'='1", OPERATOR_TENANT, "b\" OR 1=1 --", "read", T0 + 20) is None
    assert store.find_active("' OR 1=1 --", "' OR 1=1 --", "' OR 1=1 --", "' OR 1=1 --", T0 + 20) is None
    assert [g.id for g in store.list("b\" OR 1=1 --", None, T0)] == [hostile.id]
    assert store.list("' OR '1'='1", None, T0) == []


# --- schema -------------------------------------------------------------------------------------------------------

def test_opening_the_same_store_twice_keeps_schema_and_data(store, store_url):
    create_active(store)
    again = open_store(store_url)
    try:
        assert again.get("g-1") == store.get("g-1")
        assert again.find_active(OPERATOR, OPERATOR_TENANT, TARGET, "read", T0 + 20).id == "g-1"
    finally:
        again.close()


def test_healthy_is_true_while_open_and_false_after_close(store_url):
    opened = open_store(store_url)
    assert opened.healthy()
    opened.close()
    assert not opened.healthy()


# --- open_store -----------------------------------------------------------------------------------------------------

def test_sqlite_url_with_absolute_path_creates_private_directory_and_file(tmp_path):
    path = tmp_path / "new" / "deeper" / "grants.db"
    store = open_store(f"sqlite:///{path}")
    try:
        assert isinstance(store, SqliteGrantStore)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path.parent.parent).st_mode) == 0o700
    finally:
        store.close()


def test_sqlite_url_with_relative_path_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///rel/grants.db")
    store.close()
    assert (tmp_path / "rel" / "grants.db").is_file()


@pytest.mark.parametrize("url", ["mysql://u:hunter2pw@db/x", "sqlite://grants.db", "sqlite:///", "sqlite:///:memory:",
                                 "sqlite:///g.db?mode=ro", "", "postgresql+psycopg://u:hunter2pw@h/db",
                                 "postgresql://u:hunter2pw@[::1/db", "postgres://u@h/db?password=hunter2pw&bogus=1"])
def test_unsupported_or_malformed_store_urls_are_config_errors_that_never_show_the_password(url):
    with pytest.raises(ConfigError) as raised:
        open_store(url)
    assert "hunter2pw" not in str(raised.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:hunter2pw@db:5432/grants", "postgresql://u:***@db:5432/grants"),
    ("postgres://u@db/grants?sslmode=require&password=hunter2pw", "postgres://u@db/grants?sslmode=require&password=***"),
    ("host=db password=hunter2pw dbname=grants", "host=db password=*** dbname=grants"),
    ("postgresql://db/grants", "postgresql://db/grants"),
])
def test_redact_url_masks_every_password_spelling(url, shown):
    assert redact_url(url) == shown


@pytest.mark.postgres
def test_postgres_urls_open_a_postgres_store_under_either_scheme():
    with pg_database() as url:
        for variant in (url, url.replace("postgresql://", "postgres://", 1)):
            store = open_store(variant)
            try:
                assert isinstance(store, PostgresGrantStore)
                assert store.healthy()
            finally:
                store.close()


def test_find_active_opens_nothing_whose_approval_lies_beyond_the_clock_skew(store):
    grant = create_active(store)  # approved at T0 + 10: a replica whose clock reads earlier is behind it
    assert store.find_active(OPERATOR, OPERATOR_TENANT, TARGET, "read", T0 + 10 - CLOCK_SKEW_SECONDS + 1) == grant
    assert store.find_active(OPERATOR, OPERATOR_TENANT, TARGET, "read", T0 + 10 - CLOCK_SKEW_SECONDS - 1) is None
    assert store.find_active(OPERATOR, OPERATOR_TENANT, TARGET, "read", T0 - 7200) is None


def test_a_value_too_large_for_the_lookup_index_is_invalid_not_an_outage(store, store_url):
    # About 3 KB: over PostgreSQL's btree row limit (2,704 bytes); SQLite has none. Either way the store stays
    # usable: a caller's oversized value must not read as "store unavailable" (that opens the fail-fast window).
    # Varied characters: PostgreSQL compresses index entries, and a repeated character would compress to nothing.
    big = make_grant("g-big", operator="".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(1000)))
    if store_url.startswith("sqlite"):
        assert store.create(big, ignore) == big
    else:
        with pytest.raises(GrantInvalid, match="cannot hold these values"):
            store.create(big, ignore)
        assert store.get("g-big") is None
    assert store.create(make_grant("g-2"), ignore).id == "g-2"
    assert store.healthy()
