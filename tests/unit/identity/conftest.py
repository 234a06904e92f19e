"""A fixed clock and an ES256 test issuer that mints on it, for the identity tests."""

from pathlib import Path

import pytest

from support.issuers import NOW, FixedClock, TestIssuer


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def es(tmp_path: Path, clock: FixedClock) -> TestIssuer:
    return TestIssuer(tmp_path, alg="ES256", clock=clock)
