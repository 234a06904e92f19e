"""The grant stores every store test runs against: SQLite in a fresh file (in a directory the store creates) and,
when TENANTGATE_TEST_PG_DSN is set, PostgreSQL in a throwaway database."""

import pytest

from support.pg import pg_database
from tenantgate.grants import open_store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'grants.db'}"
    else:
        with pg_database() as url:
            yield url


@pytest.fixture
def store(store_url):
    opened = open_store(store_url)
    yield opened
    opened.close()
