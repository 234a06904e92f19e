"""A fixed clock, an ES256 test issuer that mints on it, a verifier trusting that issuer, a loopback HTTP server
and a count of signature checks, for the identity tests."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from support.issuers import NOW, FixedClock, LoopbackServer, TestIssuer, verifier_for
from tenantgate.identity import JwtVerifier


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    """A loopback HTTP server (JWKS URLs), stopped after the test."""
    with LoopbackServer() as running:
        yield running


@pytest.fixture
def es(tmp_path: Path, clock: FixedClock) -> TestIssuer:
    return TestIssuer(tmp_path, alg="ES256", clock=clock)


@pytest.fixture
def verifier(es: TestIssuer, clock: FixedClock) -> JwtVerifier:
    return verifier_for(es, clock=clock, leeway_seconds=30, max_lifetime_seconds=3600)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts signature checks (``jwt.decode`` calls): a cache hit makes none."""
    calls: list[int] = []
    real_decode = jwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    return calls
