"""The tenant invariant and token-bound intent: pure functions over verified claims.

Each function returns a value or a ``Denial``; none raises for an expected negative answer.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Mapping
from typing import Any

from tenantgate.core.model import ClaimNames, Denial, Principal, Reason, Resource, VerifiedClaims
from tenantgate.core.request import is_tenant_id

MAX_ROLES = 256
MAX_CLAIM_STRING = 256
# 32 bytes in unpadded base64url: 43 characters, the last one carrying only 2 significant bits.
_B64URL_SHA256 = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")


def principal_from_claims(verified: VerifiedClaims, names: ClaimNames) -> Principal | Denial:
    """Build the principal from verified claims only.

    INVARIANT: the principal's tenant is the configured tenant claim of a verified token and nothing
    else; no request field, header or entity can set it. A missing, non-string, empty or ill-formed
    tenant claim is ``tenant_claim_missing``.
    """
    claims = verified.claims
    tenant = claims.get(names.tenant)
    if not is_tenant_id(tenant):
        return Denial(Reason.TENANT_CLAIM_MISSING,
                      f"token has no valid {names.tenant!r} claim (a tenant id string is required)")
    roles = _string_list(claims.get(names.roles), names.roles, allow_space_separated=False)
    if isinstance(roles, Denial):
        return roles
    intents: tuple[str, ...] | None = None
    if names.intents in claims:
        bound = _string_list(claims[names.intents], names.intents, allow_space_separated=True)
        if isinstance(bound, Denial):
            return bound
        intents = bound
    entity_type, entity_id = "User", verified.subject
    if "act" in claims:
        actor = _actor(claims["act"])
        if isinstance(actor, Denial):
            return actor
        entity_type, entity_id = "Agent", actor
    assert isinstance(tenant, str)
    return Principal(
        entity_type=entity_type,
        entity_id=entity_id,
        subject=verified.subject,
        tenant=tenant,
        roles=roles,
        intents=intents,
        issuer=verified.issuer,
        token_id=verified.token_id,
        # `roles: []` is the identity provider saying "no roles"; only a missing claim lets entity data speak.
        roles_claimed=names.roles in claims,
    )


def check_tenant(principal: Principal, resource: Resource) -> Denial | None:
    """INVARIANT: a principal may only touch resources of its own tenant. Returns a denial on mismatch."""
    if principal.tenant != resource.tenant:
        return Denial(Reason.CROSS_TENANT,
                      "the resource belongs to another tenant than the caller's token")
    return None


def check_intent(principal: Principal, intent: str) -> Denial | None:
    """Token-bound intent: when the token carries intents, the stated intent must be one of them.

    Agents (delegated tokens) must carry an intents claim: an agent without bound intents is refused.
    """
    if principal.intents is None:
        if principal.is_agent:
            return Denial(Reason.INTENT_NOT_BOUND,
                          "agent tokens (with an act claim) must carry an intents claim")
        return None
    if not intent:
        return Denial(Reason.INTENT_MISSING, "the token binds intents; the request must state one")
    if intent not in principal.intents:
        return Denial(Reason.INTENT_NOT_BOUND, "the stated intent is not among the token's intents")
    return None


def check_token_binding(claims: Mapping[str, Any], client_cert_sha256: str, ignored: str = "") -> Denial | None:
    """Certificate-bound tokens (RFC 8705 §3): ``cnf.x5t#S256`` must equal the client certificate's thumbprint.

    A token without ``cnf`` is not bound: None. A ``cnf`` that is not an object, has no ``x5t#S256`` (the
    only confirmation method checked here, so a token bound any other way is never accepted without its
    proof) or whose thumbprint is not base64url of 32 bytes is ``token_invalid``. A bound token with no
    client certificate, or another one, is ``token_binding_mismatch``: a stolen bound token is useless
    without the private key of its certificate. ``client_cert_sha256`` is lowercase hex ("" = none);
    ``ignored`` says why a certificate the request named was not used (the mismatch message then says so).
    """
    if "cnf" not in claims:
        return None
    cnf = claims["cnf"]
    thumbprint = cnf.get("x5t#S256") if isinstance(cnf, Mapping) else None
    expected = _b64url_sha256(thumbprint)
    if expected is None:
        return Denial(Reason.TOKEN_INVALID,
                      "claim 'cnf' must be an object with 'x5t#S256' (base64url SHA-256 of a certificate)")
    if not client_cert_sha256:
        return Denial(Reason.TOKEN_BINDING_MISMATCH,
                      "the token is bound to a client certificate (cnf x5t#S256) and "
                      + (f"the request's was not used: {ignored}" if ignored else "none was presented"))
    if not hmac.compare_digest(expected, client_cert_sha256.lower()):
        return Denial(Reason.TOKEN_BINDING_MISMATCH,
                      "the client certificate does not match the token's certificate binding (cnf x5t#S256)")
    return None


def _b64url_sha256(value: Any) -> str | None:
    """Lowercase hex of a base64url (unpadded) SHA-256 digest, or None when it is not exactly that."""
    if not isinstance(value, str) or _B64URL_SHA256.fullmatch(value) is None:
        return None
    return base64.urlsafe_b64decode(value + "=").hex()


def _string_list(value: Any, claim: str, *, allow_space_separated: bool) -> tuple[str, ...] | Denial:
    if value is None:
        return ()
    if allow_space_separated and isinstance(value, str):
        # OAuth's scope syntax (RFC 6749 section 3.3): items separated by U+0020 only. Splitting on any
        # whitespace would read two intents where the issuer, checking the RFC way, bound one
        # ("summarize<U+3000>billing.reconcile"), so an item with other whitespace or control characters
        # is refused, not split.
        value = [item for item in value.split(" ") if item]
        if not all(item.isprintable() for item in value):
            return Denial(Reason.TOKEN_INVALID, f"claim {claim!r}: a string of intents is separated by spaces "
                                                "(U+0020) and holds no other whitespace or control characters")
    problem = claim_list_problem(value)
    if problem:
        return Denial(Reason.TOKEN_INVALID, f"claim {claim!r} {problem}")
    return tuple(value)


def claim_list_problem(value: Any) -> str:
    """Why ``value`` cannot be a roles or intents claim ("" when it can): a list of at most ``MAX_ROLES``
    non-empty strings of at most ``MAX_CLAIM_STRING`` characters each."""
    if not isinstance(value, list):
        return "must be a list of non-empty strings"
    if len(value) > MAX_ROLES:
        return f"holds {len(value)} items; at most {MAX_ROLES} are accepted"
    if not all(isinstance(v, str) and v for v in value):
        return "must be a list of non-empty strings"
    if any(len(v) > MAX_CLAIM_STRING for v in value):
        return f"holds an item longer than {MAX_CLAIM_STRING} characters"
    return ""


def _actor(act: Any) -> str | Denial:
    # RFC 8693: the outermost "act" names the current actor; nested "act" members are prior actors.
    if not isinstance(act, Mapping):
        return Denial(Reason.TOKEN_INVALID, "claim 'act' must be an object with a 'sub'")
    sub = act.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 1024:
        return Denial(Reason.TOKEN_INVALID,
                      "claim 'act' must carry a non-empty string 'sub' of at most 1024 characters")
    return sub
