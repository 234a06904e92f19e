"""A JWKS URL's last good response, saved on disk: a process started while the URL is down verifies with it.

Review finding: a worker restarted during an IdP outage had no keys and denied about half of valid tokens
(the kernel gave it its share of connections) while the other worker kept health SERVING.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest

from support.issuers import FixedClock, LoopbackServer, TestIssuer, verifier_for
from tenantgate.config import IssuerSettings, ServerSettings, Settings, TokenSettings
from tenantgate.errors import TokenInvalid
from tenantgate.identity import IssuerKeys, JwksUrl, build_verifier
from tenantgate.identity.jwkssaved import SavedKeySet

ISSUER = "https://issuer.test"
DAY = 86_400.0


def _process(server: LoopbackServer, clock: FixedClock, directory: Path, max_age: float = DAY,
             wall: float | None = None) -> tuple[JwksUrl, object]:
    """One process's key source and verifier for the loopback URL, saving in ``directory``."""
    saved = SavedKeySet(directory, server.url(), max_age, **({"wall": lambda: wall} if wall is not None else {}))
    source = JwksUrl(server.url(), cache_seconds=300, refresh_min_interval_seconds=30, timeout_seconds=2,
                     monotonic=clock.now, saved=saved)
    issuer = IssuerKeys(IssuerSettings(ISSUER, ("tenantgate",), ("ES256",), jwks_url="http://x"), source)
    return source, verifier_for(issuer, clock=clock)


def test_a_process_started_while_the_url_is_down_verifies_with_the_saved_keys(
        server: LoopbackServer, es: TestIssuer, clock: FixedClock, tmp_path: Path) -> None:
    server.serve("/jwks.json", es.jwks_document())
    _first, running = _process(server, clock, tmp_path / "jwks")
    assert running.verify(es.mint()).subject == "alice"  # type: ignore[attr-defined]
    (saved,) = (tmp_path / "jwks").iterdir()
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600 and b'"keys"' in saved.read_bytes()
    server.serve("/jwks.json", b"", status=503)  # the IdP goes down; a new process starts
    source, restarted = _process(server, clock, tmp_path / "jwks")
    assert restarted.verify(es.mint()).subject == "alice"  # type: ignore[attr-defined]
    assert "using the key set saved" in source.last_error
    # Without the saved file, the new process would have denied the same token.
    _none, without = _process(server, clock, tmp_path / "elsewhere")
    with pytest.raises(TokenInvalid):
        without.verify(es.mint())  # type: ignore[attr-defined]


def test_the_url_replaces_the_saved_keys_as_soon_as_it_answers(
        server: LoopbackServer, es: TestIssuer, clock: FixedClock, tmp_path: Path) -> None:
    server.serve("/jwks.json", es.jwks_document())
    _process(server, clock, tmp_path / "jwks")[1].verify(es.mint())  # type: ignore[attr-defined]
    server.serve("/jwks.json", b"", status=503)
    source, verifier = _process(server, clock, tmp_path / "jwks")
    verifier.verify(es.mint())  # type: ignore[attr-defined]
    server.serve("/jwks.json", b'{"keys": []}')  # back, and the issuer withdrew every key
    clock.advance(31)
    source.refresh()
    assert source.wait_for_fetch(timeout=10)
    with pytest.raises(TokenInvalid, match="no usable signing key"):
        verifier.verify(es.mint())  # type: ignore[attr-defined]
    # The withdrawal is saved too: a process started during a later outage must not trust the withdrawn keys.
    server.serve("/jwks.json", b"", status=503)
    _later, restarted = _process(server, clock, tmp_path / "jwks")
    with pytest.raises(TokenInvalid):
        restarted.verify(es.mint())  # type: ignore[attr-defined]


@pytest.mark.parametrize("age", [DAY + 1, -120.0])
def test_a_saved_response_too_old_or_from_the_future_is_not_used(
        server: LoopbackServer, es: TestIssuer, clock: FixedClock, tmp_path: Path, age: float) -> None:
    server.serve("/jwks.json", es.jwks_document())
    _process(server, clock, tmp_path / "jwks")[1].verify(es.mint())  # type: ignore[attr-defined]
    server.serve("/jwks.json", b"", status=503)
    (saved,) = (tmp_path / "jwks").iterdir()
    _source, verifier = _process(server, clock, tmp_path / "jwks", wall=saved.stat().st_mtime + age)
    with pytest.raises(TokenInvalid):
        verifier.verify(es.mint())  # type: ignore[attr-defined]


@pytest.mark.parametrize("damage", ["garbage", "private key", "symlink", "directory", "fifo", "others may write it",
                                    "others may write the directory"])
def test_a_doubtful_saved_file_is_not_used_and_nothing_breaks(
        server: LoopbackServer, es: TestIssuer, clock: FixedClock, tmp_path: Path, damage: str) -> None:
    server.serve("/jwks.json", b"", status=503)
    directory = tmp_path / "jwks"
    directory.mkdir()
    path = SavedKeySet(directory, server.url(), DAY).path
    target = tmp_path / "elsewhere.json"
    target.write_bytes(es.jwks_document())
    if damage == "garbage":
        path.write_bytes(b"{not json")
    elif damage == "private key":
        path.write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}')
    elif damage == "symlink":
        os.symlink(target, path)  # never followed: the file could be anything the server may read
    elif damage == "fifo":
        os.mkfifo(path, 0o600)  # opened without waiting for a writer, then refused (review finding: start-up hung)
    elif damage == "others may write it":
        path.write_bytes(es.jwks_document())
        path.chmod(0o666)  # review finding: a key planted by another local user was trusted
    elif damage == "others may write the directory":
        path.write_bytes(es.jwks_document())
        directory.chmod(0o777)
    else:
        path.mkdir()
    if path.is_file() and damage not in ("others may write it",):
        path.chmod(0o600)
    _source, verifier = _process(server, clock, directory)
    with pytest.raises(TokenInvalid):
        verifier.verify(es.mint())  # type: ignore[attr-defined]


def test_saving_never_writes_through_a_link(server: LoopbackServer, es: TestIssuer, clock: FixedClock,
                                            tmp_path: Path) -> None:
    # Review finding: a fixed temporary name opened without O_EXCL was written through a hard link planted there
    # (the audit log, in the reproduction). Now a new file with a random name is renamed over the saved path.
    directory = tmp_path / "jwks"
    directory.mkdir(mode=0o700)
    saved = SavedKeySet(directory, server.url(), DAY)
    guessed = saved.path.with_name(f".{saved.path.name}.{os.getpid()}.new")  # the old, predictable name
    for link, victim, at in ((os.symlink, tmp_path / "symlinked", saved.path),
                             (os.link, tmp_path / "hardlinked", saved.path), (os.link, tmp_path / "guessed", guessed)):
        victim.write_text("keep")
        saved.path.unlink(missing_ok=True)
        link(victim, at)
        saved.save('{"keys": []}')
        assert victim.read_text() == "keep" and saved.path.is_file() and not saved.path.is_symlink()
        at.unlink(missing_ok=True)
    assert sorted(p.name for p in directory.iterdir()) == [saved.path.name]


def test_the_server_saves_in_its_state_directory(server: LoopbackServer, es: TestIssuer, clock: FixedClock,
                                                 tmp_path: Path) -> None:
    url = IssuerSettings(ISSUER, ("tenantgate",), ("ES256",), jwks_url=server.url())
    server.serve("/jwks.json", es.jwks_document())
    settings = Settings(server=ServerSettings(state_dir=str(tmp_path / "state")), tokens=TokenSettings(issuers=(url,)))
    assert build_verifier(settings, clock).verify(es.mint()).subject == "alice"
    assert [p.suffix for p in (tmp_path / "state" / "jwks").iterdir()] == [".json"]
    off = dataclasses.replace(settings, tokens=dataclasses.replace(settings.tokens, jwks_saved_max_age_seconds=0),
                              server=ServerSettings(state_dir=str(tmp_path / "off")))
    assert build_verifier(off, clock).verify(es.mint()).subject == "alice"
    assert not (tmp_path / "off").exists()  # 0: nothing saved


def test_every_answer_renews_the_saved_file_so_its_age_is_the_time_since_the_url_answered(
        server: LoopbackServer, es: TestIssuer, clock: FixedClock, tmp_path: Path) -> None:
    # Keys rarely change: saving only changed sets would leave a file older than the limit after a day of
    # routine re-fetches, and a restart during an outage then would find nothing to use.
    server.serve("/jwks.json", es.jwks_document())
    source, verifier = _process(server, clock, tmp_path / "jwks")
    verifier.verify(es.mint())  # type: ignore[attr-defined]
    (saved,) = (tmp_path / "jwks").iterdir()
    os.utime(saved, (1, 1))  # as if saved long ago
    clock.advance(301)  # the cache is due: the next use re-fetches the same keys
    verifier.verify(es.mint())  # type: ignore[attr-defined]
    assert source.wait_for_fetch(timeout=10)
    assert saved.stat().st_mtime > 1_000_000_000


def test_saved_keys_are_dropped_once_they_pass_the_age_limit_while_the_url_stays_down(
        server: LoopbackServer, es: TestIssuer, clock: FixedClock, tmp_path: Path) -> None:
    # Review finding: the limit was checked only when the file was read, so a process that started on saved
    # keys trusted them for as long as the URL stayed down (30 days in the reproduction).
    server.serve("/jwks.json", es.jwks_document())
    _process(server, clock, tmp_path / "jwks")[1].verify(es.mint())  # type: ignore[attr-defined]
    server.serve("/jwks.json", b"", status=503)
    (saved,) = (tmp_path / "jwks").iterdir()
    wall = [saved.stat().st_mtime + DAY - 60]  # a minute left
    saved_keys = SavedKeySet(tmp_path / "jwks", server.url(), DAY, wall=lambda: wall[0])
    source = JwksUrl(server.url(), cache_seconds=300, refresh_min_interval_seconds=30, timeout_seconds=2,
                     monotonic=clock.now, saved=saved_keys)
    verifier = verifier_for(IssuerKeys(IssuerSettings(ISSUER, ("tenantgate",), ("ES256",), jwks_url="http://x"),
                                       source), clock=clock)
    assert verifier.verify(es.mint()).subject == "alice"
    wall[0] += 120
    with pytest.raises(TokenInvalid):
        verifier.verify(es.mint())
    assert source.peek() is None


def test_only_public_keys_reach_the_disk(server: LoopbackServer, es: TestIssuer, clock: FixedClock,
                                         tmp_path: Path) -> None:
    # Review finding: the raw body was saved, with an HMAC issuer's secret and any private member in it.
    document = json.loads(es.jwks_document())
    secret = {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}
    private = dict(document["keys"][0], kid="leaked", d="cHJpdmF0ZQ")
    server.serve("/jwks.json", json.dumps({"keys": [*document["keys"], secret, private]}).encode())
    _process(server, clock, tmp_path / "jwks")[1].verify(es.mint())  # type: ignore[attr-defined]
    (saved,) = (tmp_path / "jwks").iterdir()
    assert json.loads(saved.read_text()) == {"keys": document["keys"]}
    assert stat.S_IMODE((tmp_path / "jwks").stat().st_mode) == 0o700


def test_issuers_sharing_a_url_save_whole_files(tmp_path: Path) -> None:
    # Review finding: one temporary name per process; concurrent saves of one URL wrote into the same file.
    import threading

    saved = SavedKeySet(tmp_path / "jwks", "https://idp.example/jwks", DAY)
    answers = [json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "x": str(n) * 40, "y": "y"}]}) for n in range(8)]
    for _round in range(60):
        threads = [threading.Thread(target=saved.save, args=(text,)) for text in answers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert saved.path.read_text() in answers
    assert [p.name for p in (tmp_path / "jwks").iterdir()] == [saved.path.name]  # no temporary left
