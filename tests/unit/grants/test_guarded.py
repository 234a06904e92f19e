"""GuardedStore: lazy open, fast failure while down, recovery."""

import time

import pytest

from tenantgate.errors import ConfigError, GrantStoreUnavailable
from tenantgate.grants import GuardedStore, open_guarded_store, open_store


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_store_down_at_start_is_opened_later(tmp_path):
    attempts = []
    clock = Clock()

    def opener():
        attempts.append(clock.t)
        if len(attempts) < 3:
            raise GrantStoreUnavailable("connection refused")
        return open_store(f"sqlite:///{tmp_path / 'g.db'}")

    store = GuardedStore(opener, retry_seconds=1.0, monotonic=clock)
    with pytest.raises(GrantStoreUnavailable):
        store.find_active("o", "platform", "acme", "read", 0)
    assert len(attempts) == 2
    # Within the retry window calls fail fast without touching the store.
    with pytest.raises(GrantStoreUnavailable, match="retrying"):
        store.find_active("o", "platform", "acme", "read", 0)
    assert len(attempts) == 2
    clock.t += 1.0
    assert store.find_active("o", "platform", "acme", "read", 0) is None
    assert store.healthy()


def test_bad_urls_fail_at_start_not_lazily():
    with pytest.raises(ConfigError):
        open_guarded_store("mysql://x")
    with pytest.raises(ConfigError):
        open_guarded_store("sqlite:///")


def test_a_version_1_store_is_migrated_and_old_grants_bind_to_no_issuer(tmp_path):
    import sqlite3

    from tenantgate.grants._sql import COMPONENT, SCHEMA_V1, TABLE, VERSION_DDL, VERSION_TABLE

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    for ddl in (VERSION_DDL, *SCHEMA_V1):
        db.execute(ddl)
    db.execute(f"INSERT INTO {VERSION_TABLE} VALUES (?, 1)", (COMPONENT,))
    db.execute(f"""INSERT INTO {TABLE} (id, operator, operator_tenant, target_tenant, actions, reason, ticket,
                   duration_seconds, state, requested_at, pending_until, expires_at)
                   VALUES ('g1', 'oscar', 'platform', 'acme', '["read"]', 'r', 't', 60, 'ACTIVE', 0, 0, 1000)""")
    db.commit()
    db.close()
    store = open_store(f"sqlite:///{path}")
    grant = store.get("g1")
    assert grant is not None and grant.operator_issuer == ""
    # An old grant was not bound to an issuer: no token (all have an issuer) can use it after the upgrade.
    assert store.find_active("oscar", "platform", "acme", "read", 10, "https://issuer.test") is None


def test_lookups_on_a_closed_guarded_store_fail_at_once(tmp_path):
    store = GuardedStore(lambda: open_store(f"sqlite:///{tmp_path / 'g.db'}"))
    assert store.find_active("o", "platform", "acme", "read", 0) is None
    store.close()
    started = time.monotonic()
    with pytest.raises(GrantStoreUnavailable, match="closed"):
        store.find_active("o", "platform", "acme", "read", 0)
    assert time.monotonic() - started < 0.1
