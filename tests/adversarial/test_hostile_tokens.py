"""Hostile tokens: every known JWT bypass class must end in a TokenError, never an allow or a crash.

Where it matters, the hostile token carries a *valid* signature from the trusted issuer's key, so the
test proves the specific check (duplicate names, encodings, headers...) rejects it, not the signature.
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
from hypothesis import given, settings
from hypothesis import strategies as st

from support.issuers import (
    NOW,
    OMIT,
    FixedClock,
    LoopbackServer,
    TestIssuer,
    json_with_literals,
    verifier_for,
)
from tenantgate.errors import (
    AudienceMismatch,
    IssuerUntrusted,
    TokenError,
    TokenExpired,
    TokenInvalid,
    TokenMissing,
)
from tenantgate.identity import IssuerKeys, JwksFile, JwtVerifier
from tenantgate.identity.encoding import b64url_encode

ISSUER = "https://issuer.test"


@pytest.fixture(scope="module")
def clock() -> FixedClock:
    return FixedClock(NOW)  # never advanced in this module


@pytest.fixture(scope="module")
def es(tmp_path_factory: pytest.TempPathFactory, clock: FixedClock) -> TestIssuer:
    return TestIssuer(tmp_path_factory.mktemp("es"), alg="ES256", clock=clock)


@pytest.fixture(scope="module")
def rs(tmp_path_factory: pytest.TempPathFactory, clock: FixedClock) -> TestIssuer:
    return TestIssuer(tmp_path_factory.mktemp("rs"), alg="RS256", issuer="https://rsa.test", clock=clock)


@pytest.fixture(scope="module")
def es2(tmp_path_factory: pytest.TempPathFactory, clock: FixedClock) -> TestIssuer:
    # A second trusted issuer with the same algorithm: its key must not speak for the first.
    return TestIssuer(tmp_path_factory.mktemp("es2"), alg="ES256", issuer="https://two.test", clock=clock)


@pytest.fixture(scope="module")
def attacker(tmp_path_factory: pytest.TempPathFactory, clock: FixedClock) -> TestIssuer:
    # Same issuer name and kid-less by default: only its key differs from the trusted one.
    return TestIssuer(tmp_path_factory.mktemp("attacker"), alg="ES256", issuer="https://evil.test", clock=clock)


@pytest.fixture(scope="module")
def verifier(es: TestIssuer, es2: TestIssuer, rs: TestIssuer, clock: FixedClock) -> JwtVerifier:
    return verifier_for(es, es2, rs, clock=clock, cache_size=0)


def rejects(verifier: JwtVerifier, token: str, error: type[TokenError] = TokenInvalid) -> None:
    with pytest.raises(error):
        verifier.verify(token)


def seg(data: bytes) -> str:
    return b64url_encode(data)


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


# ------------------------------------------------------------------------------------------ JSON


def test_duplicate_claim_names_are_invalid_even_when_validly_signed(verifier: JwtVerifier, es: TestIssuer) -> None:
    claims = es.default_claims()
    body = json.dumps(claims)[:-1] + ',"tenant":"A","tenant":"B"}'
    rejects(verifier, es.signed_raw(es.default_header(), body.encode()))


def test_duplicate_security_claims_are_invalid(verifier: JwtVerifier, es: TestIssuer) -> None:
    claims = es.default_claims()
    for name, value in (("iss", "https://evil.test"), ("exp", int(NOW) + 10**6), ("aud", "other")):
        body = json.dumps(claims)[:-1] + f',"{name}":{json.dumps(value)}}}'
        rejects(verifier, es.signed_raw(es.default_header(), body.encode()))


def test_duplicate_names_in_nested_claims_are_invalid(verifier: JwtVerifier, es: TestIssuer) -> None:
    body = json.dumps(es.default_claims())[:-1] + ',"act":{"sub":"agent","sub":"admin"}}'
    rejects(verifier, es.signed_raw(es.default_header(), body.encode()))


def test_duplicate_header_keys_are_invalid(verifier: JwtVerifier, es: TestIssuer) -> None:
    for header in (
        f'{{"alg":"none","alg":"ES256","typ":"at+jwt","kid":"{es.kid}"}}',
        f'{{"alg":"ES256","kid":"unknown","kid":"{es.kid}"}}',
    ):
        rejects(verifier, es.signed_raw(header.encode(), es.default_claims()))


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: b"\xef\xbb\xbf" + text.encode("utf-8"),
        lambda text: text.encode("utf-16"),
        lambda text: text.encode("utf-16-le"),
        lambda text: text.encode("utf-16-be"),
        lambda text: text.encode("utf-32"),
        lambda text: text.encode("utf-8")[:-1] + b"\xff}",
        lambda text: text.replace('"alice"', '"al\\ud800ice"').encode("utf-8"),
        lambda text: text.encode("utf-8").replace(b'"alice"', b'"al\xc0\xafice"'),
    ],
    ids=["bom", "utf16-bom", "utf16le", "utf16be", "utf32", "invalid-byte", "lone-surrogate", "overlong"],
)
def test_payload_not_in_plain_utf8_is_invalid(verifier: JwtVerifier, es: TestIssuer, encode: Any) -> None:
    payload = encode(json.dumps(es.default_claims()))
    rejects(verifier, es.signed_raw(es.default_header(), payload))


@pytest.mark.parametrize("prefix", [b"\xef\xbb\xbf", b""])
def test_header_not_in_plain_utf8_is_invalid(verifier: JwtVerifier, es: TestIssuer, prefix: bytes) -> None:
    text = json.dumps(es.default_header())
    header = prefix + text.encode("utf-8") if prefix else text.encode("utf-16")
    rejects(verifier, es.signed_raw(header, es.default_claims()))


@pytest.mark.parametrize("payload", [b"[]", b'"claims"', b"null", b"42", b"", b" ", b'{"a":1} {"b":2}'])
def test_payload_that_is_not_one_json_object_is_invalid(verifier: JwtVerifier, es: TestIssuer,
                                                        payload: bytes) -> None:
    if not payload:
        head = seg(json.dumps(es.default_header()).encode())
        rejects(verifier, f"{head}..{seg(es.sign(f'{head}.'.encode()))}")
        return
    rejects(verifier, es.signed_raw(es.default_header(), payload))


def test_deeply_nested_payload_is_invalid_without_recursion_errors(verifier: JwtVerifier, es: TestIssuer) -> None:
    for depth in (32, 33, 1000, 5000):
        # depth 32 below the root object is 33 levels: over the limit, like the deeper ones.
        nested = "[" * depth + "]" * depth
        body = json.dumps(es.default_claims())[:-1] + f',"deep":{nested}}}'
        rejects(verifier, es.signed_raw(es.default_header(), body.encode()))


def test_payload_nested_within_the_limit_is_accepted(verifier: JwtVerifier, es: TestIssuer) -> None:
    nested = "[" * 31 + "]" * 31
    body = json.dumps(es.default_claims())[:-1] + f',"deep":{nested}}}'
    assert verifier.verify(es.signed_raw(es.default_header(), body.encode())).subject == "alice"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "9" * 5000])
def test_non_standard_numbers_anywhere_in_the_payload_are_invalid(verifier: JwtVerifier, es: TestIssuer,
                                                                  literal: str) -> None:
    payload = json_with_literals(es.default_claims(), {"score": literal})
    rejects(verifier, es.signed_raw(es.default_header(), payload))


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("literal", ["NaN", "1e400", '"1700000300"', "[1700000300]", "null", "true", "{}"])
def test_hostile_time_claims_are_invalid(verifier: JwtVerifier, es: TestIssuer, claim: str, literal: str) -> None:
    payload = json_with_literals(es.default_claims(), {claim: literal})
    rejects(verifier, es.signed_raw(es.default_header(), payload))


# ------------------------------------------------------------------------------------------ compact form


def test_standard_base64_reencoded_token_is_invalid(verifier: JwtVerifier, es: TestIssuer) -> None:
    # Find a token whose segments contain '-' or '_' so standard base64 differs visibly ('+', '/', '=').
    for _ in range(50):
        token = es.mint(sub="alice?>>>~~~", tenant="acme\u00ff\u00fe")
        if any(c in token for c in "-_"):
            break
    parts = [base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in token.split(".")]
    assert verifier.verify(token).subject == "alice?>>>~~~"
    rejects(verifier, ".".join(base64.b64encode(p).decode() for p in parts))
    rejects(verifier, ".".join(base64.b64encode(p).decode().rstrip("=") for p in parts))
    rejects(verifier, ".".join(base64.urlsafe_b64encode(p).decode() for p in parts))  # padded


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t + "\n",
        lambda t: " " + t,
        lambda t: t.replace(".", ". ", 1),
        lambda t: t + ".",
        lambda t: t + ".e30",
        lambda t: ".".join(t.split(".")[:2]),
        lambda t: t.split(".", 1)[1],
        lambda t: "." + t,
        lambda t: t.replace(".", "..", 1),
        lambda t: t[:-1] + "\u0661",
        lambda t: t[:-1] + "=",
        lambda t: "Bearer " + t,
    ],
    ids=["newline", "leading-space", "inner-space", "trailing-dot", "four-segments", "two-segments",
         "no-header", "empty-header", "empty-payload", "arabic-digit", "padding", "bearer-prefix"],
)
def test_malformed_compact_serialization_is_invalid(verifier: JwtVerifier, es: TestIssuer, mangle: Any) -> None:
    rejects(verifier, mangle(es.mint()))


def test_non_canonical_base64url_is_invalid(verifier: JwtVerifier, es: TestIssuer) -> None:
    # Flip unused low bits of the last character: decodes to the same bytes, but is a different token.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for _ in range(20):
        token = es.mint()
        head, body, signature = token.split(".")
        if len(signature) % 4 != 0:
            break
    last = alphabet.index(signature[-1])
    twin = signature[:-1] + alphabet[last | 1] if last % 2 == 0 else signature[:-1] + alphabet[last & ~1]
    assert base64.urlsafe_b64decode(twin + "==") == base64.urlsafe_b64decode(signature + "==")
    rejects(verifier, f"{head}.{body}.{twin}")


def test_oversized_token_is_invalid(es: TestIssuer, clock: FixedClock) -> None:
    verifier = verifier_for(es, clock=clock, max_token_bytes=4096)
    rejects(verifier, es.mint(padding="x" * 4096))
    rejects(verifier, "a" * 10_000_000 + ".b.c")


def test_token_of_non_string_type_is_rejected_as_a_token_error(verifier: JwtVerifier, es: TestIssuer) -> None:
    for token in (es.mint().encode(), 42, ["a.b.c"], object()):
        with pytest.raises(TokenError):
            verifier.verify(token)  # type: ignore[arg-type]
    with pytest.raises(TokenMissing):
        verifier.verify(None)  # type: ignore[arg-type]


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


# ------------------------------------------------------------------------------------------ fuzz


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_mutated_tokens_only_ever_raise_token_errors(verifier: JwtVerifier, es: TestIssuer, data: Any) -> None:
    token = es.mint()
    position = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.text(min_size=0, max_size=3))
    mutated = token[:position] + replacement + token[position + 1:]
    if mutated == token:
        return
    try:
        verifier.verify(mutated)
    except TokenError:
        return
    pytest.fail("a mutated token verified")


@settings(max_examples=150, deadline=None)
@given(header=st.dictionaries(st.text(max_size=5), st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                              max_size=4),
       payload=st.binary(max_size=64))
def test_arbitrary_signed_segments_only_ever_raise_token_errors(verifier: JwtVerifier, es: TestIssuer,
                                                               header: dict[str, Any], payload: bytes) -> None:
    with pytest.raises(TokenError):
        verifier.verify(es.signed_raw({**header, "alg": "ES256", "kid": es.kid}, payload))


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
