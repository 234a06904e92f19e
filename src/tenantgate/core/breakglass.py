"""Break-glass rules: who may request, approve, revoke and list grants, and which grant opens a decision.

Pure rules over a ``GrantStore`` port. Every lifecycle step writes a ``GrantEvent`` to the audit sink inside
the store's transaction, so a step whose event cannot be written does not happen, and the log says what
happened when the step fails afterwards. The events (``event``), each naming the grant, the actor and a
``detail`` that starts with the step (``request``, ``approve``, ``revoke``, ``expire``):

- ``grant.requested``, ``grant.approved``, ``grant.revoked``, ``grant.expired``: the step, written just before
  its change commits. A sweep expires due grants in batches of at most ``EXPIRE_BATCH``, one store transaction
  each, and writes a batch's ``grant.expired`` events together (one append, one fsync).
- ``grant.refused``: the step was refused before any change: no permission, self-approval, an invalid or
  unknown grant, a state that does not allow it, an operator with ``max_pending_per_operator`` requests
  pending already or ``max_requests_per_operator_per_hour`` requests in the last hour, or the grant store
  unavailable (including the fail-fast window after an outage).
  ``detail``: ``<step>: <error>: <why>``.
- ``grant.failed``: follows the step's event when the change then failed to commit. Either it did not take
  effect (``<step> not applied: ...``; ``state`` is the state that stands, "" when no such grant was stored),
  or its outcome is unknown because the store could not be read back (``<step> outcome unknown: ...``;
  ``state`` ""; the grant store's state decides). A change whose commit failed but took effect gets no further
  event. The caller gets ``GrantStoreUnavailable`` in every case.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from tenantgate.core.grants import (
    EXPIRE_BATCH,
    BeforeCommit,
    CommitFailed,
    Grant,
    GrantEvent,
    GrantState,
    GrantStore,
)
from tenantgate.core.model import ClaimNames, Denial, Principal, Reason, rfc3339
from tenantgate.core.persons import same_person
from tenantgate.core.ports import AuditSink, Clock, TokenVerifier
from tenantgate.core.problemlog import ProblemLog
from tenantgate.core.request import MAX_ACTION, is_tenant_id
from tenantgate.core.tenancy import check_token_binding, principal_from_claims
from tenantgate.errors import (
    AuditUnavailable,
    GrantConflict,
    GrantError,
    GrantInvalid,
    GrantNotFound,
    GrantPermissionDenied,
    GrantStoreUnavailable,
    TokenBindingMismatch,
    TokenInvalid,
)

log = logging.getLogger("tenantgate.grants")
T = TypeVar("T")

MAX_ACTIONS = 32
MAX_REASON = 1024
MAX_TICKET = 256
MAX_GRANT_ID = 64
# An operator's subject is part of the store's lookup index; PostgreSQL's btree holds at most ~2.7 KB a row.
MAX_OPERATOR_BYTES = 1024
# The most grants one ListGrants answer holds (newest requested first); older ones are not in it.
MAX_LISTED_GRANTS = 1000


@dataclass(frozen=True, slots=True)
class GrantList:
    """What ``BreakGlass.list`` answers: the grants, and whether more matched than are listed."""

    grants: tuple[Grant, ...]
    truncated: bool
# The event each step writes just before its change commits.
STEP_EVENTS = {"request": "grant.requested", "approve": "grant.approved", "revoke": "grant.revoked",
               "expire": "grant.expired"}


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
    # PENDING requests one operator may have waiting at once: a flood of requests would bury real ones in
    # what approvers list, and each stays stored (the audit trail) after it expires.
    max_pending_per_operator: int = 10
    # Requests one operator may make in an hour, in any state: each is stored for good (the audit trail) and
    # audited, so request-and-revoke in a loop would otherwise grow both without bound and flood approvers.
    max_requests_per_operator_per_hour: int = 30


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
                 verifier: TokenVerifier, claim_names: ClaimNames | None = None,
                 undeclared_actions: Callable[[Sequence[str]], Sequence[str]] | None = None) -> None:
        """``undeclared_actions(names)``: those of ``names`` the current policy schema does not declare; a
        request naming any is refused (such a grant would match no Check today, and would open an action
        added to the schema later). None: not checked."""
        self.store = store
        self._audit = audit
        self._clock = clock
        self.rules = rules
        self._verifier = verifier
        self._names = claim_names or ClaimNames()
        self._undeclared_actions = undeclared_actions
        # grant.refused and grant.failed events that cannot be written: an error line, then one a minute
        # counting them, and the first grant event written after them says so. Review finding: a line per
        # refused call (any client can make one) while the audit log could not be written.
        self._unwritten = ProblemLog(log, now=clock.now, level=logging.ERROR, noun="grant events not written",
                                     summary="%d more grant events not written since the last line (latest: %s)")
        # Grants whose revocation this process is committing (id -> revocations in flight): not honoured from
        # the moment grant.revoked is written, since lookups read what is committed on a connection of their own
        # (self-review finding: a Check between the record and the commit was allowed, and its ALLOW followed
        # the revocation in the audit chain). A revocation that then fails to commit honours the grant again.
        self._revoking: dict[str, int] = {}
        self._revoking_lock = threading.Lock()

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
        """Create a grant (PENDING, or ACTIVE at once when approval is not required). Refused (``GrantConflict``)
        when the caller made ``max_requests_per_operator_per_hour`` requests in the last hour, and a PENDING one
        while the caller has ``max_pending_per_operator`` requests pending already."""
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
        # The store counts the caller's requests (pending ones for a PENDING grant) in the insert's own
        # transaction, racing replicas too.
        pending, hourly = self.rules.max_pending_per_operator, self.rules.max_requests_per_operator_per_hour
        return self._change("request", caller, lambda record: self.store.create(grant, record, pending, hourly),
                            detail)

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
        if grant.duration_seconds > self.rules.max_ttl_seconds:
            # The rule in force where it is approved: a replica with a shorter limit does not approve a grant
            # another replica accepted under a longer one.
            raise GrantInvalid(f"grant {grant_id} asks for duration_seconds {grant.duration_seconds}, above "
                               f"grants.max_ttl_seconds ({self.rules.max_ttl_seconds}); it cannot be approved: "
                               "request a shorter grant")
        approved = self._change("approve", caller,
                                lambda record: self.store.activate(grant_id, caller.subject, now, record))
        if approved is None:
            raise GrantConflict(self._changed_meanwhile(grant_id, "approved", GrantState.ACTIVE))
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
        self._get(grant_id)
        now = self._clock.now()
        with self._revoking_lock:
            self._revoking[grant_id] = self._revoking.get(grant_id, 0) + 1
        try:
            revoked = self._change("revoke", caller, lambda record: self.store.revoke(
                grant_id, caller.subject, reason.strip(), now, record), reason.strip())
        finally:
            with self._revoking_lock:
                if self._revoking[grant_id] == 1:
                    del self._revoking[grant_id]
                else:
                    self._revoking[grant_id] -= 1
        if revoked is None:
            raise GrantConflict(self._changed_meanwhile(grant_id, "revoked", GrantState.REVOKED))
        return revoked

    def list(self, caller: Principal, tenant: str | None, state: GrantState | None) -> GrantList:
        """Grants targeting ``tenant`` in effective ``state`` (None: all), newest requested first, at most
        ``MAX_LISTED_GRANTS``, and whether more matched."""
        self._require(caller, self.rules.operator_role, self.rules.approver_role)
        if tenant is not None and not is_tenant_id(tenant):
            raise GrantInvalid("tenant is not a valid tenant id")
        found = self.store.list(tenant, state, self._clock.now(), MAX_LISTED_GRANTS + 1)
        return GrantList(tuple(found[:MAX_LISTED_GRANTS]), truncated=len(found) > MAX_LISTED_GRANTS)

    def sweep(self) -> Sequence[Grant]:
        """Mark the grants due now EXPIRED, with a ``grant.expired`` audit event each (and ``grant.failed`` after
        them when their batch then fails to commit, see ``_change``); return them.

        In batches of at most ``EXPIRE_BATCH``, each its own store transaction with its events written together
        before it commits, so the store is free between batches and one flood of expiring requests cannot hold
        it (and the changes waiting for it) for the time of thousands of audit writes. A batch that fails raises;
        the batches before it stand (their events are in the log) and a later sweep takes up the rest.
        """
        now = self._clock.now()
        expired: list[Grant] = []
        while True:
            batch = self._expire_batch(now)
            expired.extend(batch)
            if len(batch) < EXPIRE_BATCH:
                return expired

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
        if grant.id in self._revoking:  # being revoked here: its grant.revoked may be on record already
            return None
        return grant

    # ------------------------------------------------------------------------------------ helpers

    def _recorded(self, step: str, caller: Principal | None, grant_id: str, change: Callable[[], Grant]) -> Grant:
        """``change()``; a refusal (any ``GrantError``: no permission, self-approval, invalid, unknown grant,
        not in a state that allows it; or ``GrantStoreUnavailable`` before any change, the fail-fast window
        included) is first written as a ``grant.refused`` event, then raised. A change that failed to commit
        (``CommitFailed``) is on record already (``_change``)."""
        try:
            return change()
        except GrantError as refusal:
            self.refused(step, caller, grant_id, f"{type(refusal).__name__}: {refusal}")
            raise
        except CommitFailed:
            raise
        except GrantStoreUnavailable as outage:
            self.refused(step, caller, grant_id, f"{type(outage).__name__}: {outage}")
            raise

    def _change(self, step: str, caller: Principal | None, apply: Callable[[BeforeCommit], T],
                detail: str = "") -> T:
        """``apply(record)``: one store change, where ``record`` writes the step's event for each grant the change
        makes, before it commits. When the change fails after that, the log is made to say what happened:

        - the commit failed (``CommitFailed``): for each grant, if the store shows the change, nothing more; if
          it does not, ``grant.failed`` "not applied" naming the state that stands; if the grant could not be
          read back, ``grant.failed`` "outcome unknown". Raised as ``CommitFailed`` saying which.
        - the store rolled back after some events were written (the event of a later grant of one change could
          not be written): ``grant.failed`` "not applied" for those. Raised unchanged.
        """
        event = STEP_EVENTS[step]
        written: list[Grant] = []

        def record(grant: Grant) -> None:
            self._event(event, caller, grant, detail)
            written.append(grant)

        return self._settled(step, caller, written, lambda: apply(record))

    def _expire_batch(self, now: float) -> Sequence[Grant]:
        """One ``expire_due`` batch, as ``_change`` does a change, its ``grant.expired`` events written together
        with one ``write_many``. An event the sink could not write rolls the whole batch back (raised as the
        sink's error): the events it did write are followed by ``grant.failed``."""
        written: list[Grant] = []

        def record_all(grants: Sequence[Grant]) -> None:
            events = [self._grant_event(STEP_EVENTS["expire"], None, grant) for grant in grants]
            errors = self._audit.write_many(events)
            if len(errors) != len(events):
                written.extend(grants)  # which are on record is unknown: each gets its grant.failed
                raise AuditUnavailable(f"the audit sink answered for {len(errors)} of {len(events)} events")
            written.extend(grant for grant, error in zip(grants, errors, strict=True) if error is None)
            failure = next((error for error in errors if error is not None), None)
            if failure is not None:
                raise failure  # INVARIANT: nothing of the batch commits unless all its events are on record

        return self._settled("expire", None, written, lambda: self.store.expire_due(now, record_all, EXPIRE_BATCH))

    def _settled(self, step: str, caller: Principal | None, written: Sequence[Grant], change: Callable[[], T]) -> T:
        """``change()``, whose before-commit hook appends to ``written`` each grant whose event it wrote; puts
        the outcome on record when it fails after that (see ``_change``)."""
        event = STEP_EVENTS[step]
        try:
            return change()
        except CommitFailed as failed:
            raise self._settle(step, caller, written, failed) from failed
        except BaseException as err:
            for grant in written:
                self._failed(step, caller, grant, None, f"not applied: rolled back ({type(err).__name__}: {err}); "
                             f"the {event} event before this one did not take effect; the grant keeps its "
                             "previous state")
            raise

    def _settle(self, step: str, caller: Principal | None, written: Sequence[Grant],
                failed: CommitFailed) -> CommitFailed:
        """Record the outcome of each change in ``written`` after ``failed``; the error to raise, saying it."""
        event = STEP_EVENTS[step]
        outcomes: list[str] = []
        for intended in written:
            if intended.id not in failed.standing:
                self._failed(step, caller, intended, None,
                             f"outcome unknown: the commit failed ({failed}) and the grant could not be read back "
                             f"({failed.unread}); the grant store's state decides whether the {event} event "
                             "before this one took effect")
                outcomes.append(f"{intended.id}: outcome unknown, list the grant to see")
                continue
            standing = failed.standing[intended.id]
            if took_effect(step, intended, standing):
                outcomes.append(f"{intended.id}: it was applied")
                continue
            stands = f"the grant stands {standing.state.value}" if standing else "no such grant was stored"
            self._failed(step, caller, standing or intended, standing,
                         f"not applied: the commit failed ({failed}); the {event} event before this one did not "
                         f"take effect; {stands}")
            outcomes.append(f"{intended.id}: it was not applied")
        return CommitFailed(f"{failed} (while committing the {step} of grant {'; '.join(outcomes)})",
                            failed.written, failed.standing, failed.unread)

    def _failed(self, step: str, caller: Principal | None, grant: Grant, standing: Grant | None,
                detail: str) -> None:
        """Write a ``grant.failed`` event for ``grant``: its ``state`` is ``standing``'s ("" when None: no such
        grant, or unknown). Never raises: the caller is told UNAVAILABLE either way."""
        try:
            self._event("grant.failed", caller, grant, f"{step} {detail}",
                        state=standing.state.value if standing else "")
        except Exception as err:  # noqa: BLE001 - the change failed either way; its caller is told
            self._unwritten.occurred("grant.failed event (%s %s) not written: %s", step, grant.id, err)

    def _changed_meanwhile(self, grant_id: str, done: str, done_state: GrantState) -> str:
        """Why a conditional update of ``grant_id`` matched nothing: read again, since it changed after it was
        read (another replica or caller got there first)."""
        try:
            current = self.store.get(grant_id)
        except GrantStoreUnavailable:
            return f"grant {grant_id} changed meanwhile and cannot be {done} (the grant store did not answer)"
        if current is None:
            return f"grant {grant_id} no longer exists"
        state = current.effective_state(self._clock.now())
        if state is done_state:
            return f"grant {grant_id} is already {state.value}"
        return f"grant {grant_id} is {state.value} now and cannot be {done}"

    def refused(self, step: str, caller: Principal | None, grant_id: str, why: str) -> None:
        """Write a ``grant.refused`` event: ``step`` (request, approve, revoke) of ``grant_id`` by ``caller``
        (None: no verified caller, e.g. a refused or certificate-bound token) was refused for ``why``. The
        refusal stands whether or not its event can be written. The grant id is the caller's: clipped."""
        try:
            self._event("grant.refused", caller, None, f"{step}: {_clip(why, MAX_REASON)}",
                        _clip(grant_id, MAX_GRANT_ID), nobody="(unauthenticated)")
        except Exception as err:  # noqa: BLE001 - the caller is refused either way
            self._unwritten.occurred("grant.refused event (%s %s) not written: %s", step,
                                     _clip(grant_id, MAX_GRANT_ID), err)

    def _get(self, grant_id: str) -> Grant:
        if not grant_id:
            raise GrantInvalid("grant_id is required")
        if len(grant_id) > MAX_GRANT_ID:
            raise GrantInvalid(f"grant_id is longer than {MAX_GRANT_ID} characters")
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
        if self._undeclared_actions is not None:
            # INVARIANT: a grant names only actions a Check can ask for now; an undeclared one would match
            # nothing today and silently open whatever gets that name in a later schema.
            unknown = self._undeclared_actions(actions)
            if unknown:
                raise GrantInvalid(f"action(s) {', '.join(repr(a) for a in unknown)} not declared by the policy "
                                   "schema (for any principal and resource type)")
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

    def _event(self, event: str, caller: Principal | None, grant: Grant | None, detail: str = "",
               grant_id: str = "", nobody: str = "(tenantgate)", state: str | None = None) -> None:
        """Write one grant event (see ``_grant_event``); raises what the sink raises."""
        self._audit.write(self._grant_event(event, caller, grant, detail, grant_id, nobody, state))
        self._unwritten.ended("grant events are written to the audit log again")

    def _grant_event(self, event: str, caller: Principal | None, grant: Grant | None, detail: str = "",
                     grant_id: str = "", nobody: str = "(tenantgate)", state: str | None = None) -> GrantEvent:
        """One grant event; without ``grant`` (a refusal before it was looked up) only ``grant_id``; without
        ``caller`` the actor is ``nobody`` (TenantGate itself, or an unverified caller). ``state`` overrides the
        grant's state ("": none or unknown, and then no expiry either)."""
        if state is None:
            state = grant.state.value if grant else ""
        expires_at = rfc3339(grant.expires_at) if grant and grant.expires_at and state else ""
        return GrantEvent(
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
            state=state,
            expires_at=expires_at,
            detail=detail,
            actor_issuer=caller.issuer if caller else "",
            actor_token_id=caller.token_id if caller else "",
        )


def took_effect(step: str, intended: Grant, standing: Grant | None) -> bool:
    """Whether ``standing`` (a grant as stored after its change failed to commit) shows that change, which
    would have made ``intended``: the fields the step sets are there (another change may have come since)."""
    if standing is None:
        return False
    match step:
        case "request":
            return True  # grant ids are fresh: a grant with this id is this request's
        case "approve":
            return (standing.approved_by, standing.approved_at) == (intended.approved_by, intended.approved_at)
        case "revoke":
            return (standing.revoked_by, standing.revoked_at) == (intended.revoked_by, intended.revoked_at)
        case "expire":
            return standing.state is GrantState.EXPIRED
        case _:
            return standing == intended


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[:limit] + "..."
