"""What a decision leaves behind besides its answer: the audit record written for it and the explain trace
returned with it.

``pdp`` decides; this builds, from what it decided, the ``AuditEvent`` (request-controlled strings clipped, an
unverified token named by a fingerprint, never by itself) and the explain steps. Pure functions of their
arguments, no I/O: ``pdp`` writes the record and answers.
"""

from __future__ import annotations

import hashlib

from tenantgate.core.engine import Engine
from tenantgate.core.model import (
    AuditEvent,
    CheckInput,
    Decision,
    Principal,
    Reason,
    TraceStep,
    VerifiedClaims,
    hot_record,
    rfc3339,
)
from tenantgate.core.ports import Clock

_AUDIT_LIMIT = 256  # characters kept of request-controlled strings in an audit record


@hot_record
class Outcome:
    """What a decision came to: its answer and its record are both made from it."""

    decision: Decision
    reason: Reason
    message: str
    policy_ids: tuple[str, ...] = ()
    grant_id: str = ""
    grant_mark: int = 0  # GrantLookup.revocation_mark() before the grant was looked up (not recorded)


def audit_event(clock: Clock, decision_id: str, check: CheckInput, outcome: Outcome,
                verified: VerifiedClaims | None, principal: Principal | None, policy_version: str) -> AuditEvent:
    """The audit record of one decision, stamped with ``clock``'s time now."""
    res = check.resource
    return AuditEvent(
        decision_id=decision_id,
        time=rfc3339(clock.now()),
        decision=outcome.decision.value,
        reason=outcome.reason.value,
        message=outcome.message,
        api=check.api,
        subject=_clip(verified.subject) if verified else "",
        actor=_clip(principal.entity_id) if principal and principal.is_agent else "",
        principal_type=principal.entity_type if principal else "",
        principal_tenant=principal.tenant if principal else "",
        resource_type=_clip(res.type),
        resource_id=_clip(res.id),
        resource_tenant=_clip(owning_tenant(check, principal)),
        action=_clip(check.action),
        intent=_clip(check.intent),
        policy_ids=outcome.policy_ids,
        grant_id=outcome.grant_id,
        policy_version=policy_version,
        issuer=_clip(verified.issuer) if verified else "",
        token_id=verified.token_id if verified else token_fingerprint(check.token),
        dry_run=check.dry_run,
        stated_subject=_clip(check.stated_subject.id) if check.stated_subject is not None else "",
    )


def token_fingerprint(token: str) -> str:
    """``sha256:<16 hex>`` naming a token that was not verified (its ``jti`` is not to be trusted), never the token:
    of its signed part ``header.payload`` when it has the three parts of a JWS, as the verifier names a verified
    token without ``jti``, so every record of one token (expired, or its signature encoded otherwise) carries
    the same id; of the whole text otherwise."""
    if not token:
        return ""
    signed, dot, _signature = token.rpartition(".")
    named = signed if dot and signed.count(".") == 1 else token
    return "sha256:" + hashlib.sha256(named.encode("utf-8", "replace")).hexdigest()[:16]


def version_shown(engine: Engine | None, check: CheckInput, principal: Principal | None, outcome: Outcome) -> str:
    """The policy version a decision's answer and record carry: its tenant's (core.versions) for a caller of
    that tenant or an operator with a grant for it; the global one for everyone else, so a cross-tenant probe
    never sees another tenant's version change."""
    if engine is None:
        return ""
    tenant = owning_tenant(check, principal)
    if principal is not None and (principal.tenant == tenant or outcome.grant_id):
        return engine.compiled.version_for(tenant)
    return engine.compiled.global_version


def owning_tenant(check: CheckInput, principal: Principal | None) -> str:
    """The resource's owning tenant: as stated, or the caller's when the adapter left it to the token."""
    if check.resource.tenant or not check.resource_tenant_from_caller or principal is None:
        return check.resource.tenant
    return principal.tenant


def describe_principal(principal: Principal) -> str:
    """The principal as an explain step shows it."""
    bound = list(principal.intents) if principal.intents is not None else "not bound"
    stated_by = f", stated by the enforcement point {principal.stated_by!r}" if principal.stated_by else ""
    return (f'{principal.entity_type}::"{principal.entity_id}" of tenant {principal.tenant}, '
            f"roles {list(principal.roles)}, intents {bound}{stated_by}")


def note(trace: list[TraceStep], step: str, outcome: str, detail: str, policy_ids: tuple[str, ...] = (),
         errors: tuple[str, ...] = ()) -> None:
    """Append one explain step to ``trace``."""
    trace.append(TraceStep(step, outcome, detail, policy_ids, errors))


def _clip(value: str) -> str:
    return value if len(value) <= _AUDIT_LIMIT else value[:_AUDIT_LIMIT] + "..."


__all__ = ["Outcome", "audit_event", "describe_principal", "note", "owning_tenant", "token_fingerprint",
           "version_shown"]
