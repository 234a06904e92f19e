"""Hostile tokens choosing their key: `alg` tricks, key confusion, key-choosing headers (jwk, jku, x5u, x5c, crit),
hostile `kid`s, forged ECDSA signatures, and an issuer, audience or tenant the key may not speak for. Every one
must end in a TokenError, never an allow or a crash.

Where it matters, the hostile token carries a *valid* signature from the trusted issuer's key, so the
test proves the specific check (headers, issuer, tenant list...) rejects it, not the signature.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from support.issuers import NOW, OMIT, FixedClock, LoopbackServer, TestIssuer, verifier_for
from support.tokens import rejects, seg
from tenantgate.errors import AudienceMismatch, IssuerUntrusted, TokenExpired, TokenInvalid
from tenantgate.identity import IssuerKeys, JwksFile, JwtVerifier

ISSUER = "https://issuer.test"


@pytest.fixture(scope="module")
def attacker(tmp_path_factory: pytest.TempPathFactory, clock: FixedClock) -> TestIssuer:
    # Same issuer name and kid-less by default: only its key differs from the trusted one.
    return TestIssuer(tmp_path_factory.mktemp("attacker"), alg="ES256", issuer="https://evil.test", clock=clock)


# ------------------------------------------------------------------------------------------ alg


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_in_any_casing_is_invalid(verifier: JwtVerifier, es: TestIssuer, alg: str) -> None:
    header = {**es.default_header(), "alg": alg}
    claims = es.default_claims()
    rejects(verifier, es.raw(header, claims, b""))  # the classic: empty signature
    rejects(verifier, es.raw(header, claims, b"x"))
    rejects(verifier, es.signed_raw(header, claims))


@pytest.mark.parametrize("alg", [OMIT, "", None, 256, ["ES256"], {"alg": "ES256"}, "ES256 ", "es256", "ES256K"])
def test_missing_empty_non_string_or_unknown_alg_is_invalid(verifier: JwtVerifier, es: TestIssuer,
                                                            alg: Any) -> None:
    rejects(verifier, es.mint(headers={"alg": alg}))


def test_alg_supported_but_not_configured_for_the_issuer_is_invalid(verifier: JwtVerifier, es: TestIssuer,
                                                                   rs: TestIssuer) -> None:
    rejects(verifier, rs.mint(iss=ISSUER))  # RS256 token claiming the ES256-only issuer
    rejects(verifier, es.mint(headers={"alg": "ES384"}))


# ------------------------------------------------------------------------------------------ key confusion


def rsa_public_encodings(rs: TestIssuer) -> dict[str, bytes]:
    public = rs.public_key
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    pkcs1 = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ssh = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    jwk_json = json.dumps(rs.jwk).encode()
    return {"pem": pem, "pkcs1": pkcs1, "der": der, "openssh": ssh, "jwk-json": jwk_json}


@pytest.mark.parametrize("encoding", ["pem", "pkcs1", "der", "openssh", "jwk-json"])
@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hs256_token_signed_with_rsa_public_key_is_invalid(verifier: JwtVerifier, rs: TestIssuer,
                                                           encoding: str, alg: str) -> None:
    # Two layers stop it: the issuer's algorithm list (RS256 only), and key typing (an RSA key never fits HS*).
    assert not any(key.fits(alg) for key in rs.issuer_keys().source.current().keys)
    secret = rsa_public_encodings(rs)[encoding]
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    for header in ({**rs.default_header(), "alg": alg}, {"alg": alg, "typ": "at+jwt"}):
        head, body = seg(json.dumps(header).encode()), seg(json.dumps(rs.default_claims()).encode())
        signature = hmac.new(secret, f"{head}.{body}".encode(), digest).digest()
        rejects(verifier, f"{head}.{body}.{seg(signature)}")


# ------------------------------------------------------------------------------------------ key-choosing headers


@pytest.fixture
def trap() -> Iterator[LoopbackServer]:
    with LoopbackServer() as server:
        yield server


def test_embedded_jwk_header_is_invalid(verifier: JwtVerifier, attacker: TestIssuer) -> None:
    header = {"alg": "ES256", "typ": "at+jwt", "jwk": attacker.jwk}
    rejects(verifier, attacker.signed_raw(header, attacker.default_claims() | {"iss": ISSUER}))
    rejects(verifier, attacker.signed_raw({**header, "kid": attacker.kid}, attacker.default_claims() | {"iss": ISSUER}))


@pytest.mark.parametrize("name", ["jku", "x5u"])
def test_jku_and_x5u_headers_are_invalid_and_never_fetched(verifier: JwtVerifier, attacker: TestIssuer,
                                                           es: TestIssuer, trap: LoopbackServer,
                                                           name: str) -> None:
    trap.serve("/keys", attacker.jwks_document())
    claims = attacker.default_claims() | {"iss": ISSUER}
    rejects(verifier, attacker.signed_raw({"alg": "ES256", name: trap.url("/keys")}, claims))
    rejects(verifier, attacker.signed_raw({"alg": "ES256", "kid": attacker.kid, name: trap.url("/keys")}, claims))
    # Even on a token validly signed by the trusted issuer, the header is refused.
    rejects(verifier, es.mint(headers={name: trap.url("/keys")}))
    assert trap.count() == 0


def test_x5c_header_with_an_attacker_certificate_is_invalid(verifier: JwtVerifier, attacker: TestIssuer,
                                                            es: TestIssuer) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer.test")])
    start = datetime.datetime(2023, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(attacker.public_key).serial_number(1)
        .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=3650))
        .sign(attacker.private_key, hashes.SHA256())
    )
    x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    rejects(verifier, attacker.signed_raw({"alg": "ES256", "x5c": x5c}, attacker.default_claims() | {"iss": ISSUER}))
    rejects(verifier, es.mint(headers={"x5c": x5c}))


@pytest.mark.parametrize("header", [{"crit": ["exp"]}, {"crit": []}, {"crit": ["b64"], "b64": False},
                                    {"b64": True}], ids=["crit", "empty-crit", "b64-false", "b64-true"])
def test_crit_and_b64_headers_are_invalid(verifier: JwtVerifier, es: TestIssuer, header: dict[str, Any]) -> None:
    rejects(verifier, es.mint(headers=header))


# ------------------------------------------------------------------------------------------ kid


@pytest.mark.parametrize(
    "kid",
    ["", "../../etc/passwd", "/dev/zero", "' OR '1'='1' --", "k\x00id", "x" * 257, "unknown-kid",
     123, None, [], {}, True],
    ids=["empty", "path", "dev-zero", "sql", "nul", "too-long", "unknown", "int", "null", "list", "object", "bool"],
)
def test_hostile_or_unknown_kid_is_invalid(verifier: JwtVerifier, es: TestIssuer, kid: Any) -> None:
    rejects(verifier, es.mint(headers={"kid": kid}))


def test_kid_of_the_trusted_issuer_on_an_attacker_signature_is_invalid(verifier: JwtVerifier, es: TestIssuer,
                                                                       attacker: TestIssuer) -> None:
    claims = es.default_claims()
    rejects(verifier, attacker.signed_raw(es.default_header(), claims))
    rejects(verifier, attacker.signed_raw({**es.default_header(), "kid": OMIT}, claims))


def test_trusted_issuer_claims_signed_by_another_issuers_key_are_invalid(verifier: JwtVerifier, es: TestIssuer,
                                                                        es2: TestIssuer, rs: TestIssuer) -> None:
    # es2 and rs are trusted too, but only for their own issuer names: their keys cannot speak for es.
    claims = es.default_claims()
    assert verifier.verify(es2.mint()).issuer == "https://two.test"
    with pytest.raises(TokenInvalid, match="kid"):
        verifier.verify(es2.signed_raw(es2.default_header(), claims))  # es2's kid is not in es's set
    with pytest.raises(TokenInvalid, match="signature"):
        verifier.verify(es2.signed_raw({**es2.default_header(), "kid": OMIT}, claims))
    with pytest.raises(TokenInvalid, match="signature"):
        verifier.verify(es2.signed_raw({**es2.default_header(), "kid": es.kid}, claims))
    rejects(verifier, rs.signed_raw(rs.default_header(), claims))
    rejects(verifier, rs.signed_raw({**rs.default_header(), "kid": es.kid, "alg": "RS256"}, claims))
    rejects(verifier, rs.signed_raw({"alg": "RS256"}, claims))


# ------------------------------------------------------------------------------------------ ECDSA


def test_es256_psychic_signature_raw_zeros_is_invalid(verifier: JwtVerifier, es: TestIssuer) -> None:
    rejects(verifier, es.raw(es.default_header(), es.default_claims(), b"\x00" * 64))


def test_es256_psychic_signature_der_zeros_is_invalid(verifier: JwtVerifier, es: TestIssuer) -> None:
    rejects(verifier, es.raw(es.default_header(), es.default_claims(), encode_dss_signature(0, 0)))


def test_es256_signature_with_r_and_s_equal_to_the_curve_order_is_invalid(verifier: JwtVerifier,
                                                                         es: TestIssuer) -> None:
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    rejects(verifier, es.raw(es.default_header(), es.default_claims(), n.to_bytes(32, "big") * 2))


def test_truncated_or_padded_signature_is_invalid(verifier: JwtVerifier, es: TestIssuer) -> None:
    head, body, signature = es.mint().split(".")
    raw = base64.urlsafe_b64decode(signature + "==")
    rejects(verifier, f"{head}.{body}.{seg(raw[:-1])}")
    padded = seg(raw + bytes(1))
    rejects(verifier, f"{head}.{body}.{padded}")


# ------------------------------------------------------------------------------------------ issuer / audience


@pytest.mark.parametrize(
    "iss",
    ["https://issuer.tes", "https://issuer.test.evil.test", "https://issuer.test/", "HTTPS://ISSUER.TEST",
     "https://Issuer.test", " https://issuer.test", "https://issuer.test\u0000", "https://evil.test#https://issuer.test",
     "https://issuer.test\u200b", "https://ıssuer.test"],
    ids=["prefix", "suffix-domain", "trailing-slash", "upper", "mixed-case", "space", "nul", "fragment",
         "zero-width", "dotless-i"],
)
def test_issuer_that_only_resembles_the_trusted_one_is_untrusted(verifier: JwtVerifier, es: TestIssuer,
                                                                 iss: str) -> None:
    rejects(verifier, es.mint(iss=iss), IssuerUntrusted)


def test_issuer_as_a_list_or_object_is_untrusted(verifier: JwtVerifier, es: TestIssuer) -> None:
    for iss in ([ISSUER], [ISSUER, "https://evil.test"], {"iss": ISSUER}):
        rejects(verifier, es.mint(iss=iss), IssuerUntrusted)


@pytest.mark.parametrize("aud", ["tenantgat", "tenantgate ", "TENANTGATE", ["tenantgatex"], [["tenantgate"]]])
def test_audience_that_only_resembles_the_configured_one_is_a_mismatch(verifier: JwtVerifier, es: TestIssuer,
                                                                      aud: Any) -> None:
    rejects(verifier, es.mint(aud=aud), AudienceMismatch)


def test_expired_hostile_token_still_never_verifies(verifier: JwtVerifier, es: TestIssuer) -> None:
    rejects(verifier, es.mint(exp=int(NOW) - 3600), TokenExpired)


# ------------------------------------------------------------------------------------------ tenant allow-list


@pytest.fixture(scope="module")
def acme_only(es: TestIssuer, es2: TestIssuer, clock: FixedClock) -> JwtVerifier:
    # es may speak only for acme; es2 (also trusted) has no list.
    limited = IssuerKeys(replace(es.settings, tenants=("acme",)), JwksFile(es.jwks_path))
    return verifier_for(limited, es2, clock=clock, cache_size=0)


@pytest.mark.parametrize(
    "tenant",
    ["globex", "Acme", "ACME", " acme", "acme\u0000", "acme\u200b", "аcme", "acme/../globex", "acme,globex"],
    ids=["other", "title-case", "upper", "space", "nul", "zero-width", "cyrillic-a", "path", "comma"],
)
def test_limited_issuer_cannot_assert_a_tenant_outside_its_list(acme_only: JwtVerifier, es: TestIssuer,
                                                                tenant: str) -> None:
    rejects(acme_only, es.mint(tenant=tenant), IssuerUntrusted)


def test_duplicate_tenant_claim_cannot_smuggle_a_second_tenant_past_the_list(acme_only: JwtVerifier,
                                                                              es: TestIssuer) -> None:
    for pair in ('"tenant":"acme","tenant":"globex"', '"tenant":"globex","tenant":"acme"'):
        claims = {name: value for name, value in es.default_claims().items() if name != "tenant"}
        body = json.dumps(claims)[:-1] + f",{pair}}}"
        rejects(acme_only, es.signed_raw(es.default_header(), body.encode()))


def test_unlimited_issuers_key_cannot_speak_for_the_limited_issuer(acme_only: JwtVerifier, es: TestIssuer,
                                                                  es2: TestIssuer) -> None:
    assert acme_only.verify(es2.mint(tenant="globex")).issuer == "https://two.test"
    claims = es.default_claims() | {"tenant": "globex"}
    rejects(acme_only, es2.signed_raw(es2.default_header(), claims))
    rejects(acme_only, es2.signed_raw({**es2.default_header(), "kid": es.kid}, claims))
