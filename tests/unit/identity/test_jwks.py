"""Key sets from files: JWKS files (strict, start-up errors), the strict JSON and base64url they are read
with, and the RFC 7638 thumbprint. JWKS URLs are in test_jwks_url.py (when a URL is fetched, what is kept)
and test_jwks_http.py (one request: no redirects, bounded in size and by a total deadline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from support.issuers import TestIssuer, public_jwk
from tenantgate.config import IssuerSettings
from tenantgate.errors import ConfigError
from tenantgate.identity import IssuerKeys, JwksFile, JwksUrl
from tenantgate.identity import jwks as jwks_module
from tenantgate.identity.encoding import b64url_decode, b64url_encode, parse_strict_json
from tenantgate.identity.keys import MAX_JWKS_BYTES, jwk_thumbprint

ISSUER = "https://issuer.test"


def write_jwks(path: Path, *keys: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"keys": list(keys)}), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ helpers


def test_jwk_thumbprint_matches_the_rfc_7638_example() -> None:
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjB"
        "ZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZ"
        "gnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIq"
        "bw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize(
    "text",
    ['{"a":1,"a":2}', '{"a":{"b":1,"b":1}}', '[{"x":1,"x":1}]', '{"a":NaN}', '{"a":Infinity}', '{"a":1e400}',
     "\ufeff{}", '{"a":"\\ud800"}', "[" * 33 + "]" * 33, "[" * 5000 + "]" * 5000],
    ids=["dup", "nested-dup", "dup-in-array", "nan", "infinity", "overflow", "bom", "lone-surrogate",
         "depth-33", "depth-5000"],
)
def test_strict_json_refuses_what_lenient_parsers_accept(text: str) -> None:
    with pytest.raises(ValueError):
        parse_strict_json(text)


def test_encoding_helpers_are_still_importable_from_jwks() -> None:
    # Split out of jwks.py; code written against the old location must keep working.
    assert jwks_module.parse_strict_json is parse_strict_json
    assert jwks_module.b64url_decode is b64url_decode
    assert jwks_module.b64url_encode is b64url_encode


def test_jwks_url_is_still_importable_from_jwks() -> None:
    # Split out of jwks.py into jwksurl.py (with one request in jwkshttp.py).
    from tenantgate.identity.jwksurl import JwksUrl as moved

    assert jwks_module.JwksUrl is moved is JwksUrl


def test_strict_json_accepts_nesting_up_to_the_limit() -> None:
    assert parse_strict_json("[" * 32 + "]" * 32) is not None
    assert parse_strict_json('{"a":"caf\\u00e9","b":[1,2.5,null,true]}') == {"a": "café", "b": [1, 2.5, None, True]}


# ------------------------------------------------------------------------------------------ JwksFile


def test_jwks_file_loads_public_keys(es: TestIssuer) -> None:
    keys = JwksFile(es.jwks_path).current()
    assert [k.kid for k in keys.keys] == [es.kid]
    assert keys.usable_for("ES256") == keys.keys
    assert keys.usable_for("ES384") == ()


def test_missing_jwks_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(ConfigError, match=r"nope\.json"):
        JwksFile(path)


@pytest.mark.parametrize(
    "content",
    [b"not json", b'{"keys": {}}', b"[]", b'{"keys": []}', b"\xff\xfe{}", b'{"keys": [], "keys": []}'],
    ids=["garbage", "keys-not-list", "not-object", "empty", "utf16", "duplicate-member"],
)
def test_unusable_jwks_file_is_a_config_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad-jwks.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=r"bad-jwks\.json"):
        JwksFile(path)


def _within(seconds: float, call: Any) -> Any:
    """``call()``'s result or exception, or an AssertionError when it is still running after ``seconds``."""
    import threading

    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as err:  # handed to the test
            outcome.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still waiting after {seconds} s"
    return outcome[0]


def test_a_fifo_as_jwks_file_is_refused_at_once_not_waited_on(tmp_path: Path, es: TestIssuer) -> None:
    # Hostile review: open() of a FIFO without a writer blocks, so a jwks_file naming one hung `serve` at
    # start-up for good, with no message; a poll or SIGHUP re-read of one hung the reload the same way.
    import os

    fifo = tmp_path / "fifo-jwks.json"
    os.mkfifo(fifo)
    err = _within(5, lambda: JwksFile(fifo))
    assert isinstance(err, ConfigError) and "fifo-jwks.json" in str(err) and "FIFO" in str(err), err
    link = tmp_path / "linked-jwks.json"  # a link (a mounted Kubernetes Secret) is still followed
    link.symlink_to(es.jwks_path)
    keys = JwksFile(link)
    link.unlink()
    os.mkfifo(link)
    assert _within(5, lambda: keys.reread(force=True)) is False
    assert keys.current().keys


def test_oversized_jwks_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b" " * (MAX_JWKS_BYTES + 1))
    with pytest.raises(ConfigError, match="larger"):
        JwksFile(path)


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_jwks_file_with_private_key_material_is_refused(tmp_path: Path, alg: str) -> None:
    issuer = TestIssuer(tmp_path, alg=alg)
    algorithms = {"RS256": "RSAAlgorithm", "ES256": "ECAlgorithm", "EdDSA": "OKPAlgorithm"}
    import jwt.algorithms

    private = getattr(jwt.algorithms, algorithms[alg]).to_jwk(issuer.private_key, as_dict=True)
    path = write_jwks(tmp_path / "private.json", {**private, "kid": "k1"})
    with pytest.raises(ConfigError, match="private key material") as caught:
        JwksFile(path)
    assert private["d"] not in str(caught.value)


def test_jwks_file_with_a_weak_hmac_secret_is_refused(tmp_path: Path) -> None:
    secret = b"s" * 31
    path = write_jwks(tmp_path / "weak.json", {"kty": "oct", "k": b64url_encode(secret), "kid": "h"})
    with pytest.raises(ConfigError, match="weak HMAC secret") as caught:
        JwksFile(path)
    assert b64url_encode(secret) not in str(caught.value)


def test_hmac_secret_shorter_than_the_hash_does_not_fit_the_longer_algorithm(tmp_path: Path) -> None:
    path = write_jwks(tmp_path / "hs.json", {"kty": "oct", "k": b64url_encode(b"s" * 32), "kid": "h"})
    keys = JwksFile(path).current()
    assert len(keys.usable_for("HS256")) == 1
    assert keys.usable_for("HS512") == ()
    settings = IssuerSettings(ISSUER, ("tenantgate",), ("HS512",), jwks_file=str(path))
    with pytest.raises(ConfigError, match="no key"):
        IssuerKeys(settings, JwksFile(path))


def test_hmac_key_repr_does_not_show_the_secret(tmp_path: Path) -> None:
    secret = b"\x01" * 40
    path = write_jwks(tmp_path / "hs.json", {"kty": "oct", "k": b64url_encode(secret), "kid": "h"})
    key = JwksFile(path).current().keys[0]
    assert repr(secret) not in repr(key) and b64url_encode(secret) not in repr(key)


def test_short_rsa_key_in_a_file_is_refused(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path = write_jwks(tmp_path / "rsa1024.json", {**public_jwk(weak), "kid": "old"})
    with pytest.raises(ConfigError, match="too short"):
        JwksFile(path)


def test_malformed_key_in_a_file_is_refused(tmp_path: Path, es: TestIssuer) -> None:
    path = write_jwks(tmp_path / "broken.json", {**es.jwk, "x": "AAAA"})
    with pytest.raises(ConfigError, match="malformed"):
        JwksFile(path)


def test_unsupported_key_types_are_skipped_with_a_warning(tmp_path: Path, es: TestIssuer) -> None:
    k1 = ec.generate_private_key(ec.SECP256K1())
    path = write_jwks(
        tmp_path / "mixed.json",
        {"kty": "XYZ", "kid": "future"},
        {**public_jwk(k1), "kid": "k1"},
        {"kty": "OKP", "crv": "X25519", "x": "AAAA", "kid": "dh"},
        es.jwk,
    )
    source = JwksFile(path)
    assert [k.kid for k in source.current().keys] == [es.kid]
    assert len(source.warnings) == 3
    assert all("skipped" in w for w in source.warnings)


def test_file_of_only_unsupported_keys_is_refused(tmp_path: Path) -> None:
    path = write_jwks(tmp_path / "alien.json", {"kty": "XYZ", "kid": "future"})
    with pytest.raises(ConfigError, match="no usable key"):
        JwksFile(path)
