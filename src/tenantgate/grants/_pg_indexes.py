"""Building the ``SCHEMA_INDEXES`` a PostgreSQL grant table lacks: in the background, once per process, with
``CREATE INDEX CONCURRENTLY``, one replica at a time. Opening a store never waits for it (review finding: on a
table of 2.2M rows the build outlasted the 2 s statement_timeout at every connect, so a new release never
opened its store, and each attempt held the old replicas' writes back for 2 s).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from enum import Enum
from typing import Any

import psycopg

from tenantgate.grants._rows import short_reason
from tenantgate.grants._sql import SCHEMA_INDEXES, create_index

# pg_try_advisory_lock key (session level) held by the one session building ``SCHEMA_INDEXES`` ("tgindexs").
INDEX_BUILD_LOCK_KEY = 0x7467_696E_6465_7873
# After an index build that failed, or found another session building, this process tries again at its first
# connect this long later (a build interrupted elsewhere leaves an invalid index that only a new build repairs).
INDEX_RETRY_SECONDS = 600.0

log = logging.getLogger("tenantgate.grants")


class IndexBuild(Enum):
    """What ``build_missing_indexes`` found or did."""

    PRESENT = "present"  # every index was there and valid: nothing built
    BUILT = "built"      # built at least one (replacing an invalid leftover, if any)
    BUSY = "busy"        # another session holds INDEX_BUILD_LOCK_KEY (another replica is building): nothing done


def build_missing_indexes(conninfo: str) -> IndexBuild:
    """Create the ``SCHEMA_INDEXES`` the database at ``conninfo`` lacks, or holds invalid, and say which it was.

    ``CREATE INDEX CONCURRENTLY`` never blocks the table's writers (revocations included) but waits for the
    transactions writing it and cannot run in a transaction: so this runs on a connection of its own, in
    autocommit, with ``statement_timeout`` off (a large table takes as long as it takes). One session builds at a
    time: it holds ``pg_try_advisory_lock(INDEX_BUILD_LOCK_KEY)`` and any other returns ``BUSY`` at once. An
    interrupted concurrent build leaves an invalid index that ``IF NOT EXISTS`` would keep for good; it is
    dropped (``DROP INDEX CONCURRENTLY``) and built again, only under that lock, because an index another
    session is building right now is invalid too. Slow, so never called on a caller's thread.

    Raises ``psycopg.Error`` or ``OSError`` when the database fails it (an interrupted build, a role that does
    not own the table); the indexes stand as they were or invalid, and a later call repairs them.
    """
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SET statement_timeout = 0")
        # Named apart from the store's sessions in pg_stat_activity ("tenantgate (index build)").
        conn.execute("SELECT set_config('application_name', current_setting('application_name') || ' (index build)',"
                     " false)")
        if all(_index_is_valid(conn, name) for name, _columns in SCHEMA_INDEXES):
            return IndexBuild.PRESENT  # the usual case: a catalog read, no lock
        locked = conn.execute("SELECT pg_try_advisory_lock(%s)", (INDEX_BUILD_LOCK_KEY,)).fetchone()
        if not (locked and locked[0]):
            return IndexBuild.BUSY
        try:
            built = False
            for name, columns in SCHEMA_INDEXES:
                valid = _index_is_valid(conn, name)
                if valid:
                    continue  # another session built it before this one took the lock
                if valid is False:
                    # Invalid, and nobody is building it: we hold the build lock.
                    conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
                conn.execute(create_index(name, columns, concurrently=True))
                built = True
            return IndexBuild.BUILT if built else IndexBuild.PRESENT
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (INDEX_BUILD_LOCK_KEY,))
            except psycopg.Error:
                pass  # the session is gone, and its lock with it (closing the connection releases it too)


def _index_is_valid(conn: psycopg.Connection[Any], name: str) -> bool | None:
    """True when index ``name`` (resolved through search_path, like the table) exists and is valid (usable),
    False when it exists invalid (a concurrent build in progress or interrupted), None when it does not exist."""
    row = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s::text)", (name,)).fetchone()
    return None if row is None else bool(row[0])


class _IndexBuilds:
    """The background index builds of this process: at most one at a time per database, none again once the
    indexes are there. Process-wide by nature, so one instance (``INDEX_BUILDS``): every store on a database, the
    ones a ``GuardedStore`` reopens after failures included, shares one attempt."""

    def __init__(self, retry_seconds: float) -> None:
        self._retry_seconds = retry_seconds
        self._guard = threading.Lock()
        self._not_before: dict[str, float] = {}  # database (its redacted URL) -> monotonic time of the next try

    def start(self, database: str, conninfo: str, secrets: Sequence[str]) -> None:
        """Start ``build_missing_indexes`` on a daemon thread unless this process has built them on ``database``,
        is building them, or last tried less than ``retry_seconds`` ago. Returns at once; never raises."""
        with self._guard:
            if time.monotonic() < self._not_before.get(database, 0.0):
                return
            self._not_before[database] = float("inf")  # until this attempt ends
        try:
            threading.Thread(target=self._build, args=(database, conninfo, tuple(secrets)),
                             name="tenantgate-pg-index-build", daemon=True).start()
        except RuntimeError as err:  # no thread to be had now: the next connect after the back-off tries again
            self._finished(database, done=False)
            log.warning("grant store %s: index build not started (%s)", database, err)

    def _build(self, database: str, conninfo: str, secrets: tuple[str, ...]) -> None:
        names = ", ".join(name for name, _columns in SCHEMA_INDEXES)
        outcome: IndexBuild | None = None
        started = time.monotonic()
        try:
            outcome = build_missing_indexes(conninfo)
        except Exception as err:  # noqa: BLE001 - a background build: reported here, retried later, never raised
            log.warning("grant store %s: index %s not built (%s); the store works without it, more slowly; "
                        "tried again at the next start, or at a reconnect %.0f s from now at the earliest",
                        database, names, short_reason(err, secrets), self._retry_seconds)
        finally:
            self._finished(database, done=outcome in (IndexBuild.PRESENT, IndexBuild.BUILT))
        if outcome is IndexBuild.BUILT:
            log.info("grant store %s: index %s built in %.1f s", database, names, time.monotonic() - started)
        elif outcome is IndexBuild.BUSY:
            log.info("grant store %s: index %s is being built by another session", database, names)

    def _finished(self, database: str, *, done: bool) -> None:
        with self._guard:
            self._not_before[database] = float("inf") if done else time.monotonic() + self._retry_seconds


INDEX_BUILDS = _IndexBuilds(INDEX_RETRY_SECONDS)
