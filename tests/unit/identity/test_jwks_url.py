"""JWKS URLs as key sources (tenantgate.identity.jwksurl): fetched lazily, cached, rate-limited, re-fetched in
the background once keys are held, the last good keys kept when a fetch fails, and a caller (or an event
loop) never waiting on a slow server."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from support.issuers import FixedClock, LoopbackServer, TestIssuer, verifier_for
from support.jwksurl import url_issuer, url_source
from tenantgate.errors import ConfigError, KeySourceUnavailable, TokenInvalid
from tenantgate.identity import JwksUrl, JwtVerifier
from tenantgate.identity.encoding import b64url_encode

# ------------------------------------------------------------------------------------------ JwksUrl



def fetched(server: LoopbackServer, es: TestIssuer, clock: FixedClock,
            timeout_seconds: float = 2) -> tuple[JwksUrl, JwtVerifier]:
    """A verifier on a JWKS URL serving ``es``'s keys, with them fetched (one verification): (source, verifier)."""
    server.serve("/jwks.json", es.jwks_document())
    source = url_source(server, clock, timeout_seconds=timeout_seconds)
    verifier = verifier_for(url_issuer(es, source), clock=clock)
    verifier.verify(es.mint())
    return source, verifier

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
    source, verifier = fetched(server, es, clock)
    server.stop()
    clock.advance(301)  # past cache_seconds: a background refetch is attempted and fails
    assert verifier.verify(es.mint()).subject == "alice"
    assert source.wait_for_fetch(timeout=10)
    assert source.last_error
    clock.advance(3600)
    assert verifier.verify(es.mint()).subject == "alice"


def test_unknown_kid_flood_causes_at_most_one_refetch_per_interval(server: LoopbackServer, es: TestIssuer,
                                                                   clock: FixedClock) -> None:
    source, verifier = fetched(server, es, clock)
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
    source, verifier = fetched(server, es, clock)
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
    source, verifier = fetched(server, es, clock)
    server.serve("/jwks.json", body)
    clock.advance(301)
    assert verifier.verify(es.mint()).subject == "alice"
    assert source.wait_for_fetch(timeout=10)
    assert server.count() == 2
    assert source.last_error
    assert verifier.verify(es.mint()).subject == "alice"


def test_error_status_keeps_the_last_good_keys(server: LoopbackServer, es: TestIssuer, clock: FixedClock) -> None:
    source, verifier = fetched(server, es, clock)
    server.serve("/jwks.json", b"down", status=503)
    clock.advance(301)
    assert verifier.verify(es.mint()).subject == "alice"
    assert source.wait_for_fetch(timeout=10)
    assert "503" in source.last_error


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
    source, verifier = fetched(server, es, clock, timeout_seconds=5)  # nothing held yet: fetched inline
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
    source, verifier = fetched(server, es, clock, timeout_seconds=5)
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


def test_on_an_event_loop_a_first_fetch_never_waits_and_fails_closed_at_once(
    server: LoopbackServer, es: TestIssuer, clock: FixedClock
) -> None:
    # Review finding: a JWKS URL that accepts and never answers froze the gRPC event loop (shared by every
    # caller of every issuer) for the fetch timeout whenever a token of that issuer arrived with no keys held.
    answer = threading.Event()
    server.serve("/jwks.json", es.jwks_document(), hold=answer)
    source = url_source(server, clock, timeout_seconds=30)
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
