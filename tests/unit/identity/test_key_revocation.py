"""Revoking a signing key: a key removed from its issuer's set stops verifying tokens, cached ones included,
at the first decision after the new set is held (JWKS URL re-fetched, JWKS file re-read), and a set that
withdraws every key is trusted with none (review findings: cached tokens outlived their key; a JWKS file
was read only at start; an emptied JWKS URL kept the old keys forever)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from support.issuers import FixedClock, LoopbackServer, TestIssuer, verifier_for
from support.jwksurl import url_source
from tenantgate.config import IssuerSettings
from tenantgate.errors import ConfigError, TokenInvalid
from tenantgate.identity import IssuerKeys, JwksFile, JwksUrl, JwtVerifier
from tenantgate.identity.encoding import b64url_encode

ISSUER = "https://issuer.test"


def url_verifier(server: LoopbackServer, clock: FixedClock) -> tuple[JwtVerifier, JwksUrl]:
    source = url_source(server, clock)
    settings = IssuerSettings(ISSUER, ("tenantgate",), ("ES256",), jwks_url="http://x")
    return verifier_for(IssuerKeys(settings, source), clock=clock), source


def file_verifier(path: Path, clock: FixedClock) -> tuple[JwtVerifier, JwksFile]:
    source = JwksFile(path)
    settings = IssuerSettings(ISSUER, ("tenantgate",), ("ES256",), jwks_file=str(path))
    return verifier_for(IssuerKeys(settings, source), clock=clock), source


def replace_file(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` in one rename (a new inode), as an operator or kubelet does."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(content)
    tmp.replace(path)


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name == "tenantgate.identity"]


UNUSABLE_SETS = [b'{"keys": []}', b'{"keys": [{"kty": "XYZ", "kid": "future"}]}',
                 json.dumps({"keys": [{"kty": "oct", "k": b64url_encode(b"short"), "kid": "weak"}]}).encode()]
UNUSABLE_IDS = ["empty", "only-unsupported", "only-weak"]


# ------------------------------------------------------------------------------------------ JWKS URL: the cache


def test_cached_token_is_refused_once_its_key_is_removed_from_the_jwks_url(
    server: LoopbackServer, tmp_path: Path, es: TestIssuer, clock: FixedClock
) -> None:
    replacement = TestIssuer(tmp_path, clock=clock)
    server.serve("/jwks.json", es.jwks_document())
    verifier, source = url_verifier(server, clock)
    stolen = es.mint(exp=clock.now() + 3000, sub="mallory")
    assert verifier.verify(stolen).subject == "mallory"
    server.serve("/jwks.json", replacement.jwks_document())  # the issuer removes the compromised key
    clock.advance(301)
    # Only the cached token arrives: its hit starts the due re-fetch (in the background) and is still
    # answered from the held keys; the first decision after the new set is held refuses it.
    assert verifier.verify(stolen).subject == "mallory"
    assert source.wait_for_fetch(timeout=10)
    assert [k.kid for k in source.current().keys] == [replacement.kid]
    with pytest.raises(TokenInvalid, match="kid"):
        verifier.verify(stolen)
    with pytest.raises(TokenInvalid):
        verifier.verify(stolen)  # the entry is gone, not merely skipped once
    assert verifier.verify(replacement.mint()).subject == "alice"


def test_cached_token_stays_cached_across_a_rotation_that_keeps_its_key(
    server: LoopbackServer, tmp_path: Path, es: TestIssuer, clock: FixedClock, decodes: list[int]
) -> None:
    upcoming = TestIssuer(tmp_path, clock=clock)
    server.serve("/jwks.json", es.jwks_document())
    verifier, source = url_verifier(server, clock)
    token = es.mint(exp=clock.now() + 3000)
    verifier.verify(token)
    server.serve("/jwks.json", es.jwks_document(upcoming.jwk))  # the next key is published beside it
    clock.advance(301)
    source.current()  # starts the due re-fetch
    assert source.wait_for_fetch(timeout=10) and len(source.current().keys) == 2
    for _ in range(3):
        assert verifier.verify(token).subject == "alice"
    assert len(decodes) == 1  # still the one signature check: the new set holds the key


def test_an_unchanged_refetch_keeps_the_held_key_set(server: LoopbackServer, es: TestIssuer,
                                                     clock: FixedClock) -> None:
    server.serve("/jwks.json", es.jwks_document())
    verifier, source = url_verifier(server, clock)
    verifier.verify(es.mint())
    held = source.current()
    clock.advance(301)
    source.current()
    assert source.wait_for_fetch(timeout=10) and server.count() == 2
    assert source.current() is held  # cache entries compare key sets by identity: nothing to re-check


# ------------------------------------------------------------------------------------------ JWKS URL: emptied


@pytest.mark.parametrize("body", UNUSABLE_SETS, ids=UNUSABLE_IDS)
def test_jwks_url_answering_a_set_without_a_usable_key_revokes_every_key(
    server: LoopbackServer, es: TestIssuer, clock: FixedClock, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    server.serve("/jwks.json", es.jwks_document())
    verifier, source = url_verifier(server, clock)
    cached = es.mint(exp=clock.now() + 3000)
    verifier.verify(cached)
    assert verifier.keys_ready()
    server.serve("/jwks.json", body)
    clock.advance(301)
    verifier.verify(es.mint())  # starts the due re-fetch
    assert source.wait_for_fetch(timeout=10)
    for token in (cached, es.mint()):
        with pytest.raises(TokenInvalid, match="no usable signing key"):
            verifier.verify(token)
    assert "no usable key" in source.last_error
    assert not verifier.keys_ready()  # as before the first fetch: not ready, and a fetch is retried
    assert len(errors_logged(caplog)) == 1
    clock.advance(30)
    verifier.keys_ready()
    assert source.wait_for_fetch(timeout=10) and server.count() == 3
    assert len(errors_logged(caplog)) == 1  # the same set again: logged once per change, not per fetch
    server.serve("/jwks.json", es.jwks_document())  # the issuer publishes a key again
    clock.advance(30)
    with pytest.raises(TokenInvalid, match="no usable signing key"):
        verifier.verify(es.mint())  # starts the fetch (rate-limited like any other)
    assert source.wait_for_fetch(timeout=10)
    assert verifier.verify(es.mint()).subject == "alice"
    assert verifier.keys_ready() and source.last_error == ""


def test_jwks_url_whose_first_answer_holds_no_usable_key_is_not_ready(server: LoopbackServer, es: TestIssuer,
                                                                      clock: FixedClock) -> None:
    server.serve("/jwks.json", b'{"keys": []}')
    verifier, source = url_verifier(server, clock)
    with pytest.raises(TokenInvalid, match="no usable signing key"):
        verifier.verify(es.mint())
    assert not verifier.keys_ready() and "no usable key" in source.last_error
    server.serve("/jwks.json", es.jwks_document())
    clock.advance(30)
    assert not verifier.keys_ready()  # starts the retry
    assert source.wait_for_fetch(timeout=10)
    assert verifier.keys_ready() and verifier.verify(es.mint()).subject == "alice"


@pytest.mark.parametrize("body,status", [(b"<html>oops</html>", 200), (b'{"keys": "x"}', 200),
                                         (b'{"keys": [], "keys": []}', 200), (b'{"keys": []}', 503)],
                         ids=["html", "ill-typed", "duplicate-member", "empty-set-on-an-error-status"])
def test_what_is_no_key_set_still_keeps_the_last_good_keys(server: LoopbackServer, es: TestIssuer,
                                                           clock: FixedClock, body: bytes, status: int) -> None:
    server.serve("/jwks.json", es.jwks_document())
    verifier, source = url_verifier(server, clock)
    verifier.verify(es.mint())
    server.serve("/jwks.json", body, status=status)
    clock.advance(301)
    verifier.verify(es.mint())
    assert source.wait_for_fetch(timeout=10) and server.count() == 2
    assert source.last_error and verifier.keys_ready()
    assert verifier.verify(es.mint()).subject == "alice"


# ------------------------------------------------------------------------------------------ JWKS file: re-read


def test_reread_of_a_changed_jwks_file_revokes_a_removed_key_and_its_cached_tokens(
    tmp_path: Path, es: TestIssuer, clock: FixedClock
) -> None:
    replacement = TestIssuer(tmp_path, clock=clock)
    verifier, source = file_verifier(es.jwks_path, clock)
    stolen = es.mint(exp=clock.now() + 3000, sub="mallory")
    verifier.verify(stolen)
    replace_file(es.jwks_path, replacement.jwks_document())
    assert verifier.verify(stolen).subject == "mallory"  # nothing re-read yet: requests never read files
    assert verifier.reread_keys() is True
    with pytest.raises(TokenInvalid, match="kid"):
        verifier.verify(stolen)
    with pytest.raises(TokenInvalid, match="kid"):
        verifier.verify(es.mint())
    assert verifier.verify(replacement.mint()).subject == "alice"
    assert source.last_error == ""


def test_unchanged_jwks_file_is_not_read_again(tmp_path: Path, es: TestIssuer, clock: FixedClock,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    verifier, source = file_verifier(es.jwks_path, clock)
    held = source.current()
    reads: list[int] = []
    from tenantgate.identity import jwksfile

    real_open = jwksfile.open_regular

    def counting_open(*args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(jwksfile, "open_regular", counting_open)
    assert verifier.reread_keys() is False and reads == []
    assert verifier.reread_keys(force=True) is False and reads == [1]  # SIGHUP reads it: same keys
    assert source.current() is held


def test_forced_reread_sees_a_change_the_fingerprint_missed(tmp_path: Path, es: TestIssuer,
                                                            clock: FixedClock) -> None:
    # Rewritten in place with the same size, and its mtime put back: only a forced read (SIGHUP) finds it.
    other = TestIssuer(tmp_path, clock=clock)
    document, replacement = es.jwks_document(), other.jwks_document()
    assert len(document) == len(replacement)
    verifier, source = file_verifier(es.jwks_path, clock)
    before = os.stat(es.jwks_path)
    with es.jwks_path.open("r+b") as handle:
        handle.write(replacement)
    os.utime(es.jwks_path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert verifier.reread_keys() is False
    assert verifier.reread_keys(force=True) is True
    assert [k.kid for k in source.current().keys] == [other.kid]


@pytest.mark.parametrize(
    "content,reason",
    [(b"not json", "not a valid JWKS"), (b'{"keys": "x"}', "'keys' list"), (b"\xff\xfe", "not UTF-8"),
     (None, "private key material"), (b"x" * (1_048_576 + 1), "larger than")],
    ids=["not-json", "ill-typed", "not-utf8", "private-key", "oversized"],
)
def test_jwks_file_that_became_invalid_keeps_the_last_good_keys_and_says_why(
    tmp_path: Path, es: TestIssuer, clock: FixedClock, caplog: pytest.LogCaptureFixture,
    content: bytes | None, reason: str
) -> None:
    verifier, source = file_verifier(es.jwks_path, clock)
    good = es.jwks_path.read_bytes()
    if content is None:
        content = json.dumps({"keys": [{**es.jwk, "d": "AAAA"}]}).encode()
    replace_file(es.jwks_path, content)
    assert verifier.reread_keys() is False
    assert verifier.verify(es.mint()).subject == "alice"
    assert reason in source.last_error and str(es.jwks_path) in source.last_error
    assert len(errors_logged(caplog)) == 1 and reason in errors_logged(caplog)[0]
    assert verifier.reread_keys() is False and len(errors_logged(caplog)) == 1  # unchanged: not logged again
    assert verifier.keys_ready()  # the last good keys still verify
    replace_file(es.jwks_path, good)
    verifier.reread_keys()
    assert source.last_error == "" and verifier.verify(es.mint()).subject == "alice"


def test_deleted_jwks_file_keeps_the_last_good_keys(tmp_path: Path, es: TestIssuer, clock: FixedClock,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    verifier, source = file_verifier(es.jwks_path, clock)
    es.jwks_path.unlink()
    assert verifier.reread_keys() is False
    assert "cannot read JWKS file" in source.last_error and len(errors_logged(caplog)) == 1
    assert verifier.reread_keys() is False and len(errors_logged(caplog)) == 1
    assert verifier.verify(es.mint()).subject == "alice"


@pytest.mark.parametrize("content", UNUSABLE_SETS[:2], ids=UNUSABLE_IDS[:2])
def test_jwks_file_emptied_revokes_every_key(tmp_path: Path, es: TestIssuer, clock: FixedClock,
                                             caplog: pytest.LogCaptureFixture, content: bytes) -> None:
    verifier, source = file_verifier(es.jwks_path, clock)
    cached = es.mint(exp=clock.now() + 3000)
    verifier.verify(cached)
    replace_file(es.jwks_path, content)
    assert verifier.reread_keys() is True
    for token in (cached, es.mint()):
        with pytest.raises(TokenInvalid, match="no usable signing key"):
            verifier.verify(token)
    assert not verifier.keys_ready() and "no usable key" in source.last_error
    assert len(errors_logged(caplog)) == 1


def test_jwks_file_of_only_weak_keys_is_refused_on_reread_as_at_start(tmp_path: Path, es: TestIssuer,
                                                                      clock: FixedClock) -> None:
    # A file is trusted configuration: a doubtful key is an error (the last good keys stay), not skipped.
    verifier, source = file_verifier(es.jwks_path, clock)
    replace_file(es.jwks_path, UNUSABLE_SETS[2])
    with pytest.raises(ConfigError, match="weak HMAC"):
        JwksFile(es.jwks_path)
    assert verifier.reread_keys() is False and "weak HMAC" in source.last_error
    assert verifier.verify(es.mint()).subject == "alice"


def test_emptied_jwks_file_at_start_is_still_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(b'{"keys": []}')
    with pytest.raises(ConfigError, match="no usable key"):
        JwksFile(path)


def test_jwks_urls_are_not_fetched_by_a_reread(server: LoopbackServer, es: TestIssuer, clock: FixedClock) -> None:
    server.serve("/jwks.json", es.jwks_document())
    verifier, _source = url_verifier(server, clock)
    verifier.verify(es.mint())
    assert verifier.reread_keys(force=True) is False
    assert server.count() == 1


def test_one_issuer_withdrawing_every_key_leaves_the_server_ready_for_the_others(tmp_path: Path, clock: FixedClock,
                                                                                  caplog: pytest.LogCaptureFixture
                                                                                  ) -> None:
    # Review finding: readiness needed every issuer to hold a usable key, so one customer's identity provider
    # publishing an empty JWKS took every replica out of service for all tenants.
    customer_a = TestIssuer(tmp_path, issuer="https://idp-a.test", clock=clock)
    customer_b = TestIssuer(tmp_path, issuer="https://idp-b.test", clock=clock)
    verifier = verifier_for(customer_a.issuer_keys(), customer_b.issuer_keys(), clock=clock)
    assert verifier.keys_ready()
    replace_file(customer_a.jwks_path, b'{"keys": []}')
    assert verifier.reread_keys() is True
    with pytest.raises(TokenInvalid, match="no usable signing key"):
        verifier.verify(customer_a.mint())
    assert verifier.verify(customer_b.mint()).issuer == "https://idp-b.test"
    assert verifier.keys_ready()  # customer B's tokens are still decided
    replace_file(customer_b.jwks_path, b'{"keys": []}')
    assert verifier.reread_keys() is True
    assert not verifier.keys_ready()  # no issuer can be verified any more: not ready
