"""Key sets: JWKS files (strict, start-up errors) and JWKS URLs (lazy, cached, rate-limited, no redirects,
re-fetched in the background once keys are held, bounded by a total deadline)."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from support.issuers import FixedClock, LoopbackServer, TestIssuer, public_jwk, verifier_for
from tenantgate.config import IssuerSettings
from tenantgate.errors import ConfigError, KeySourceUnavailable, TokenInvalid
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


# ------------------------------------------------------------------------------------------ JwksUrl


def url_source(server: LoopbackServer, clock: FixedClock, path: str = "/jwks.json") -> JwksUrl:
    return JwksUrl(server.url(path), cache_seconds=300, refresh_min_interval_seconds=30, timeout_seconds=2,
                   monotonic=clock.now)


def url_issuer(es: TestIssuer, source: JwksUrl) -> IssuerKeys:
    return IssuerKeys(IssuerSettings(ISSUER, ("tenantgate",), ("ES256",), jwks_url="http://x"), source)


def test_jwks_url_is_fetched_lazily_on_first_use(server: LoopbackServer, es: TestIssuer,
                                                 clock: FixedClock) -> None:
    server.serve("/jwks.json", es.jwks_document())
    source = url_source(server, clock)
    verifier = verifier_for(url_issuer(es, source), clock=clock)
    assert server.count() == 0
    assert verifier.verify(es.mint()).subject == "alice"
    assert verifier.verify(es.mint()).subject == "alice"
    assert server.count() == 1


def test_cached_keys_keep_working_while_the_jwks_url_is_down(server: LoopbackServer, es: TestIssuer,
                                                             clock: FixedClock) -> None:
    server.serve("/jwks.json", es.jwks_document())
    source = url_source(server, clock)
    verifier = verifier_for(url_issuer(es, source), clock=clock)
    verifier.verify(es.mint())
    server.stop()
    clock.advance(301)  # past cache_seconds: a background refetch is attempted and fails
    assert verifier.verify(es.mint()).subject == "alice"
    assert source.wait_for_fetch(timeout=10)
    assert source.last_error
    clock.advance(3600)
    assert verifier.verify(es.mint()).subject == "alice"


def test_unknown_kid_flood_causes_at_most_one_refetch_per_interval(server: LoopbackServer, es: TestIssuer,
                                                                   clock: FixedClock) -> None:
    server.serve("/jwks.json", es.jwks_document())
    source = url_source(server, clock)
    verifier = verifier_for(url_issuer(es, source), clock=clock)
    verifier.verify(es.mint())
    assert server.count() == 1
    for n in range(200):
        with pytest.raises(TokenInvalid, match="kid"):
            verifier.verify(es.mint(headers={"kid": f"unknown-{n}"}))
    assert source.wait_for_fetch(timeout=10)
    assert server.count() == 1  # within 30 s of the first fetch: no refetch at all
    clock.advance(30)
    for n in range(200):
        with pytest.raises(TokenInvalid):
            verifier.verify(es.mint(headers={"kid": f"again-{n}"}))
        if n == 100:
            assert source.wait_for_fetch(timeout=10)  # the refetch has landed: the rest are rate-limited
    assert source.wait_for_fetch(timeout=10)
    assert server.count() == 2


def test_concurrent_first_use_fetches_once_and_every_caller_succeeds(server: LoopbackServer, es: TestIssuer,
                                                                     clock: FixedClock) -> None:
    server.serve("/jwks.json", es.jwks_document())
    verifier = verifier_for(url_issuer(es, url_source(server, clock)), clock=clock, cache_size=1)
    tokens = [es.mint() for _ in range(8)]
    barrier = threading.Barrier(len(tokens))
    outcomes: list[object] = []

    def run(token: str) -> None:
        barrier.wait()
        try:
            outcomes.append(verifier.verify(token).subject)
        except Exception as err:
            outcomes.append(err)

    threads = [threading.Thread(target=run, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == ["alice"] * len(tokens)
    assert server.count() == 1


def test_unknown_kid_refresh_picks_up_a_rotated_key(server: LoopbackServer, tmp_path: Path, es: TestIssuer,
                                                    clock: FixedClock) -> None:
    rotated = TestIssuer(tmp_path, clock=clock)
    server.serve("/jwks.json", es.jwks_document())
    source = url_source(server, clock)
    verifier = verifier_for(url_issuer(es, source), clock=clock)
    verifier.verify(es.mint())
    server.serve("/jwks.json", es.jwks_document(rotated.jwk))
    clock.advance(31)
    token = rotated.mint()
    # Answered from the held keys while the refresh runs in the background (that it never waits: the slow-server
    # test below), unless the refresh thread, started just before, has already finished (seen under load).
    try:
        verifier.verify(token)
    except TokenInvalid as err:
        assert "kid" in str(err)
    assert source.wait_for_fetch(timeout=10)
    assert verifier.verify(token).subject == "alice"
    assert server.count() == 2


@pytest.mark.parametrize(
    "body",
    [b"<html>oops</html>", b'{"keys": "x"}', b"\xff\xfe\x00"],
    ids=["html", "ill-typed", "not-utf8"],  # a well-formed set without a usable key: test_key_revocation.py
)
def test_garbage_jwks_response_keeps_the_last_good_keys(server: LoopbackServer, es: TestIssuer,
                                                        clock: FixedClock, body: bytes) -> None:
    server.serve("/jwks.json", es.jwks_document())
    source = url_source(server, clock)
    verifier = verifier_for(url_issuer(es, source), clock=clock)
    verifier.verify(es.mint())
    server.serve("/jwks.json", body)
    clock.advance(301)
    assert verifier.verify(es.mint()).subject == "alice"
    assert source.wait_for_fetch(timeout=10)
    assert server.count() == 2
    assert source.last_error
    assert verifier.verify(es.mint()).subject == "alice"


def test_error_status_keeps_the_last_good_keys(server: LoopbackServer, es: TestIssuer, clock: FixedClock) -> None:
    server.serve("/jwks.json", es.jwks_document())
    source = url_source(server, clock)
    verifier = verifier_for(url_issuer(es, source), clock=clock)
    verifier.verify(es.mint())
    server.serve("/jwks.json", b"down", status=503)
    clock.advance(301)
    assert verifier.verify(es.mint()).subject == "alice"
    assert source.wait_for_fetch(timeout=10)
    assert "503" in source.last_error


def test_jwks_redirect_is_not_followed(server: LoopbackServer, es: TestIssuer, clock: FixedClock) -> None:
    server.serve("/elsewhere.json", es.jwks_document())
    server.serve("/jwks.json", b"", status=302, headers={"Location": server.url("/elsewhere.json")})
    source = url_source(server, clock)
    verifier = verifier_for(url_issuer(es, source), clock=clock)
    with pytest.raises(KeySourceUnavailable):
        verifier.verify(es.mint())
    assert server.count("/jwks.json") == 1
    assert server.count("/elsewhere.json") == 0
    assert "302" in source.last_error


def test_oversized_jwks_response_is_refused(server: LoopbackServer, es: TestIssuer, clock: FixedClock) -> None:
    document = json.loads(es.jwks_document())
    document["padding"] = "x" * MAX_JWKS_BYTES
    server.serve("/jwks.json", json.dumps(document).encode())
    source = url_source(server, clock)
    with pytest.raises(KeySourceUnavailable):
        source.current()
    assert "larger" in source.last_error


def test_jwks_url_that_never_answered_is_unavailable_and_retried_only_after_the_interval(
    server: LoopbackServer, es: TestIssuer, clock: FixedClock
) -> None:
    source = url_source(server, clock, "/missing.json")
    verifier = verifier_for(url_issuer(es, source), clock=clock)
    for _ in range(20):
        with pytest.raises(KeySourceUnavailable):
            verifier.verify(es.mint())
    assert server.count() == 1
    server.serve("/missing.json", es.jwks_document())
    clock.advance(30)
    assert verifier.verify(es.mint()).subject == "alice"
    assert server.count() == 2


def test_jwks_url_skips_doubtful_keys_instead_of_failing(server: LoopbackServer, tmp_path: Path,
                                                         es: TestIssuer, clock: FixedClock) -> None:
    weak = {"kty": "oct", "k": b64url_encode(b"short"), "kid": "weak"}
    leaked = {**es.jwk, "kid": "leaked", "d": "AAAA"}
    server.serve("/jwks.json", es.jwks_document(weak, leaked))
    source = url_source(server, clock)
    keys = source.current()
    assert [k.kid for k in keys.keys] == [es.kid]
    assert len(source.warnings) == 2


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://host/jwks", "http:///nohost", "jwks.json", "http://host:99999/jwks"]
)
def test_jwks_url_must_be_http_with_a_host(url: str) -> None:
    with pytest.raises(ConfigError):
        JwksUrl(url, 300, 30, 2)


def test_jwks_url_description_hides_credentials() -> None:
    source = JwksUrl("https://user:secret@idp.test/jwks?token=abc", 300, 30, 2)
    assert "secret" not in source.description and "abc" not in source.description
    assert "idp.test/jwks" in source.description


# ------------------------------------------------------------------------------------------ JwksUrl: never block


def test_unknown_kid_with_held_keys_never_waits_for_a_slow_jwks_server(
    server: LoopbackServer, tmp_path: Path, es: TestIssuer, clock: FixedClock
) -> None:
    rotated = TestIssuer(tmp_path, clock=clock)
    server.serve("/jwks.json", es.jwks_document())
    source = JwksUrl(server.url(), cache_seconds=300, refresh_min_interval_seconds=30, timeout_seconds=5,
                     monotonic=clock.now)
    verifier = verifier_for(url_issuer(es, source), clock=clock)
    verifier.verify(es.mint())  # nothing held yet: this first fetch is inline
    answer = threading.Event()  # the server answers the refresh only when the test says so
    server.serve("/jwks.json", es.jwks_document(rotated.jwk), hold=answer)
    clock.advance(31)  # the refresh interval has passed; the cache (300 s) has not expired
    token = rotated.mint()
    try:
        with pytest.raises(TokenInvalid, match="kid"):
            verifier.verify(token)
        # verify() returned while the server was still holding its answer: the fetch is pending, not
        # finished or timed out, so it did not run on this thread.
        assert source.last_error == ""
        assert server.answered("/jwks.json") == 1
        assert verifier.verify(es.mint()).subject == "alice"  # the held keys keep serving meanwhile
        clock.advance(31)  # another interval passes while the refresh is in flight: no second fetch
        for n in range(20):
            with pytest.raises(TokenInvalid):
                verifier.verify(es.mint(headers={"kid": f"unknown-{n}"}))
        assert not answer.is_set()
    finally:
        answer.set()
    assert source.wait_for_fetch(timeout=10)
    assert source.last_error == ""
    assert verifier.verify(token).subject == "alice"  # the refresh landed: the new kid is usable
    assert server.count() == 2


def test_expired_jwks_cache_is_refreshed_in_the_background_while_held_keys_serve(
    server: LoopbackServer, tmp_path: Path, es: TestIssuer, clock: FixedClock
) -> None:
    rotated = TestIssuer(tmp_path, clock=clock)
    server.serve("/jwks.json", es.jwks_document())
    source = JwksUrl(server.url(), cache_seconds=300, refresh_min_interval_seconds=30, timeout_seconds=5,
                     monotonic=clock.now)
    verifier = verifier_for(url_issuer(es, source), clock=clock)
    verifier.verify(es.mint())
    answer = threading.Event()
    server.serve("/jwks.json", rotated.jwks_document(), hold=answer)
    clock.advance(301)
    try:
        assert verifier.verify(es.mint()).subject == "alice"  # expired cache, but held keys answer at once
        assert source.last_error == "" and server.answered("/jwks.json") == 1
    finally:
        answer.set()
    assert source.wait_for_fetch(timeout=10)
    assert [k.kid for k in source.current().keys] == [rotated.kid]  # the new set replaced the old one
    assert verifier.verify(rotated.mint()).subject == "alice"


def test_background_fetch_thread_is_a_daemon(server: LoopbackServer, es: TestIssuer, clock: FixedClock) -> None:
    server.serve("/jwks.json", es.jwks_document())
    source = url_source(server, clock)
    source.current()
    answer = threading.Event()
    server.serve("/jwks.json", es.jwks_document(), hold=answer)
    clock.advance(301)
    try:
        source.current()
        fetchers = [t for t in threading.enumerate() if t.name == "tenantgate-jwks-fetch"]
        assert len(fetchers) == 1 and fetchers[0].daemon  # never keeps the process alive at exit
    finally:
        answer.set()
    assert source.wait_for_fetch(timeout=10)


# ------------------------------------------------------------------------------------------ JwksUrl: deadline


@pytest.mark.parametrize("trickle_headers", [False, True], ids=["body", "status-line-and-headers"])
def test_trickling_jwks_server_cannot_hold_a_fetch_past_its_timeout(
    server: LoopbackServer, es: TestIssuer, clock: FixedClock, trickle_headers: bool
) -> None:
    # One byte every 0.2 s never lets a 0.5 s per-read socket timeout expire; only a total deadline stops it.
    document = es.jwks_document()
    server.serve("/jwks.json", document, trickle_seconds=0.2, trickle_headers=trickle_headers)
    source = JwksUrl(server.url(), cache_seconds=300, refresh_min_interval_seconds=30, timeout_seconds=0.5,
                     monotonic=clock.now)
    with pytest.raises(KeySourceUnavailable):
        source.current()
    # Evidence from the server's side: the fetch gave up long before the server would have finished.
    assert server.trickled("/jwks.json") < len(document) // 4
    assert "took too long" in source.last_error


def test_trickling_jwks_server_keeps_the_last_good_keys(server: LoopbackServer, es: TestIssuer,
                                                        clock: FixedClock) -> None:
    server.serve("/jwks.json", es.jwks_document())
    source = JwksUrl(server.url(), cache_seconds=300, refresh_min_interval_seconds=30, timeout_seconds=0.5,
                     monotonic=clock.now)
    verifier = verifier_for(url_issuer(es, source), clock=clock)
    verifier.verify(es.mint())
    document = es.jwks_document()
    server.serve("/jwks.json", document, trickle_seconds=0.2)
    clock.advance(301)
    assert verifier.verify(es.mint()).subject == "alice"
    assert source.wait_for_fetch(timeout=10)
    assert "took too long" in source.last_error
    assert server.trickled("/jwks.json") < len(document) // 4
    assert verifier.verify(es.mint()).subject == "alice"


def test_jwks_response_cut_short_of_its_content_length_is_refused(server: LoopbackServer, es: TestIssuer,
                                                                  clock: FixedClock) -> None:
    # A complete, valid document, but the server announced more and hung up: a truncated answer.
    document = es.jwks_document()
    server.serve("/jwks.json", document, headers={"Content-Length": str(len(document) + 10)})
    source = url_source(server, clock)
    with pytest.raises(KeySourceUnavailable):
        source.current()
    assert "Content-Length" in source.last_error


def test_on_an_event_loop_a_first_fetch_never_waits_and_fails_closed_at_once(
    server: LoopbackServer, es: TestIssuer, clock: FixedClock
) -> None:
    # Review finding: a JWKS URL that accepts and never answers froze the gRPC event loop (shared by every
    # caller of every issuer) for the fetch timeout whenever a token of that issuer arrived with no keys held.
    answer = threading.Event()
    server.serve("/jwks.json", es.jwks_document(), hold=answer)
    source = JwksUrl(server.url(), cache_seconds=300, refresh_min_interval_seconds=30, timeout_seconds=30,
                     monotonic=clock.now)
    verifier = verifier_for(url_issuer(es, source), clock=clock)

    async def on_the_loop() -> str:
        try:
            return verifier.verify(es.mint()).subject
        except TokenInvalid as err:
            return f"denied: {err}"

    try:
        outcome = asyncio.run(on_the_loop())
        # Returned while the server still holds its answer: the fetch runs on a thread, not on the loop.
        assert outcome.startswith("denied") and not answer.is_set() and source.last_error == ""
        assert asyncio.run(on_the_loop()).startswith("denied")  # still pending: no second fetch, no wait
    finally:
        answer.set()
    assert source.wait_for_fetch(timeout=10) and source.last_error == ""
    assert asyncio.run(on_the_loop()) == "alice"  # the background fetch landed
    assert server.count() == 1
