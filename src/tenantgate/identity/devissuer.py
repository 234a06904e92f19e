"""The development issuer: a local signing key and JWKS so the README tour works without an identity provider.

Security defaults: off unless ``[dev_issuer] enabled = true``; asymmetric keys only; the private key lives
in ``key_dir`` (mode 0700) as ``private.pem`` (mode 0600, PKCS#8) and is refused if group or others can
read it; only the public JWK is written to ``jwks.json`` and the verifier reads that file like any other
issuer's. Minted tokens are short-lived (``max_ttl_seconds``) and typed ``at+jwt``.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tenantgate.config import DevIssuerSettings, IssuerSettings
from tenantgate.core.model import ClaimNames
from tenantgate.core.ports import Clock, SystemClock
from tenantgate.core.tenancy import claim_list_problem
from tenantgate.errors import ConfigError
from tenantgate.identity.keys import jwk_thumbprint
from tenantgate.paths import make_private_dirs

PRIVATE_KEY_FILE = "private.pem"
JWKS_FILE = "jwks.json"

_EC_CURVES: Mapping[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_RSA_BITS = 2048
# Claims mint() sets itself; extra_claims may not override them (a typo would silently change meaning).
_REGISTERED = frozenset({"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "act"})
_DEFAULT_CLAIM_NAMES = ClaimNames()  # frozen: a shared immutable default

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True, slots=True)
class _Signer:
    private_key: SigningKey
    kid: str


class DevIssuer:
    """Creates (once) and uses the development signing key.

    ``ensure_keys()`` is idempotent and safe when several processes race: each file is written to a
    temporary file first; the private key is published with a hard link (first writer wins, the others
    adopt its key) and ``jwks.json`` is always derived from the winning key.
    """

    __slots__ = ("_clock", "_lock", "_settings", "_signer")

    def __init__(self, settings: DevIssuerSettings, clock: Clock | None = None) -> None:
        self._settings = settings
        self._clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._signer: _Signer | None = None

    @property
    def key_dir(self) -> Path:
        if not self._settings.key_dir:
            raise ConfigError("dev_issuer.key_dir is not set")
        return Path(self._settings.key_dir)

    @property
    def jwks_path(self) -> Path:
        return self.key_dir / JWKS_FILE

    @property
    def kid(self) -> str:
        """The key id (RFC 7638 thumbprint of the public key); creates the keys if needed."""
        return self._ensure().kid

    def ensure_keys(self) -> None:
        """Create ``key_dir`` (0700), ``private.pem`` (0600) and ``jwks.json`` on first run; reuse them after.

        Raises ``ConfigError`` if the directory cannot be created, the key file is readable by group or
        others, unreadable, or holds a key for another algorithm than ``settings.algorithm``.
        """
        self._ensure()

    def issuer_settings(self) -> IssuerSettings:
        """The trust settings for tokens this issuer mints (its ``jwks.json`` as the key source)."""
        s = self._settings
        return IssuerSettings(
            issuer=s.issuer,
            audiences=(s.audience,),
            algorithms=(s.algorithm,),
            jwks_file=str(self.jwks_path),
        )

    def mint(
        self,
        *,
        tenant: str,
        subject: str,
        roles: Iterable[str] | None = None,
        intents: Iterable[str] | None = None,
        actor: str | None = None,
        ttl_seconds: int = 900,
        extra_claims: Mapping[str, Any] | None = None,
        claim_names: ClaimNames = _DEFAULT_CLAIM_NAMES,
        now: float | None = None,
    ) -> str:
        """Sign an access token (typ ``at+jwt``) for ``subject`` in ``tenant``.

        Claims: iss, sub, aud, iat, nbf (= iat), exp (= iat + ttl), jti (random), the tenant claim, the
        roles claim (list) when ``roles`` is not None (an empty list is a token issued with no roles, which
        entity data does not widen; no claim lets entity data give roles), the intents claim (list) when
        ``intents`` is not None, and
        ``act: {"sub": actor}`` for a delegated (agent) token. Raises ``ConfigError`` when the issuer is
        disabled, ``ttl_seconds`` is outside 1..max_ttl_seconds, an argument is empty or ill-typed, or
        ``extra_claims`` would override a claim set here.
        """
        s = self._settings
        if not s.enabled:
            raise ConfigError("the development issuer is disabled ([dev_issuer] enabled = false)")
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
            raise ConfigError("ttl_seconds must be an integer")
        if not 1 <= ttl_seconds <= s.max_ttl_seconds:
            raise ConfigError(f"ttl_seconds must be between 1 and {s.max_ttl_seconds}")
        _non_empty(tenant, "tenant")
        _non_empty(subject, "subject")
        if actor is not None:
            _non_empty(actor, "actor")
        role_list = None if roles is None else _string_list(roles, "roles")
        intent_list = None if intents is None else _string_list(intents, "intents")
        issued_at = int(self._clock.now() if now is None else now)
        claims: dict[str, Any] = {
            "iss": s.issuer,
            "sub": subject,
            "aud": s.audience,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + ttl_seconds,
            "jti": uuid.uuid4().hex,
            claim_names.tenant: tenant,
        }
        if role_list is not None:
            claims[claim_names.roles] = role_list
        if intent_list is not None:
            claims[claim_names.intents] = intent_list
        if actor is not None:
            claims["act"] = {"sub": actor}
        for name, value in (extra_claims or {}).items():
            if not isinstance(name, str) or not name:
                raise ConfigError("extra claim names must be non-empty strings")
            taken = _REGISTERED | {claim_names.tenant, claim_names.roles, claim_names.intents}
            if name in taken:
                raise ConfigError(f"extra claim {name!r} would override a claim mint() sets")
            claims[name] = value
        signer = self._ensure()
        try:
            return jwt.encode(
                claims, signer.private_key, algorithm=s.algorithm, headers={"typ": "at+jwt", "kid": signer.kid}
            )
        except (TypeError, ValueError) as err:
            raise ConfigError(f"cannot mint the token: {err}") from err

    # ----------------------------------------------------------------------------------------- keys

    def _ensure(self) -> _Signer:
        with self._lock:
            if self._signer is None:
                self._signer = self._load_or_create()
            return self._signer

    def _load_or_create(self) -> _Signer:
        algorithm = self._settings.algorithm
        if algorithm not in _EC_CURVES and algorithm not in _RSA_ALGORITHMS and algorithm != "EdDSA":
            raise ConfigError(f"dev_issuer.algorithm {algorithm!r} is not supported (use ES256, RS256 or EdDSA)")
        key_dir = self.key_dir
        try:
            make_private_dirs(key_dir)
            if stat.S_IMODE(key_dir.stat().st_mode) & 0o077:
                os.chmod(key_dir, 0o700)  # our directory: keep other users out of it
        except OSError as err:
            raise ConfigError(f"cannot create dev_issuer.key_dir {key_dir}: {err.strerror or err}") from err
        private_path = key_dir / PRIVATE_KEY_FILE
        if not private_path.exists():
            pem = _generate(algorithm).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            _publish_once(private_path, pem)  # a racing process may have won: we load whatever is there
        private_key = _load_private(private_path, algorithm)
        public_jwk = _public_jwk(private_key)
        kid = jwk_thumbprint(public_jwk)
        document = {"keys": [{**public_jwk, "kid": kid, "alg": algorithm, "use": "sig"}]}
        text = json.dumps(document, indent=2, sort_keys=True) + "\n"
        jwks_path = key_dir / JWKS_FILE
        try:
            current = jwks_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            current = None
        if current != text:
            _replace(jwks_path, text.encode("utf-8"), 0o644)
        return _Signer(private_key, kid)


def _non_empty(value: Any, name: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string")


def _string_list(values: Iterable[str], name: str) -> list[str]:
    if isinstance(values, (str, bytes)):
        # roles="admin" would otherwise become ["a", "d", "m", "i", "n"].
        raise ConfigError(f"{name} must be a list of strings, not a single string")
    items = list(values)
    problem = claim_list_problem(items)  # a token every verifier would deny is not minted
    if problem:
        raise ConfigError(f"{name} {problem}")
    return items


def _generate(algorithm: str) -> SigningKey:
    if algorithm in _EC_CURVES:
        return ec.generate_private_key(_EC_CURVES[algorithm]())
    if algorithm in _RSA_ALGORITHMS:
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)
    return ed25519.Ed25519PrivateKey.generate()


def _load_private(path: Path, algorithm: str) -> SigningKey:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read the development signing key {path}: {err.strerror or err}") from err
    if mode & 0o077:
        raise ConfigError(f"the development signing key {path} is accessible to group or others (chmod 600)")
    try:
        key: Any = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        # No detail from the parser: it could quote key material.
        raise ConfigError(f"the development signing key {path} is not an unencrypted PKCS#8 PEM key") from err
    if algorithm in _EC_CURVES:
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, _EC_CURVES[algorithm]):
            return key
    elif algorithm in _RSA_ALGORITHMS:
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= _RSA_BITS:
            return key
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise ConfigError(
        f"the development signing key {path} does not fit dev_issuer.algorithm {algorithm}; "
        "remove the key directory to create a new key"
    )


def _public_jwk(private_key: SigningKey) -> dict[str, Any]:
    public = private_key.public_key()
    jwk: dict[str, Any]
    if isinstance(public, rsa.RSAPublicKey):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ed25519.Ed25519PublicKey):
        jwk = jwt.algorithms.OKPAlgorithm.to_jwk(public, as_dict=True)
    else:  # pragma: no cover - _load_private only returns the types above
        raise ConfigError("unsupported development key type")
    # Only public members, whatever the serializer adds.
    return {name: jwk[name] for name in ("kty", "crv", "n", "e", "x", "y") if name in jwk}


def _temp_file(target: Path, data: bytes, mode: int) -> str:
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return temp


def _publish_once(target: Path, data: bytes) -> None:
    """Create ``target`` with ``data`` (mode 0600) unless it exists; never expose a half-written file."""
    try:
        temp = _temp_file(target, data, 0o600)
    except OSError as err:
        raise ConfigError(f"cannot write {target}: {err.strerror or err}") from err
    try:
        os.link(temp, target)  # atomic and exclusive: the first process wins a race
    except FileExistsError:
        pass
    except OSError:
        # No hard links on this filesystem: exclusive create, then write (still first-writer-wins).
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        except OSError as err:
            raise ConfigError(f"cannot write {target}: {err.strerror or err}") from err
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)


def _replace(target: Path, data: bytes, mode: int) -> None:
    try:
        temp = _temp_file(target, data, mode)
        os.replace(temp, target)
    except OSError as err:
        raise ConfigError(f"cannot write {target}: {err.strerror or err}") from err
