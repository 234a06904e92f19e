"""Hostile tokens in how they are written: duplicate names, JSON that is not plain UTF-8 or not one object, deep
nesting, non-standard numbers, a mangled compact form or base64url, oversized or non-string tokens, and fuzzed
ones. Every one must end in a TokenError, never an allow or a crash.

Where it matters, the hostile token carries a *valid* signature from the trusted issuer's key, so the
test proves the specific check (duplicate names, encodings...) rejects it, not the signature.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.issuers import NOW, FixedClock, TestIssuer, json_with_literals, verifier_for
from support.tokens import rejects, seg
from tenantgate.errors import TokenError, TokenMissing
from tenantgate.identity import JwtVerifier

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
