"""The nouns of a decision: verified claims, principal, resource, check input, decision result, audit event."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, dataclass_transform

_Record = TypeVar("_Record")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def hot_record(cls: type[_Record]) -> type[_Record]:
    """A slotted dataclass made on every decision: frozen to the type checker (mypy refuses an assignment to a
    field, as for ``@dataclass(frozen=True)``; ``dataclasses.replace`` makes a changed copy), hashable and
    compared by value like a frozen one, but built with plain slot stores at run time.

    A frozen dataclass sets each field through ``object.__setattr__`` (about 1.2k instructions a field here,
    against a few dozen for a slot store): the six records a Check makes (59 fields) cost 64k instructions, 15%
    of the Check handler, as frozen ones (callgrind). They are made fresh for one decision and handed on, never
    kept or shared between decisions (what is, like the decision memo's outcomes, stays ``frozen=True``); the
    audit sink's per-record ``BatchItem`` and ``SealedRecord`` are made the same way.
    """
    return dataclass(slots=True, unsafe_hash=True)(cls)


class Decision(enum.Enum):
    """The only two answers. There is no "unset": every code path picks one explicitly."""

    ALLOW = "ALLOW"
    DENY = "DENY"


class Reason(enum.StrEnum):
    """Stable reason codes (documented in the README). The first failing step of a decision gives the reason."""

    ALLOW = "allow"
    ALLOW_BREAK_GLASS = "allow_break_glass"
    TOKEN_MISSING = "token_missing"
    TOKEN_INVALID = "token_invalid"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_BINDING_MISMATCH = "token_binding_mismatch"
    ISSUER_UNTRUSTED = "issuer_untrusted"
    AUDIENCE_MISMATCH = "audience_mismatch"
    TENANT_CLAIM_MISSING = "tenant_claim_missing"
    CROSS_TENANT = "cross_tenant"
    SUBJECT_MISMATCH = "subject_mismatch"
    PEP_ROLE_MISSING = "pep_role_missing"
    SUBJECT_UNKNOWN = "subject_unknown"
    INTENT_MISSING = "intent_missing"
    INTENT_NOT_BOUND = "intent_not_bound"
    POLICY_FORBID = "policy_forbid"
    NO_PERMIT = "no_permit"
    INVALID_REQUEST = "invalid_request"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    GRANT_STORE_UNAVAILABLE = "grant_store_unavailable"
    TENANT_POLICIES_UNAVAILABLE = "tenant_policies_unavailable"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True, weakref_slot=True)  # weakly referenced by DecisionPoint's principal cache
class VerifiedClaims:
    """Claims of a token whose signature, issuer, audience and times were verified.

    ``token_id`` is the token's ``jti`` or ``sha256:<prefix>`` of the token: never the raw token.
    """

    issuer: str
    subject: str
    claims: Mapping[str, Any]
    token_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class ClaimNames:
    """Which token claims carry the tenant, the roles and the bound intents."""

    tenant: str = "tenant"
    roles: str = "roles"
    intents: str = "intents"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking. ``tenant`` comes only from a verified token claim.

    ``entity_type`` is ``User`` or, for a delegated token (``act`` claim, RFC 8693), ``Agent`` with
    ``entity_id`` the actor and ``subject`` the user it acts for. ``intents`` is None when the token
    carries no intents claim (the request's intent is then not bound).
    """

    entity_type: str
    entity_id: str
    subject: str
    tenant: str
    roles: tuple[str, ...]
    intents: tuple[str, ...] | None
    issuer: str
    token_id: str
    # The subject of the trusted enforcement point's token when this principal is a subject that PEP stated
    # (AuthZEN trusted-PEP mode); "" when the principal is the token's own subject.
    stated_by: str = ""
    # False only when the verified token had no roles claim at all: then, and only then, the principal may take
    # the roles of its own entity-data record (``subjects.roles_from_entity_data``). A token issued with an
    # explicit empty roles claim stays role-less. True by default, so a principal built any other way is never
    # given roles it was not built with.
    roles_claimed: bool = True

    @property
    def is_agent(self) -> bool:
        return self.entity_type == "Agent"


@hot_record
class Resource:
    """What is asked about. ``tenant`` is the owning tenant as stated by the enforcement point."""

    type: str
    id: str
    tenant: str
    attributes: Mapping[str, Any] = field(default_factory=dict)


class SubjectBinding(enum.Enum):
    """How a subject stated in the request (AuthZEN ``subject``) relates to the verified token.

    ``TOKEN``: it must be the token's own subject (the enforcement point forwards the end user's token).
    ``PEP``: the token is a trusted enforcement point's (it carries the configured PEP role); the stated
    subject is a user of the token's tenant, whose roles and ancestors come from that tenant's entity data.
    """

    TOKEN = "token"
    PEP = "pep"


@dataclass(frozen=True, slots=True)
class StatedSubject:
    """A subject named in the request body: a principal type (``User``) and id. Untrusted until bound."""

    type: str
    id: str
    binding: SubjectBinding


@hot_record
class CheckInput:
    """One question, as an adapter translated it. Nothing here is trusted yet, not even its shape."""

    token: str
    action: str
    resource: Resource
    intent: str = ""
    context: Mapping[str, Any] = field(default_factory=dict)
    api: str = "check"
    # Set by an adapter that could not translate part of the call (e.g. two authorization headers,
    # an unconvertible Struct). decide() then denies with token_invalid / invalid_request, audited.
    token_problem: str = ""
    request_problem: str = ""
    # Set by an adapter whose own translation of the call failed unexpectedly (a bug, which it logs): decide()
    # denies internal_error without reading anything else, audited like every other decision.
    translation_failed: bool = False
    # Record each step's outcome in DecisionResult.trace (for `tenantgate explain`); off on the hot path.
    explain: bool = False
    # Lowercase hex SHA-256 of the DER client certificate the request came with (RFC 8705), as an adapter
    # saw it (Envoy's forwarded peer certificate); "" when none. A token bound with cnf.x5t#S256 must match.
    client_cert_sha256: str = ""
    # Why a client certificate the request named was not used ("" = none was ignored); a bound token's
    # token_binding_mismatch message says it (e.g. forwarded by a caller not trusted to forward certificates).
    client_cert_ignored: str = ""
    # Dry run: decided and audited as usual (the audit record is flagged); the adapter answers allow anyway.
    dry_run: bool = False
    # A subject the request states (AuthZEN); None for Check, where the principal is the token's subject.
    stated_subject: StatedSubject | None = None
    # The resource's owning tenant is the caller's (verified token) tenant when resource.tenant is "".
    resource_tenant_from_caller: bool = False


@dataclass(frozen=True, slots=True)
class Denial:
    """A step's negative answer: a reason code and a human-readable message (no secrets in it)."""

    reason: Reason
    message: str


@hot_record
class AuditEvent:
    """The record written for every decision before its answer leaves. Field names are a public contract."""

    decision_id: str
    time: str
    decision: str
    reason: str
    message: str
    api: str
    subject: str
    actor: str
    principal_type: str
    principal_tenant: str
    resource_type: str
    resource_id: str
    resource_tenant: str
    action: str
    intent: str
    policy_ids: tuple[str, ...]
    grant_id: str
    policy_version: str
    issuer: str
    token_id: str
    dry_run: bool = False  # decided in dry-run mode: the enforcement point was told to allow regardless
    # The subject the request stated (AuthZEN ``subject.id``); ``subject`` stays the token's subject, so a
    # trusted enforcement point (subject) and the user it spoke for (stated_subject) are both on record.
    stated_subject: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``record_type: "decision"`` then the fields in order (``policy_ids`` as a list)."""
        # Spelled out (not a loop over fields): this runs for every decision. A test checks it stays complete.
        return {"record_type": "decision", "decision_id": self.decision_id, "time": self.time,
                "decision": self.decision, "reason": self.reason, "message": self.message, "api": self.api,
                "subject": self.subject, "actor": self.actor, "principal_type": self.principal_type,
                "principal_tenant": self.principal_tenant, "resource_type": self.resource_type,
                "resource_id": self.resource_id, "resource_tenant": self.resource_tenant, "action": self.action,
                "intent": self.intent, "policy_ids": list(self.policy_ids), "grant_id": self.grant_id,
                "policy_version": self.policy_version, "issuer": self.issuer, "token_id": self.token_id,
                "dry_run": self.dry_run, "stated_subject": self.stated_subject}




@dataclass(frozen=True, slots=True)
class TraceStep:
    """One step of a decision as ``explain`` shows it: token, principal, request, tenant, grant, intent, cedar."""

    step: str
    outcome: str  # "pass", "deny" or "info"
    detail: str
    policy_ids: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


@hot_record
class DecisionResult:
    """The answer: decision, reason, determining policies, decision id and the audit record written for it."""

    decision: Decision
    reason: Reason
    message: str
    policy_ids: tuple[str, ...]
    decision_id: str
    audit: AuditEvent
    trace: tuple[TraceStep, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.ALLOW


def rfc3339(epoch: float) -> str:
    """UTC RFC 3339 with milliseconds and a ``Z`` (as ``datetime.isoformat(timespec="milliseconds")``)."""
    if not 0 <= epoch < 1e11:  # negative, NaN, infinite or beyond year 5138: datetime decides (or raises)
        return _rfc3339_slow(epoch)
    fraction, whole = math.modf(epoch)
    micros = round(fraction * 1_000_000)  # datetime.fromtimestamp rounds to microseconds the same way
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    second = int(whole)
    cached = _LAST_SECOND
    if cached[0] != second:  # one datetime per second of decisions, not per decision
        cached = (second, datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S"))
        globals()["_LAST_SECOND"] = cached
    return f"{cached[1]}.{micros // 1000:03d}Z"


_LAST_SECOND: tuple[int, str] = (-1, "")


def _rfc3339_slow(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
