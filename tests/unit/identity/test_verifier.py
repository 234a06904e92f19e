"""JwtVerifier: the contract of tenantgate.core.ports.TokenVerifier over PyJWT, with an injected clock: the
happy paths, the header and key selection (tokenshape), failure handling and construction. The claim checks
are in test_verifier_claims.py, the verified-token cache in test_verifier_cache.py."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed448

from support.issuers import NOW, OMIT, FixedClock, TestIssuer, verifier_for
from tenantgate.config import DevIssuerSettings, IssuerSettings, ServerSettings, Settings, TokenSettings
from tenantgate.errors import ConfigError, TokenError, TokenInvalid, TokenMissing
from tenantgate.identity import DevIssuer, IssuerKeys, JwksFile, JwtVerifier, build_verifier

ISSUER = "https://issuer.test"


@pytest.fixture(scope="module")
def rsa_issuer(tmp_path_factory: pytest.TempPathFactory) -> TestIssuer:
    # RSA key generation is the slow part of this file: one key for the module.
    return TestIssuer(tmp_path_factory.mktemp("rsa"), alg="RS256")


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


@pytest.mark.parametrize("token", ["", "   ", "\t\n"])
def test_empty_or_blank_token_is_missing(verifier: JwtVerifier, token: str) -> None:
    with pytest.raises(TokenMissing):
        verifier.verify(token)


def test_none_token_is_missing(verifier: JwtVerifier) -> None:
    with pytest.raises(TokenMissing):
        verifier.verify(None)  # type: ignore[arg-type]


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


def test_limits_split_out_of_the_verifier_are_still_importable_from_it() -> None:
    # The pre-signature checks moved to tokenshape and the claim checks to claimchecks; code written against
    # the old location must keep working.
    from tenantgate.identity import claimchecks, tokenshape, verifier

    for module in (tokenshape, claimchecks):
        for name in [n for n in vars(module) if n.startswith("MAX_") or n == "max_payload_values"]:
            assert getattr(verifier, name) is getattr(module, name)
