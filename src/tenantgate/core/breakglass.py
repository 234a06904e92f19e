"""Break-glass rules: who may request, approve, revoke and list grants, and which grant opens a decision.

Pure rules over a ``GrantStore`` port. Every lifecycle step writes a ``GrantEvent`` to the audit sink inside
the store's transaction, so a step whose event cannot be written does not happen, and the log says what
happened when the step fails afterwards: ``tenantgate.core.grantevents`` writes them, and says what each event
(``grant.requested``, ``grant.approved``, ``grant.revoked``, ``grant.expired``, ``grant.refused``,
``grant.failed``) means.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from tenantgate.core.grantevents import Attempt, GrantEvents
from tenantgate.core.grants import EXPIRE_BATCH, SWEEP_MARGIN_SECONDS, ChangeJournal, Grant, GrantState, GrantStore
from tenantgate.core.model import ClaimNames, Denial, Principal, Reason, rfc3339
from tenantgate.core.persons import same_person
from tenantgate.core.ports import AuditSink, Clock, TokenVerifier
from tenantgate.core.problemlog import ProblemLog
from tenantgate.core.request import MAX_ACTION, is_tenant_id
from tenantgate.core.tenancy import check_token_binding, principal_from_claims
from tenantgate.errors import (
    GrantConflict,
    GrantInvalid,
    GrantNotFound,
    GrantPermissionDenied,
    GrantStoreUnavailable,
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
# The most grants one ListGrants answer holds (newest requested first); older ones are not in it.
MAX_LISTED_GRANTS = 1000
# Grants whose latest revocation (begun or ended) ``BreakGlass.recording_use`` remembers, at most.
_REVOCATIONS_KEPT = 4096


@dataclass(frozen=True, slots=True)
class GrantList:
    """What ``BreakGlass.list`` answers: the grants, and whether more matched than are listed."""

    grants: tuple[Grant, ...]
    truncated: bool


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
                 undeclared_actions: Callable[[Sequence[str]], Sequence[str]] | None = None,
                 journal: ChangeJournal | None = None) -> None:
        """``undeclared_actions(names)``: those of ``names`` the current policy schema does not declare; a
        request naming any is refused (such a grant would match no Check today, and would open an action
        added to the schema later). None: not checked. ``journal``: where each change is noted between its
        event and its commit, for ``settle_abandoned`` (None: not noted)."""
        self.store = store
        self._clock = clock
        self._events = GrantEvents(audit, clock, max_grant_id=MAX_GRANT_ID, max_why=MAX_REASON, journal=journal)
        self.rules = rules
        self._verifier = verifier
        self._names = claim_names or ClaimNames()
        self._undeclared_actions = undeclared_actions
        # Grants whose revocation this process is committing (id -> revocations in flight): not honoured from
        # the moment grant.revoked is written, since lookups read what is committed on a connection of their own
        # (self-review finding: a Check between the record and the commit was allowed, and its ALLOW followed
        # the revocation in the audit chain). A revocation that then fails to commit honours the grant again.
        self._revoking: dict[str, int] = {}
        self._revoking_lock = threading.Lock()
        # Revocations begun or ended in this process, counted (``revocation_mark``), and the count at the latest
        # of each grant's: a decision that looked a grant up at mark M and would be allowed is denied when the
        # grant's revocation began or ended after M (hostile review finding: a Check that found the grant just
        # before a revocation, and wrote its record after it, was allowed, its ALLOW after grant.revoked in the
        # chain). Bounded: past _REVOCATIONS_KEPT grants the map is emptied and decisions marked before then are
        # treated as overlapping one (a denial, at worst, of a decision made just then under some grant).
        self._revocation_count = 0
        self._revocation_floor = 0
        self._revoked_at: dict[str, int] = {}
        # Sweeps skipped because this replica's clock is ahead of the store's: a line, then one a minute.
        self._ahead = ProblemLog(log, now=time.monotonic, noun="skipped sweeps",
                                 summary="%d more grant sweeps skipped since the last line (latest: %s)")

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
        # INVARIANT: a refusal names the caller's target only when it is a tenant id (it may be anything else).
        attempt = Attempt(req.target_tenant if is_tenant_id(req.target_tenant) else "")
        return self._events.recorded("request", caller, "", lambda: self._request(caller, req), attempt)

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
        return self._events.change("request", caller,
                                   lambda record: self.store.create(grant, record, pending, hourly), detail)

    def approve(self, caller: Principal, grant_id: str) -> Grant:
        """PENDING -> ACTIVE by a second person holding the approver role. Self-approval is refused."""
        attempt = Attempt()
        return self._events.recorded("approve", caller, grant_id, lambda: self._approve(caller, grant_id, attempt),
                                     attempt)

    def _approve(self, caller: Principal, grant_id: str, attempt: Attempt) -> Grant:
        self._require(caller, self.rules.approver_role)
        grant = self._get(grant_id, attempt)
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
        approved = self._events.change("approve", caller,
                                       lambda record: self.store.activate(grant_id, caller.subject, now, record))
        if approved is None:
            raise GrantConflict(self._changed_meanwhile(grant_id, "approved", GrantState.ACTIVE))
        return approved

    def revoke(self, caller: Principal, grant_id: str, reason: str) -> Grant:
        """PENDING/ACTIVE -> REVOKED, by anyone with the operator or approver role. Takes effect at the next
        decision on every replica sharing the store."""
        attempt = Attempt()
        return self._events.recorded("revoke", caller, grant_id,
                                     lambda: self._revoke(caller, grant_id, reason, attempt), attempt)

    def _revoke(self, caller: Principal, grant_id: str, reason: str, attempt: Attempt) -> Grant:
        self._require(caller, self.rules.operator_role, self.rules.approver_role)
        if not reason.strip():
            raise GrantInvalid("a reason is required to revoke a grant")
        if len(reason) > MAX_REASON:
            raise GrantInvalid(f"reason longer than {MAX_REASON} characters")
        if not reason.isprintable():
            raise GrantInvalid("reason must be printable text (no control characters)")
        self._get(grant_id, attempt)
        now = self._clock.now()
        with self._revoking_lock:
            self._revoking[grant_id] = self._revoking.get(grant_id, 0) + 1
            self._revocation_changed(grant_id)
        try:
            revoked = self._events.change("revoke", caller, lambda record: self.store.revoke(
                grant_id, caller.subject, reason.strip(), now, record), reason.strip())
        finally:
            with self._revoking_lock:
                self._revocation_changed(grant_id)
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

    def settle_abandoned(self) -> int:
        """Put on record the changes of processes that ended between a change's event and its commit (the
        journal's): ``grant.failed`` for each that did not take effect; how many. Run at start and every sweep
        interval. Raises what the audit sink raises."""
        return self._events.reconcile(self.store.read_back)

    def sweep(self) -> Sequence[Grant]:
        """Mark the grants due ``SWEEP_MARGIN_SECONDS`` ago or longer EXPIRED, with a ``grant.expired`` audit
        event each (and ``grant.failed`` after them when their batch then fails to commit, see
        ``GrantEvents.expire_batch``); return them. Nothing (an empty list, and a rate-limited warning) when the
        store's own clock says this replica's is ahead of it by more than the margin.

        The sweep only keeps the books: every decision, approval and revocation judges expiry exactly, by the
        clock of the replica that makes it, whether or not the grant has been swept. The margin keeps a replica
        whose clock runs ahead from expiring, for every replica sharing the store, a grant still live by theirs.

        In batches of at most ``EXPIRE_BATCH``, each its own store transaction with its events written together
        before it commits, so the store is free between batches and one flood of expiring requests cannot hold
        it (and the changes waiting for it) for the time of thousands of audit writes. A batch that fails raises;
        the batches before it stand (their events are in the log) and a later sweep takes up the rest.
        """
        now = self._clock.now()
        if self._ahead_of_store(now):
            return []
        due_by = now - SWEEP_MARGIN_SECONDS
        expired: list[Grant] = []
        while True:
            batch = self._events.expire_batch(
                lambda record_all: self.store.expire_due(due_by, record_all, EXPIRE_BATCH))
            expired.extend(batch)
            if len(batch) < EXPIRE_BATCH:
                return expired

    def _ahead_of_store(self, now: float) -> bool:
        """True (and a rate-limited warning) when the store's clock is behind ``now`` by more than
        ``SWEEP_MARGIN_SECONDS``: a sweep would expire grants not yet due by it. Only ahead counts: a replica
        behind sweeps late, never early. Raises ``GrantStoreUnavailable``."""
        # INVARIANT: with ``now - SWEEP_MARGIN_SECONDS <= store_now``, what the sweep expires is due by both clocks.
        store_now = self.store.database_time()
        if store_now is None or now - SWEEP_MARGIN_SECONDS <= store_now:
            self._ahead.ended("grant sweeps run again: this replica's clock agrees with the grant store's")
            return False
        self._ahead.occurred("grant sweep skipped: this replica's clock (%s) is %.0f s ahead of the grant store's "
                             "(%s), more than the sweep's margin (%.0f s); no grant is marked EXPIRED here until "
                             "the clocks agree (decisions still judge expiry by this replica's clock): check its "
                             "time synchronisation", rfc3339(now), now - store_now, rfc3339(store_now),
                             SWEEP_MARGIN_SECONDS, cause="replica clock ahead of the grant store")
        return True

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

    def revocation_mark(self) -> int:
        """Take before ``find``; pass to ``recording_use`` with the grant it found."""
        return self._revocation_count

    @contextmanager
    def recording_use(self, uses: Sequence[tuple[str, int]]) -> Iterator[frozenset[str]]:
        """Hold this process's revocations back while the block writes the records of decisions allowed under
        grants, each ``(grant_id, mark)`` (``mark``: ``revocation_mark()`` before its lookup). Yields the grant ids
        whose revocation is in flight or began or ended after their mark: a decision under one is not answered
        ALLOW (its grant.revoked may precede the record). A revocation begun after the block writes its event
        after these records."""
        with self._revoking_lock:
            yield frozenset(grant_id for grant_id, mark in uses
                            if grant_id in self._revoking or mark < self._revocation_floor
                            or self._revoked_at.get(grant_id, -1) > mark)

    def _revocation_changed(self, grant_id: str) -> None:
        """A revocation of ``grant_id`` begins or ends (under ``_revoking_lock``)."""
        self._revocation_count += 1
        if len(self._revoked_at) >= _REVOCATIONS_KEPT and grant_id not in self._revoked_at:
            self._revoked_at.clear()
            self._revocation_floor = self._revocation_count
        self._revoked_at[grant_id] = self._revocation_count

    # ------------------------------------------------------------------------------------ helpers

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
        """Write a ``grant.refused`` event (``GrantEvents.refused``): ``step`` (request, approve, revoke) of
        ``grant_id`` (the caller's: clipped) by ``caller`` (None: no verified caller) was refused for ``why``. The
        refusal stands whether or not its event can be written."""
        self._events.refused(step, caller, grant_id, why)

    def _get(self, grant_id: str, attempt: Attempt) -> Grant:
        """The stored grant ``grant_id``, its target tenant noted in ``attempt``; raises GrantInvalid, GrantNotFound,
        GrantStoreUnavailable."""
        if not grant_id:
            raise GrantInvalid("grant_id is required")
        if len(grant_id) > MAX_GRANT_ID:
            raise GrantInvalid(f"grant_id is longer than {MAX_GRANT_ID} characters")
        grant = self.store.get(grant_id)
        if grant is None:
            raise GrantNotFound(f"no grant {grant_id}")
        attempt.target_tenant = grant.target_tenant
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
