"""GuardedStore: lazy open, fast failure while down, recovery."""

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
