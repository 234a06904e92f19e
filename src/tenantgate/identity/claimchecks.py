"""The claims of a token, checked: subject, times (with the injected clock), audience, the issuer's tenants.

Every refusal is a ``TokenError`` subclass (``TokenExpired``, ``TokenInvalid``, ``AudienceMismatch``,
``IssuerUntrusted``). ``check_window`` is the one time check, for a fresh verification
(``tenantgate.identity.verifier``) and a cached token's hit (``tenantgate.identity.tokencache``) alike.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from tenantgate.config import TokenSettings
from tenantgate.core.ports import Clock
from tenantgate.errors import AudienceMismatch, IssuerUntrusted, TokenExpired, TokenInvalid

MAX_SUBJECT_CHARS = 1024
MAX_JTI_CHARS = 128
MAX_TIME_VALUE = 1e11  # year ~5138: anything larger is garbage, and floats stay exact below it


def subject_of(payload: Mapping[str, Any]) -> str:
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUBJECT_CHARS:
        raise TokenInvalid("token subject (sub) must be a non-empty string of at most 1024 characters")
    return sub


def check_times(payload: Mapping[str, Any], settings: TokenSettings,
                clock: Clock) -> tuple[float, float | None, float | None]:
    """The token's ``(exp, nbf, iat)`` once they are well-formed and ``check_window`` accepts them now."""
    if "exp" not in payload:
        raise TokenInvalid("token has no expiry (exp)")
    if settings.require_typ and ("iat" not in payload or not isinstance(payload.get("jti"), str)
                                 or not payload.get("jti")):
        # RFC 9068 section 2.2: an at+jwt access token carries iat and jti (review finding: the profile was
        # claimed by typ alone).
        raise TokenInvalid("an at+jwt access token must carry iat and jti (RFC 9068)")
    expires_at = _time_claim(payload, "exp")
    not_before = _time_claim(payload, "nbf") if "nbf" in payload else None
    issued_at = _time_claim(payload, "iat") if "iat" in payload else None
    check_window(expires_at, not_before, issued_at, settings, clock)
    return expires_at, not_before, issued_at


def check_window(expires_at: float, not_before: float | None, issued_at: float | None, settings: TokenSettings,
                 clock: Clock) -> None:
    """Raise ``TokenExpired`` or ``TokenInvalid`` unless the injected clock's now is within the token's
    validity. The one time check, for a fresh verification and a cache hit alike (review finding: a hit
    that skipped the ``iat`` and lifetime checks accepted, after a clock step back, what a fresh
    verification refused, so the answer depended on each worker's cache)."""
    now = clock.now()
    leeway = settings.leeway_seconds
    if not now < expires_at + leeway:
        raise TokenExpired("token has expired")
    if not_before is not None and not_before > now + leeway:
        raise TokenInvalid("token is not yet valid (nbf)")
    if issued_at is not None and issued_at > now + leeway:
        raise TokenInvalid("token is issued in the future (iat)")
    # Without iat the lifetime counts from now: a clock stepped back lengthens it.
    lifetime = expires_at - (issued_at if issued_at is not None else now)
    if lifetime > settings.max_lifetime_seconds:
        raise TokenInvalid("token lifetime exceeds the configured maximum")


def _time_claim(payload: Mapping[str, Any], name: str) -> float:
    value = payload[name]
    # bool is an int subclass; a numeric string is what PyJWT would wrongly accept.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenInvalid(f"token {name} must be a number")
    number = float(value)  # an int too large for a float raises OverflowError: caught by JwtVerifier.verify()
    if not math.isfinite(number) or not 0 <= number < MAX_TIME_VALUE:
        raise TokenInvalid(f"token {name} is out of range")
    return number


def check_audience(aud: Any, audiences: Sequence[str]) -> None:
    # Second opinion after PyJWT, whose audience rules have changed between releases.
    claimed = [aud] if isinstance(aud, str) else aud
    if not isinstance(claimed, list) or not all(isinstance(a, str) for a in claimed):
        raise AudienceMismatch("token audience must be a string or a list of strings")
    if not any(a in audiences for a in claimed):
        raise AudienceMismatch("token audience does not match")


def check_tenant_allowed(tenant: Any, allowed: Sequence[str]) -> None:
    # INVARIANT: an issuer limited to some tenants cannot speak for any other; exact, case-sensitive match.
    if allowed and isinstance(tenant, str) and tenant not in allowed:
        raise IssuerUntrusted("issuer is not trusted for this tenant")


def token_id_of(jti: Any, signing_input: str) -> str:
    if isinstance(jti, str) and jti and len(jti) <= MAX_JTI_CHARS:
        return jti
    # From header.payload only: the signature has more than one valid encoding (ECDSA s and n - s).
    return "sha256:" + hashlib.sha256(signing_input.encode("ascii")).hexdigest()[:16]
