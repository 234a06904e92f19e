"""JwtVerifier: the contract of tenantgate.core.ports.TokenVerifier over PyJWT, with an injected clock."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed448

from support.issuers import NOW, OMIT, FixedClock, TestIssuer, json_with_literals, verifier_for
from tenantgate import config
from tenantgate.config import DevIssuerSettings, IssuerSettings, ServerSettings, Settings, TokenSettings
from tenantgate.errors import (
    AudienceMismatch,
    ConfigError,
    IssuerUntrusted,
    TokenError,
    TokenExpired,
    TokenInvalid,
    TokenMissing,
)
from tenantgate.identity import DevIssuer, IssuerKeys, JwksFile, JwtVerifier, build_verifier

ISSUER = "https://issuer.test"


@pytest.fixture(scope="module")
def rsa_issuer(tmp_path_factory: pytest.TempPathFactory) -> TestIssuer:
    # RSA key generation is the slow part of this file: one key for the module.
    return TestIssuer(tmp_path_factory.mktemp("rsa"), alg="RS256")


@pytest.fixture
def verifier(es: TestIssuer, clock: FixedClock) -> JwtVerifier:
    return verifier_for(es, clock=clock, leeway_seconds=30, max_lifetime_seconds=3600)


# ------------------------------------------------------------------------------------------ happy paths


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512", "EdDSA", "HS256", "HS512"])
def test_valid_token_is_verified_for_each_supported_algorithm(tmp_path: Path, clock: FixedClock, alg: str) -> None:
    issuer = TestIssuer(tmp_path, alg=alg, clock=clock)
    claims = verifier_for(issuer, clock=clock).verify(issuer.mint(tenant="globex"))
    assert claims.issuer == ISSUER
    assert claims.subject == "alice"
    assert claims.claims["tenant"] == "globex"
    assert claims.expires_at == NOW + 300


def test_valid_rs256_token_is_verified(rsa_issuer: TestIssuer, clock: FixedClock) -> None:
    claims = verifier_for(rsa_issuer, clock=clock).verify(rsa_issuer.mint(now=NOW))
    assert (claims.issuer, claims.subject) == (ISSUER, "alice")


def test_ps256_token_verifies_with_an_rsa_key_declaring_no_alg(tmp_path: Path, clock: FixedClock,
                                                               rsa_issuer: TestIssuer) -> None:
    issuer = TestIssuer(tmp_path, alg="PS256", clock=clock, private_key=rsa_issuer.private_key,
                        jwk_extra={"alg": OMIT})
    assert verifier_for(issuer, clock=clock).verify(issuer.mint()).subject == "alice"


def test_eddsa_token_verifies_with_an_ed448_key(tmp_path: Path, clock: FixedClock) -> None:
    issuer = TestIssuer(tmp_path, alg="EdDSA", clock=clock, private_key=ed448.Ed448PrivateKey.generate())
    assert issuer.jwk["crv"] == "Ed448"
    assert verifier_for(issuer, clock=clock).verify(issuer.mint()).subject == "alice"


def test_kid_shared_by_keys_of_different_types_selects_the_one_fitting_the_alg(
    tmp_path: Path, clock: FixedClock, es: TestIssuer, rsa_issuer: TestIssuer
) -> None:
    shared = {name: value for name, value in rsa_issuer.jwk.items() if name != "alg"} | {"kid": es.kid}
    es.jwks_path.write_text(json.dumps({"keys": [shared, es.jwk]}), encoding="utf-8")
    assert verifier_for(es, clock=clock).verify(es.mint()).subject == "alice"


def test_verified_claims_are_read_only_and_carry_the_jti(es: TestIssuer, verifier: JwtVerifier) -> None:
    claims = verifier.verify(es.mint(jti="token-1"))
    assert isinstance(claims.claims, MappingProxyType)
    assert claims.token_id == "token-1"
    with pytest.raises(TypeError):
        claims.claims["tenant"] = "other"  # type: ignore[index]


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


@pytest.mark.parametrize("token", ["", "   ", "\t\n"])
def test_empty_or_blank_token_is_missing(verifier: JwtVerifier, token: str) -> None:
    with pytest.raises(TokenMissing):
        verifier.verify(token)


def test_none_token_is_missing(verifier: JwtVerifier) -> None:
    with pytest.raises(TokenMissing):
        verifier.verify(None)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ times


def test_expired_token_beyond_leeway_is_token_expired(es: TestIssuer, verifier: JwtVerifier,
                                                      clock: FixedClock) -> None:
    token = es.mint(exp=int(NOW) - 31)
    with pytest.raises(TokenExpired):
        verifier.verify(token)


def test_expired_token_within_leeway_is_accepted(es: TestIssuer, verifier: JwtVerifier) -> None:
    assert verifier.verify(es.mint(exp=int(NOW) - 29)).subject == "alice"


def test_token_is_expired_exactly_at_exp_plus_leeway(es: TestIssuer, verifier: JwtVerifier) -> None:
    with pytest.raises(TokenExpired):
        verifier.verify(es.mint(exp=int(NOW) - 30))


def test_token_is_expired_at_exp_with_zero_leeway(es: TestIssuer, clock: FixedClock) -> None:
    strict = verifier_for(es, clock=clock, leeway_seconds=0)
    with pytest.raises(TokenExpired):
        strict.verify(es.mint(exp=int(NOW)))
    assert strict.verify(es.mint(exp=int(NOW) + 1)).expires_at == NOW + 1


def test_not_yet_valid_token_is_invalid(es: TestIssuer, verifier: JwtVerifier) -> None:
    with pytest.raises(TokenInvalid, match="not yet valid"):
        verifier.verify(es.mint(nbf=int(NOW) + 31))


def test_nbf_within_leeway_is_accepted(es: TestIssuer, verifier: JwtVerifier) -> None:
    assert verifier.verify(es.mint(nbf=int(NOW) + 30)).subject == "alice"


def test_token_issued_in_the_future_is_invalid(es: TestIssuer, verifier: JwtVerifier) -> None:
    with pytest.raises(TokenInvalid, match="iat"):
        verifier.verify(es.mint(iat=int(NOW) + 31))


def test_lifetime_over_the_maximum_is_invalid(es: TestIssuer, verifier: JwtVerifier) -> None:
    with pytest.raises(TokenInvalid, match="lifetime"):
        verifier.verify(es.mint(iat=int(NOW), exp=int(NOW) + 3601))
    assert verifier.verify(es.mint(iat=int(NOW), exp=int(NOW) + 3600)).subject == "alice"


def test_lifetime_without_iat_is_measured_from_now(es: TestIssuer, verifier: JwtVerifier) -> None:
    with pytest.raises(TokenInvalid, match="lifetime"):
        verifier.verify(es.mint(iat=OMIT, exp=int(NOW) + 3601))
    assert verifier.verify(es.mint(iat=OMIT, exp=int(NOW) + 3600)).subject == "alice"


def test_missing_exp_is_invalid(es: TestIssuer, verifier: JwtVerifier) -> None:
    with pytest.raises(TokenInvalid, match="exp"):
        verifier.verify(es.mint(exp=OMIT))


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize(
    "value",
    [str(int(NOW) + 60), [int(NOW) + 60], None, True, False, {"t": 1}, -1, 1e11, 2**70],
    ids=["numeric-string", "list", "null", "true", "false", "object", "negative", "1e11", "2**70"],
)
def test_ill_typed_or_out_of_range_time_claim_is_invalid(
    es: TestIssuer, verifier: JwtVerifier, claim: str, value: Any
) -> None:
    with pytest.raises(TokenInvalid):
        verifier.verify(es.mint(**{claim: value}))


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 5000])
def test_non_finite_or_huge_time_literal_is_invalid(
    es: TestIssuer, verifier: JwtVerifier, claim: str, literal: str
) -> None:
    payload = json_with_literals(es.default_claims(NOW), {claim: literal})
    with pytest.raises(TokenInvalid):
        verifier.verify(es.signed_raw(es.default_header(), payload))


def test_float_times_are_accepted(es: TestIssuer, verifier: JwtVerifier) -> None:
    claims = verifier.verify(es.mint(iat=NOW - 0.5, nbf=NOW - 0.5, exp=NOW + 60.25))
    assert claims.expires_at == NOW + 60.25


# ------------------------------------------------------------------------------------------ issuer, subject, audience


def test_unknown_issuer_is_untrusted(es: TestIssuer, verifier: JwtVerifier) -> None:
    with pytest.raises(IssuerUntrusted):
        verifier.verify(es.mint(iss="https://evil.test"))


@pytest.mark.parametrize("iss", [OMIT, None, "", 7, [ISSUER]])
def test_missing_or_non_string_issuer_is_untrusted(es: TestIssuer, verifier: JwtVerifier, iss: Any) -> None:
    with pytest.raises(IssuerUntrusted):
        verifier.verify(es.mint(iss=iss))


@pytest.mark.parametrize("sub", [OMIT, None, "", 42, ["alice"], "a" * 1025])
def test_missing_empty_non_string_or_huge_subject_is_invalid(
    es: TestIssuer, verifier: JwtVerifier, sub: Any
) -> None:
    with pytest.raises(TokenInvalid):
        verifier.verify(es.mint(sub=sub))


def test_subject_of_1024_characters_is_accepted(es: TestIssuer, verifier: JwtVerifier) -> None:
    assert verifier.verify(es.mint(sub="a" * 1024)).subject == "a" * 1024


@pytest.mark.parametrize("aud", ["other", ["other", "another"], OMIT, "", [], None])
def test_wrong_or_missing_audience_is_a_mismatch(es: TestIssuer, verifier: JwtVerifier, aud: Any) -> None:
    with pytest.raises(AudienceMismatch):
        verifier.verify(es.mint(aud=aud))


@pytest.mark.parametrize("aud", [{"aud": "tenantgate"}, 5, ["tenantgate", 5], True])
def test_ill_typed_audience_is_a_mismatch(es: TestIssuer, verifier: JwtVerifier, aud: Any) -> None:
    with pytest.raises(AudienceMismatch):
        verifier.verify(es.mint(aud=aud))


def test_audience_list_containing_a_configured_audience_is_accepted(
    es: TestIssuer, verifier: JwtVerifier
) -> None:
    assert verifier.verify(es.mint(aud=["billing", "tenantgate"])).subject == "alice"


def test_any_of_several_configured_audiences_is_accepted(tmp_path: Path, clock: FixedClock,
                                                         es: TestIssuer) -> None:
    settings = IssuerSettings(ISSUER, ("a", "b"), ("ES256",), jwks_file=str(es.jwks_path))
    verifier = JwtVerifier([IssuerKeys(settings, JwksFile(es.jwks_path))], TokenSettings(), clock)
    assert verifier.verify(es.mint(aud="b")).subject == "alice"
    with pytest.raises(AudienceMismatch):
        verifier.verify(es.mint(aud="tenantgate"))


def test_tokens_of_each_trusted_issuer_verify_with_that_issuers_keys(tmp_path: Path, clock: FixedClock) -> None:
    first = TestIssuer(tmp_path, issuer="https://one.test", clock=clock)
    second = TestIssuer(tmp_path, alg="EdDSA", issuer="https://two.test", clock=clock)
    verifier = verifier_for(first, second, clock=clock)
    assert verifier.verify(first.mint()).issuer == "https://one.test"
    assert verifier.verify(second.mint()).issuer == "https://two.test"


# ------------------------------------------------------------------------------------------ header


def test_wrong_typ_is_invalid_when_typ_is_required(es: TestIssuer, clock: FixedClock) -> None:
    verifier = verifier_for(es, clock=clock, require_typ=True)
    for typ in ("JWT", "jwt", "at+jwt2", 1):
        with pytest.raises(TokenInvalid, match="typ"):
            verifier.verify(es.mint(headers={"typ": typ}))
    with pytest.raises(TokenInvalid, match="typ"):
        verifier.verify(es.mint(headers={"typ": OMIT}))


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+JWT"])
def test_access_token_typ_is_accepted_case_insensitively(es: TestIssuer, clock: FixedClock, typ: str) -> None:
    verifier = verifier_for(es, clock=clock, require_typ=True)
    assert verifier.verify(es.mint(headers={"typ": typ})).subject == "alice"


@pytest.mark.parametrize("claims", [{"iat": OMIT}, {"jti": OMIT}, {"jti": ""}])
def test_the_rfc_9068_profile_needs_iat_and_jti(es: TestIssuer, clock: FixedClock, claims: dict) -> None:
    # Review finding: with require_typ an at+jwt token without iat, nbf or jti was accepted.
    verifier = verifier_for(es, clock=clock, require_typ=True)
    with pytest.raises(TokenInvalid, match="iat and jti"):
        verifier.verify(es.mint(headers={"typ": "at+jwt"}, **claims))
    assert verifier_for(es, clock=clock).verify(es.mint(headers={"typ": "at+jwt"}, **claims)).subject == "alice"


def test_any_string_typ_is_accepted_when_typ_is_not_required(es: TestIssuer, verifier: JwtVerifier) -> None:
    assert verifier.verify(es.mint(headers={"typ": "JWT"})).subject == "alice"
    assert verifier.verify(es.mint(headers={"typ": OMIT})).subject == "alice"
    with pytest.raises(TokenInvalid):
        verifier.verify(es.mint(headers={"typ": ["JWT"]}))


def test_token_without_kid_uses_the_issuers_only_key(es: TestIssuer, verifier: JwtVerifier) -> None:
    assert verifier.verify(es.mint(headers={"kid": OMIT})).subject == "alice"


def test_token_without_kid_is_invalid_when_the_issuer_has_two_keys(tmp_path: Path, clock: FixedClock) -> None:
    first = TestIssuer(tmp_path, clock=clock)
    second = TestIssuer(tmp_path, clock=clock)
    first.jwks_path.write_text(json.dumps({"keys": [first.jwk, second.jwk]}), encoding="utf-8")
    verifier = verifier_for(first, clock=clock)
    with pytest.raises(TokenInvalid, match="kid"):
        verifier.verify(first.mint(headers={"kid": OMIT}))
    assert verifier.verify(second.mint()).subject == "alice"  # with its kid, the second key is found


@pytest.mark.parametrize("jwk_extra", [{"alg": "ES384"}, {"use": "enc"}, {"key_ops": ["sign"]}])
def test_key_whose_jwk_metadata_forbids_the_token_alg_is_not_used(
    tmp_path: Path, clock: FixedClock, jwk_extra: dict[str, Any]
) -> None:
    usable = TestIssuer(tmp_path, clock=clock)
    restricted = TestIssuer(tmp_path, clock=clock, jwk_extra=jwk_extra)
    # The file also holds a usable key, so the issuer passes its start-up check.
    restricted.jwks_path.write_text(json.dumps({"keys": [restricted.jwk, usable.jwk]}), encoding="utf-8")
    verifier = verifier_for(restricted, clock=clock)
    with pytest.raises(TokenInvalid, match="kid"):
        verifier.verify(restricted.mint())


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


# ------------------------------------------------------------------------------------------ failure handling


@pytest.mark.parametrize("error", [RecursionError, OverflowError, TypeError, ValueError, ZeroDivisionError,
                                   KeyError, MemoryError])
def test_unexpected_exception_inside_verification_becomes_token_invalid(
    es: TestIssuer, verifier: JwtVerifier, monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    def exploding_decode(*args: Any, **kwargs: Any) -> Any:
        raise error("boom")

    monkeypatch.setattr(jwt, "decode", exploding_decode)
    with pytest.raises(TokenInvalid) as caught:
        verifier.verify(es.mint())
    assert isinstance(caught.value.__cause__, error)


def test_error_messages_never_contain_the_token(es: TestIssuer, verifier: JwtVerifier) -> None:
    tokens = [
        es.mint(iss="https://evil.test"),
        es.mint(aud="other"),
        es.mint(exp=int(NOW) - 1000),
        es.mint(headers={"alg": "none"}),
        es.mint()[:-4] + "AAAA",
    ]
    for token in tokens:
        with pytest.raises(TokenError) as caught:
            verifier.verify(token)
        message = str(caught.value)
        assert all(segment not in message for segment in token.split("."))
        assert len(message) < 200


# ------------------------------------------------------------------------------------------ construction


def test_verifier_refuses_no_issuer(clock: FixedClock) -> None:
    with pytest.raises(ConfigError):
        JwtVerifier([], TokenSettings(), clock)


def test_verifier_refuses_the_same_issuer_twice(es: TestIssuer, clock: FixedClock) -> None:
    with pytest.raises(ConfigError, match="twice"):
        verifier_for(es, es, clock=clock)


def test_issuer_mixing_hmac_and_asymmetric_algorithms_is_refused(es: TestIssuer) -> None:
    settings = IssuerSettings(ISSUER, ("tenantgate",), ("ES256", "HS256"), jwks_file=str(es.jwks_path))
    with pytest.raises(ConfigError, match="CVE-2022-29217"):
        IssuerKeys(settings, JwksFile(es.jwks_path))


def test_issuer_whose_keys_fit_none_of_its_algorithms_is_refused(rsa_issuer: TestIssuer) -> None:
    # An HS256 issuer pointed at an RSA public key set: the key-confusion setup never starts.
    settings = IssuerSettings(ISSUER, ("tenantgate",), ("HS256",), jwks_file=str(rsa_issuer.jwks_path))
    with pytest.raises(ConfigError, match="no key"):
        IssuerKeys(settings, JwksFile(rsa_issuer.jwks_path))


def test_build_verifier_trusts_configured_issuers_and_the_dev_issuer(
    es: TestIssuer, tmp_path: Path, clock: FixedClock
) -> None:
    dev_settings = DevIssuerSettings(enabled=True, key_dir=str(tmp_path / "dev"))
    settings = Settings(tokens=TokenSettings(issuers=(es.settings,)), dev_issuer=dev_settings)
    verifier = build_verifier(settings, clock)
    assert verifier.verify(es.mint()).issuer == ISSUER
    dev_token = DevIssuer(dev_settings).mint(tenant="acme", subject="bob", now=NOW)
    claims = verifier.verify(dev_token)
    assert (claims.issuer, claims.subject) == ("https://dev.tenantgate.local", "bob")


def test_build_verifier_without_dev_issuer_does_not_create_dev_keys(
    es: TestIssuer, tmp_path: Path, clock: FixedClock
) -> None:
    dev_settings = DevIssuerSettings(enabled=False, key_dir=str(tmp_path / "dev"))
    settings = Settings(tokens=TokenSettings(issuers=(es.settings,)), dev_issuer=dev_settings)
    build_verifier(settings, clock)
    assert not (tmp_path / "dev").exists()


def test_build_verifier_does_not_fetch_jwks_urls_at_start(clock: FixedClock, tmp_path: Path) -> None:
    # Port 9 on loopback: nothing listens; a fetch here would fail, and must not even be tried.
    remote = IssuerSettings(ISSUER, ("tenantgate",), ("ES256",), jwks_url="http://127.0.0.1:9/jwks.json")
    state = ServerSettings(state_dir=str(tmp_path / "state"))
    verifier = build_verifier(Settings(server=state, tokens=TokenSettings(issuers=(remote,))), clock)
    assert verifier.issuers[0].source.peek() is None


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


# ------------------------------------------------------------------------------------------ tenant allow-list


def limited(issuer: TestIssuer, *tenants: str) -> IssuerKeys:
    return IssuerKeys(replace(issuer.settings, tenants=tenants), JwksFile(issuer.jwks_path))


def test_issuer_limited_to_some_tenants_cannot_assert_another(es: TestIssuer, clock: FixedClock) -> None:
    verifier = verifier_for(limited(es, "acme", "globex"), clock=clock)
    assert verifier.verify(es.mint(tenant="acme")).claims["tenant"] == "acme"
    assert verifier.verify(es.mint(tenant="globex")).claims["tenant"] == "globex"
    for tenant in ("initech", "ACME", "acme ", "acm", "acme\u200b", ""):
        with pytest.raises(IssuerUntrusted, match="not trusted for this tenant"):
            verifier.verify(es.mint(tenant=tenant))


def test_refused_tenant_is_not_cached(es: TestIssuer, clock: FixedClock) -> None:
    verifier = verifier_for(limited(es, "acme"), clock=clock)
    token = es.mint(tenant="initech")
    for _ in range(2):
        with pytest.raises(IssuerUntrusted):
            verifier.verify(token)


@pytest.mark.parametrize("tenant", [OMIT, None, 5, ["initech"], {"id": "initech"}])
def test_absent_or_non_string_tenant_claim_is_left_to_the_core(es: TestIssuer, clock: FixedClock,
                                                               tenant: Any) -> None:
    # The core denies these as tenant_claim_missing; the verifier must not turn them into another reason.
    verifier = verifier_for(limited(es, "acme"), clock=clock)
    claims = verifier.verify(es.mint(tenant=tenant))
    assert claims.claims.get("tenant") == (None if tenant is OMIT else tenant)


def test_allow_list_reads_the_configured_tenant_claim(es: TestIssuer, clock: FixedClock) -> None:
    verifier = verifier_for(limited(es, "acme"), clock=clock, tenant_claim="org")
    assert verifier.verify(es.mint(org="acme", tenant="initech")).claims["org"] == "acme"
    with pytest.raises(IssuerUntrusted):
        verifier.verify(es.mint(org="initech", tenant="acme"))


def test_issuer_without_a_tenant_list_may_assert_any_tenant(es: TestIssuer, verifier: JwtVerifier) -> None:
    assert es.settings.tenants == ()
    assert verifier.verify(es.mint(tenant="initech")).claims["tenant"] == "initech"


def test_each_issuer_speaks_only_for_its_own_tenants(tmp_path: Path, clock: FixedClock) -> None:
    one = TestIssuer(tmp_path, issuer="https://one.test", clock=clock)
    two = TestIssuer(tmp_path, issuer="https://two.test", clock=clock)
    verifier = verifier_for(limited(one, "acme"), limited(two, "globex"), clock=clock)
    assert verifier.verify(one.mint(tenant="acme")).issuer == "https://one.test"
    assert verifier.verify(two.mint(tenant="globex")).issuer == "https://two.test"
    with pytest.raises(IssuerUntrusted):
        verifier.verify(one.mint(tenant="globex"))
    with pytest.raises(IssuerUntrusted):
        verifier.verify(two.mint(tenant="acme"))


@pytest.mark.parametrize("tenant", ["", "bad tenant", "-acme", "ａcme", "x" * 129])
def test_issuer_keys_refuse_a_tenants_entry_that_is_not_a_tenant_id(es: TestIssuer, tenant: str) -> None:
    with pytest.raises(ConfigError, match="tenants"):
        limited(es, "acme", tenant)


def issuer_toml(tenants: str | None) -> str:
    line = f"tenants = {tenants}\n" if tenants is not None else ""
    return (
        "[[tokens.issuers]]\n"
        'issuer = "https://issuer.test"\n'
        'audiences = ["tenantgate"]\n'
        'algorithms = ["ES256"]\n'
        'jwks_file = "jwks.json"\n' + line
    )


def test_tenants_key_is_read_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "tenantgate.toml"
    path.write_text(issuer_toml('["acme", "globex"]'), encoding="utf-8")
    assert config.load(path, env={}).tokens.issuers[0].tenants == ("acme", "globex")
    path.write_text(issuer_toml(None), encoding="utf-8")
    assert config.load(path, env={}).tokens.issuers[0].tenants == ()


@pytest.mark.parametrize("value", ['["acme", "bad tenant"]', '[""]', '["acme\\u200b"]', '"acme"', "[1]"])
def test_invalid_tenants_key_is_a_config_error_naming_the_key(tmp_path: Path, value: str) -> None:
    path = tmp_path / "tenantgate.toml"
    path.write_text(issuer_toml(value), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"tokens\.issuers\[0\]\.tenants"):
        config.load(path, env={})


def test_dev_issuer_has_no_tenant_list(tmp_path: Path, clock: FixedClock) -> None:
    dev_settings = DevIssuerSettings(enabled=True, key_dir=str(tmp_path / "dev"))
    dev = DevIssuer(dev_settings)
    assert dev.issuer_settings().tenants == ()
    verifier = build_verifier(Settings(dev_issuer=dev_settings), clock)
    for tenant in ("acme", "initech"):
        assert verifier.verify(dev.mint(tenant=tenant, subject="bob", now=NOW)).claims["tenant"] == tenant


def test_limits_split_out_of_the_verifier_are_still_importable_from_it() -> None:
    # The pre-signature checks moved to tokenshape and the claim checks to claimchecks; code written against
    # the old location must keep working.
    from tenantgate.identity import claimchecks, tokenshape, verifier

    for module in (tokenshape, claimchecks):
        for name in [n for n in vars(module) if n.startswith("MAX_") or n == "max_payload_values"]:
            assert getattr(verifier, name) is getattr(module, name)
