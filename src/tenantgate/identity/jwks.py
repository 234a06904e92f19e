"""Key sets for token verification: JWKS documents from a file or a URL, parsed once into key objects.

Security defaults:

* Keys are parsed once (with ``jwt.PyJWK``) into cryptography key objects; verification never re-parses
  PEM or JWK text and never takes a key from the token itself.
* A JWKS *file* is trusted configuration, so anything doubtful is a start-up ``ConfigError`` naming the file:
  private key material (``d``, ``p``, ``q``, ...), HMAC secrets shorter than 32 bytes, RSA moduli shorter than
  2048 bits, malformed keys, an empty set. Keys of an unsupported type or curve are skipped with a warning.
* A JWKS *URL* is fetched lazily, without following redirects, capped at 1 MiB, and re-fetched at most once
  per ``refresh_min_interval_seconds`` whatever the reason (expiry, unknown ``kid``, failure), so a flood of
  unknown ``kid`` values cannot become a flood of fetches. The last good key set keeps working while the URL
  is down or serves garbage; doubtful keys in a fetched set are skipped with a warning.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from tenantgate.config import HMAC_ALGORITHMS, IssuerSettings, TokenSettings, check_algorithms
from tenantgate.core.ports import Clock
from tenantgate.errors import ConfigError, KeySourceUnavailable

MAX_JWKS_BYTES = 1_048_576
"""Largest JWKS document accepted, from a file or a URL."""

MAX_JSON_DEPTH = 32
"""Deepest nesting of JSON arrays/objects accepted in tokens and key sets (the root object is depth 1)."""

MIN_HMAC_SECRET_BYTES = 32
MIN_RSA_BITS = 2048

# Members that only a private (or symmetric) JWK carries. Their presence in a public key set is a leak.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth"})

# What each supported algorithm needs from a key: the key family (kty, or kty:crv).
_ALG_FAMILIES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        **{alg: frozenset({"RSA"}) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
        "ES256": frozenset({"EC:P-256"}),
        "ES384": frozenset({"EC:P-384"}),
        "ES512": frozenset({"EC:P-521"}),
        "EdDSA": frozenset({"OKP:Ed25519", "OKP:Ed448"}),
        **{alg: frozenset({"oct"}) for alg in HMAC_ALGORITHMS},
    }
)
# An HMAC key shorter than the hash output weakens the MAC (RFC 7518 §3.2); such a key never fits that alg.
_HMAC_MIN_BYTES: Mapping[str, int] = MappingProxyType({"HS256": 32, "HS384": 48, "HS512": 64})
_EC_CURVES = frozenset({"P-256", "P-384", "P-521"})
_OKP_CURVES = frozenset({"Ed25519", "Ed448"})
_EC_CURVE_NAMES: Mapping[str, str] = MappingProxyType(
    {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
)
# The algorithm PyJWK is asked to parse each family with. The parsed key object is the same for every
# algorithm of the family (an RSA key serves RS* and PS*); the token's alg is checked separately.
_PARSE_ALG: Mapping[str, str] = MappingProxyType(
    {"RSA": "RS256", "EC:P-256": "ES256", "EC:P-384": "ES384", "EC:P-521": "ES512", "OKP": "EdDSA"}
)


# --------------------------------------------------------------------------------------------- strict JSON


class _DuplicateKey(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # Parsers disagree on which duplicate wins (PyJWT: the last); a signed document must mean one thing.
        raise _DuplicateKey("duplicate member name")
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def parse_strict_json(text: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse RFC 8259 JSON strictly; raise ``ValueError`` for anything a lenient parser would let through.

    Rejected: duplicate member names at any depth, ``NaN``/``Infinity``, numbers that overflow to infinity,
    integers too long to convert, nesting deeper than ``max_depth`` (without leaking ``RecursionError``),
    a byte-order mark, and strings holding lone surrogates (they cannot be re-encoded as UTF-8 downstream).
    The input is ``str`` on purpose: ``json.loads(bytes)`` would guess UTF-16/32 encodings.
    """
    if text.startswith("\ufeff"):
        raise ValueError("byte-order mark")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except RecursionError as err:
        raise ValueError("JSON nested too deeply") from err
    _check_shape(value, max_depth)
    return value


def _check_shape(value: Any, max_depth: int) -> None:
    # Iterative walk: a recursive one would itself be a recursion-depth attack surface.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            items: Sequence[Any] = [*node.keys(), *node.values()]
        elif isinstance(node, list):
            items = node
        else:
            _check_scalar(node)
            continue
        if depth > max_depth:
            raise ValueError("JSON nested too deeply")
        for item in items:
            if isinstance(item, (dict, list)):
                stack.append((item, depth + 1))
            else:
                _check_scalar(item)


def _check_scalar(value: Any) -> None:
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError("string holds a lone surrogate") from err


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    """Decode canonical unpadded base64url; ``ValueError`` for padding, foreign characters or stray bits.

    Canonical means re-encoding gives the same text: two spellings of one value would let an attacker make
    distinct tokens (distinct cache keys, distinct token ids) with one signature.
    """
    if len(segment) % 4 == 1 or not segment.isascii():
        raise ValueError("invalid base64url length")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as err:
        raise ValueError("invalid base64url") from err
    if b64url_encode(raw) != segment:
        raise ValueError("non-canonical base64url")
    return raw


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint (base64url) of a JWK's required public members."""
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"),
                "oct": ("k", "kty")}
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in required:
        raise ValueError("unsupported kty for a thumbprint")
    members = {name: jwk[name] for name in required[kty]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


# --------------------------------------------------------------------------------------------- key objects


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One verification key from a key set: a parsed key object plus the JWK metadata that limits its use.

    ``family`` is ``RSA``, ``EC:P-256``/``EC:P-384``/``EC:P-521``, ``OKP:Ed25519``/``OKP:Ed448`` or ``oct``,
    derived from the parsed key object (not from the JWK's claims about itself). ``key`` is a cryptography
    public key object, or the secret bytes of an ``oct`` key; it is left out of ``repr``.
    """

    kid: str | None
    family: str
    alg: str | None
    use: str | None
    key_ops: tuple[str, ...] | None
    key: Any = field(repr=False)
    size: int = 0  # RSA modulus bits, HMAC secret bytes, 0 otherwise

    def fits(self, alg: str) -> bool:
        """True iff this key may verify a token signed with ``alg`` (family, JWK alg/use/key_ops, size)."""
        if self.alg is not None and self.alg != alg:
            return False
        if self.use is not None and self.use != "sig":
            return False
        if self.key_ops is not None and "verify" not in self.key_ops:
            return False
        if self.family not in _ALG_FAMILIES.get(alg, frozenset()):
            return False
        return self.family != "oct" or self.size >= _HMAC_MIN_BYTES[alg]


@dataclass(frozen=True, slots=True)
class KeySet:
    """An immutable set of verification keys with a ``kid`` index. ``warnings`` name skipped keys."""

    keys: tuple[VerificationKey, ...]
    warnings: tuple[str, ...] = ()
    _by_kid: Mapping[str, tuple[VerificationKey, ...]] = field(
        init=False, repr=False, compare=False, default_factory=lambda: MappingProxyType({})
    )

    def __post_init__(self) -> None:
        index: dict[str, tuple[VerificationKey, ...]] = {}
        for key in self.keys:
            if key.kid is not None:
                index[key.kid] = (*index.get(key.kid, ()), key)
        object.__setattr__(self, "_by_kid", MappingProxyType(index))

    def with_kid(self, kid: str) -> tuple[VerificationKey, ...]:
        """Keys whose ``kid`` equals ``kid`` exactly (an opaque dictionary key: never a path or a query)."""
        return self._by_kid.get(kid, ())

    def usable_for(self, alg: str) -> tuple[VerificationKey, ...]:
        """Keys that fit ``alg``."""
        return tuple(key for key in self.keys if key.fits(alg))


def parse_jwks(text: str, *, origin: str, strict: bool) -> KeySet:
    """Parse a JWKS document into a ``KeySet``.

    Raises ``ConfigError`` (message prefixed with ``origin``) when the document is not a strict-JSON object
    with a ``keys`` list, or when no usable key remains. With ``strict`` (files), a doubtful key is a
    ``ConfigError``; without it (URLs), the key is skipped with a warning. Unsupported key types and curves
    are always skipped with a warning. Messages never contain key material.
    """
    try:
        document = parse_strict_json(text)
    except ValueError as err:
        raise ConfigError(f"{origin}: not a valid JWKS document ({err})") from err
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ConfigError(f"{origin}: a JWKS document must be an object with a 'keys' list")
    keys: list[VerificationKey] = []
    warnings: list[str] = []
    for index, jwk in enumerate(document["keys"]):
        where = f"{origin}: key #{index}"
        try:
            key = _parse_jwk(jwk, where)
        except _Unsupported as skip:
            warnings.append(str(skip))
            continue
        except ConfigError as err:
            if strict:
                raise
            warnings.append(str(err))
            continue
        keys.append(key)
    if not keys:
        raise ConfigError(f"{origin}: the key set holds no usable key")
    return KeySet(tuple(keys), tuple(warnings))


class _Unsupported(Exception):
    """A key of a type or curve TenantGate does not verify with: skipped, not an error."""


def _parse_jwk(jwk: Any, where: str) -> VerificationKey:
    if not isinstance(jwk, dict):
        raise ConfigError(f"{where}: not a JSON object")
    kty = jwk.get("kty")
    if not isinstance(kty, str) or not kty:
        raise ConfigError(f"{where}: missing kty")
    kid = _optional_str(jwk, "kid", where)
    alg = _optional_str(jwk, "alg", where)
    use = _optional_str(jwk, "use", where)
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or not all(isinstance(o, str) for o in key_ops)):
        raise ConfigError(f"{where}: key_ops must be a list of strings")
    ops = tuple(key_ops) if key_ops is not None else None
    if kty == "oct":
        secret = _oct_secret(jwk, where)
        return VerificationKey(kid, "oct", alg, use, ops, secret, len(secret))
    if kty not in ("RSA", "EC", "OKP"):
        raise _Unsupported(f"{where}: skipped, unsupported kty {kty!r}")
    if _PRIVATE_MEMBERS & jwk.keys():
        raise ConfigError(f"{where}: holds private key material; publish only public keys")
    crv = jwk.get("crv")
    if kty == "EC" and crv not in _EC_CURVES:
        raise _Unsupported(f"{where}: skipped, unsupported EC curve")
    if kty == "OKP" and crv not in _OKP_CURVES:
        raise _Unsupported(f"{where}: skipped, unsupported OKP curve")
    parse_alg = _PARSE_ALG[kty if kty != "EC" else f"EC:{crv}"]
    try:
        parsed = jwt.PyJWK(jwk, algorithm=parse_alg)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as err:
        # Public members only reach here (private ones were refused above), so chaining leaks no secret.
        raise ConfigError(f"{where}: malformed {kty} key") from err
    key_object = parsed.key
    family, size = _family_of(key_object, where)
    if family == "RSA" and size < MIN_RSA_BITS:
        raise ConfigError(f"{where}: RSA key of {size} bits is too short (minimum {MIN_RSA_BITS})")
    return VerificationKey(kid, family, alg, use, ops, key_object, size)


def _oct_secret(jwk: Mapping[str, Any], where: str) -> bytes:
    # Parsed here rather than by PyJWK so that no library error message can ever quote the secret.
    k = jwk.get("k")
    if not isinstance(k, str):
        raise ConfigError(f"{where}: oct key without a 'k' string")
    try:
        secret = b64url_decode(k)
    except ValueError:
        raise ConfigError(f"{where}: oct key 'k' is not base64url") from None
    if len(secret) < MIN_HMAC_SECRET_BYTES:
        raise ConfigError(f"{where}: weak HMAC secret (shorter than {MIN_HMAC_SECRET_BYTES} bytes)")
    return secret


def _optional_str(jwk: Mapping[str, Any], name: str, where: str) -> str | None:
    value = jwk.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {name} must be a non-empty string")
    return value


def _family_of(key_object: Any, where: str) -> tuple[str, int]:
    if isinstance(key_object, rsa.RSAPublicKey):
        return "RSA", key_object.key_size
    if isinstance(key_object, ec.EllipticCurvePublicKey):
        curve = _EC_CURVE_NAMES.get(key_object.curve.name)
        if curve is None:
            raise ConfigError(f"{where}: unsupported EC curve")
        return f"EC:{curve}", 0
    if isinstance(key_object, ed25519.Ed25519PublicKey):
        return "OKP:Ed25519", 0
    if isinstance(key_object, ed448.Ed448PublicKey):
        return "OKP:Ed448", 0
    # A private key object here would mean the private-member check was bypassed: refuse it.
    raise ConfigError(f"{where}: not a public key")


# --------------------------------------------------------------------------------------------- key sources


class KeySource(Protocol):
    """Where an issuer's verification keys come from.

    ``current()`` returns the key set (fetching lazily if needed) or raises ``KeySourceUnavailable`` when no
    key set was ever obtained. ``refresh()`` asks for a re-read after an unknown ``kid``; implementations
    rate-limit it and return the (possibly unchanged) current set. ``peek()`` returns the keys already held,
    without any I/O.
    """

    description: str

    def current(self) -> KeySet: ...

    def refresh(self) -> KeySet: ...

    def peek(self) -> KeySet | None: ...


class JwksFile:
    """A JWKS read once from a local file at construction.

    Raises ``ConfigError`` naming the file if it is missing, unreadable, larger than 1 MiB, not a strict
    JSON key set, holds private key material, a weak HMAC secret, a short RSA key or no usable key.
    ``refresh()`` does not re-read: key files change with a restart (or a reload that builds a new verifier).
    """

    __slots__ = ("_keys", "description", "path")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.description = f"JWKS file {self.path}"
        try:
            with self.path.open("rb") as handle:
                data = handle.read(MAX_JWKS_BYTES + 1)
        except OSError as err:
            raise ConfigError(f"cannot read JWKS file {self.path}: {err.strerror or err}") from err
        if len(data) > MAX_JWKS_BYTES:
            raise ConfigError(f"JWKS file {self.path} is larger than {MAX_JWKS_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"JWKS file {self.path} is not UTF-8") from err
        self._keys = parse_jwks(text, origin=f"JWKS file {self.path}", strict=True)

    @property
    def warnings(self) -> tuple[str, ...]:
        return self._keys.warnings

    def current(self) -> KeySet:
        return self._keys

    def refresh(self) -> KeySet:
        return self._keys

    def peek(self) -> KeySet | None:
        return self._keys


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: a JWKS URL that moves is a failure, not an invitation to fetch elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class JwksUrl:
    """A JWKS fetched over HTTP(S) with urllib, lazily, cached, rate-limited, never following redirects.

    * The first fetch happens on first use, so the server starts while the URL is briefly down.
    * Keys are re-fetched when older than ``cache_seconds`` or on ``refresh()`` (unknown ``kid``), but no
      fetch *attempt* (successful or not) happens within ``refresh_min_interval_seconds`` of the previous
      one, measured with the injected clock. Only one thread fetches at a time; others use the held keys
      (or, before the first key set arrived, wait for the fetch in flight).
    * A failed fetch (network error, non-200 status including any 3xx, body over 1 MiB, non-UTF-8, not a
      strict-JSON key set, no usable key) keeps the last good keys, which stay in use while the URL is down.
      If no key set was ever obtained, ``current()`` raises ``KeySourceUnavailable`` (fail closed).
    * Fetching blocks the calling thread for at most about ``timeout_seconds``.
    * Environment proxy settings are ignored (only ``config.py`` reads the environment).
    """

    __slots__ = (
        "_attempted_at",
        "_cache_seconds",
        "_clock",
        "_fetched_at",
        "_keys",
        "_last_error",
        "_lock",
        "_min_interval",
        "_opener",
        "_timeout",
        "_url",
        "description",
    )

    def __init__(
        self,
        url: str,
        cache_seconds: float,
        refresh_min_interval_seconds: float,
        timeout_seconds: float,
        clock: Clock,
    ) -> None:
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port  # raises ValueError for a port out of range
        except ValueError as err:
            raise ConfigError("jwks_url is not a valid URL") from err
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("jwks_url must be an http(s) URL with a host")
        if cache_seconds <= 0 or refresh_min_interval_seconds < 0 or timeout_seconds <= 0:
            raise ConfigError("jwks_url: cache and timeout must be > 0, refresh interval >= 0")
        self._url = url
        # Shown in errors: scheme, host and path only (a URL may carry credentials in userinfo or query).
        netloc = parts.hostname + (f":{port}" if port else "")
        self.description = f"JWKS URL {parts.scheme}://{netloc}{parts.path}"
        self._cache_seconds = float(cache_seconds)
        self._min_interval = float(refresh_min_interval_seconds)
        self._timeout = float(timeout_seconds)
        self._clock = clock
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._last_error = ""

    @property
    def last_error(self) -> str:
        """Why the last fetch failed ('' after a success). Never holds response bodies or key material."""
        return self._last_error

    @property
    def warnings(self) -> tuple[str, ...]:
        return self._keys.warnings if self._keys is not None else ()

    def current(self) -> KeySet:
        keys = self._keys
        if keys is None or self._clock.now() - self._fetched_at >= self._cache_seconds:
            self._try_fetch()
        return self._held()

    def refresh(self) -> KeySet:
        self._try_fetch()
        return self._held()

    def peek(self) -> KeySet | None:
        return self._keys

    def _held(self) -> KeySet:
        keys = self._keys
        if keys is None:
            # Generic on purpose: this message can reach unauthenticated callers; last_error has the detail.
            raise KeySourceUnavailable("the issuer's signing keys are unavailable")
        return keys

    def _may_attempt(self, now: float) -> bool:
        if self._attempted_at is None:
            return True
        elapsed = now - self._attempted_at
        # A clock that went backwards must not freeze refreshes until it catches up.
        return elapsed < 0 or elapsed >= self._min_interval

    def _try_fetch(self) -> None:
        if self._keys is None:
            # Nothing to serve yet: wait for a fetch in flight rather than failing the request at once.
            acquired = self._lock.acquire(timeout=self._timeout + 1.0)
        elif self._may_attempt(self._clock.now()):
            acquired = self._lock.acquire(blocking=False)  # never queue: the held keys serve meanwhile
        else:
            return
        if not acquired:
            return
        try:
            now = self._clock.now()
            if not self._may_attempt(now):
                return
            self._attempted_at = now
            try:
                keys = self._fetch()
            except Exception as err:  # noqa: BLE001 - any fetch failure keeps the last good keys
                self._last_error = f"{type(err).__name__}: {_safe_reason(err)}"
                return
            self._keys = keys
            self._fetched_at = now
            self._last_error = ""
        finally:
            self._lock.release()

    def _fetch(self) -> KeySet:
        request = urllib.request.Request(
            self._url, headers={"Accept": "application/jwk-set+json, application/json"}
        )
        deadline = time.monotonic() + self._timeout
        with self._opener.open(request, timeout=self._timeout) as response:
            if response.status != 200:
                raise ConfigError(f"HTTP status {response.status}")
            chunks: list[bytes] = []
            size = 0
            while True:
                chunk = response.read(65_536)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_JWKS_BYTES:
                    raise ConfigError(f"response larger than {MAX_JWKS_BYTES} bytes")
                # A server trickling bytes must not hold the caller past the timeout.
                if time.monotonic() > deadline:
                    raise TimeoutError("JWKS fetch took too long")
                chunks.append(chunk)
        text = b"".join(chunks).decode("utf-8")
        return parse_jwks(text, origin=self.description, strict=False)


def _safe_reason(err: Exception) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP status {err.code}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)[:200]
    if isinstance(err, UnicodeDecodeError):
        return "response is not UTF-8"
    return str(err)[:200]


# --------------------------------------------------------------------------------------------- issuers


@dataclass(frozen=True, slots=True)
class IssuerKeys:
    """A trusted issuer: its settings (exact ``iss``, audiences, algorithms) and where its keys come from.

    Raises ``ConfigError`` when the settings are unsafe (no audience, unknown or mixed HMAC/asymmetric
    algorithms) or when keys already held cannot verify any of the issuer's algorithms.
    """

    settings: IssuerSettings
    source: KeySource

    def __post_init__(self) -> None:
        where = f"issuer {self.settings.issuer!r}"
        if not self.settings.issuer:
            raise ConfigError("issuer must not be empty")
        if not self.settings.audiences or not all(isinstance(a, str) and a for a in self.settings.audiences):
            raise ConfigError(f"{where}: audiences must list at least one non-empty audience")
        check_algorithms(tuple(self.settings.algorithms), where)
        held = self.source.peek()
        if held is not None and not any(held.usable_for(alg) for alg in self.settings.algorithms):
            raise ConfigError(
                f"{where}: no key in {self.source.description} fits the algorithms "
                f"{', '.join(self.settings.algorithms)}"
            )

    @classmethod
    def from_settings(cls, issuer: IssuerSettings, tokens: TokenSettings, clock: Clock) -> IssuerKeys:
        """Build the key source the settings name (exactly one of ``jwks_file`` / ``jwks_url``)."""
        if bool(issuer.jwks_file) == bool(issuer.jwks_url):
            raise ConfigError(f"issuer {issuer.issuer!r}: set exactly one of jwks_file or jwks_url")
        source: KeySource
        if issuer.jwks_file:
            source = JwksFile(issuer.jwks_file)
        else:
            source = JwksUrl(
                issuer.jwks_url,
                tokens.jwks_cache_seconds,
                tokens.jwks_refresh_min_interval_seconds,
                tokens.jwks_fetch_timeout_seconds,
                clock,
            )
        return cls(issuer, source)
