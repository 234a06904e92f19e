"""JwtVerifier's verified-token cache (tenantgate.identity.tokencache) and the token id it keys on: a hit
makes no signature check, a failure or an expired token is never served from it, and an ECDSA signature
twin is the same token but not the same cache entry."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest

from support.issuers import OMIT, FixedClock, TestIssuer, verifier_for
from tenantgate.errors import AudienceMismatch, TokenExpired, TokenInvalid
from tenantgate.identity import JwtVerifier

# ------------------------------------------------------------------------------------------ token id


@pytest.mark.parametrize("jti", [OMIT, "", "x" * 129, 12])
def test_token_id_falls_back_to_a_hash_of_the_signing_input_without_a_usable_jti(
    es: TestIssuer, verifier: JwtVerifier, jti: Any
) -> None:
    token = es.mint(jti=jti)
    if jti == 12:
        # PyJWT refuses a non-string jti: the token is invalid rather than anonymous.
        with pytest.raises(TokenInvalid):
            verifier.verify(token)
        return
    claims = verifier.verify(token)
    signing_input = token.rsplit(".", 1)[0]  # header.payload: the signature is not part of the identity
    assert claims.token_id == "sha256:" + hashlib.sha256(signing_input.encode()).hexdigest()[:16]
    assert token not in claims.token_id


# ------------------------------------------------------------------------------------------ cache


def test_second_verify_of_the_same_token_is_served_from_the_cache(
    es: TestIssuer, verifier: JwtVerifier, decodes: list[int]
) -> None:
    calls = decodes
    token = es.mint()
    first = verifier.verify(token)
    second = verifier.verify(token)
    assert second is first
    assert calls == [1]


def test_cached_token_is_rejected_once_the_clock_passes_exp(
    es: TestIssuer, verifier: JwtVerifier, clock: FixedClock
) -> None:
    token = es.mint()
    verifier.verify(token)
    clock.advance(300 + 29)
    assert verifier.verify(token).subject == "alice"
    clock.advance(1)
    with pytest.raises(TokenExpired):
        verifier.verify(token)
    with pytest.raises(TokenExpired):
        verifier.verify(token)


def test_failures_are_not_cached(es: TestIssuer, verifier: JwtVerifier, decodes: list[int]) -> None:
    calls = decodes
    token = es.mint(aud="other")
    for _ in range(2):
        with pytest.raises(AudienceMismatch):
            verifier.verify(token)
    assert len(calls) == 2


def test_cache_is_bounded_and_evicts_the_least_recently_used(
    es: TestIssuer, clock: FixedClock, decodes: list[int]
) -> None:
    verifier = verifier_for(es, clock=clock, cache_size=2)
    calls = decodes
    first, second, third = es.mint(), es.mint(), es.mint()
    for token in (first, second, first, third):  # third evicts second (first was used more recently)
        verifier.verify(token)
    assert len(calls) == 3
    verifier.verify(first)
    assert len(calls) == 3
    verifier.verify(second)
    assert len(calls) == 4


# ------------------------------------------------------------------------------------------ ECDSA twins

# Group orders of the NIST curves: (r, n - s) is a second valid ECDSA signature for (r, s).
CURVE_ORDERS = {
    "ES256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "ES384": int("F" * 48 + "C7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16),
    "ES512": int("1" + "F" * 65 + "A51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409", 16),
}


def ecdsa_twin(token: str, alg: str) -> str:
    """The same token with its ECDSA signature (r, s) replaced by (r, n - s): also valid, different bytes."""
    head, body, signature = token.split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    half = len(raw) // 2
    s = int.from_bytes(raw[half:], "big")
    twin = raw[:half] + (CURVE_ORDERS[alg] - s).to_bytes(half, "big")
    return f"{head}.{body}.{base64.urlsafe_b64encode(twin).decode().rstrip('=')}"


def is_high_s(token: str, alg: str) -> bool:
    signature = token.rsplit(".", 1)[1]
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return int.from_bytes(raw[len(raw) // 2:], "big") > CURVE_ORDERS[alg] // 2


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512"])
def test_ecdsa_twin_of_a_token_without_jti_has_the_same_token_id(tmp_path: Path, clock: FixedClock,
                                                                 alg: str) -> None:
    issuer = TestIssuer(tmp_path, alg=alg, clock=clock)
    verifier = verifier_for(issuer, clock=clock)
    token = issuer.mint(jti=OMIT)
    twin = ecdsa_twin(token, alg)
    assert twin != token
    first, second = verifier.verify(token), verifier.verify(twin)
    assert first.token_id == second.token_id  # one token, whatever the encoding of its signature


def test_token_differing_only_in_signature_is_not_served_from_the_cache(
    es: TestIssuer, verifier: JwtVerifier, decodes: list[int]
) -> None:
    token = es.mint(jti=OMIT)
    verifier.verify(token)
    head, body, _signature = token.split(".")
    forged = f"{head}.{body}.{es.raw({}, {}, bytes(64)).rsplit('.', 1)[1]}"
    with pytest.raises(TokenInvalid, match="signature"):
        verifier.verify(forged)
    before = len(decodes)
    verifier.verify(ecdsa_twin(token, "ES256"))
    assert len(decodes) == before + 1  # the valid twin is verified afresh, not looked up under the original's entry


def test_high_s_ecdsa_signatures_from_a_standard_signer_are_accepted(es: TestIssuer, verifier: JwtVerifier) -> None:
    # OpenSSL (via PyJWT/cryptography), like most JOSE libraries, does not normalise s: about half of real
    # ES256 tokens are high-s. Refusing them would deny half of a standard issuer's tokens; malleability is
    # neutralised instead by the signing-input token id and the whole-token cache key (tests above).
    tokens = [es.mint() for _ in range(64)]
    high = [token for token in tokens if is_high_s(token, "ES256")]
    assert high, "64 signatures without one high-s: astronomically unlikely"
    for token in high[:4]:
        assert verifier.verify(token).subject == "alice"
