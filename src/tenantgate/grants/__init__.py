"""Break-glass grant stores: SQLite (embedded default) and PostgreSQL (shared by replicas).

``open_store(url)`` is the one way the application picks a store. Both implement
``tenantgate.core.grants.GrantStore``: driver errors become ``GrantStoreUnavailable`` and the store recovers
by itself on a later call.
"""

from __future__ import annotations

from tenantgate.core.grants import GrantStore
from tenantgate.errors import ConfigError
from tenantgate.grants.guarded import LOOKUP_TIMEOUT_SECONDS, GuardedStore
from tenantgate.grants.postgres import PostgresGrantStore
from tenantgate.grants.sqlite import SqliteGrantStore
from tenantgate.redact import redact_url

__all__ = ["LOOKUP_TIMEOUT_SECONDS", "GuardedStore", "PostgresGrantStore", "SqliteGrantStore", "open_guarded_store",
           "open_store", "redact_url"]

_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def open_guarded_store(url: str, *, lookup_timeout: float = LOOKUP_TIMEOUT_SECONDS) -> GrantStore:
    """The store the server uses: ``url`` checked now (``ConfigError``), opened lazily, failing fast while
    down, and answering a decision's lookup within ``lookup_timeout`` seconds (see ``GuardedStore``)."""
    _check_url(url)
    return GuardedStore(lambda: open_store(url), lookup_timeout=lookup_timeout)


def _check_url(url: str) -> None:
    if url.startswith(_SQLITE_PREFIX):
        path = url[len(_SQLITE_PREFIX):]
        if not path or path == ":memory:":
            raise ConfigError(f"grant store URL {url!r} names no file: use sqlite:///PATH")
        if "?" in path or "#" in path:
            raise ConfigError(f"grant store URL {url!r}: sqlite URLs take no query or fragment")
    elif not url.startswith(_POSTGRES_PREFIXES):
        raise ConfigError(f"unsupported grant store URL {redact_url(url)!r}: use sqlite:///PATH or postgresql://...")


def open_store(url: str) -> GrantStore:
    """Open the grant store ``url`` names.

    ``sqlite:///relative/path.db`` (relative to the working directory) or ``sqlite:////absolute/path.db``;
    ``postgresql://...`` or ``postgres://...`` (handed to libpq). Raises ``ConfigError`` for anything else,
    never quoting a password, and ``GrantStoreUnavailable`` when the store cannot be opened now.
    """
    _check_url(url)
    if url.startswith(_SQLITE_PREFIX):
        return SqliteGrantStore(url[len(_SQLITE_PREFIX):])
    return PostgresGrantStore(url)
