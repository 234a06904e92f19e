"""The embedded grant store: one SQLite file in WAL mode, shared safely by threads and processes.

Two connections per store, each used under its own ``threading.Lock``: one for lookups (``find_active``, opened
at the first), one for everything else. Writes run in ``BEGIN IMMEDIATE`` transactions, so two stores (threads or
processes) on one file serialise their state changes and the conditional UPDATE lets exactly one of two racing
approvers win. A writer waits at most ``busy_timeout_ms`` for another writer; in WAL mode a reader never waits
for one, so a lookup answers while a sweep or an approval holds the write transaction.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tenantgate.errors import GrantConflict, GrantStoreUnavailable
from tenantgate.grants._rows import unavailable
from tenantgate.grants._sql import COMPONENT, SCHEMA_INDEXES, SCHEMA_VERSION, Dialect, Row, migrate
from tenantgate.grants._store import SqlGrantStore
from tenantgate.paths import make_private_dirs

SQLITE = Dialect(param="?", action_in_actions="EXISTS (SELECT 1 FROM json_each(actions) WHERE json_each.value = ?)",
                 index_exists="SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?")

_DUPLICATE_KEY = ("SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE")


def _enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """``PRAGMA journal_mode = WAL``, retried for up to ``timeout`` seconds.

    On a file another connection is locking (e.g. several stores starting at once on a fresh file, each
    switching it to WAL), SQLite fails the switch at once with "database is locked" without calling the busy
    handler; every other statement here waits through ``busy_timeout``.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL").fetchall()
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _create_private(path: Path) -> None:
    """Create the database file (0600) when it does not exist; never open an existing one.

    Closing any descriptor of a file drops every POSIX (fcntl) lock this process holds on it, SQLite's
    included (review finding: opening and closing the file for the lookup connection, or for a reconnect,
    dropped the main connection's shared lock; the next process to close its last connection then
    checkpointed and deleted the WAL under the server, which went on committing into an unlinked file: a
    restart brought revoked grants back and lost later ones). A file this process just created has no
    connection of ours yet.
    """
    if os.path.islink(path) and not os.path.exists(path):
        path = Path(os.path.realpath(path))  # a dangling link: O_EXCL fails on it; create its target 0600 (review)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    os.close(fd)


class SqliteGrantStore(SqlGrantStore):
    """Grants in the SQLite file at ``path``.

    Construction creates missing parent directories (0700) and the file (0600) when missing, switches the file to
    WAL, and creates or migrates the schema (idempotent; concurrent starters serialise on the write lock; a file
    whose schema is current is opened, and reopened after a failure, without taking the write lock). It
    raises ``GrantStoreUnavailable`` when the file cannot be created or opened (e.g. a parent is a regular
    file); the caller decides whether to start without it.

    Every later method raises ``GrantStoreUnavailable`` on any SQLite or OS error, or when another caller holds
    the store longer than ``lock_timeout`` seconds, and reopens the file by itself on the next call.
    ``before_commit`` runs inside the write transaction and must not call back into the store.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 5000,
                 lock_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._conn: sqlite3.Connection | None = None
        self._start(SQLITE, lock_timeout)

    def __repr__(self) -> str:
        return f"SqliteGrantStore({str(self.path)!r})"

    def _open_reader(self) -> SqliteGrantStore:
        return SqliteGrantStore(self.path, busy_timeout_ms=self._busy_timeout_ms, lock_timeout=self._lock_timeout)

    def _ensure_connection(self) -> None:
        if self._conn is None:
            self._conn = self._connect()

    def _in_transaction(self) -> bool:
        return self._conn is not None and self._conn.in_transaction

    def _connect(self) -> sqlite3.Connection:
        try:
            make_private_dirs(self.path.parent)  # every directory we create is private, not only the last
            _create_private(self.path)
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout_ms / 1000, isolation_level=None,
                                   check_same_thread=False)
        except (sqlite3.Error, OSError) as err:
            raise unavailable(err) from err
        try:
            # PRAGMA values cannot be bound; this one is an int we own.
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms:d}")
            _enable_wal(conn, self._busy_timeout_ms / 1000)
            conn.execute("PRAGMA synchronous = NORMAL")
            # Reconnecting (after any failed call) must not wait for the write lock another process may hold
            # for a while: migrate only when a plain read says the schema is not current.
            if not self._schema_is_current(conn):
                conn.execute("BEGIN IMMEDIATE")

                def run(sql: str, params: Sequence[Any]) -> list[Row]:
                    return conn.execute(sql, params).fetchall()

                migrate(run, self._sql, create_indexes=True)  # small tables; the write lock serialises
                conn.execute("COMMIT")
        except BaseException as err:
            conn.close()
            if isinstance(err, (sqlite3.Error, OSError)):
                raise unavailable(err) from err
            raise
        return conn

    def _schema_is_current(self, conn: sqlite3.Connection) -> bool:
        """True when the file holds exactly ``SCHEMA_VERSION`` and all ``SCHEMA_INDEXES`` (reads: they never wait
        for a writer in WAL mode). Older, newer, missing or an index short: False, and ``migrate`` decides under
        the write lock."""
        try:
            rows = conn.execute(self._sql.schema_version, (COMPONENT,)).fetchall()
        except sqlite3.OperationalError as err:
            if "no such table" in str(err):
                return False  # a fresh file
            raise
        if not rows or rows[0][0] != SCHEMA_VERSION:
            return False
        return all(conn.execute(self._sql.index_exists, (name,)).fetchall() for name, _columns in SCHEMA_INDEXES)

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:  # only inside _session, which connects
            raise GrantStoreUnavailable("grant store unavailable: not connected")
        return self._conn

    def _execute(self, sql: str, params: Sequence[Any], *, write: bool) -> list[Row]:
        conn = self._live()
        try:
            if write and not conn.in_transaction:
                conn.execute("BEGIN IMMEDIATE")
            return conn.execute(sql, params).fetchall()
        except sqlite3.IntegrityError as err:
            self._rollback()
            if getattr(err, "sqlite_errorname", "") in _DUPLICATE_KEY:
                raise GrantConflict("a grant with this id exists already") from err
            raise unavailable(err) from err
        except sqlite3.Error as err:
            self._drop()
            raise unavailable(err) from err

    def _commit(self) -> None:
        conn = self._live()
        if not conn.in_transaction:
            return
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            self._drop()  # closing rolls back whatever is left
            raise unavailable(err) from err

    def _rollback(self) -> None:
        conn = self._conn
        if conn is None or not conn.in_transaction:
            return
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass  # already unusable; a fresh connection comes on the next call
