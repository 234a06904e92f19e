"""The SQL both grant stores run: the table and its schema (with the migration between versions), the text of
every statement, and the ``Dialect`` in which each database spells the things that differ.

Written once with ``?`` placeholders and translated per dialect by ``statements``; values are always bound,
never formatted. Actions are a JSON array in a TEXT column in both databases. The row <-> ``Grant`` mapping
is in ``_rows``, and the store logic that runs these statements in ``_store``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tenantgate.errors import GrantStoreUnavailable

TABLE = "tenantgate_grants"
VERSION_TABLE = "tenantgate_schema_version"
COMPONENT = "grants"
SCHEMA_VERSION = 2

# Column order of every SELECT / RETURNING and of ``grant_params``: the Grant fields, in declaration order.
COLUMNS: tuple[str, ...] = (
    "id", "operator", "operator_tenant", "target_tenant", "actions", "reason", "ticket", "duration_seconds",
    "state", "requested_at", "pending_until", "approved_by", "approved_at", "expires_at", "revoked_by",
    "revoked_at", "revoke_reason", "operator_issuer",
)
_COLS = ", ".join(COLUMNS)

# Schema version 1. Written in the SQL both SQLite and PostgreSQL accept; times are epoch seconds as doubles.
SCHEMA_V1: tuple[str, ...] = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        id TEXT PRIMARY KEY,
        operator TEXT NOT NULL,
        operator_tenant TEXT NOT NULL,
        target_tenant TEXT NOT NULL,
        actions TEXT NOT NULL,
        reason TEXT NOT NULL,
        ticket TEXT NOT NULL,
        duration_seconds BIGINT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('PENDING', 'ACTIVE', 'EXPIRED', 'REVOKED')),
        requested_at DOUBLE PRECISION NOT NULL,
        pending_until DOUBLE PRECISION NOT NULL,
        approved_by TEXT NOT NULL DEFAULT '',
        approved_at DOUBLE PRECISION NOT NULL DEFAULT 0,
        expires_at DOUBLE PRECISION NOT NULL DEFAULT 0,
        revoked_by TEXT NOT NULL DEFAULT '',
        revoked_at DOUBLE PRECISION NOT NULL DEFAULT 0,
        revoke_reason TEXT NOT NULL DEFAULT ''
    )""",
    # find_active: four equalities, then the expiry range, read newest-expiry first.
    f"""CREATE INDEX IF NOT EXISTS {TABLE}_lookup
        ON {TABLE} (operator, operator_tenant, target_tenant, state, expires_at, id)""",
    # list: one tenant's grants, newest requested first.
    f"CREATE INDEX IF NOT EXISTS {TABLE}_by_tenant ON {TABLE} (target_tenant, requested_at, id)",
    # list across tenants (platform view), newest first, without sorting the whole history.
    f"CREATE INDEX IF NOT EXISTS {TABLE}_by_time ON {TABLE} (requested_at, id)",
    # expire_due: only the live grants, which stay few while finished ones pile up.
    f"CREATE INDEX IF NOT EXISTS {TABLE}_live ON {TABLE} (state) WHERE state IN ('PENDING', 'ACTIVE')",
)
# Schema version 2: a grant is bound to the issuer of the token that requested it (the same subject at another
# issuer is another person).
SCHEMA_V2: tuple[str, ...] = (
    f"ALTER TABLE {TABLE} ADD COLUMN operator_issuer TEXT NOT NULL DEFAULT ''",
)
# Indexes a database gains wherever they are missing, whatever its version, as (name, columns): an index
# changes no meaning, so it needs no new version, which replicas of an earlier release (a rolling upgrade, a
# rollback) would refuse. No statement needs one to be correct, only fast: SQLite creates them in ``migrate``,
# PostgreSQL after the store opened, in the background (``postgres.build_missing_indexes``), because building one
# on a large table outlasts a connect's statement_timeout and holds the table's writers back meanwhile.
SCHEMA_INDEXES: tuple[tuple[str, str], ...] = (
    # The hourly request limit: one operator's requests by time, newest first (a range scan).
    (f"{TABLE}_by_operator", "operator, operator_tenant, operator_issuer, requested_at"),
)
VERSION_DDL = f"""CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (
    component TEXT PRIMARY KEY, version INTEGER NOT NULL)"""


def create_index(name: str, columns: str, *, concurrently: bool = False) -> str:
    """``CREATE INDEX [CONCURRENTLY] IF NOT EXISTS name ON`` the grant table ``(columns)``: one of
    ``SCHEMA_INDEXES``. ``CONCURRENTLY`` (PostgreSQL only) never blocks writers and cannot run in a transaction."""
    return f"CREATE INDEX {'CONCURRENTLY ' if concurrently else ''}IF NOT EXISTS {name} ON {TABLE} ({columns})"


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one database spells the things that differ.

    ``param`` is the placeholder (``?`` or ``%s``); ``action_in_actions`` is a boolean SQL expression, with one
    ``?`` for the action, that is true when the JSON array in column ``actions`` contains that exact string.
    ``lock_operator``: a statement, with two ``?`` for ``operator_lock_key``, that holds one operator's creates
    back until the write transaction ends; "" when the write transaction alone serialises writers (SQLite).
    ``index_exists``: a query, with one ``?`` for an index name, that returns a row when the grant table's
    schema holds that index (a catalog read: PostgreSQL's CREATE INDEX IF NOT EXISTS locks the table first).
    ``claim_due``: the clause ending the SELECT that picks a sweep's batch, locking the rows it picks and
    passing over rows another transaction holds, so racing sweeps take disjoint batches instead of waiting for
    each other; "" when the write transaction alone serialises writers (SQLite).
    ``clock``: a query returning the database server's clock now, in epoch seconds; "" when the database keeps
    no clock apart from this host's (SQLite: a file on this host).
    """

    param: str
    action_in_actions: str
    index_exists: str
    lock_operator: str = ""
    claim_due: str = ""
    clock: str = ""


@dataclass(frozen=True, slots=True)
class Statements:
    """Every statement the stores run, with the dialect's placeholders. Values are always bound, never formatted."""

    insert: str
    select_by_id: str
    activate: str
    revoke: str
    find_active: str
    expire_due: str
    list_by: dict[tuple[bool, bool], str]  # (filter by tenant, filter by state) -> SELECT
    schema_version: str
    set_schema_version: str
    index_exists: str
    # Reading a grant back after a failed commit (``SqlGrantStore._read_back``), both inside a write transaction
    # that is rolled back: a no-op UPDATE that waits for any transaction still holding the row, and an INSERT
    # of the same id that does nothing when the id exists (and waits for an insert of it still in flight).
    lock_by_id: str
    claim_id: str
    # The pending-request cap and the hourly request limit (``SqlGrantStore.create``): serialise one operator's
    # creates, then count.
    lock_operator: str
    count_pending: str
    recent_requests: str
    # The database server's clock (``Dialect.clock``): "" when it has none apart from this host's.
    database_time: str


# The state a row has at ``now`` (two ``?`` for now), the SQL twin of ``Grant.effective_state``.
_EFFECTIVE_STATE = ("CASE WHEN state = 'ACTIVE' AND expires_at <= ? THEN 'EXPIRED'"
                    " WHEN state = 'PENDING' AND pending_until <= ? THEN 'EXPIRED' ELSE state END")


# A grant the sweep expires at ``now`` (two ``?`` for now); ``state IN`` first, for the index of live grants.
_DUE = ("state IN ('PENDING', 'ACTIVE')"
        " AND ((state = 'ACTIVE' AND expires_at <= ?) OR (state = 'PENDING' AND pending_until <= ?))")


def statements(dialect: Dialect) -> Statements:
    """The statements for ``dialect`` (written with ``?`` and translated once, here)."""

    def sql(text: str) -> str:
        return " ".join(text.split()).replace("?", dialect.param)

    list_by: dict[tuple[bool, bool], str] = {}
    for by_tenant in (False, True):
        for by_state in (False, True):
            where = [c for c, on in (("target_tenant = ?", by_tenant), (f"({_EFFECTIVE_STATE}) = ?", by_state)) if on]
            clause = f"WHERE {' AND '.join(where)}" if where else ""
            list_by[(by_tenant, by_state)] = sql(
                f"SELECT {_COLS} FROM {TABLE} {clause} ORDER BY requested_at DESC, id DESC LIMIT ?")
    return Statements(
        insert=sql(f"INSERT INTO {TABLE} ({_COLS}) VALUES ({', '.join('?' for _ in COLUMNS)}) RETURNING {_COLS}"),
        select_by_id=sql(f"SELECT {_COLS} FROM {TABLE} WHERE id = ?"),
        # INVARIANT: one conditional UPDATE decides the transition, so of two racing approvers one wins.
        activate=sql(f"""UPDATE {TABLE} SET state = 'ACTIVE', approved_by = ?, approved_at = ?,
            expires_at = ? + duration_seconds
            WHERE id = ? AND state = 'PENDING' AND pending_until > ? RETURNING {_COLS}"""),
        revoke=sql(f"""UPDATE {TABLE} SET state = 'REVOKED', revoked_by = ?, revoked_at = ?, revoke_reason = ?
            WHERE id = ? AND ((state = 'PENDING' AND pending_until > ?) OR (state = 'ACTIVE' AND expires_at > ?))
            RETURNING {_COLS}"""),
        # INVARIANT: exact operator, operator tenant and target tenant; an action the grant names; ``now``
        # from the caller (never the database clock), so every replica agrees on expiry.
        find_active=sql(f"""SELECT {_COLS} FROM {TABLE}
            WHERE operator = ? AND operator_tenant = ? AND target_tenant = ? AND operator_issuer = ?
            AND state = 'ACTIVE' AND expires_at > ? AND approved_at <= ? AND {dialect.action_in_actions}
            ORDER BY expires_at DESC, id DESC LIMIT 1"""),
        # At most ? (the batch) of the due grants, oldest requested first; parameters: now, now, limit, now, now.
        # MATERIALIZED: the batch is picked once. As a plain ``IN (SELECT ... LIMIT ? FOR UPDATE)`` PostgreSQL
        # may run the subquery again for each row (a nested-loop plan); a run after this very UPDATE changed rows
        # passes over them and picks further ones, so the LIMIT did not hold (250 of 250 due grants in one batch).
        # INVARIANT: the outer condition is checked again on the row as it is when updated (PostgreSQL re-reads
        # a row another transaction changed meanwhile), so racing sweeps never both expire, and record, a grant.
        expire_due=sql(f"""WITH batch AS MATERIALIZED (
                SELECT id FROM {TABLE} WHERE {_DUE} ORDER BY requested_at, id LIMIT ? {dialect.claim_due})
            UPDATE {TABLE} SET state = 'EXPIRED'
            WHERE id IN (SELECT id FROM batch) AND {_DUE}
            RETURNING {_COLS}"""),
        list_by=list_by,
        schema_version=sql(f"SELECT version FROM {VERSION_TABLE} WHERE component = ?"),
        set_schema_version=sql(f"""INSERT INTO {VERSION_TABLE} (component, version) VALUES (?, ?)
            ON CONFLICT (component) DO UPDATE SET version = excluded.version"""),
        index_exists=sql(dialect.index_exists),
        lock_by_id=sql(f"UPDATE {TABLE} SET state = state WHERE id = ? RETURNING {_COLS}"),
        claim_id=sql(f"""INSERT INTO {TABLE} ({_COLS}) VALUES ({', '.join('?' for _ in COLUMNS)})
            ON CONFLICT (id) DO NOTHING RETURNING id"""),
        lock_operator=sql(dialect.lock_operator),
        # An operator's requests still waiting for approval at ``now`` (the lookup index's leading columns).
        count_pending=sql(f"""SELECT COUNT(*) FROM {TABLE}
            WHERE operator = ? AND operator_tenant = ? AND operator_issuer = ?
            AND state = 'PENDING' AND pending_until > ?"""),
        # An operator's newest requests (any state) made after a time, at most a given number
        # (``tenantgate_grants_by_operator``, read backwards): the oldest of them is the one to leave the window next.
        recent_requests=sql(f"""SELECT requested_at FROM {TABLE}
            WHERE operator = ? AND operator_tenant = ? AND operator_issuer = ? AND requested_at > ?
            ORDER BY requested_at DESC LIMIT ?"""),
        database_time=sql(dialect.clock),
    )


Row = tuple[Any, ...]
Run = Callable[[str, Sequence[Any]], list[Row]]


def migrate(run: Run, sql: Statements, *, create_indexes: bool) -> None:
    """Bring the schema to ``SCHEMA_VERSION``, and with ``create_indexes`` create the ``SCHEMA_INDEXES`` it lacks,
    with ``run`` (one statement, rows if any), inside the caller's write transaction, which already excludes other
    migrators. Idempotent. Without ``create_indexes`` (PostgreSQL) the caller builds them later, outside it.

    Raises ``GrantStoreUnavailable`` when the database holds a newer schema than this code knows.
    """
    run(VERSION_DDL, ())
    rows = run(sql.schema_version, (COMPONENT,))
    current = int(rows[0][0]) if rows else 0
    if current > SCHEMA_VERSION:
        raise GrantStoreUnavailable(f"grant store unavailable: schema version {current} is newer than this "
                                    f"TenantGate supports ({SCHEMA_VERSION})")
    if current < 1:
        for ddl in SCHEMA_V1:
            run(ddl, ())
    if current < 2:
        for ddl in SCHEMA_V2:
            run(ddl, ())
    for name, columns in SCHEMA_INDEXES if create_indexes else ():
        if not run(sql.index_exists, (name,)):
            run(create_index(name, columns), ())
    if current != SCHEMA_VERSION:
        run(sql.set_schema_version, (COMPONENT, SCHEMA_VERSION))
