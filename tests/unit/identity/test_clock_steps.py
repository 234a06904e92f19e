"""A host clock stepped back (an NTP correction) changes neither how long JWKS keys are trusted nor whether a
cached token is accepted (review findings: JWKS cache ages were measured on the wall clock, so a key removed
from the JWKS stayed trusted for ``jwks_cache_seconds`` plus the step; a cache hit skipped the ``iat`` and
lifetime checks, so a token a fresh verification refused was accepted by a worker that had it cached)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.issuers import NOW, OMIT, FixedClock, LoopbackServer, TestIssuer, verifier_for
from support.waiting import eventually
from tenantgate.config import IssuerSettings, ServerSettings, Settings, TokenSettings
from tenantgate.errors import TokenError, TokenInvalid
from tenantgate.identity import IssuerKeys, JwksUrl, JwtVerifier, build_verifier

ISSUER = "https://issuer.test"
HOUR = 3600.0


def url_settings(server: LoopbackServer) -> IssuerSettings:
    return IssuerSettings(ISSUER, ("tenantgate",), ("ES256",), jwks_url=server.url())


def source_of(verifier: JwtVerifier) -> JwksUrl:
    source = verifier.issuers[0].source
    assert isinstance(source, JwksUrl)
    return source


def refused(verifier: JwtVerifier, token: str) -> bool:
    return outcome(verifier, token) != "alice"


def outcome(verifier: JwtVerifier, token: str) -> str:
    """The subject verified, or the refusal's type and message."""
    try:
        return verifier.verify(token).subject
    except TokenError as err:
        return f"{type(err).__name__}: {err}"


# ------------------------------------------------------------------------------------------ JWKS URL ages


def test_removed_key_is_refused_after_cache_seconds_though_the_wall_clock_stepped_back_an_hour(
    server: LoopbackServer, tmp_path: Path, es: TestIssuer, clock: FixedClock
) -> None:
    # The reviewer's reproduction: cache 300 s, fetch at T, wall clock back 1 h, key removed. Elapsed time is
    # the injected monotonic source (``ticks``); the wall clock (``clock``) is only for token claims.
    ticks = FixedClock(0.0)
    source = JwksUrl(server.url(), cache_seconds=300, refresh_min_interval_seconds=30, timeout_seconds=2,
                     monotonic=ticks.now)
    verifier = verifier_for(IssuerKeys(url_settings(server), source), clock=clock)
    server.serve("/jwks.json", es.jwks_document())
    assert verifier.verify(es.mint()).subject == "alice"
    clock.advance(-HOUR)
    server.serve("/jwks.json", TestIssuer(tmp_path, clock=clock).jwks_document())  # es's key is removed
    ticks.advance(301)  # five minutes pass; the wall clock now reads 55 minutes before the first fetch
    assert verifier.verify(es.mint()).subject == "alice"  # starts the due re-fetch; held keys answer meanwhile
    assert source.wait_for_fetch(timeout=10)
    with pytest.raises(TokenInvalid, match="kid"):
        verifier.verify(es.mint())
    assert server.count() == 2


def test_built_verifier_measures_jwks_ages_on_the_monotonic_clock_not_the_wall_clock(
    server: LoopbackServer, tmp_path: Path, es: TestIssuer, clock: FixedClock
) -> None:
    # The production wiring (build_verifier -> JwksUrl's default time.monotonic): a wall clock held an hour
    # back must not hold back the re-fetch due after jwks_cache_seconds (1 s here, real time).
    tokens = TokenSettings(jwks_cache_seconds=1, jwks_refresh_min_interval_seconds=0,
                           issuers=(url_settings(server),))
    verifier = build_verifier(Settings(server=ServerSettings(state_dir=str(tmp_path / "state")), tokens=tokens), clock)
    server.serve("/jwks.json", es.jwks_document())
    assert verifier.verify(es.mint()).subject == "alice"
    clock.advance(-HOUR)
    server.serve("/jwks.json", TestIssuer(tmp_path, clock=clock).jwks_document())
    source = source_of(verifier)

    def removed_key_refused() -> bool:
        outcome = refused(verifier, es.mint())  # a due re-fetch starts here, in the background
        assert source.wait_for_fetch(timeout=10)
        return outcome

    eventually(removed_key_refused, "the removed key is refused", attempts=100, interval=0.05)
    assert server.count() >= 2


def test_refetch_interval_holds_while_the_wall_clock_is_behind(server: LoopbackServer, es: TestIssuer,
                                                               clock: FixedClock, tmp_path: Path) -> None:
    # The same mistake in the cool-down: with wall-clock ages, a step back made the age negative, which let a
    # fetch through inside refresh_min_interval_seconds of the last one (once per step back).
    tokens = TokenSettings(issuers=(url_settings(server),))  # cache 300 s, at most one re-fetch per 30 s
    verifier = build_verifier(Settings(server=ServerSettings(state_dir=str(tmp_path / "state")), tokens=tokens), clock)
    server.serve("/jwks.json", es.jwks_document())
    assert verifier.verify(es.mint()).subject == "alice"
    source = source_of(verifier)
    clock.advance(-HOUR)
    for n in range(20):
        with pytest.raises(TokenInvalid, match="kid"):
            verifier.verify(es.mint(headers={"kid": f"unknown-{n}"}))
        assert source.wait_for_fetch(timeout=10)  # let any fetch land, so the next one could start
    assert server.count() == 1


# ------------------------------------------------------------------------------------------ cached tokens


@pytest.mark.parametrize(
    "claims,refusal",
    [({"nbf": OMIT, "iat": int(NOW), "exp": int(NOW) + 300}, "issued in the future"),
     ({"nbf": OMIT, "iat": OMIT, "exp": int(NOW) + 3000}, "lifetime exceeds")],
    ids=["iat", "lifetime-from-now"],
)
def test_cached_token_is_refused_after_a_clock_step_back_as_a_fresh_verification_refuses_it(
    es: TestIssuer, clock: FixedClock, decodes: list[int], claims: dict[str, object], refusal: str
) -> None:
    cached = verifier_for(es, clock=clock, leeway_seconds=30, max_lifetime_seconds=HOUR)
    fresh = verifier_for(es, clock=clock, leeway_seconds=30, max_lifetime_seconds=HOUR, cache_size=0)
    token = es.mint(claims)
    assert cached.verify(token).subject == "alice"
    clock.advance(-HOUR)
    with pytest.raises(TokenInvalid, match=refusal):
        fresh.verify(token)
    with pytest.raises(TokenInvalid, match=refusal):
        cached.verify(token)  # the same refusal, whatever the cache holds
    clock.advance(HOUR)
    assert cached.verify(token).subject == "alice"
    assert len(decodes) == 1  # the entry outlived the refusal (the fresh one refused before the signature)


@pytest.mark.parametrize(
    "claims,offsets",
    [
        # Lifetime from now (no iat): at most 3600 s, so accepted from NOW - 600; expired at exp + 30.
        ({"nbf": OMIT, "iat": OMIT, "exp": int(NOW) + 3000}, (-600.0, -600.5, -HOUR, 3029.5, 3030.0, 3029.0)),
        # iat NOW + 20 and nbf NOW, 30 s leeway: accepted from NOW - 10 (iat), refused before NOW - 30 (nbf) too.
        ({"nbf": int(NOW), "iat": int(NOW) + 20, "exp": int(NOW) + 300}, (-10.0, -10.5, -30.0, -30.5, 329.5, 330.0)),
    ],
    ids=["lifetime-from-now", "nbf-and-iat"],
)
def test_cache_hit_answers_as_a_fresh_verification_at_every_edge_of_the_window(
    es: TestIssuer, clock: FixedClock, claims: dict[str, object], offsets: tuple[float, ...]
) -> None:
    settings = {"leeway_seconds": 30, "max_lifetime_seconds": HOUR}
    cached = verifier_for(es, clock=clock, **settings)
    fresh = verifier_for(es, clock=clock, cache_size=0, **settings)
    token = es.mint(claims)
    assert outcome(cached, token) == "alice"
    for offset in (*offsets, 0.0):  # the wall clock stepped to each instant around an edge, then back
        clock.t = NOW + offset
        assert outcome(cached, token) == outcome(fresh, token), f"at NOW + {offset} s"
