"""``JwtVerifier``: the PyJWT adapter that implements ``tenantgate.core.ports.TokenVerifier``.

PyJWT checks the signature (and, as a second opinion, issuer and audience); everything PyJWT is lenient
about is checked here first, in this order: size and compact shape, header, payload, issuer, algorithm,
subject, times (with the injected clock), key selection, then ``jwt.decode``; after it the audience again
and the issuer's tenant allow-list. See ``JwtVerifier.verify``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jwt

from tenantgate.config import SUPPORTED_ALGORITHMS, Settings, TokenSettings
from tenantgate.core.model import VerifiedClaims
from tenantgate.core.ports import Clock
from tenantgate.errors import (
    AudienceMismatch,
    ConfigError,
    IssuerUntrusted,
    TokenError,
    TokenExpired,
    TokenInvalid,
    TokenMissing,
)
from tenantgate.identity.devissuer import DevIssuer
from tenantgate.identity.encoding import b64url_decode, parse_strict_json
from tenantgate.identity.jwks import IssuerKeys
from tenantgate.identity.keptclaims import kept_claims
from tenantgate.identity.keys import KeySet, VerificationKey
from tenantgate.identity.tokencache import CACHE_MAX_BYTES, CachedToken, TokenCache, entry_size

log = logging.getLogger("tenantgate.identity")

# Three non-empty segments of the unpadded base64url alphabet, nothing else: no '+', '/', '=', whitespace
# or a fourth segment. Explicit ASCII ranges (not \w) so no Unicode digit or letter slips through.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

# Header parameters that would let the token choose its own key or extend processing rules. A key comes
# only from the configured issuer's set (by opaque kid); 'crit' and 'b64' (RFC 7797) change what is signed.
_FORBIDDEN_HEADERS = frozenset({"jwk", "jku", "x5u", "x5c", "crit", "b64"})
_ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})  # RFC 9068 §2.1

MAX_KID_CHARS = 256
MAX_SUBJECT_CHARS = 1024
MAX_JTI_CHARS = 128
MAX_TIME_VALUE = 1e11  # year ~5138: anything larger is garbage, and floats stay exact below it
# Most JSON values (counted from above as the ',', '{' and '[' characters outside strings) a header or
# payload may hold. Parsing runs before the signature is checked and costs Python work per value (the
# duplicate-name hook, the shape walk: ~1 µs each on 2 cores), so a forged 16 KiB payload of '[{},{},...]'
# took 4-14 ms of the event loop (review finding). Real headers hold a handful of values; real payloads a
# few dozen, and identity providers that list groups or permissions a thousand or so (review finding: 1,024
# refused a signed token with 1,030 groups): 2,048 keeps the worst forged payload near 1 ms. A deployment
# that raises tokens.max_token_bytes for larger tokens gets one value per 8 bytes above that.
MAX_HEADER_JSON_VALUES = 64
MAX_PAYLOAD_JSON_VALUES = 2048


def max_payload_values(max_token_bytes: int) -> int:
    """The most JSON values a token payload may hold under ``tokens.max_token_bytes``."""
    return max(MAX_PAYLOAD_JSON_VALUES, max_token_bytes // 8)
# A JSON string, or an unterminated one with the rest of the text: one pass from left to right. Review finding:
# without the end alternative, a string that never closes was scanned to the end again from each quote inside it
# (``"\\"\\"\\"...``), quadratic: 0.43 s of the event loop for a 16 KB forged token, before any signature check.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)


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
    fresh verification again (``exp``, ``nbf``, ``iat`` and the lifetime, by the same ``_check_window``, so a
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
        cached = self._cached(digest)
        if cached is not None:
            return cached
        if _COMPACT_JWS.fullmatch(token) is None:
            raise TokenInvalid("token is not a compact JWS of three base64url segments")
        header_segment, payload_segment, signature_segment = token.split(".")
        # 2. Header (structure only; the alg is checked against the issuer's list once the issuer is known).
        header = _decode_json_object(header_segment, "header", MAX_HEADER_JSON_VALUES)
        alg, kid = _check_header(header, self._settings.require_typ)
        # 3. Payload.
        payload = _decode_json_object(payload_segment, "payload", max_payload_values(self._settings.max_token_bytes))
        _decode_segment(signature_segment, "signature")
        issuer = self._issuer_of(payload)
        if alg not in issuer.settings.algorithms:
            raise TokenInvalid("token algorithm is not accepted for this issuer")
        subject = _subject_of(payload)
        # 4. Times, against the injected clock.
        expires_at, not_before, issued_at = self._check_times(payload)
        # 5. Key, only from this issuer's set.
        key, keys = _select_key(issuer, alg, kid)
        # 6. Signature (and PyJWT's own issuer/audience checks).
        _decode_with_pyjwt(token, key, alg, issuer)
        _check_audience(payload.get("aud"), issuer.settings.audiences)
        _check_tenant_allowed(payload.get(self._settings.tenant_claim), issuer.settings.tenants)
        # 7. Result: only the claims decisions read, so neither a verified token nor its cache entry holds
        # what the issuer added besides (review finding: ~280 KiB per cached 16 KiB token of '[{},...]').
        signing_input = token[: len(header_segment) + 1 + len(payload_segment)]
        settings = self._settings
        kept = kept_claims(payload, (settings.tenant_claim, settings.roles_claim, settings.intents_claim))
        verified = VerifiedClaims(
            issuer=issuer.settings.issuer,
            subject=subject,
            claims=MappingProxyType(kept),
            token_id=_token_id(payload.get("jti"), signing_input),
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

    def _check_times(self, payload: Mapping[str, Any]) -> tuple[float, float | None, float | None]:
        """The token's ``(exp, nbf, iat)`` once they are well-formed and ``_check_window`` accepts them now."""
        if "exp" not in payload:
            raise TokenInvalid("token has no expiry (exp)")
        if self._settings.require_typ and ("iat" not in payload or not isinstance(payload.get("jti"), str)
                                           or not payload.get("jti")):
            # RFC 9068 section 2.2: an at+jwt access token carries iat and jti (review finding: the profile was
            # claimed by typ alone).
            raise TokenInvalid("an at+jwt access token must carry iat and jti (RFC 9068)")
        expires_at = _time_claim(payload, "exp")
        not_before = _time_claim(payload, "nbf") if "nbf" in payload else None
        issued_at = _time_claim(payload, "iat") if "iat" in payload else None
        self._check_window(expires_at, not_before, issued_at)
        return expires_at, not_before, issued_at

    def _check_window(self, expires_at: float, not_before: float | None, issued_at: float | None) -> None:
        """Raise ``TokenExpired`` or ``TokenInvalid`` unless the injected clock's now is within the token's
        validity. The one time check, for a fresh verification and a cache hit alike (review finding: a hit
        that skipped the ``iat`` and lifetime checks accepted, after a clock step back, what a fresh
        verification refused, so the answer depended on each worker's cache)."""
        now = self._clock.now()
        leeway = self._settings.leeway_seconds
        if not now < expires_at + leeway:
            raise TokenExpired("token has expired")
        if not_before is not None and not_before > now + leeway:
            raise TokenInvalid("token is not yet valid (nbf)")
        if issued_at is not None and issued_at > now + leeway:
            raise TokenInvalid("token is issued in the future (iat)")
        # Without iat the lifetime counts from now: a clock stepped back lengthens it.
        lifetime = expires_at - (issued_at if issued_at is not None else now)
        if lifetime > self._settings.max_lifetime_seconds:
            raise TokenInvalid("token lifetime exceeds the configured maximum")

    # ----------------------------------------------------------------------------------------- cache

    def _cached(self, digest: bytes) -> VerifiedClaims | None:
        if not self._cache.enabled:
            return None
        entry = self._cache.get(digest)
        if entry is None:
            return None
        try:
            self._check_window(entry.claims.expires_at, entry.not_before, entry.issued_at)
        except TokenExpired:
            self._cache.discard(digest)  # verified afresh if presented again; other refusals keep the entry
            raise
        # INVARIANT: a cached token counts only while the key that verified it is in its issuer's current key
        # set (review finding: a token cached before its key was removed kept being accepted until exp).
        # ``current()`` holds no lock and does no I/O (a due JWKS re-fetch starts in the background).
        keys = entry.source.current()
        if keys is not entry.keys:
            return self._still_trusted(digest, entry, keys)
        return entry.claims

    def _still_trusted(self, digest: bytes, entry: CachedToken, keys: KeySet) -> VerifiedClaims | None:
        # The issuer's key set changed since the entry was made (once per entry and change, not per hit).
        if keys.holds(entry.key):
            self._cache.put(digest, replace(entry, keys=keys))  # later hits compare with the new set
            return entry.claims
        self._cache.discard(digest)
        return None  # verified afresh: refused unless the new set holds a key that verifies it


# --------------------------------------------------------------------------------------------- helpers


def _decode_segment(segment: str, name: str) -> bytes:
    try:
        return b64url_decode(segment)
    except ValueError as err:
        raise TokenInvalid(f"token {name} is not canonical base64url") from err


def _decode_json_object(segment: str, name: str, max_values: int) -> dict[str, Any]:
    raw = _decode_segment(segment, name)
    try:
        # Strict UTF-8 from bytes to str ourselves: json.loads(bytes) would also accept UTF-16/32.
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TokenInvalid(f"token {name} is not UTF-8") from err
    # Counted in C before the parser does Python work per value, before any signature check: every value but
    # the first in its array or object follows a ',', and every array or object opens with '{' or '['. What
    # strings hold does not count (a claim holding commas is one value).
    outside = _JSON_STRING.sub("", text)
    if outside.count(",") + outside.count("{") + outside.count("[") > max_values:
        raise TokenInvalid(f"token {name} is too complex: more than {max_values} JSON values (the payload may hold "
                           f"{MAX_PAYLOAD_JSON_VALUES} or one per 8 bytes of tokens.max_token_bytes, if more)")
    try:
        value = parse_strict_json(text)
    except ValueError as err:
        raise TokenInvalid(f"token {name} is not acceptable JSON") from err
    if not isinstance(value, dict):
        raise TokenInvalid(f"token {name} is not a JSON object")
    return value


def _check_header(header: Mapping[str, Any], require_typ: bool) -> tuple[str, str | None]:
    alg = header.get("alg")
    # 'none' in any casing is not in SUPPORTED_ALGORITHMS, so it fails here like every unknown alg.
    if not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS:
        raise TokenInvalid("token algorithm is missing or not supported")
    forbidden = _FORBIDDEN_HEADERS & header.keys()
    if forbidden:
        raise TokenInvalid(f"token header carries a refused parameter: {', '.join(sorted(forbidden))}")
    kid = header.get("kid")
    if "kid" in header and (not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS):
        raise TokenInvalid("token key id (kid) must be a non-empty string of at most 256 characters")
    typ = header.get("typ")
    if "typ" in header and not isinstance(typ, str):
        raise TokenInvalid("token type (typ) must be a string")
    if require_typ and (not isinstance(typ, str) or typ.lower() not in _ACCESS_TOKEN_TYPES):
        raise TokenInvalid("token type (typ) must be at+jwt")
    return alg, kid


def _subject_of(payload: Mapping[str, Any]) -> str:
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUBJECT_CHARS:
        raise TokenInvalid("token subject (sub) must be a non-empty string of at most 1024 characters")
    return sub


def _time_claim(payload: Mapping[str, Any], name: str) -> float:
    value = payload[name]
    # bool is an int subclass; a numeric string is what PyJWT would wrongly accept.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenInvalid(f"token {name} must be a number")
    number = float(value)  # an int too large for a float raises OverflowError: caught by verify()
    if not math.isfinite(number) or not 0 <= number < MAX_TIME_VALUE:
        raise TokenInvalid(f"token {name} is out of range")
    return number


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


def _check_audience(aud: Any, audiences: Sequence[str]) -> None:
    # Second opinion after PyJWT, whose audience rules have changed between releases.
    claimed = [aud] if isinstance(aud, str) else aud
    if not isinstance(claimed, list) or not all(isinstance(a, str) for a in claimed):
        raise AudienceMismatch("token audience must be a string or a list of strings")
    if not any(a in audiences for a in claimed):
        raise AudienceMismatch("token audience does not match")


def _check_tenant_allowed(tenant: Any, allowed: Sequence[str]) -> None:
    # INVARIANT: an issuer limited to some tenants cannot speak for any other; exact, case-sensitive match.
    if allowed and isinstance(tenant, str) and tenant not in allowed:
        raise IssuerUntrusted("issuer is not trusted for this tenant")


def _token_id(jti: Any, signing_input: str) -> str:
    if isinstance(jti, str) and jti and len(jti) <= MAX_JTI_CHARS:
        return jti
    # From header.payload only: the signature has more than one valid encoding (ECDSA s and n - s).
    return "sha256:" + hashlib.sha256(signing_input.encode("ascii")).hexdigest()[:16]


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
