"""One JWKS request over HTTP (tenantgate.identity.jwkshttp): no redirect followed, the body bounded in size
and the whole request by a total deadline that a trickling server cannot outlast, a body cut short of its
Content-Length refused."""

from __future__ import annotations

import json

import pytest

from support.issuers import FixedClock, LoopbackServer, TestIssuer, verifier_for
from support.jwksurl import url_issuer, url_source
from tenantgate.errors import KeySourceUnavailable
from tenantgate.identity.keys import MAX_JWKS_BYTES

# ------------------------------------------------------------------------------------------ JwksUrl: one request


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


# ------------------------------------------------------------------------------------------ JwksUrl: deadline


@pytest.mark.parametrize("trickle_headers", [False, True], ids=["body", "status-line-and-headers"])
def test_trickling_jwks_server_cannot_hold_a_fetch_past_its_timeout(
    server: LoopbackServer, es: TestIssuer, clock: FixedClock, trickle_headers: bool
) -> None:
    # One byte every 0.2 s never lets a 0.5 s per-read socket timeout expire; only a total deadline stops it.
    document = es.jwks_document()
    server.serve("/jwks.json", document, trickle_seconds=0.2, trickle_headers=trickle_headers)
    source = url_source(server, clock, timeout_seconds=0.5)
    with pytest.raises(KeySourceUnavailable):
        source.current()
    # Evidence from the server's side: the fetch gave up long before the server would have finished.
    assert server.trickled("/jwks.json") < len(document) // 4
    assert "took too long" in source.last_error


def test_trickling_jwks_server_keeps_the_last_good_keys(server: LoopbackServer, es: TestIssuer,
                                                        clock: FixedClock) -> None:
    server.serve("/jwks.json", es.jwks_document())
    source = url_source(server, clock, timeout_seconds=0.5)
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
