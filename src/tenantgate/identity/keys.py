"""Verification keys: JWKS documents parsed once into key objects, and what each key may verify.

Security defaults:

* Keys are parsed once (with ``jwt.PyJWK``) into cryptography key objects; verification never re-parses
  PEM or JWK text and never takes a key from the token itself.
* Private key material (``d``, ``p``, ``q``, ...), HMAC secrets shorter than 32 bytes, RSA moduli shorter than
  2048 bits and malformed keys are refused; keys of an unsupported type or curve are skipped with a warning.
  ``strict`` (a JWKS file, trusted configuration) makes any doubtful key a ``ConfigError``; a fetched set
  skips them with a warning (see ``jwks``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from tenantgate.config import HMAC_ALGORITHMS
from tenantgate.errors import ConfigError
from tenantgate.identity.encoding import b64url_decode, b64url_encode, parse_strict_json

MAX_JWKS_BYTES = 1_048_576
"""Largest JWKS document accepted, from a file or a URL."""

MIN_HMAC_SECRET_BYTES = 32
MIN_RSA_BITS = 2048

# Members that only a private (or symmetric) JWK carries. Their presence in a public key set is a leak.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth"})

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

    def holds(self, key: VerificationKey) -> bool:
        """True iff ``key`` (the very object, or an equal key: same ``kid``, metadata and key material) is in
        this set. A re-parsed set that still publishes a key holds it; a set it was removed from does not."""
        return key in self.keys


def parse_jwks(text: str, *, origin: str, strict: bool, allow_empty: bool = False) -> KeySet:
    """Parse a JWKS document into a ``KeySet``.

    Raises ``ConfigError`` (message prefixed with ``origin``) when the document is not a strict-JSON object
    with a ``keys`` list, or when no usable key remains (``no_usable_key_message``). With ``allow_empty``, a
    well-formed set without a usable key is returned as an empty ``KeySet`` instead: an issuer that withdrew
    every key (``{"keys": []}``) or publishes only keys TenantGate cannot use has withdrawn trust in the old
    ones. With ``strict`` (files), a doubtful key is a ``ConfigError``; without it (URLs), the key is skipped
    with a warning. Unsupported key types and curves are always skipped with a warning. Messages never
    contain key material.
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
    if not keys and not allow_empty:
        raise ConfigError(no_usable_key_message(origin))
    return KeySet(tuple(keys), tuple(warnings))


def no_usable_key_message(origin: str) -> str:
    """What is said (start-up error, log line, ``last_error``) of a key set from ``origin`` without a usable key."""
    return f"{origin}: the key set holds no usable key"


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
    if PRIVATE_MEMBERS & jwk.keys():
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
