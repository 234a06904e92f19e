"""Which of a verified token's claims are kept: exactly those a decision reads, with the values it reads.

Readers (``tenantgate.core.tenancy``): ``principal_from_claims`` reads the configured tenant, roles and
intents claims (``tokens.tenant_claim``, ``roles_claim``, ``intents_claim``) and ``act`` (of an object, its
``sub``); ``check_token_binding`` reads ``cnf`` (of an object, its ``x5t#S256``). ``iss``, ``sub``, ``exp``
and ``jti`` are fields of ``VerifiedClaims``. Nothing else reads ``VerifiedClaims.claims``: a claim read
in the future must be added here, or decisions will not see it.

Why: a verified token is cached until it expires, and an issuer may fill up to ``tokens.max_token_bytes``
with claims that, parsed, take ~20 times their text (review finding: ~280 KiB per cached 16 KiB token).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Claims read as objects, and the one member of each that is read: prior actors (act.act) and other
# confirmation methods are not.
_OBJECT_CLAIMS = (("act", "sub"), ("cnf", "x5t#S256"))


def kept_claims(payload: Mapping[str, Any], named: tuple[str, str, str]) -> dict[str, Any]:
    """The claims of ``payload`` a decision reads: those ``named`` (tenant, roles and intents claim names)
    as they are, ``act`` and ``cnf`` reduced to the member read when they are objects (any other value is
    refused by the core whatever it holds, and kept as it is). A claim absent from ``payload`` stays absent.

    INVARIANT: a decision over the kept claims is the decision over the whole payload.
    """
    kept: dict[str, Any] = {}
    for claim, member in _OBJECT_CLAIMS:
        if claim in payload:
            value = payload[claim]
            if isinstance(value, dict):
                value = {member: value[member]} if member in value else {}
            kept[claim] = value
    for claim in named:
        if claim in payload:
            kept[claim] = payload[claim]  # a configured name wins over a reduced act/cnf object
    return kept
