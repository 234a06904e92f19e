"""DevIssuer: key creation (once, private, race-safe), minting, and refusal when disabled or misused."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import jwt
import pytest

from support.issuers import NOW, FixedClock
from tenantgate.config import DevIssuerSettings, Settings, TokenSettings
from tenantgate.core.model import ClaimNames
from tenantgate.errors import ConfigError, TokenExpired
from tenantgate.identity import DevIssuer, IssuerKeys, JwksFile, JwtVerifier, build_verifier
from tenantgate.identity.keys import jwk_thumbprint


def dev_settings(tmp_path: Path, **overrides: object) -> DevIssuerSettings:
    values: dict[str, object] = {"enabled": True, "key_dir": str(tmp_path / "dev-issuer"), **overrides}
    return DevIssuerSettings(**values)  # type: ignore[arg-type]


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def verifier_for_dev(dev: DevIssuer, clock: FixedClock, **tokens: object) -> JwtVerifier:
    dev.ensure_keys()
    settings = dev.issuer_settings()
    return JwtVerifier([IssuerKeys(settings, JwksFile(settings.jwks_file))],
                       TokenSettings(**tokens), clock)  # type: ignore[arg-type]


def test_ensure_keys_creates_a_private_directory_key_and_public_jwks(tmp_path: Path) -> None:
    dev = DevIssuer(dev_settings(tmp_path))
    dev.ensure_keys()
    key_dir = tmp_path / "dev-issuer"
    assert mode_of(key_dir) == 0o700
    assert mode_of(key_dir / "private.pem") == 0o600
    assert (key_dir / "private.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    (jwk,) = json.loads((key_dir / "jwks.json").read_text())["keys"]
    assert jwk["kid"] == jwk_thumbprint(jwk) == dev.kid
    assert (jwk["alg"], jwk["use"], jwk["kty"], jwk["crv"]) == ("ES256", "sig", "EC", "P-256")
    assert "d" not in jwk
    assert sorted(p.name for p in key_dir.iterdir()) == ["jwks.json", "private.pem"]  # no temp files left


def test_ensure_keys_reuses_existing_keys(tmp_path: Path) -> None:
    DevIssuer(dev_settings(tmp_path)).ensure_keys()
    key_dir = tmp_path / "dev-issuer"
    pem, jwks = (key_dir / "private.pem").read_bytes(), (key_dir / "jwks.json").read_bytes()
    second = DevIssuer(dev_settings(tmp_path))
    second.ensure_keys()
    second.ensure_keys()
    assert (key_dir / "private.pem").read_bytes() == pem
    assert (key_dir / "jwks.json").read_bytes() == jwks


def test_ensure_keys_rewrites_a_jwks_that_does_not_match_the_key(tmp_path: Path) -> None:
    DevIssuer(dev_settings(tmp_path)).ensure_keys()
    jwks = tmp_path / "dev-issuer" / "jwks.json"
    good = jwks.read_bytes()
    jwks.write_text('{"keys": []}')
    DevIssuer(dev_settings(tmp_path)).ensure_keys()
    assert jwks.read_bytes() == good


def test_racing_ensure_keys_agree_on_one_key(tmp_path: Path) -> None:
    issuers = [DevIssuer(dev_settings(tmp_path)) for _ in range(8)]
    barrier = threading.Barrier(len(issuers))
    kids: list[str] = []
    errors: list[BaseException] = []

    def run(dev: DevIssuer) -> None:
        try:
            barrier.wait()
            kids.append(dev.kid)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=run, args=(dev,)) for dev in issuers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    (jwk,) = json.loads((tmp_path / "dev-issuer" / "jwks.json").read_text())["keys"]
    assert set(kids) == {jwk["kid"]}


@pytest.mark.parametrize("algorithm", ["ES256", "RS256", "EdDSA"])
def test_minted_token_round_trips_through_the_verifier(tmp_path: Path, algorithm: str) -> None:
    clock = FixedClock(NOW)
    dev = DevIssuer(dev_settings(tmp_path, algorithm=algorithm), clock)
    verifier = verifier_for_dev(dev, clock, require_typ=True)
    token = dev.mint(tenant="acme", subject="alice", roles=("reader",), intents=["read-invoice"],
                     actor="agent-7", ttl_seconds=600, extra_claims={"department": "finance"})
    claims = verifier.verify(token)
    assert (claims.issuer, claims.subject) == ("https://dev.tenantgate.local", "alice")
    # The verifier keeps only the claims decisions read; the rest is checked on the token itself.
    assert dict(claims.claims) == {"tenant": "acme", "roles": ["reader"], "intents": ["read-invoice"],
                                   "act": {"sub": "agent-7"}}
    minted = jwt.decode(token, options={"verify_signature": False})
    assert minted["department"] == "finance"
    assert minted["aud"] == "tenantgate"
    assert minted["iat"] == minted["nbf"] == int(NOW)
    assert claims.expires_at == NOW + 600
    assert claims.token_id == minted["jti"]
    header = jwt.get_unverified_header(token)
    assert header == {"alg": algorithm, "typ": "at+jwt", "kid": dev.kid}
    clock.advance(600 + 30)
    with pytest.raises(TokenExpired):
        verifier.verify(token)


def test_mint_omits_roles_and_intents_unless_given(tmp_path: Path) -> None:
    dev = DevIssuer(dev_settings(tmp_path))
    claims = jwt.decode(dev.mint(tenant="acme", subject="alice"), options={"verify_signature": False})
    assert "roles" not in claims and "intents" not in claims and "act" not in claims
    claims = jwt.decode(dev.mint(tenant="acme", subject="alice", intents=()), options={"verify_signature": False})
    assert claims["intents"] == []


def test_mint_uses_the_configured_claim_names(tmp_path: Path) -> None:
    dev = DevIssuer(dev_settings(tmp_path))
    names = ClaimNames(tenant="org", roles="groups", intents="purposes")
    token = dev.mint(tenant="acme", subject="alice", roles=["r"], intents=["i"], claim_names=names)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["org"], claims["groups"], claims["purposes"]) == ("acme", ["r"], ["i"])
    assert "tenant" not in claims


def test_mint_is_refused_when_the_dev_issuer_is_disabled(tmp_path: Path) -> None:
    dev = DevIssuer(dev_settings(tmp_path, enabled=False))
    with pytest.raises(ConfigError, match="disabled"):
        dev.mint(tenant="acme", subject="alice")


@pytest.mark.parametrize("ttl", [0, -1, 3601, True, 1.5])
def test_mint_refuses_a_ttl_outside_one_to_max(tmp_path: Path, ttl: object) -> None:
    dev = DevIssuer(dev_settings(tmp_path, max_ttl_seconds=3600))
    with pytest.raises(ConfigError, match="ttl"):
        dev.mint(tenant="acme", subject="alice", ttl_seconds=ttl)  # type: ignore[arg-type]


def test_mint_accepts_the_maximum_ttl(tmp_path: Path) -> None:
    dev = DevIssuer(dev_settings(tmp_path, max_ttl_seconds=3600))
    claims = jwt.decode(dev.mint(tenant="acme", subject="a", ttl_seconds=3600, now=NOW),
                        options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 3600


@pytest.mark.parametrize("claim", ["iss", "sub", "exp", "tenant", "roles", "act", "jti"])
def test_mint_refuses_extra_claims_that_override_its_own(tmp_path: Path, claim: str) -> None:
    dev = DevIssuer(dev_settings(tmp_path))
    with pytest.raises(ConfigError, match="override"):
        dev.mint(tenant="acme", subject="alice", extra_claims={claim: "x"})


@pytest.mark.parametrize(
    "kwargs",
    [{"tenant": ""}, {"subject": ""}, {"roles": "admin"}, {"intents": [""]}, {"actor": ""}],
    ids=["empty-tenant", "empty-subject", "roles-as-string", "empty-intent", "empty-actor"],
)
def test_mint_refuses_empty_or_ill_typed_arguments(tmp_path: Path, kwargs: dict[str, object]) -> None:
    dev = DevIssuer(dev_settings(tmp_path))
    arguments: dict[str, object] = {"tenant": "acme", "subject": "alice", **kwargs}
    with pytest.raises(ConfigError):
        dev.mint(**arguments)  # type: ignore[arg-type]


def test_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    DevIssuer(dev_settings(tmp_path)).ensure_keys()
    os.chmod(tmp_path / "dev-issuer" / "private.pem", 0o644)
    with pytest.raises(ConfigError, match="group or others"):
        DevIssuer(dev_settings(tmp_path)).ensure_keys()


def test_existing_key_for_another_algorithm_is_refused(tmp_path: Path) -> None:
    DevIssuer(dev_settings(tmp_path, algorithm="EdDSA")).ensure_keys()
    with pytest.raises(ConfigError, match="does not fit"):
        DevIssuer(dev_settings(tmp_path, algorithm="ES256")).ensure_keys()


def test_hmac_algorithm_is_refused_for_the_dev_issuer(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not supported"):
        DevIssuer(dev_settings(tmp_path, algorithm="HS256")).ensure_keys()


def test_issuer_settings_point_at_the_generated_jwks(tmp_path: Path) -> None:
    dev = DevIssuer(dev_settings(tmp_path, issuer="https://dev.test", audience="api"))
    settings = dev.issuer_settings()
    assert settings.issuer == "https://dev.test"
    assert settings.audiences == ("api",)
    assert settings.algorithms == ("ES256",)
    assert settings.jwks_file == str(tmp_path / "dev-issuer" / "jwks.json")


def test_build_verifier_with_only_the_dev_issuer_verifies_its_tokens(tmp_path: Path) -> None:
    clock = FixedClock(NOW)
    settings = Settings(dev_issuer=dev_settings(tmp_path))
    verifier = build_verifier(settings, clock)
    token = DevIssuer(settings.dev_issuer, clock).mint(tenant="acme", subject="alice")
    assert verifier.verify(token).claims["tenant"] == "acme"


@pytest.mark.parametrize(("field", "values", "says"), [
    ("roles", [f"r{n}" for n in range(257)], "roles holds 257 items; at most 256 are accepted"),
    ("intents", ["x" * 257], "intents holds an item longer than 256 characters"),
])
def test_mint_refuses_roles_or_intents_every_verifier_would_deny(tmp_path: Path, field: str, values: list[str],
                                                                 says: str) -> None:
    # Review finding: `token mint` printed a token with 257 roles, which every decision then denied.
    dev = DevIssuer(dev_settings(tmp_path))
    with pytest.raises(ConfigError, match=f"^{says}$"):
        dev.mint(tenant="acme", subject="alice", **{field: values})
    dev.mint(tenant="acme", subject="alice", **{field: values[:256] if len(values) > 1 else ["x" * 256]})
