"""The SQLite store must keep SQLite's own file locks: closing any descriptor of the database file drops every
POSIX lock the process holds on it.

Review finding (HIGH): each connection (the lookup connection, a reconnect) opened and closed the file first to
create it 0600. That dropped the main connection's shared lock, so the next other process to close its last
connection (an in-process `tenantgate check`) took the file as unused, checkpointed and deleted the WAL, and the
server went on committing into an unlinked file: other processes read stale grants (a revoked one allowed) and
a restart brought revoked grants back and lost later ones.
"""

import os
import stat
import subprocess
import sys

from tenantgate.core.grants import Grant, GrantState
from tenantgate.grants import SqliteGrantStore

T0 = 1_700_000_000.0
OTHER_PROCESS = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
print(conn.execute("SELECT state FROM tenantgate_grants WHERE id = 'g-1'").fetchone()[0])
conn.close()
"""


def ignore(_grants):
    pass


def other_process_reads_state(path):
    """What another process, opening and closing its own connection, reads of grant g-1's state."""
    done = subprocess.run([sys.executable, "-c", OTHER_PROCESS, str(path)], capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout.strip()


def test_a_second_connection_in_the_process_keeps_the_wal_for_other_processes(tmp_path):
    path = tmp_path / "grants.db"
    store = SqliteGrantStore(path)
    grant = Grant(id="g-1", operator="oscar", operator_tenant="platform", target_tenant="acme", actions=("read",),
                  reason="incident", ticket="INC-1", duration_seconds=600, state=GrantState.PENDING,
                  requested_at=T0, pending_until=T0 + 3600)
    store.create(grant, ignore)
    store.activate("g-1", "ada", T0 + 1, ignore)
    assert store.find_active("oscar", "platform", "acme", "read", T0 + 2) is not None  # opens the lookup connection
    reader = SqliteGrantStore(path)  # as a reconnect does
    assert reader.get("g-1") is not None
    assert other_process_reads_state(path) == "ACTIVE"  # its close must not checkpoint and delete our WAL
    store.revoke("g-1", "ada", "done", T0 + 3, ignore)
    wal = os.stat(f"{path}-wal")
    assert wal.st_nlink == 1  # still the file at the path, not one deleted under us
    assert other_process_reads_state(path) == "REVOKED"
    store.close()
    reader.close()


def test_the_database_file_is_created_private(tmp_path):
    path = tmp_path / "new" / "grants.db"
    SqliteGrantStore(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_dangling_link_at_the_path_gets_a_private_database_file(tmp_path):
    # Review finding (LOW): O_EXCL fails on a dangling link, and SQLite then created its target 0644 (umask).
    (tmp_path / "data").mkdir()
    link = tmp_path / "grants.db"
    link.symlink_to(tmp_path / "data" / "grants.db")
    SqliteGrantStore(link).close()
    assert stat.S_IMODE(os.stat(tmp_path / "data" / "grants.db").st_mode) == 0o600
