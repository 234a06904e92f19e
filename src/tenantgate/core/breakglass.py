"""Break-glass rules: who may request, approve, revoke and list grants, and which grant opens a decision.

Pure rules over a ``GrantStore`` port. Every lifecycle step writes a ``GrantEvent`` to the audit sink inside
the store's transaction, so a step whose event cannot be written does not happen.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tenantgate.core.grants import BeforeCommit, Grant, GrantEvent, GrantState, GrantStore
from tenantgate.core.model import ClaimNames, Denial, Principal, Reason, rfc3339
from tenantgate.core.ports import AuditSink, Clock, TokenVerifier
from tenantgate.core.request import MAX_ACTION, is_tenant_id
from tenantgate.core.tenancy import check_token_binding, principal_from_claims
from tenantgate.errors import (
    GrantConflict,
    GrantError,
    GrantInvalid,
    GrantNotFound,
    GrantPermissionDenied,
    TokenBindingMismatch,
    TokenInvalid,
)

log = logging.getLogger("tenantgate.grants")

MAX_ACTIONS = 32
MAX_REASON = 1024
MAX_TICKET = 256
MAX_GRANT_ID = 64
# An operator's subject is part of the store's lookup index; PostgreSQL's btree holds at most ~2.7 KB a row.
MAX_OPERATOR_BYTES = 1024


@dataclass(frozen=True, slots=True)
class GrantRules:
    """The ``[grants]`` settings the rules need."""

    operator_tenant: str = "platform"
    operator_role: str = "breakglass-operator"
    approver_role: str = "breakglass-approver"
    require_approval: bool = True
    require_ticket: bool = True
    max_ttl_seconds: int = 3600
    pending_ttl_seconds: int = 86_400


@dataclass(frozen=True, slots=True)
class GrantRequest:
    target_tenant: str
    actions: tuple[str, ...]
    reason: str
    ticket: str
    duration_seconds: int


class BreakGlass:
    """Request/approve/revoke/list grants, and look up the grant that may open a cross-tenant decision."""

    def __init__(self, *, store: GrantStore, audit: AuditSink, clock: Clock, rules: GrantRules,
                 verifier: TokenVerifier, claim_names: ClaimNames | None = None) -> None:
        self.store = store
        self._audit = audit
        self._clock = clock
        self.rules = rules
        self._verifier = verifier
        self._names = claim_names or ClaimNames()

    def now(self) -> float:
        return self._clock.now()

    # ------------------------------------------------------------------------------------- callers

    def caller(self, token: str, client_cert_sha256: str = "") -> Principal:
        """The verified principal behind a grant API call. Raises TokenError or GrantPermissionDenied.

        ``client_cert_sha256``: hex SHA-256 of the caller's TLS client certificate ("" = none). A
        certificate-bound token (RFC 8705) is refused without its certificate, exactly as a Check refuses it.
        """
        verified = self._verifier.verify(token)
        unbound = check_token_binding(verified.claims, client_cert_sha256)
        if unbound is not None:
            if unbound.reason is Reason.TOKEN_BINDING_MISMATCH:
                raise TokenBindingMismatch(unbound.message)
            raise TokenInvalid(unbound.message)
        principal = principal_from_claims(verified, self._names)
        if isinstance(principal, Denial):
            raise GrantPermissionDenied(principal.message)
        return principal

    def _require(self, caller: Principal, *roles: str) -> None:
        # INVARIANT: grant operations are for people of the operator tenant holding a grant role.
        if caller.is_agent:
            raise GrantPermissionDenied("agents (delegated tokens) cannot use break-glass grants")
        if caller.tenant != self.rules.operator_tenant:
            raise GrantPermissionDenied(f"only members of the operator tenant {self.rules.operator_tenant!r} "
                                        "may do this")
        if not any(role in caller.roles for role in roles):
            raise GrantPermissionDenied(f"requires the role {' or '.join(repr(r) for r in roles)}")

    # ---------------------------------------------------------------------------------- lifecycle

    def request(self, caller: Principal, req: GrantRequest) -> Grant:
        """Create a grant (PENDING, or ACTIVE at once when approval is not required)."""
        return self._recorded("request", caller, "", lambda: self._request(caller, req))

    def _request(self, caller: Principal, req: GrantRequest) -> Grant:
        self._require(caller, self.rules.operator_role)
        if len(caller.subject.encode("utf-8", "surrogatepass")) > MAX_OPERATOR_BYTES:
            raise GrantInvalid(f"the operator's subject is longer than {MAX_OPERATOR_BYTES} bytes (UTF-8); "
                               "grants cannot be stored for it")
        actions = self._validate(req)
        now = self._clock.now()
        active = not self.rules.require_approval
        grant = Grant(
            id=str(uuid.uuid4()),
            operator=caller.subject,
            operator_tenant=caller.tenant,
            operator_issuer=caller.issuer,
            target_tenant=req.target_tenant,
            actions=actions,
            reason=req.reason.strip(),
            ticket=req.ticket.strip(),
            duration_seconds=req.duration_seconds,
            state=GrantState.ACTIVE if active else GrantState.PENDING,
            requested_at=now,
            pending_until=now + self.rules.pending_ttl_seconds,
            approved_by="(approval not required)" if active else "",
            approved_at=now if active else 0.0,
            expires_at=now + req.duration_seconds if active else 0.0,
        )
        detail = "active at once: grants.require_approval is false" if active else ""
        return self.store.create(grant, self._recorder("grant.requested", caller, detail))

    def approve(self, caller: Principal, grant_id: str) -> Grant:
        """PENDING -> ACTIVE by a second person holding the approver role. Self-approval is refused."""
        return self._recorded("approve", caller, grant_id, lambda: self._approve(caller, grant_id))

    def _approve(self, caller: Principal, grant_id: str) -> Grant:
        self._require(caller, self.rules.approver_role)
        grant = self._get(grant_id)
        if same_person(grant.operator, caller.subject) and grant.operator_tenant == caller.tenant:
            # Same subject, whatever the issuer: one person with two identities is still one person.
            raise GrantPermissionDenied("self-approval is not allowed: a second person must approve")
        now = self._clock.now()
        state = grant.effective_state(now)
        if state is not GrantState.PENDING:
            raise GrantConflict(f"grant {grant_id} is {state.value}, only a PENDING grant can be approved")
        approved = self.store.activate(grant_id, caller.subject, now, self._recorder("grant.approved", caller))
        if approved is None:
            raise GrantConflict(f"grant {grant_id} is no longer PENDING (approved, revoked or expired meanwhile)")
        return approved

    def revoke(self, caller: Principal, grant_id: str, reason: str) -> Grant:
        """PENDING/ACTIVE -> REVOKED, by anyone with the operator or approver role. Takes effect at the next
        decision on every replica sharing the store."""
        return self._recorded("revoke", caller, grant_id, lambda: self._revoke(caller, grant_id, reason))

    def _revoke(self, caller: Principal, grant_id: str, reason: str) -> Grant:
        self._require(caller, self.rules.operator_role, self.rules.approver_role)
        if not reason.strip():
            raise GrantInvalid("a reason is required to revoke a grant")
        if len(reason) > MAX_REASON:
            raise GrantInvalid(f"reason longer than {MAX_REASON} characters")
        if not reason.isprintable():
            raise GrantInvalid("reason must be printable text (no control characters)")
        grant = self._get(grant_id)
        now = self._clock.now()
        revoked = self.store.revoke(grant_id, caller.subject, reason.strip(), now,
                                    self._recorder("grant.revoked", caller, reason.strip()))
        if revoked is None:
            raise GrantConflict(f"grant {grant_id} is {grant.effective_state(now).value} and cannot be revoked")
        return revoked

    def list(self, caller: Principal, tenant: str | None, state: GrantState | None) -> Sequence[Grant]:
        self._require(caller, self.rules.operator_role, self.rules.approver_role)
        if tenant is not None and not is_tenant_id(tenant):
            raise GrantInvalid("tenant is not a valid tenant id")
        return self.store.list(tenant, state, self._clock.now())

    def sweep(self) -> Sequence[Grant]:
        """Mark due grants EXPIRED, with a ``grant.expired`` audit event each."""
        return self.store.expire_due(self._clock.now(), self._recorder("grant.expired", None))

    # ------------------------------------------------------------------------------ decision path

    def find(self, principal: Principal, target_tenant: str, action: str) -> Grant | None:
        """The active grant that lets ``principal`` do ``action`` in ``target_tenant`` now, if any.

        INVARIANT: only a person of the operator tenant who still holds the operator role, only the grant's
        own target tenant and actions, only while active. Raises GrantStoreUnavailable when the store is down.
        """
        r = self.rules
        if principal.is_agent or principal.tenant != r.operator_tenant or r.operator_role not in principal.roles:
            return None
        now = self._clock.now()
        grant = self.store.find_active(principal.subject, principal.tenant, target_tenant, action, now,
                                       principal.issuer)
        if grant is None or not grant.covers(principal.subject, principal.tenant, target_tenant, action, now,
                                             principal.issuer):
            return None
        return grant

    # ------------------------------------------------------------------------------------ helpers

    def _recorded(self, step: str, caller: Principal | None, grant_id: str, change: Callable[[], Grant]) -> Grant:
        """``change()``; a refusal (any ``GrantError``: no permission, self-approval, invalid, unknown grant,
        not in a state that allows it) is first written as a ``grant.refused`` event, then raised."""
        try:
            return change()
        except GrantError as refusal:
            self.refused(step, caller, grant_id, f"{type(refusal).__name__}: {refusal}")
            raise

    def refused(self, step: str, caller: Principal | None, grant_id: str, why: str) -> None:
        """Write a ``grant.refused`` event: ``step`` (request, approve, revoke) of ``grant_id`` by ``caller``
        (None: no verified caller, e.g. a refused or certificate-bound token) was refused for ``why``. The
        refusal stands whether or not its event can be written. The grant id is the caller's: clipped."""
        try:
            self._event("grant.refused", caller, None, f"{step}: {_clip(why, MAX_REASON)}",
                        _clip(grant_id, MAX_GRANT_ID), nobody="(unauthenticated)")
        except Exception as err:  # noqa: BLE001 - the caller is refused either way
            log.error("grant.refused event (%s %s) not written: %s", step, _clip(grant_id, MAX_GRANT_ID), err)

    def _get(self, grant_id: str) -> Grant:
        if not grant_id or len(grant_id) > MAX_GRANT_ID:
            raise GrantInvalid("grant_id is required")
        grant = self.store.get(grant_id)
        if grant is None:
            raise GrantNotFound(f"no grant {grant_id}")
        return grant

    def _validate(self, req: GrantRequest) -> tuple[str, ...]:
        r = self.rules
        if not is_tenant_id(req.target_tenant):
            raise GrantInvalid("target_tenant is not a valid tenant id ([A-Za-z0-9][A-Za-z0-9._:@-]{0,127})")
        if req.target_tenant == r.operator_tenant:
            raise GrantInvalid("target_tenant is the operator tenant; no grant is needed there")
        actions = tuple(dict.fromkeys(a.strip() for a in req.actions if a.strip()))
        if not actions:
            raise GrantInvalid("at least one action is required")
        if len(actions) > MAX_ACTIONS or any(len(a) > MAX_ACTION or not a.isprintable() for a in actions):
            raise GrantInvalid(f"at most {MAX_ACTIONS} actions of at most {MAX_ACTION} printable characters")
        if not req.reason.strip():
            raise GrantInvalid("a reason is required")
        if len(req.reason) > MAX_REASON:
            raise GrantInvalid(f"reason longer than {MAX_REASON} characters")
        if r.require_ticket and not req.ticket.strip():
            raise GrantInvalid("a ticket reference is required (grants.require_ticket)")
        if len(req.ticket) > MAX_TICKET:
            raise GrantInvalid(f"ticket longer than {MAX_TICKET} characters")
        # Reason and ticket are shown to the approver: control characters could repaint their terminal.
        if not req.reason.isprintable() or not req.ticket.isprintable():
            raise GrantInvalid("reason and ticket must be printable text (no control characters)")
        if req.duration_seconds <= 0:
            raise GrantInvalid("duration_seconds must be > 0")
        if req.duration_seconds > r.max_ttl_seconds:
            # Never silently capped: the requester must ask for what they will get.
            raise GrantInvalid(f"duration_seconds {req.duration_seconds} exceeds grants.max_ttl_seconds "
                               f"({r.max_ttl_seconds})")
        return actions

    def _recorder(self, event: str, caller: Principal | None, detail: str = "") -> BeforeCommit:
        def record(grant: Grant) -> None:
            self._event(event, caller, grant, detail)
        return record

    def _event(self, event: str, caller: Principal | None, grant: Grant | None, detail: str = "",
               grant_id: str = "", nobody: str = "(tenantgate)") -> None:
        """Write one grant event; without ``grant`` (a refusal before it was looked up) only ``grant_id``;
        without ``caller`` the actor is ``nobody`` (TenantGate itself, or an unverified caller)."""
        self._audit.write(GrantEvent(
            event_id=str(uuid.uuid4()),
            time=rfc3339(self._clock.now()),
            event=event,
            grant_id=grant.id if grant else grant_id,
            actor=caller.subject if caller else nobody,
            actor_tenant=caller.tenant if caller else "",
            operator=grant.operator if grant else "",
            operator_tenant=grant.operator_tenant if grant else "",
            target_tenant=grant.target_tenant if grant else "",
            actions=grant.actions if grant else (),
            reason=grant.reason if grant else "",
            ticket=grant.ticket if grant else "",
            state=grant.state.value if grant else "",
            expires_at=rfc3339(grant.expires_at) if grant and grant.expires_at else "",
            detail=detail,
            actor_issuer=caller.issuer if caller else "",
            actor_token_id=caller.token_id if caller else "",
        ))


def same_person(a: str, b: str) -> bool:
    """Whether two subjects may name one person, for the two-person rule: equal after NFKC normalisation and
    case folding, with Unicode's default-ignorable characters (zero-width spaces and joiners, variation
    selectors, Hangul fillers, ...) and surrounding whitespace dropped. Stricter than equality on purpose:
    ``Oscar``, ``OSCAR`` and ``oscar\u200b`` cannot approve ``oscar``'s grant (two subjects merged by
    mistake only mean that someone else must approve). Look-alikes from other scripts (a Cyrillic o) are not
    folded: that needs a confusables table."""
    return _person_key(a) == _person_key(b)


def _person_key(subject: str) -> str:
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", subject).casefold())
    return _IGNORABLE.sub("", folded).strip()


# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): invisible in display.
_IGNORABLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
                        "\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8"
                        "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]")


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[:limit] + "..."
