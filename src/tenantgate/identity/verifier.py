"""``JwtVerifier``: the PyJWT adapter that implements ``tenantgate.core.ports.TokenVerifier``.

PyJWT checks the signature (and, as a second opinion, issuer and audience); everything PyJWT is lenient
about is checked here first, in this order: size and compact shape, header, payload, issuer, algorithm,
subject, times (with the injected clock), key selection, then ``jwt.decode``; after it the audience again
and the issuer's tenant allow-list. See ``JwtVerifier.verify``.

The checks of the raw token before its signature (compact shape, header, payload JSON) live in ``tokenshape``,
those of its claims (subject, times, audience, tenants) in ``claimchecks``, and the verified-token cache with
its hit checks in ``tokencache``; this module selects the key, has PyJWT check the signature and runs the steps
in order.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jwt

from tenantgate.config import Settings, TokenSettings
from tenantgate.core.model import VerifiedClaims
from tenantgate.core.ports import Clock
from tenantgate.errors import (
    AudienceMismatch,
    ConfigError,
    IssuerUntrusted,
    TokenError,
    TokenInvalid,
    TokenMissing,
)

# Re-exported: these limits lived here before the pre-signature checks (``tokenshape``) and the claim checks
# (``claimchecks``) were split out, and callers may import them from here.
from tenantgate.identity.claimchecks import MAX_JTI_CHARS as MAX_JTI_CHARS
from tenantgate.identity.claimchecks import MAX_SUBJECT_CHARS as MAX_SUBJECT_CHARS
from tenantgate.identity.claimchecks import MAX_TIME_VALUE as MAX_TIME_VALUE
from tenantgate.identity.claimchecks import (
    check_audience,
    check_tenant_allowed,
    check_times,
    subject_of,
    token_id_of,
)
from tenantgate.identity.devissuer import DevIssuer
from tenantgate.identity.jwks import IssuerKeys
from tenantgate.identity.keptclaims import kept_claims
from tenantgate.identity.keys import KeySet, VerificationKey
from tenantgate.identity.tokencache import CACHE_MAX_BYTES, CachedToken, TokenCache, entry_size
from tenantgate.identity.tokenshape import MAX_HEADER_JSON_VALUES as MAX_HEADER_JSON_VALUES
from tenantgate.identity.tokenshape import MAX_KID_CHARS as MAX_KID_CHARS
from tenantgate.identity.tokenshape import MAX_PAYLOAD_JSON_VALUES as MAX_PAYLOAD_JSON_VALUES
from tenantgate.identity.tokenshape import check_header, decode_json_object, decode_segment, split_compact_jws
from tenantgate.identity.tokenshape import max_payload_values as max_payload_values

log = logging.getLogger("tenantgate.identity")


class JwtVerifier:
    """Verifies compact JWS access tokens against a fixed set of trusted issuers.

    ``verify`` returns ``VerifiedClaims`` or raises only ``TokenError`` subclasses:

    * ``TokenMissing``: empty or whitespace-only token (or ``None``).
    * ``IssuerUntrusted``: ``iss`` missing, not a string, or not exactly a configured issuer; or the issuer
      has a tenant allow-list (``[[tokens.issuers]] tenants = ["acme", ...]``) and the token's tenant claim
      (``tokens.tenant_claim``) is a string not in it. An empty or absent list lets the issuer assert any
      tenant. A tenant claim that is absent or not a string is left to the core, which denies it as
      ``tenant_claim_missing``.
    * ``TokenExpired``: the injected clock reached ``exp + leeway``. A token is valid iff
      ``now < exp + leeway`` (so ``exp == now`` with zero leeway is expired).
    * ``AudienceMismatch``: ``aud`` missing, empty, ill-typed (neither a string nor a list of strings), or
      naming none of the issuer's audiences.
    * ``TokenInvalid``: everything else, including an unavailable key source and any unexpected exception.

    Security defaults: exact issuer match; the token's ``alg`` must be in that issuer's list and fit the
    key's type; keys come only from the issuer's key set (``kid`` is an opaque lookup key, ``jwk``/``jku``/
    ``x5u``/``x5c``/``crit``/``b64`` headers are refused); duplicate JSON member names, non-UTF-8 text,
    non-canonical base64url, deep nesting and non-finite numbers are refused; ``exp`` is required and the
    lifetime is bounded. Messages never contain the token or key material.

    ``VerifiedClaims.token_id`` is the ``jti`` when it is a usable string, else ``"sha256:"`` and 16 hex digits
    of the SHA-256 of the signing input (``header.payload``): a re-encoded signature (an ECDSA ``(r, n - s)``
    twin) names the same token.

    ``VerifiedClaims.claims`` holds only the claims decisions read, whatever else the token carries (see
    ``kept_claims``): the configured tenant, roles and intents claims, ``act.sub`` and ``cnf.x5t#S256``.
    So a verified token costs memory for what is decided on, not for what was sent.

    Successful verifications are cached (LRU, ``settings.cache_size`` entries and ``cache_max_bytes`` bytes
    of kept claims and bookkeeping, see ``TokenCache``) under the SHA-256 of the whole token, signature
    included, so a forged signature never reaches a good token's entry; a hit applies the time checks of a
    fresh verification again (``exp``, ``nbf``, ``iat`` and the lifetime, by the same ``check_window``, so a
    clock stepped back refuses a cached token exactly as it would a fresh one), checks that the key which
    verified the token is still in its issuer's key set, and returns the very object the first verification
    returned. Failures are never cached. Revocation: once a key source holds a new key set (a JWKS URL
    re-fetched, a JWKS file re-read by ``reread_keys``), the next hit of each cached token compares the set
    by identity (one ``current()`` call, no lock or I/O, and one ``is`` while nothing changed); a token whose
    key the new set still holds is kept, any other is dropped and verified afresh, which fails without its
    key. A hit also starts a JWKS URL's due re-fetch, so traffic of cached tokens alone keeps the keys fresh.

    Key sources never make ``verify`` wait for the network once they hold keys: an unknown ``kid`` is
    ``TokenInvalid`` at once while a rate-limited background re-fetch looks for it (see ``JwksUrl``).
    """

    __slots__ = ("_cache", "_clock", "_issuers", "_settings")

    def __init__(self, issuers: Sequence[IssuerKeys], settings: TokenSettings, clock: Clock, *,
                 cache_max_bytes: int = CACHE_MAX_BYTES) -> None:
        if not issuers:
            raise ConfigError("no trusted token issuer configured")
        by_name: dict[str, IssuerKeys] = {}
        for issuer in issuers:
            name = issuer.settings.issuer
            if name in by_name:
                raise ConfigError(f"issuer {name!r} is configured twice")
            by_name[name] = issuer
        if settings.max_token_bytes <= 0 or settings.cache_size < 0 or settings.leeway_seconds < 0:
            raise ConfigError("tokens: max_token_bytes must be > 0, cache_size and leeway_seconds >= 0")
        if cache_max_bytes < 0:
            raise ConfigError("tokens: the cache's byte limit must be >= 0")
        self._issuers: Mapping[str, IssuerKeys] = MappingProxyType(by_name)
        self._settings = settings
        self._clock = clock
        self._cache = TokenCache(settings.cache_size, cache_max_bytes)

    @property
    def issuers(self) -> tuple[IssuerKeys, ...]:
        return tuple(self._issuers.values())

    @property
    def cache_bytes(self) -> int:
        """Approximate bytes the verified-token cache holds now (at most ``cache_max_bytes``)."""
        return self._cache.held_bytes

    @property
    def cache_entries(self) -> int:
        """Tokens the verified-token cache holds now."""
        return len(self._cache)

    def keys_ready(self) -> bool:
        """For readiness probes: True when every issuer's key set is held (a JWKS URL fetched at least once) and
        at least one of them holds a usable key. An issuer that withdrew every key (published a set without a
        usable one) denies its own tokens but does not make the server unready while another issuer's tokens
        can be verified (review finding: with one identity provider per customer, one customer's empty JWKS
        took every replica out of service for all tenants). Never waits: an issuer without keys, or with an
        empty set, gets a background fetch (as rate-limited as any other), so a server no caller reaches yet
        still gets its keys and turns ready."""
        held_all, usable = True, False
        for issuer in self._issuers.values():
            held = issuer.source.peek()
            if held is None or not held.keys:
                issuer.source.fetch_soon()
            held_all = held_all and held is not None
            usable = usable or (held is not None and bool(held.keys))
        return held_all and usable

    def prefetch_keys(self) -> list[str]:
        """Load every issuer's keys now (JWKS URLs are otherwise fetched on first use).

        Meant to run on a worker thread at start-up, so the first requests do not wait for a fetch on the
        event loop. Returns one message per issuer whose keys could not be loaded; never raises.
        """
        problems = []
        for issuer in self._issuers.values():
            try:
                issuer.source.current()
            except Exception as err:  # noqa: BLE001 - reported, and retried lazily on first use
                problems.append(f"{issuer.settings.issuer}: {err}")
        return problems

    def reread_keys(self, *, force: bool = False) -> bool:
        """Re-read key sources that change only when asked (JWKS files whose fingerprint changed; every file
        with ``force``). For SIGHUP and the policy poll, never the request path. True iff some issuer's keys
        changed; a removed key's cached tokens are refused from the next decision on. Never raises: a source
        that fails keeps its last good keys and logs why."""
        changed = False
        for issuer in self._issuers.values():
            try:
                changed = issuer.source.reread(force=force) or changed
            except Exception:  # sources do not raise; if one did, the others are still read
                log.exception("issuer %r: re-reading %s failed; its last good keys stay in use",
                              issuer.settings.issuer, issuer.source.description)
        return changed

    def verify(self, token: str) -> VerifiedClaims:
        """Verify ``token``; see the class docstring for the contract. Never raises anything but TokenError."""
        try:
            return self._verify(token)
        except TokenError:
            raise
        except Exception as err:  # fail closed: any surprise is an invalid token
            raise TokenInvalid("token could not be verified") from err

    # ----------------------------------------------------------------------------------------- steps

    def _verify(self, token: str) -> VerifiedClaims:
        if token is None or (isinstance(token, str) and not token.strip()):
            raise TokenMissing("no token presented")
        if not isinstance(token, str):
            raise TokenInvalid("token is not a string")
        # 1. Size, then the cache, then shape: all before any decoding work.
        if len(token) > self._settings.max_token_bytes:
            raise TokenInvalid("token is too large")
        # INVARIANT: cache key over the whole token, signature included: a token differing from a cached one
        # only in its signature is verified afresh, never served a good token's claims. Only tokens that
        # passed every check below are cached, so a hit needs none of them again (the shape check included).
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        cached = self._cache.trusted_claims(digest, self._settings, self._clock)  # times and key re-checked
        if cached is not None:
            return cached
        header_segment, payload_segment, signature_segment = split_compact_jws(token)
        # 2. Header (structure only; the alg is checked against the issuer's list once the issuer is known).
        header = decode_json_object(header_segment, "header", MAX_HEADER_JSON_VALUES)
        alg, kid = check_header(header, self._settings.require_typ)
        # 3. Payload.
        payload = decode_json_object(payload_segment, "payload", max_payload_values(self._settings.max_token_bytes))
        decode_segment(signature_segment, "signature")
        issuer = self._issuer_of(payload)
        if alg not in issuer.settings.algorithms:
            raise TokenInvalid("token algorithm is not accepted for this issuer")
        subject = subject_of(payload)
        # 4. Times, against the injected clock.
        expires_at, not_before, issued_at = check_times(payload, self._settings, self._clock)
        # 5. Key, only from this issuer's set.
        key, keys = _select_key(issuer, alg, kid)
        # 6. Signature (and PyJWT's own issuer/audience checks).
        _decode_with_pyjwt(token, key, alg, issuer)
        check_audience(payload.get("aud"), issuer.settings.audiences)
        check_tenant_allowed(payload.get(self._settings.tenant_claim), issuer.settings.tenants)
        # 7. Result: only the claims decisions read, so neither a verified token nor its cache entry holds
        # what the issuer added besides (review finding: ~280 KiB per cached 16 KiB token of '[{},...]').
        signing_input = token[: len(header_segment) + 1 + len(payload_segment)]
        settings = self._settings
        kept = kept_claims(payload, (settings.tenant_claim, settings.roles_claim, settings.intents_claim))
        verified = VerifiedClaims(
            issuer=issuer.settings.issuer,
            subject=subject,
            claims=MappingProxyType(kept),
            token_id=token_id_of(payload.get("jti"), signing_input),
            expires_at=expires_at,
        )
        # 8. Cache (successes only), with the key set the key came from: a hit checks the key is still trusted.
        if self._cache.enabled:
            self._cache.put(digest, CachedToken(verified, not_before, issued_at,
                                                entry_size(digest, verified, kept), issuer.source, keys, key))
        return verified

    def _issuer_of(self, payload: Mapping[str, Any]) -> IssuerKeys:
        iss = payload.get("iss")
        if not isinstance(iss, str) or not iss:
            raise IssuerUntrusted("token has no issuer string")
        # INVARIANT: exact dictionary lookup; no prefix, suffix, case-folding or list membership.
        issuer = self._issuers.get(iss)
        if issuer is None:
            raise IssuerUntrusted("token issuer is not trusted")
        return issuer


# --------------------------------------------------------------------------------------------- helpers


def _select_key(issuer: IssuerKeys, alg: str, kid: str | None) -> tuple[VerificationKey, KeySet]:
    """The key to verify with, and the key set it was taken from (cached with the token)."""
    keys = issuer.source.current()
    if not keys.keys:
        # The issuer published a well-formed set without a usable key: it withdrew every key it had.
        raise TokenInvalid("the token issuer publishes no usable signing key")
    if kid is None:
        usable = keys.usable_for(alg)
        if len(usable) != 1:
            raise TokenInvalid("token has no key id (kid) and the issuer has no single key for its algorithm")
        return usable[0], keys
    candidates = keys.with_kid(kid)
    if not candidates:
        # Unknown kid: maybe the issuer rotated keys. The source rate-limits this refresh and, once it holds
        # keys, runs it in the background: this token fails now, later ones find the new key.
        keys = issuer.source.refresh()
        candidates = keys.with_kid(kid)
        if not candidates:
            raise TokenInvalid("token key id (kid) is not in the issuer's key set")
    fitting = [key for key in candidates if key.fits(alg)]
    if len(fitting) != 1:
        raise TokenInvalid("token key id (kid) names no single key usable for the token algorithm")
    return fitting[0], keys


def _decode_with_pyjwt(token: str, key: VerificationKey, alg: str, issuer: IssuerKeys) -> None:
    try:
        jwt.decode(
            token,
            key=key.key,
            algorithms=[alg],
            audience=list(issuer.settings.audiences),
            issuer=issuer.settings.issuer,
            options={
                # Times were checked above with the injected clock; PyJWT would use the wall clock.
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "require": ["exp", "iss", "sub"],
                "strict_aud": False,
                "enforce_minimum_key_length": True,
            },
        )
    except jwt.InvalidAudienceError as err:
        raise AudienceMismatch("token audience does not match") from err
    except jwt.MissingRequiredClaimError as err:
        if err.claim == "aud":
            raise AudienceMismatch("token has no audience") from err
        raise TokenInvalid(f"token lacks the required claim {err.claim}") from err
    except jwt.InvalidIssuerError as err:
        raise IssuerUntrusted("token issuer is not trusted") from err
    except jwt.InvalidSignatureError as err:
        raise TokenInvalid("token signature is invalid") from err
    except jwt.PyJWTError as err:
        raise TokenInvalid("token was rejected") from err


# --------------------------------------------------------------------------------------------- assembly


def build_verifier(settings: Settings, clock: Clock) -> JwtVerifier:
    """Build the verifier from settings: every ``[[tokens.issuers]]`` plus the development issuer if enabled.

    The development issuer's keys are created on first use (``DevIssuer.ensure_keys``). Raises
    ``ConfigError`` for unreadable or unsafe key files, duplicate issuers or no issuer at all. JWKS URLs
    are not fetched here (lazily on first use), so start-up does not depend on their availability.
    """
    tokens = settings.tokens
    saved = Path(settings.server.state_dir) / "jwks"  # last good JWKS responses (identity.jwkssaved)
    issuers = [IssuerKeys.from_settings(issuer, tokens, saved) for issuer in tokens.issuers]
    if settings.dev_issuer.enabled:
        dev = DevIssuer(settings.dev_issuer)
        dev.ensure_keys()
        issuers.append(IssuerKeys.from_settings(dev.issuer_settings(), tokens))
    return JwtVerifier(issuers, tokens, clock)
