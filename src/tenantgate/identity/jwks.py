"""Key sets for token verification: JWKS documents from a file or a URL, parsed once into key objects.

Security defaults:

* Keys are parsed once (with ``jwt.PyJWK``) into cryptography key objects; verification never re-parses
  PEM or JWK text and never takes a key from the token itself.
* A JWKS *file* is trusted configuration, so anything doubtful is a start-up ``ConfigError`` naming the file:
  private key material (``d``, ``p``, ``q``, ...), HMAC secrets shorter than 32 bytes, RSA moduli shorter than
  2048 bits, malformed keys, an empty set. Keys of an unsupported type or curve are skipped with a warning.
* A JWKS *URL* is fetched lazily, without following redirects, capped at 1 MiB and at ``timeout_seconds`` in
  total, and re-fetched at most once per ``refresh_min_interval_seconds`` whatever the reason (expiry, unknown
  ``kid``, failure), so a flood of unknown ``kid`` values cannot become a flood of fetches. Once keys are held,
  re-fetches run on a background thread: verification never waits for the network. The last good key set
  keeps working while the URL is down or serves garbage; doubtful keys in a fetched set are skipped with a
  warning.

Strict JSON and base64url decoding live in ``tenantgate.identity.encoding`` (re-exported here).
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from tenantgate.config import HMAC_ALGORITHMS, IssuerSettings, TokenSettings, check_algorithms
from tenantgate.core.ports import Clock
from tenantgate.core.request import is_tenant_id
from tenantgate.errors import ConfigError, KeySourceUnavailable

# Re-exported: these helpers lived here before ``encoding`` was split out, and callers may import them from here.
from tenantgate.identity.encoding import MAX_JSON_DEPTH as MAX_JSON_DEPTH
from tenantgate.identity.encoding import b64url_decode as b64url_decode
from tenantgate.identity.encoding import b64url_encode as b64url_encode
from tenantgate.identity.encoding import parse_strict_json as parse_strict_json

MAX_JWKS_BYTES = 1_048_576
"""Largest JWKS document accepted, from a file or a URL."""

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

    ``current()`` returns the key set, or raises ``KeySourceUnavailable`` when no key set was ever obtained.
    ``refresh()`` asks for a re-read after an unknown ``kid`` and returns the (possibly unchanged) key set;
    implementations rate-limit it. Once a source holds keys, neither call may wait for I/O: a re-read runs in
    the background and the held keys answer meanwhile. ``peek()`` returns the keys already held, without I/O.
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


_READ_CHUNK_BYTES = 8192
"""Largest single read of a JWKS response body: the fetch deadline is checked between reads."""


class JwksUrl:
    """A JWKS fetched over HTTP(S) with ``http.client``: lazily, cached, rate-limited, never following redirects.

    * The first fetch happens on first use (or ``JwtVerifier.prefetch_keys``), so the server starts while the
      URL is briefly down. Until a key set has been obtained, ``current()`` fetches on the calling thread, and
      concurrent callers wait for that one fetch (at most about ``timeout_seconds``) instead of starting more;
      except on an asyncio event loop's thread (the gRPC and HTTP servers), which must never wait for the
      network or for another thread's fetch: there it starts a background fetch and fails at once
      (``KeySourceUnavailable``, a denial), so one issuer's unreachable URL cannot stall every other caller.
    * Once keys are held, ``current()`` and ``refresh()`` never wait for I/O (the caller may be the gRPC event
      loop): keys older than ``cache_seconds``, or ``refresh()`` after an unknown ``kid``, start a re-fetch on
      a daemon thread and return the held keys at once. A ``kid`` that only the new set holds is unknown until
      that fetch has landed; later requests then find it.
    * At most one fetch is in flight, and no fetch *attempt* (successful or not) starts within
      ``refresh_min_interval_seconds`` of the previous one, measured with the injected clock, so a flood of
      unknown ``kid`` values cannot become a flood of fetches.
    * ``timeout_seconds`` is a deadline for the whole fetch, not per read: a server that trickles its status
      line, headers or body is cut off when it passes. (Name resolution is not covered, and a host with
      several addresses may take one connect timeout per address.)
    * A failed fetch (network error, timeout, non-200 status including any 3xx, body over 1 MiB, non-UTF-8,
      not a strict-JSON key set, no usable key) keeps the last good keys, which stay in use while the URL is
      down. If no key set was ever obtained, ``current()`` raises ``KeySourceUnavailable`` (fail closed).
    * Environment proxy settings are ignored (only ``config.py`` reads the environment); HTTPS verifies the
      certificate and host name against the system trust store.
    """

    __slots__ = (
        "_attempted_at",
        "_cache_seconds",
        "_clock",
        "_fetch_lock",
        "_fetched_at",
        "_host",
        "_keys",
        "_last_error",
        "_min_interval",
        "_port",
        "_target",
        "_timeout",
        "_tls",
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
        if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
            raise ConfigError("jwks_url must not contain spaces or control characters")
        if cache_seconds <= 0 or refresh_min_interval_seconds < 0 or timeout_seconds <= 0:
            raise ConfigError("jwks_url: cache and timeout must be > 0, refresh interval >= 0")
        self._host = parts.hostname
        self._port = port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._tls = ssl.create_default_context() if parts.scheme == "https" else None
        # Shown in errors: scheme, host and path only (a URL may carry credentials in userinfo or query).
        netloc = parts.hostname + (f":{port}" if port else "")
        self.description = f"JWKS URL {parts.scheme}://{netloc}{parts.path}"
        self._cache_seconds = float(cache_seconds)
        self._min_interval = float(refresh_min_interval_seconds)
        self._timeout = float(timeout_seconds)
        self._clock = clock
        # Held for the whole of every fetch, inline or background: at most one fetch is ever in flight.
        self._fetch_lock = threading.Lock()
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
        if keys is None:
            self._first_fetch()
            return self._held()
        if self._clock.now() - self._fetched_at >= self._cache_seconds:
            self._start_background_fetch()
        return keys

    def refresh(self) -> KeySet:
        if self._keys is None:
            self._first_fetch()
        else:
            self._start_background_fetch()
        return self._held()

    def peek(self) -> KeySet | None:
        return self._keys

    def wait_for_fetch(self, timeout: float) -> bool:
        """Block until no fetch is in flight, for at most ``timeout`` seconds; True iff none is.

        For tests and orderly shutdown; the request path never calls it.
        """
        if not self._fetch_lock.acquire(timeout=timeout):
            return False
        self._fetch_lock.release()
        return True

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

    def _first_fetch(self) -> None:
        if _on_event_loop():
            self._start_background_fetch()  # the loop serves everyone: never wait here (review finding)
        else:
            self._fetch_inline()

    def _fetch_inline(self) -> None:
        # Nothing to serve yet: wait for a fetch in flight rather than failing the request at once.
        if not self._fetch_lock.acquire(timeout=self._timeout + 1.0):
            return
        try:
            if self._keys is None:
                self._attempt()
        finally:
            self._fetch_lock.release()

    def _start_background_fetch(self) -> None:
        # Cheap checks only: this runs on the request path. The lock is taken here and handed to the fetch
        # thread, which releases it when done (a threading.Lock may be released by any thread).
        if not self._may_attempt(self._clock.now()) or not self._fetch_lock.acquire(blocking=False):
            return
        try:
            threading.Thread(target=self._fetch_in_background, name="tenantgate-jwks-fetch", daemon=True).start()
        except RuntimeError as err:  # no thread available: keep serving the held keys, retry next time
            self._last_error = f"cannot start a JWKS fetch thread: {err}"
            self._fetch_lock.release()

    def _fetch_in_background(self) -> None:
        try:
            self._attempt()
        finally:
            self._fetch_lock.release()

    def _attempt(self) -> None:
        # The caller holds _fetch_lock.
        now = self._clock.now()
        if not self._may_attempt(now):
            return
        self._attempted_at = now
        try:
            keys = self._fetch()
        except Exception as err:  # noqa: BLE001 - any fetch failure keeps the last good keys
            self._last_error = f"{type(err).__name__}: {_safe_reason(err)}"
            return
        self._fetched_at = now
        self._keys = keys
        self._last_error = ""

    def _fetch(self) -> KeySet:
        deadline = time.monotonic() + self._timeout
        connection: http.client.HTTPConnection
        if self._tls is not None:
            connection = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout,
                                                     context=self._tls)
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        expired = threading.Event()
        watchdog: threading.Timer | None = None
        try:
            connection.connect()
            # A per-read socket timeout cannot stop a server that sends one byte just before each read would
            # time out; the watchdog shuts the socket down at the deadline whatever it is waiting for.
            watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), _abort, (connection.sock, expired))
            watchdog.daemon = True
            watchdog.start()
            connection.request("GET", self._target, headers={"Accept": "application/jwk-set+json, application/json"})
            response = connection.getresponse()
            if response.status != 200:
                raise ConfigError(f"HTTP status {response.status}")
            body = _read_body(response, deadline)
        except Exception as err:
            if expired.is_set():
                raise TimeoutError("JWKS fetch took too long") from err
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()
            connection.close()
        if expired.is_set():
            raise TimeoutError("JWKS fetch took too long")
        return parse_jwks(body.decode("utf-8"), origin=self.description, strict=False)


def _on_event_loop() -> bool:
    """True on a thread running an asyncio event loop (a coroutine's caller), where blocking stalls every call."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _abort(sock: socket.socket | None, expired: threading.Event) -> None:
    expired.set()
    if sock is None:
        return
    try:
        # socket.socket's own shutdown, also for a TLS socket: it wakes a blocked read on another thread
        # without touching the TLS object that read is using.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: the fetch is over


def _read_body(response: http.client.HTTPResponse, deadline: float) -> bytes:
    if response.length is not None and response.length > MAX_JWKS_BYTES:
        raise ConfigError(f"response larger than {MAX_JWKS_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        # read1 returns what one socket read yields (read(n) would wait for all n bytes), so this check runs
        # between every few bytes a trickling server sends.
        if time.monotonic() >= deadline:
            raise TimeoutError("JWKS fetch took too long")
        chunk = response.read1(_READ_CHUNK_BYTES)
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_JWKS_BYTES:
            raise ConfigError(f"response larger than {MAX_JWKS_BYTES} bytes")
        chunks.append(chunk)
    if response.length:
        raise ConfigError("response ended before its Content-Length")
    return b"".join(chunks)


def _safe_reason(err: Exception) -> str:
    if isinstance(err, UnicodeDecodeError):
        return "response is not UTF-8"
    return str(err)[:200] or type(err).__name__

# --------------------------------------------------------------------------------------------- issuers


@dataclass(frozen=True, slots=True)
class IssuerKeys:
    """A trusted issuer: its settings (exact ``iss``, audiences, algorithms, tenants) and where its keys come from.

    ``settings.tenants`` (``[[tokens.issuers]] tenants = ["acme", "globex"]``) limits the tenants the issuer
    may assert in the tenant claim; empty (the default) means any tenant. Raises ``ConfigError`` when the
    settings are unsafe (no audience, unknown or mixed HMAC/asymmetric algorithms, a tenants entry that is
    not a tenant id) or when keys already held cannot verify any of the issuer's algorithms.
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
        for tenant in self.settings.tenants:
            if not is_tenant_id(tenant):
                raise ConfigError(f"{where}: tenants entry {tenant!r} is not a valid tenant id")
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
