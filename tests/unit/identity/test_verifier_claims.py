"""JwtVerifier's claim checks (tenantgate.identity.claimchecks): the times against the injected clock, issuer,
subject and audience, and the tenants an issuer may speak for."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from support.issuers import NOW, OMIT, FixedClock, TestIssuer, json_with_literals, verifier_for
from tenantgate import config
from tenantgate.config import DevIssuerSettings, IssuerSettings, Settings, TokenSettings
from tenantgate.errors import AudienceMismatch, ConfigError, IssuerUntrusted, TokenExpired, TokenInvalid
from tenantgate.identity import DevIssuer, IssuerKeys, JwksFile, JwtVerifier, build_verifier

ISSUER = "https://issuer.test"


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
