"""Throwaway PostgreSQL databases for tests.

    from support.pg import pg_database

    @pytest.fixture
    def pg_url():
        with pg_database() as url:      # skips the test when no server is configured or reachable
            yield url                   # postgresql://.../tenantgate_test_<random>, dropped afterwards

The server comes from ``TENANTGATE_TEST_PG_DSN`` (a ``postgresql://`` URL of a role that may create
databases), else the local default ``postgresql://postgres@127.0.0.1:5432/postgres``: the tests skip only when
no server is reachable (review finding: a plain `make test` skipped them all on a machine with PostgreSQL).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from tenantgate.grants import redact_url

ENV = "TENANTGATE_TEST_PG_DSN"
LOCAL_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_dsn() -> str:
    """The configured (else the local default) server URL; skips the calling test when it is unreachable."""
    dsn = os.environ.get(ENV, "") or LOCAL_DEFAULT
    if not dsn.startswith(("postgresql://", "postgres://")):
        pytest.skip(f"{ENV} must be a postgresql:// URL, not a keyword conninfo")
    try:
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as err:
        pytest.skip(f"PostgreSQL not reachable at {redact_url(dsn)}: set {ENV} ({type(err).__name__})")
    return dsn


def url_with(url: str, *, host: str | None = None, port: int | None = None, dbname: str | None = None) -> str:
    """``url`` (a ``postgresql://`` URL) with its host, port or database replaced; user, password and query kept."""
    parts = urlsplit(url)
    userinfo, at, _hostport = parts.netloc.rpartition("@")
    new_host = host if host is not None else (parts.hostname or "127.0.0.1")
    if ":" in new_host:
        new_host = f"[{new_host}]"
    new_port = port if port is not None else parts.port
    netloc = f"{userinfo}{at}{new_host}" + (f":{new_port}" if new_port else "")
    path = "/" + quote(dbname, safe="") if dbname is not None else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


@contextmanager
def pg_database(dsn: str | None = None) -> Iterator[str]:
    """Create ``tenantgate_test_<random>`` on the server (``dsn`` or ``TENANTGATE_TEST_PG_DSN``), yield its URL,
    then drop it ``WITH (FORCE)`` so connections a test left open do not keep it alive."""
    server = dsn or admin_dsn()
    name = f"tenantgate_test_{secrets.token_hex(6)}"
    with psycopg.connect(server, connect_timeout=3, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield url_with(server, dbname=name)
    finally:
        with psycopg.connect(server, connect_timeout=3, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
