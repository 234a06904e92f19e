"""The shared grant store: PostgreSQL through psycopg 3, for several replicas that must agree at once.

One connection per store, used under a ``threading.Lock``, autocommit off: every method runs in its own short
transaction, committed or rolled back before the lock is released. Of two racing approvers exactly one wins:
the conditional UPDATE takes the row lock and the loser re-checks the condition after the winner commits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg.conninfo
import psycopg.errors
from psycopg import pq

from tenantgate.errors import ConfigError, GrantConflict, GrantInvalid, GrantStoreUnavailable
from tenantgate.grants._rows import Dialect, Row, SqlGrantStore, migrate, short_reason, unavailable
from tenantgate.redact import redact_url

POSTGRES = Dialect(param="%s", action_in_actions="actions::jsonb @> jsonb_build_array(?::text)")

# pg_advisory_xact_lock key serialising schema migration across processes ("tggrants" in ASCII).
MIGRATION_LOCK_KEY = 0x7467_6772_616E_7473

_URL_PASSWORDS = re.compile(r"(?i)^[a-z0-9+.-]+://[^/@:]*:([^@/]*)@|[?&]password=([^&#]*)")


class PostgresGrantStore(SqlGrantStore):
    """Grants in the PostgreSQL database at ``url`` (a ``postgresql://`` URL or any libpq conninfo).

    Construction connects and creates or migrates the schema under ``pg_advisory_xact_lock`` (safe when several
    processes start at once). It raises ``ConfigError`` for a malformed URL and ``GrantStoreUnavailable`` when
    the server cannot be reached; the caller decides whether to start without it.

    Connections use ``connect_timeout`` seconds and a server-side ``statement_timeout`` (which bounds lock waits
    too), plus TCP keepalives and ``tcp_user_timeout`` so a silently dead peer is noticed within seconds.
    Every method raises ``GrantStoreUnavailable`` on any driver error, or when another caller holds the store
    longer than ``lock_timeout`` seconds; after a connection failure the next call reconnects. Messages never
    contain the password. ``before_commit`` runs inside the transaction and must not call back into the store.
    """

    def __init__(self, url: str, *, connect_timeout: int = 2, statement_timeout_ms: int = 2000,
                 lock_timeout: float = 10.0) -> None:
        self.display_url = redact_url(url)
        try:
            given = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.Error as err:
            # Not chained: libpq's parse errors can quote the URL, password included.
            raise ConfigError(f"invalid PostgreSQL URL {self.display_url}: "
                              f"{short_reason(err, _passwords_in(url))}") from None
        self._secrets = (*_passwords_in(url), str(given.get("password") or ""))
        options = " ".join(str(o) for o in (given.get("options"), f"-c statement_timeout={int(statement_timeout_ms)}")
                           if o)
        defaults: dict[str, Any] = {"application_name": "tenantgate", "keepalives": 1, "keepalives_idle": 5,
                                    "keepalives_interval": 2, "keepalives_count": 2, "tcp_user_timeout": 5000}
        self._conninfo = psycopg.conninfo.make_conninfo(
            url, **{**defaults, **given, "connect_timeout": int(connect_timeout), "options": options})
        self._conn: psycopg.Connection[Any] | None = None
        self._start(POSTGRES, lock_timeout)

    def __repr__(self) -> str:
        return f"PostgresGrantStore({self.display_url!r})"

    def _ensure_connection(self) -> None:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._drop()
            self._conn = self._connect()

    def _in_transaction(self) -> bool:
        return self._conn is not None and self._conn.info.transaction_status != pq.TransactionStatus.IDLE

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._conninfo, autocommit=False)
        except (psycopg.Error, OSError) as err:
            raise unavailable(err, self._secrets) from err
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))

                def run(sql: str, params: Sequence[Any]) -> list[Row]:
                    cur.execute(sql, params or None)
                    return cur.fetchall() if cur.description is not None else []

                migrate(run, self._sql)
            conn.commit()
        except BaseException as err:
            conn.close()
            if isinstance(err, (psycopg.Error, OSError)):
                raise unavailable(err, self._secrets) from err
            raise
        return conn

    def _live(self) -> psycopg.Connection[Any]:
        if self._conn is None:  # only inside _session, which connects
            raise GrantStoreUnavailable("grant store unavailable: not connected")
        return self._conn

    def _execute(self, sql: str, params: Sequence[Any], *, write: bool) -> list[Row]:
        conn = self._live()
        try:
            cur = conn.execute(sql, params or None)  # autocommit off: the first statement opens the transaction
            return cur.fetchall() if cur.description is not None else []
        except psycopg.errors.UniqueViolation as err:
            self._rollback()
            raise GrantConflict("a grant with this id exists already") from err
        except (psycopg.errors.DataError, psycopg.errors.ProgramLimitExceeded) as err:
            # The values, not the store: e.g. a row too large for an index. The caller's problem alone, so
            # it is INVALID_ARGUMENT and does not open the store's fail-fast window for everyone else.
            self._rollback()
            raise GrantInvalid(f"the grant store cannot hold these values: {short_reason(err, self._secrets)}") \
                from err
        except (psycopg.Error, OSError) as err:
            self._after_error(err)
            raise unavailable(err, self._secrets) from err

    def _commit(self) -> None:
        conn = self._live()
        try:
            conn.commit()
        except (psycopg.Error, OSError) as err:
            self._drop()
            raise unavailable(err, self._secrets) from err

    def _rollback(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
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


def _passwords_in(url: str) -> tuple[str, ...]:
    """Every password written in ``url`` (user info, ``password=`` parameter), found without parsing it as a
    URL so that a malformed URL is masked too."""
    return tuple(p for match in _URL_PASSWORDS.finditer(url) for p in match.groups() if p)
