"""Shared unit-test fixtures."""

import pytest

from support.pg import pg_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    """A grant store URL: SQLite in a fresh file (in a directory the store creates) and PostgreSQL in a
    throwaway database (support.pg; skipped when no server is reachable)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'grants.db'}"
    else:
        with pg_database() as url:
            yield url
