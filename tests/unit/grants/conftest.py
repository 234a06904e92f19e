"""The store every grant-store test runs against (``store_url`` is in ``tests/unit/conftest.py``)."""

import pytest

from tenantgate.grants import open_store


@pytest.fixture
def store(store_url):
    opened = open_store(store_url)
    yield opened
    opened.close()
