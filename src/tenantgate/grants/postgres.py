"""The shared grant store: PostgreSQL through psycopg 3, for several replicas that must agree at once.

Two connections per store, each used under its own ``threading.Lock``, autocommit off: one for lookups
(``find_active``, opened at the first), one for everything else. Every method runs in its own short transaction,
committed or rolled back before the lock is released. Of two racing approvers exactly one wins: the conditional
UPDATE takes the row lock and the loser re-checks the condition after the winner commits. Lookups read at READ
COMMITTED on their own connection, so they never wait for a change in progress.

Every round trip has a client-side deadline (``_Watchdog``): libpq has none, and a peer that acknowledges
bytes but never answers (a stalled pgbouncer queue, a hung proxy) satisfies TCP keepalives and
``tcp_user_timeout``, so without it a call, and the store's lock, could wait forever.

The ``SCHEMA_INDEXES`` a database lacks are not built while connecting (on a large table that outlasts the
statement_timeout and holds writers back) but once per process, in the background (``_pg_indexes``).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.conninfo
import psycopg.errors
from psycopg import pq

from tenantgate.errors import ConfigError, GrantConflict, GrantInvalid, GrantStoreUnavailable, TenantGateError
from tenantgate.grants._pg_indexes import INDEX_BUILDS
from tenantgate.grants._rows import short_reason, unavailable
from tenantgate.grants._sql import Dialect, Row, migrate
from tenantgate.grants._store import SqlGrantStore
from tenantgate.redact import redact_url

POSTGRES = Dialect(param="%s", action_in_actions="actions::jsonb @> jsonb_build_array(?::text)",
                   # Resolved through search_path, like the table's own name.
                   index_exists="SELECT 1 WHERE to_regclass(?::text) IS NOT NULL",
                   # READ COMMITTED: the count after this lock sees every create that held it before.
                   lock_operator="SELECT pg_advisory_xact_lock(?::integer, ?::integer)",
                   # A sweep's batch: racing sweeps (replicas) take disjoint rows instead of queueing on them.
                   claim_due="FOR UPDATE SKIP LOCKED",
                   # clock_timestamp(), not now(): the time of the statement, not of its transaction's start.
                   clock="SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8")

# pg_advisory_xact_lock key serialising schema migration across processes ("tggrants" in ASCII).
MIGRATION_LOCK_KEY = 0x7467_6772_616E_7473

# How long past ``statement_timeout`` a round trip may go unanswered before the connection is presumed hung and
# broken from the store's watchdog thread. The server ends any statement at ``statement_timeout`` (lock waits
# included) and answers at once, so silence beyond it plus this margin means the link or the server is stuck.
NETWORK_GRACE_SECONDS = 3.0

log = logging.getLogger("tenantgate.grants")

_URL_PASSWORDS = re.compile(r"(?i)^[a-z0-9+.-]+://[^/@:]*:([^@/]*)@|[?&]password=([^&#]*)")


class PostgresGrantStore(SqlGrantStore):
    """Grants in the PostgreSQL database at ``url`` (a ``postgresql://`` URL or any libpq conninfo).

    Construction connects and creates or migrates the schema under ``pg_advisory_xact_lock`` (safe when several
    processes start at once). It raises ``ConfigError`` for a malformed URL and ``GrantStoreUnavailable`` when
    the server cannot be reached; the caller decides whether to start without it.

    Connections use ``connect_timeout`` seconds and a server-side ``statement_timeout`` (which bounds lock waits
    too), plus TCP keepalives and ``tcp_user_timeout`` so a silently dead peer is noticed within seconds. A round
    trip still unanswered ``network_grace`` seconds after ``statement_timeout`` (a peer that acknowledges but
    never answers) has its connection broken: the call raises ``GrantStoreUnavailable`` and the next one
    reconnects. Every method raises ``GrantStoreUnavailable`` on any driver error, or when another caller holds
    the store longer than ``lock_timeout`` seconds; after a connection failure the next call reconnects. A read
    that opens its transaction on a connection found closed (an idle connection the server or a proxy dropped)
    is retried once on a new connection; a write never is. Messages never contain the password.
    ``before_commit`` runs inside the transaction and must not call back into the store.
    Lookups (``find_active``) use a second connection with its own lock and watchdog, opened at the first lookup.

    Once connected, the store starts the background build of the ``SCHEMA_INDEXES`` the database lacks (at most
    one per process and database, see ``build_missing_indexes``); opening never waits for it or fails on it.
    """

    def __init__(self, url: str, *, connect_timeout: int = 2, statement_timeout_ms: int = 2000,
                 lock_timeout: float = 10.0, network_grace: float = NETWORK_GRACE_SECONDS) -> None:
        display_url = redact_url(url)
        try:
            given = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.Error as err:
            # Not chained: libpq's parse errors can quote the URL, password included.
            raise ConfigError(f"invalid PostgreSQL URL {display_url}: "
                              f"{short_reason(err, _passwords_in(url))}") from None
        options = " ".join(str(o) for o in (given.get("options"), f"-c statement_timeout={int(statement_timeout_ms)}")
                           if o)
        defaults: dict[str, Any] = {"application_name": "tenantgate", "keepalives": 1, "keepalives_idle": 5,
                                    "keepalives_interval": 2, "keepalives_count": 2, "tcp_user_timeout": 5000}
        # The URL is not kept: the lookup store (``_open_reader``) is opened from these, so the password is held
        # once, in the conninfo.
        self._open(display_url=display_url,
                   conninfo=psycopg.conninfo.make_conninfo(
                       url, **{**defaults, **given, "connect_timeout": int(connect_timeout), "options": options}),
                   secrets=(*_passwords_in(url), str(given.get("password") or "")),
                   round_trip_limit=statement_timeout_ms / 1000 + network_grace, lock_timeout=float(lock_timeout),
                   builds_indexes=True)

    def _open(self, *, display_url: str, conninfo: str, secrets: tuple[str, ...], round_trip_limit: float,
              lock_timeout: float, builds_indexes: bool) -> None:
        """Set the store up from parsed settings and connect (the constructor's second half, shared with
        ``_open_reader``). ``builds_indexes``: start the background index build after connecting."""
        self.display_url = display_url
        self._conninfo = conninfo  # never shown: it holds the password, if any
        self._secrets = secrets
        self._round_trip_limit = round_trip_limit
        self._builds_indexes = builds_indexes
        self._conn: psycopg.Connection[Any] | None = None
        self._watchdog = _Watchdog()
        try:
            self._start(POSTGRES, lock_timeout)
        except BaseException:
            # Nobody will close a store that failed to open: its watchdog thread must not outlive it (review
            # finding: a schema it cannot migrate leaked one thread per retry, about one a second).
            self._watchdog.stop()
            raise

    def __repr__(self) -> str:
        return f"PostgresGrantStore({self.display_url!r})"

    def _open_reader(self) -> PostgresGrantStore:
        reader = PostgresGrantStore.__new__(PostgresGrantStore)
        # Lookups never start an index build: the store they belong to has (a build holds a connection).
        reader._open(display_url=self.display_url, conninfo=self._conninfo, secrets=self._secrets,
                     round_trip_limit=self._round_trip_limit, lock_timeout=self._lock_timeout, builds_indexes=False)
        return reader

    def _ensure_connection(self) -> None:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._drop()
            self._conn = self._connect()

    def _in_transaction(self) -> bool:
        return self._conn is not None and self._conn.info.transaction_status != pq.TransactionStatus.IDLE

    def close(self) -> None:
        """Close both connections, first breaking a round trip in flight on each (a hung one would hold the
        store)."""
        self._watchdog.stop()
        super().close()

    @contextmanager
    def _round_trip(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        """Bound one network round trip on ``conn`` by the watchdog."""
        with self._watchdog.deadline(conn, self._round_trip_limit):
            yield

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._conninfo, autocommit=False)  # bounded by connect_timeout
            # The caps and the approve/revoke race rely on READ COMMITTED (a count after the advisory lock sees
            # every committed create): set it, whatever the database's default (review finding: under a
            # `default_transaction_isolation = 'repeatable read'` database, 6 racing requests passed a cap of 2).
            conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        except (psycopg.Error, OSError) as err:
            raise unavailable(err, self._secrets) from err
        try:
            with conn.cursor() as cur:
                def run(sql: str, params: Sequence[Any]) -> list[Row]:
                    with self._round_trip(conn):
                        cur.execute(sql, params or None)
                    return cur.fetchall() if cur.description is not None else []

                run("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
                # No index builds here: see ``build_missing_indexes``, started below.
                migrate(run, self._sql, create_indexes=False)
            with self._round_trip(conn):
                conn.commit()
        except BaseException as err:
            conn.close()
            if isinstance(err, (psycopg.Error, OSError)):
                raise unavailable(err, self._secrets) from err
            raise
        if self._builds_indexes:
            INDEX_BUILDS.start(self.display_url, self._conninfo, self._secrets)
        return conn

    def _live(self) -> psycopg.Connection[Any]:
        if self._conn is None:  # only inside _session, which connects
            raise GrantStoreUnavailable("grant store unavailable: not connected")
        return self._conn

    def _execute(self, sql: str, params: Sequence[Any], *, write: bool) -> list[Row]:
        opens_transaction = not self._in_transaction()
        try:
            return self._statement(sql, params)
        except (psycopg.Error, OSError) as err:
            # A read that was to open its transaction, on a connection found dead (not one the watchdog broke:
            # that one hung mid-statement): nothing done before it is lost and reading again changes nothing,
            # so a dropped idle connection costs a reconnect, not a failed call. A write may have run: never.
            if write or not opens_transaction or self._watchdog.tripped or not self._lost():
                raise self._failure(err) from err
            log.info("grant store connection found closed (%s); reconnecting",
                     short_reason(err, self._secrets))
        self._drop()
        self._conn = self._connect()
        try:
            return self._statement(sql, params)
        except (psycopg.Error, OSError) as err:
            raise self._failure(err) from err

    def _statement(self, sql: str, params: Sequence[Any]) -> list[Row]:
        """Run one statement (autocommit off: the first one opens the transaction) and return its rows."""
        conn = self._live()
        with self._round_trip(conn):
            cur = conn.execute(sql, params or None)
        return cur.fetchall() if cur.description is not None else []

    def _lost(self) -> bool:
        """True when the connection is closed or broken (after a failed statement)."""
        conn = self._conn
        return conn is None or conn.closed or conn.broken

    def _failure(self, err: psycopg.Error | OSError) -> TenantGateError:
        """The error to raise for a failed statement, after rolling back or dropping the connection."""
        if isinstance(err, psycopg.errors.UniqueViolation):
            self._rollback()
            return GrantConflict("a grant with this id exists already")
        if isinstance(err, (psycopg.errors.DataError, psycopg.errors.ProgramLimitExceeded)):
            # The values, not the store: e.g. a row too large for an index. The caller's problem alone, so
            # it is INVALID_ARGUMENT and does not open the store's fail-fast window for everyone else.
            self._rollback()
            return GrantInvalid(f"the grant store cannot hold these values: {short_reason(err, self._secrets)}")
        self._after_error(err)
        return unavailable(err, self._secrets)

    def _commit(self) -> None:
        conn = self._live()
        try:
            with self._round_trip(conn):
                conn.commit()
        except (psycopg.Error, OSError) as err:
            self._drop()
            raise unavailable(err, self._secrets) from err

    def _rollback(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            with self._round_trip(conn):
                conn.rollback()
        except (psycopg.Error, OSError):
            self._drop()

    def _after_error(self, err: BaseException) -> None:
        conn = self._conn
        if conn is None or conn.closed or conn.broken or isinstance(err, (psycopg.OperationalError, OSError)):
            self._drop()  # reconnect on the next call
        else:
            self._rollback()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except (psycopg.Error, OSError):
                pass  # already unusable; a fresh connection comes on the next call


class _Watchdog:
    """Breaks a connection whose round trip outlives its deadline; one daemon thread per store, started lazily.

    libpq has no client-side read timeout. Shutting the socket down (it stays open: the descriptor is libpq's)
    wakes the thread waiting on it with end-of-file; psycopg raises ``OperationalError`` and the store drops
    the connection, so the next call gets a new one. Arming costs a lock and, when the thread is idle, a notify.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._fd = -1
        self._deadline: float | None = None
        self._sleeping_until: float | None = None  # None: the thread waits for a deadline (or is not started)
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.tripped = False  # the last round trip was broken by the watchdog (read by the armed thread)

    @contextmanager
    def deadline(self, conn: psycopg.Connection[Any], seconds: float) -> Iterator[None]:
        """Break ``conn``'s socket if the block has not ended within ``seconds``."""
        try:
            fd = conn.pgconn.socket
        except psycopg.Error:  # no socket (a closed connection): the driver call fails at once
            fd = -1
        with self._cond:
            self.tripped = False
            self._fd, self._deadline = fd, time.monotonic() + seconds
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._watch, name="tenantgate-pg-watchdog", daemon=True)
                self._thread.start()
            elif self._sleeping_until is None or self._deadline < self._sleeping_until:
                self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._fd, self._deadline = -1, None

    def stop(self) -> None:
        """Break the round trip in flight, if any, and end the thread."""
        with self._cond:
            self._stopped = True
            if self._deadline is not None:
                self._trip()
            self._cond.notify()

    def _watch(self) -> None:
        with self._cond:
            while not self._stopped:
                if self._deadline is None:
                    self._sleeping_until = None
                    self._cond.wait()
                elif (remaining := self._deadline - time.monotonic()) > 0:
                    self._sleeping_until = self._deadline
                    self._cond.wait(remaining)
                else:
                    log.warning("grant store round trip unanswered past its deadline: breaking the connection")
                    self._trip()

    def _trip(self) -> None:
        """Shut down the armed socket (under ``_cond``: the connection cannot be closed meanwhile)."""
        self.tripped = True
        self._deadline = None
        if self._fd < 0:
            return
        try:
            duplicate = os.dup(self._fd)  # shut down through a duplicate: libpq's descriptor stays valid
        except OSError:
            return  # already gone: the call fails by itself
        try:
            sock = socket.socket(fileno=duplicate)
        except OSError:
            os.close(duplicate)  # not a socket after all
            return
        with sock:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already shut down or reset: the call fails by itself


def _passwords_in(url: str) -> tuple[str, ...]:
    """Every password written in ``url`` (user info, ``password=`` parameter), found without parsing it as a
    URL so that a malformed URL is masked too."""
    return tuple(p for match in _URL_PASSWORDS.finditer(url) for p in match.groups() if p)
