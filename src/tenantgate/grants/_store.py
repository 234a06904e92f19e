"""The ``GrantStore`` methods both grant stores share, written once over four primitives each store supplies.

Each store supplies a ``Dialect`` (its parameter marker and its way to test "this action is in the JSON array
of actions"), four primitives (``_session``, ``_execute``, ``_commit``, ``_rollback``) and a way to open a second
store on the same database (``_open_reader``); ``SqlGrantStore`` builds every ``GrantStore`` method on them, so
the rules (conditions, ordering, effective state, the before-commit hook, which connection answers lookups,
``create``'s limits) are written once.

The statements it runs are in ``_sql``; the row <-> ``Grant`` mapping and the value checks it relies on are in
``_rows``.
"""

from __future__ import annotations

import abc
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tenantgate.core.grants import (
    CLOCK_SKEW_SECONDS,
    EXPIRE_BATCH,
    BeforeCommit,
    BeforeCommitAll,
    CommitFailed,
    Grant,
    GrantState,
)
from tenantgate.core.model import rfc3339
from tenantgate.errors import GrantConflict, GrantInvalid, GrantStoreUnavailable, TenantGateError
from tenantgate.grants._rows import grant_from_row, grant_params, operator_lock_key, sort_oldest_first, storable
from tenantgate.grants._sql import Dialect, Row, Statements, statements

_TEXT_FIELDS = ("id", "operator", "operator_tenant", "target_tenant", "reason", "ticket", "approved_by",
                "revoked_by", "revoke_reason", "operator_issuer")


# The window of ``create``'s hourly request limit: requests made less than this long before a new one count.
REQUEST_WINDOW_SECONDS = 3600.0


def _require_storable(**fields: str) -> None:
    bad = sorted(name for name, value in fields.items() if not storable(value))
    if bad:
        raise GrantInvalid(f"grant field(s) {', '.join(bad)} contain NUL or unencodable characters")


def each(before_commit: BeforeCommit) -> BeforeCommitAll:
    """``before_commit`` called for each grant of a change, in order."""
    def for_each(grants: Sequence[Grant]) -> None:
        for grant in grants:
            before_commit(grant)
    return for_each


class SqlGrantStore(abc.ABC):
    """The ``GrantStore`` methods, written once over the primitives a concrete store provides.

    ``_session()`` holds the store's lock and a live connection for its block (reconnecting if needed) or
    raises ``GrantStoreUnavailable``; inside it ``_execute`` starts a transaction (an immediate/write one when
    ``write``) if none is open, runs one statement and returns its rows; ``_commit`` ends the transaction;
    ``_rollback`` ends it without effect and never raises. Driver failures surface as ``GrantStoreUnavailable``
    (``GrantConflict`` for a duplicate id) after the primitive has rolled back or dropped the connection.

    A commit that fails after ``before_commit`` ran (its audit events are written) raises ``CommitFailed``
    with the grants read back through a fresh connection (see ``_read_back``), so the caller can record
    whether the change took effect.

    ``find_active``, the decision path's read, runs on a second store of the same class on the same database
    (``_open_reader``, opened at the first lookup): its own connection, lock and deadlines, so a lookup never
    waits behind a change holding the first one (a sweep writing its audit events, an approval), and sees what
    is committed (SQLite in WAL mode and PostgreSQL at READ COMMITTED: readers do not wait for writers). Two
    connections per store, never more.
    """

    _sql: Statements
    _lock: threading.Lock
    _lock_timeout: float
    _closed: bool
    _reader: SqlGrantStore | None
    _reader_guard: threading.Lock

    def _start(self, dialect: Dialect, lock_timeout: float) -> None:
        """The common end of a store's construction: its lock and statements, then connect (and migrate) now,
        raising ``GrantStoreUnavailable`` when that fails. The store's ``_conn`` must be set (None) first."""
        self._lock_timeout = lock_timeout
        self._lock = threading.Lock()
        self._closed = False
        self._reader = None
        self._reader_guard = threading.Lock()
        self._sql = statements(dialect)
        with self._session():
            pass

    def close(self) -> None:
        """Close both connections. Later calls raise ``GrantStoreUnavailable``; ``healthy()`` is False."""
        with self._reader_guard:
            self._closed = True  # no reader opens from now on
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        with self._lock:
            self._drop()

    @abc.abstractmethod
    def _open_reader(self) -> SqlGrantStore:
        """A new store of the same class on the same database, with the same settings (its own connection and
        lock), for lookups; raises ``GrantStoreUnavailable`` like the constructor."""

    def _lookups(self) -> SqlGrantStore:
        """The store that answers ``find_active``, opened at the first call."""
        with self._reader_guard:
            if self._closed:
                raise GrantStoreUnavailable("grant store unavailable: store is closed")
            if self._reader is None:
                self._reader = self._open_reader()
            return self._reader

    @contextmanager
    def _session(self) -> Iterator[None]:
        """The store's lock (bounded wait) and a live connection for the block; rolls back whatever the block
        left open, so no transaction or its locks outlive it."""
        if not self._lock.acquire(timeout=self._lock_timeout):
            raise GrantStoreUnavailable("grant store unavailable: store busy (lock wait timed out)")
        try:
            if self._closed:
                raise GrantStoreUnavailable("grant store unavailable: store is closed")
            self._ensure_connection()
            yield
        finally:
            if self._in_transaction():
                self._rollback()
            self._lock.release()

    @abc.abstractmethod
    def _ensure_connection(self) -> None:
        """Connect (and migrate) when there is no usable connection; raise ``GrantStoreUnavailable``."""

    @abc.abstractmethod
    def _in_transaction(self) -> bool: ...

    @abc.abstractmethod
    def _drop(self) -> None: ...

    @abc.abstractmethod
    def _execute(self, sql: str, params: Sequence[Any], *, write: bool) -> list[Row]: ...

    @abc.abstractmethod
    def _commit(self) -> None: ...

    @abc.abstractmethod
    def _rollback(self) -> None: ...

    def _read(self, sql: str, params: Sequence[Any]) -> list[Grant]:
        with self._session():
            rows = self._execute(sql, params, write=False)
            self._commit()
        return [grant_from_row(row) for row in rows]

    def _write(self, sql: str, params: Sequence[Any], before_commit: BeforeCommitAll,
               first: Callable[[], None] | None = None) -> list[Grant]:
        """Run ``sql`` in a write transaction, ``before_commit`` once with the grants it returns (oldest first;
        not when there are none), then commit. ``first()`` runs inside the same transaction before ``sql``;
        what it raises is raised after rollback."""
        with self._session():
            if first is not None:
                first()
            rows = self._execute(sql, params, write=True)
            try:
                grants = sort_oldest_first([grant_from_row(row) for row in rows])
                if grants:
                    before_commit(grants)
            except BaseException:
                # The callback's own exception (or an unreadable row) goes back to the caller unchanged.
                self._rollback()
                raise
            try:
                self._commit()
            except GrantStoreUnavailable as err:
                if not grants:
                    raise  # nothing was shown to before_commit, so nothing is on record: a plain outage
                # Events for this change are written, but did it happen? The commit may have been lost on the
                # way (not applied) or only its answer (applied): ask the store, then let the caller say.
                standing, unread = self._read_back(grants)
                raise CommitFailed(str(err), grants, standing, unread) from err
            return grants

    def read_back(self, grants: Sequence[Grant]) -> tuple[dict[str, Grant | None], str]:
        try:
            with self._session():
                return self._read_back(grants)
        except GrantStoreUnavailable as err:  # no session: nothing could be read
            return {}, str(err)

    def _read_back(self, written: Sequence[Grant]) -> tuple[dict[str, Grant | None], str]:
        """After a failed commit, inside the same session: each of ``written`` as the store holds it now (None:
        no grant with its id), and "" or why some could not be read (those are missing from the mapping).

        Read through a fresh connection, in a write transaction that is rolled back: the no-op UPDATE (or, for
        an id not found, the INSERT ... ON CONFLICT DO NOTHING) first waits for a transaction still holding
        that row or id, e.g. a COMMIT the server received just as the link broke, so the answer is final,
        not a snapshot taken before the failed transaction ended. A wait ends at the store's statement or busy
        timeout; then the outcome is unknown. Never raises ``TenantGateError``.
        """
        standing: dict[str, Grant | None] = {}
        try:
            self._drop()
            self._ensure_connection()
            for grant in written:
                rows = self._execute(self._sql.lock_by_id, (grant.id,), write=True)
                if not rows:
                    claimed = self._execute(self._sql.claim_id, grant_params(grant), write=True)
                    if not claimed:  # the id exists now: an insert in flight at the first look has committed
                        rows = self._execute(self._sql.select_by_id, (grant.id,), write=True)
                standing[grant.id] = grant_from_row(rows[0]) if rows else None
        except TenantGateError as err:
            return standing, str(err)
        finally:
            self._rollback()
        return standing, ""

    def create(self, grant: Grant, before_commit: BeforeCommit, pending_limit: int = 0,
               hourly_limit: int = 0) -> Grant:
        """Insert ``grant`` and return it as stored.

        ``pending_limit`` > 0 and ``grant`` PENDING: refused with ``GrantConflict`` when its operator (subject,
        tenant and issuer) already has that many PENDING grants unexpired at ``grant.requested_at``.
        ``hourly_limit`` > 0: refused with ``GrantConflict`` when the operator requested that many grants (in any
        state) in the ``REQUEST_WINDOW_SECONDS`` before ``grant.requested_at``; the message says when the next
        one may be. Counted in the insert's own transaction, after the operator's creates are serialised
        (SQLite: the write lock; PostgreSQL: an advisory lock on the operator), so concurrent requests on any
        replica cannot exceed either. A refused grant is not stored.

        Raises ``GrantConflict`` when the id exists already or a limit is reached, ``GrantInvalid`` when a text
        field holds NUL or lone surrogates, ``GrantStoreUnavailable`` when the store cannot be reached; whatever
        ``before_commit`` raises is re-raised after rollback.
        """
        fields = {name: getattr(grant, name) for name in _TEXT_FIELDS}
        _require_storable(**fields, actions="".join(grant.actions))
        operator = (grant.operator, grant.operator_tenant, grant.operator_issuer)
        capped = pending_limit > 0 and grant.state is GrantState.PENDING

        def within_cap() -> None:
            if self._sql.lock_operator:
                self._execute(self._sql.lock_operator, operator_lock_key(grant), write=True)
            if capped:
                rows = self._execute(self._sql.count_pending, (*operator, float(grant.requested_at)), write=True)
                pending = int(rows[0][0])
                if pending >= pending_limit:
                    raise GrantConflict(f"the operator has {pending} pending grant request(s), the most "
                                        f"grants.max_pending_per_operator ({pending_limit}) allows: wait until one "
                                        "is approved or expires, or revoke one")
            if hourly_limit > 0:
                since = float(grant.requested_at) - REQUEST_WINDOW_SECONDS
                rows = self._execute(self._sql.recent_requests, (*operator, since, hourly_limit), write=True)
                if len(rows) >= hourly_limit:
                    # The count falls below the limit when the oldest of the newest ``hourly_limit`` leaves.
                    retry_at = float(rows[-1][0]) + REQUEST_WINDOW_SECONDS
                    wait = math.ceil(retry_at - grant.requested_at)
                    raise GrantConflict(f"the operator made {len(rows)} grant request(s) in the last hour, the most "
                                        f"grants.max_requests_per_operator_per_hour ({hourly_limit}) allows: try "
                                        f"again after {rfc3339(retry_at)} (in {wait} s)")

        limited = capped or hourly_limit > 0
        rows = self._write(self._sql.insert, grant_params(grant), each(before_commit),
                           within_cap if limited else None)
        return rows[0]

    def get(self, grant_id: str) -> Grant | None:
        """The grant with this id, or None."""
        if not storable(grant_id):
            return None
        rows = self._read(self._sql.select_by_id, (grant_id,))
        return rows[0] if rows else None

    def activate(self, grant_id: str, approved_by: str, now: float, before_commit: BeforeCommit) -> Grant | None:
        """PENDING -> ACTIVE when PENDING and ``now < pending_until``; sets approved_by, approved_at = now and
        expires_at = now + duration_seconds. Returns the activated grant, or None when the condition failed."""
        if not storable(grant_id):
            return None
        _require_storable(approved_by=approved_by)
        rows = self._write(self._sql.activate, (approved_by, float(now), float(now), grant_id, float(now)),
                           each(before_commit))
        return rows[0] if rows else None

    def revoke(self, grant_id: str, revoked_by: str, reason: str, now: float,
               before_commit: BeforeCommit) -> Grant | None:
        """PENDING (before pending_until) or ACTIVE (before expires_at) -> REVOKED; None otherwise."""
        if not storable(grant_id):
            return None
        _require_storable(revoked_by=revoked_by, revoke_reason=reason)
        rows = self._write(self._sql.revoke, (revoked_by, float(now), reason, grant_id, float(now), float(now)),
                           each(before_commit))
        return rows[0] if rows else None

    def find_active(self, operator: str, operator_tenant: str, target_tenant: str, action: str,
                    now: float, operator_issuer: str = "") -> Grant | None:
        """The ACTIVE grant with ``expires_at > now`` and approved by ``now`` (plus ``CLOCK_SKEW_SECONDS``) for
        exactly this operator (subject and issuer), operator tenant and target tenant that names ``action``; the
        latest-expiring one if several. One indexed query, on the lookup connection (see the class docstring)."""
        if not storable(operator, operator_tenant, target_tenant, action, operator_issuer):
            return None  # INVARIANT: a value no grant can hold matches no grant.
        rows = self._lookups()._read(self._sql.find_active, (operator, operator_tenant, target_tenant,
                                                             operator_issuer, float(now),
                                                             float(now) + CLOCK_SKEW_SECONDS, action))
        return rows[0] if rows else None

    def list(self, tenant: str | None, state: GrantState | None, now: float, limit: int = 1000) -> Sequence[Grant]:
        """Grants targeting ``tenant`` (all when None) whose effective state at ``now`` is ``state`` (all when
        None), newest requested first, at most ``limit``. Grants carry their stored state. Raises ValueError
        for a negative limit."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        if limit == 0 or (tenant is not None and not storable(tenant)):
            return []
        params: list[Any] = []
        if tenant is not None:
            params.append(tenant)
        if state is not None:
            params += [float(now), float(now), state.value]
        params.append(int(limit))
        return self._read(self._sql.list_by[(tenant is not None, state is not None)], params)

    def expire_due(self, now: float, before_commit: BeforeCommitAll, limit: int = EXPIRE_BATCH) -> Sequence[Grant]:
        """Mark at most ``limit`` due grants (ACTIVE with ``expires_at <= now``, PENDING with ``pending_until <=
        now``; oldest requested first) EXPIRED in one transaction, calling ``before_commit`` once with them before
        it commits; return them. PostgreSQL passes over due grants another transaction holds (a racing sweep's
        batch). ValueError for ``limit`` < 1."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        at = float(now)
        return self._write(self._sql.expire_due, (at, at, int(limit), at, at), before_commit)

    def database_time(self) -> float | None:
        """The database server's clock now (epoch seconds), or None when the dialect has none apart from this
        host's (SQLite). Raises ``GrantStoreUnavailable``."""
        if not self._sql.database_time:
            return None
        with self._session():
            rows = self._execute(self._sql.database_time, (), write=False)
            self._commit()
        return float(rows[0][0])

    def healthy(self) -> bool:
        """True when a trivial query succeeds now on each connection (reconnecting if needed; the lookup
        connection only once a lookup opened it). Never raises."""
        try:
            with self._session():
                self._execute("SELECT 1", (), write=False)
                self._commit()
        except TenantGateError:
            return False
        reader = self._reader
        return reader is None or reader.healthy()
