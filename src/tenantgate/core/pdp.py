"""``decide()``: the one evaluation path every adapter (gRPC, Envoy, AuthZEN HTTP, CLI, tests) calls.

Steps, in order; the first failing step gives the reason: token -> principal (with a stated subject bound
to the token, ``core.subjects``) -> request shape -> tenant invariant -> intent -> Cedar. Then the audit
record (built by ``core.decision_record``) is written; only if that succeeds may the answer be an allow.
``decide`` never raises: any unexpected exception becomes DENY ``internal_error``.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from tenantgate.core.breakglass import GrantRules
from tenantgate.core.decision_record import (
    Outcome,
    audit_event,
    describe_principal,
    note,
    owning_tenant,
    version_shown,
)
from tenantgate.core.engine import Engine
from tenantgate.core.grants import Grant
from tenantgate.core.model import (
    AuditEvent,
    CheckInput,
    ClaimNames,
    Decision,
    DecisionResult,
    Denial,
    Principal,
    Reason,
    TraceStep,
    VerifiedClaims,
    hot_record,
)
from tenantgate.core.ports import AuditSink, Clock, TokenVerifier
from tenantgate.core.problemlog import ProblemLog
from tenantgate.core.request import RequestProblem, check_shape, request_context, resource_attributes
from tenantgate.core.subjects import bind_stated_subject, roles_from_entity_data
from tenantgate.core.tenancy import check_intent, check_tenant, check_token_binding, principal_from_claims
from tenantgate.errors import GrantStoreUnavailable, TokenError, TokenInvalid, classify

log = logging.getLogger("tenantgate.decision")

_PRINCIPALS = 4096  # verified tokens whose principal is kept
AUDIT_WRITTEN_AGAIN = "audit records are written again"


@hot_record
class _Staged:
    """A decided request whose audit record is not written yet."""

    decision_id: str
    outcome: Outcome
    event: AuditEvent
    verified: VerifiedClaims | None
    principal: Principal | None
    trace: list[TraceStep] | None


@dataclass(frozen=True, slots=True)
class DecisionSettings:
    """What a deployment configures about decisions beyond its policies: the token claim names, the
    break-glass rules and the role that lets an enforcement point state subjects ("" = none may). The
    composition root builds them from the config, for the server and for ``tenantgate test`` alike."""

    claim_names: ClaimNames = field(default_factory=ClaimNames)
    rules: GrantRules = field(default_factory=GrantRules)
    pep_role: str = ""


class GrantLookup(Protocol):
    """Finds the break-glass grant that lets a principal act in another tenant (``core.breakglass``)."""

    def find(self, principal: Principal, target_tenant: str, action: str) -> Grant | None: ...

    def revocation_mark(self) -> int:
        """Taken before ``find``, for ``recording_use``."""
        ...

    def recording_use(self, uses: Sequence[tuple[str, int]]) -> AbstractContextManager[frozenset[str]]:
        """Held while the records of decisions allowed under grants (``(grant_id, mark)``) are written; yields
        the grants a revocation began or ended for since their mark: those decisions are denied instead."""
        ...


class DecisionPoint:
    """Holds the verifier, the current engine, the audit sink and the clock; answers ``decide``.

    ``engine`` is a callable returning the current ``Engine`` so a policy reload can swap it atomically;
    each decision reads it once and finishes on the set it started with.
    """

    def __init__(self, *, verifier: TokenVerifier, engine: Callable[[], Engine], audit: AuditSink,
                 clock: Clock, claim_names: ClaimNames | None = None, grants: GrantLookup | None = None,
                 pep_role: str = "", new_id: Callable[[], str] | None = None) -> None:
        # new_id: makes decision ids (random UUIDs); the composition root injects a cheaper one than uuid4.
        # pep_role: the role a token needs to state subjects as a trusted enforcement point ("" = none may).
        self._pep_role = pep_role
        self._verifier = verifier
        self._grants = grants
        self._engine = engine
        self._audit = audit
        self._clock = clock
        self._names = claim_names or ClaimNames()
        self._principals: dict[int, tuple[weakref.ref[VerifiedClaims], Principal | Denial]] = {}
        self._new_id = new_id or _uuid4
        # While the audit log cannot be written every decision fails to write its record: the first failure is
        # an error line, then one line a minute counts them, and the first write that succeeds says so.
        # Review finding: a line per decision, 1,000 per 1,000 unauthenticated Checks, during a full disk
        # (where stderr often goes). tenantgate_audit_failures_total counts every one.
        self._audit_problems = ProblemLog(log, now=clock.now, level=logging.ERROR, noun="decisions denied for it",
                                         summary="audit records not written for %d more decisions since the last "
                                                 "line (latest: %s)")
        # The same for cross-tenant checks while the grant store cannot be asked (a line each, from any tenant's
        # cross-tenant requests, during the outage): tenantgate_decisions_total counts them by reason.
        self._grant_problems = ProblemLog(log, now=clock.now, noun="cross-tenant checks denied for it",
                                         summary="grant store unavailable for %d more cross-tenant checks since the "
                                                 "last line (latest: %s)")

    def _principal_of(self, verified: VerifiedClaims) -> Principal | Denial:
        """``principal_from_claims``, kept per verified token: the verifier hands out the same immutable
        ``VerifiedClaims`` object for a cached token, so its principal is built once, not per decision
        (with the verifier's cache off every object is new, and this cache only ever misses)."""
        held = self._principals.get(id(verified))
        # A weak reference: the cache never keeps a token's claims alive (the verifier's cache decides that).
        # An id is reused only after its object is gone, and then the reference is dead: never a wrong hit.
        if held is not None and held[0]() is verified:
            return held[1]
        principal = principal_from_claims(verified, self._names)
        if len(self._principals) >= _PRINCIPALS:
            self._principals.clear()  # bounded; rebuilt for the tokens that come again
        self._principals[id(verified)] = (weakref.ref(verified), principal)
        return principal

    def current_engine(self) -> Engine | None:
        """The policy set decisions use now; pass it to ``decide``/``decide_many`` as ``pinned`` so that the
        items of one request (a BatchCheck's chunks, an AuthZEN boxcar) are all decided on one policy version
        while a reload swaps the set. None when it cannot be read: then each decision reads it again and is
        denied as usual. Never raises."""
        try:
            return self._engine()
        except Exception:  # noqa: BLE001 - each decision meets the same failure, denied and audited
            return None

    def decide(self, check: CheckInput, pinned: Engine | None = None,
               refused: dict[str, TokenError] | None = None) -> DecisionResult:
        """Decide one request and write its audit record, on ``pinned`` if given, else on the current policy
        set. Never raises; never returns without a decision. ``refused``: tokens the caller already saw refused,
        with why, so they are not verified again (AuthZEN looks at the token before reading the body)."""
        staged = self._stage(check, pinned, refused)
        try:
            if not staged.outcome.grant_id:
                self._audit.write(staged.event)
            else:  # break-glass: written with this process's revocations held back (no context manager otherwise)
                with self._grant_uses([staged], (check,)) as (staged,):
                    self._audit.write(staged.event)
        except Exception as err:  # noqa: BLE001 - no allow without a written record
            return self._finish(staged, check, err)
        self._audit_problems.ended(AUDIT_WRITTEN_AGAIN)
        return self._finish(staged, check, None)

    def decide_many(self, checks: Sequence[CheckInput], pinned: Engine | None = None) -> list[DecisionResult]:
        """Decide independent requests; their audit records are written together (one append, one fsync).

        Each request is decided exactly as ``decide`` would, all on one policy set: ``pinned``, else the
        current one read once for them all (review finding: a BatchCheck during reloads mixed two versions).
        One bad item is a denial for that item only, and an item whose record is not written is denied
        ``audit_unavailable``. Never raises.
        """
        pinned = pinned if pinned is not None else self.current_engine()
        # A token refused once is refused for every item of this call that carries it, without verifying it
        # again (review finding: a BatchCheck of 1,000 items with one forged token verified it 1,000 times).
        refused: dict[str, TokenError] = {}
        staged = [self._stage(check, pinned, refused) for check in checks]
        try:
            with self._grant_uses(staged, checks) as staged:
                errors: Sequence[Exception | None] = self._audit.write_many([s.event for s in staged])
            if len(errors) != len(staged):
                raise RuntimeError("audit sink answered for a different number of records")
        except Exception as err:  # noqa: BLE001 - no allow without a written record
            errors = [err] * len(staged)
        if self._audit_problems.ongoing and any(error is None for error in errors):
            self._audit_problems.ended(AUDIT_WRITTEN_AGAIN)
        return [self._finish(s, check, error) for s, check, error in zip(staged, checks, errors, strict=True)]

    def _stage(self, check: CheckInput, pinned: Engine | None, refused: dict[str, TokenError] | None = None
               ) -> _Staged:
        """Everything of a decision but writing its record, on ``pinned`` or the current policy set.
        ``refused``: tokens already refused in this call, with why (filled here)."""
        decision_id = self._new_id()
        engine: Engine | None = None
        verified: VerifiedClaims | None = None
        principal: Principal | None = None
        trace: list[TraceStep] | None = [] if check.explain else None
        try:
            engine = pinned if pinned is not None else self._engine()
            verified, principal, outcome = self._evaluate(check, engine, trace, refused)
        except Exception as err:
            log.exception("decision %s failed unexpectedly", decision_id)
            reason, _status = classify(err)
            outcome = Outcome(Decision.DENY, Reason(reason), "internal error while deciding")
        event = audit_event(self._clock, decision_id, check, outcome, verified, principal,
                            version_shown(engine, check, principal, outcome))
        return _Staged(decision_id, outcome, event, verified, principal, trace)

    @contextmanager
    def _grant_uses(self, staged: Sequence[_Staged], checks: Sequence[CheckInput]) -> Iterator[list[_Staged]]:
        """Held while the records of ``staged`` are written: this process's revocations wait meanwhile
        (``GrantLookup.recording_use``), and the block gets ``staged`` with each decision allowed under a grant
        whose revocation began or ended since its lookup denied instead (its ALLOW could follow grant.revoked
        in the log)."""
        uses = [(s.outcome.grant_id, s.outcome.grant_mark) for s in staged
                if s.outcome.grant_id and s.outcome.decision is Decision.ALLOW]
        if not uses or self._grants is None:
            yield list(staged)
            return
        with self._grants.recording_use(uses) as revoked:
            yield [self._revoked_meanwhile(s, check) if s.outcome.grant_id in revoked else s
                   for s, check in zip(staged, checks, strict=True)]

    def _revoked_meanwhile(self, staged: _Staged, check: CheckInput) -> _Staged:
        """``staged`` (allowed under a grant) denied: the grant's revocation began while it was decided."""
        if staged.outcome.decision is not Decision.ALLOW:
            return staged
        outcome = Outcome(Decision.DENY, Reason.CROSS_TENANT,
                          f"the break-glass grant {staged.outcome.grant_id} was being revoked while this request was "
                          "decided", grant_id=staged.outcome.grant_id)
        event = audit_event(self._clock, staged.decision_id, check, outcome, staged.verified, staged.principal,
                            staged.event.policy_version)
        return dataclasses.replace(staged, outcome=outcome, event=event)

    def _finish(self, staged: _Staged, check: CheckInput, error: Exception | None) -> DecisionResult:
        outcome, event = staged.outcome, staged.event
        if error is not None:
            self._audit_problems.occurred("decision %s: audit record not written: %s", staged.decision_id, error,
                                          cause=str(error))
            outcome = Outcome(Decision.DENY, Reason.AUDIT_UNAVAILABLE,
                              "the audit record could not be written; denied")
            event = audit_event(self._clock, staged.decision_id, check, outcome, staged.verified, staged.principal,
                                event.policy_version)
        return DecisionResult(
            decision=outcome.decision,
            reason=outcome.reason,
            message=outcome.message,
            policy_ids=outcome.policy_ids,
            decision_id=staged.decision_id,
            audit=event,
            trace=tuple(staged.trace or ()),
        )

    def _evaluate(self, check: CheckInput, engine: Engine, trace: list[TraceStep] | None,
                  refused: dict[str, TokenError] | None = None
                  ) -> tuple[VerifiedClaims | None, Principal | None, Outcome]:
        # Explain steps (``note``) are made only behind ``if trace is not None``: the hot path formats none.
        if check.translation_failed:
            return None, None, Outcome(Decision.DENY, Reason.INTERNAL_ERROR,
                                       "internal error while translating the request")
        try:
            if check.token_problem:
                raise TokenInvalid(check.token_problem)
            if refused and check.token in refused:
                raise refused[check.token].with_traceback(None)  # no traceback growing with each item
            verified = self._verifier.verify(check.token)
        except TokenError as err:
            if refused is not None and not check.token_problem:
                refused[check.token] = err
            reason, _status = classify(err)
            message = str(err) or reason
            if trace is not None:
                note(trace, "token", "deny", f"{reason}: {message}")
            return None, None, Outcome(Decision.DENY, Reason(reason), message)
        # A certificate-bound token (RFC 8705) is only as good as the certificate it came with.
        unbound = check_token_binding(verified.claims, check.client_cert_sha256, check.client_cert_ignored)
        if unbound is not None:
            if trace is not None:
                note(trace, "token", "deny", f"{unbound.reason.value}: {unbound.message}")
            return verified, None, _deny(unbound)
        if trace is not None:
            note(trace, "token", "pass", f"verified; issuer {verified.issuer}, subject {verified.subject}, "
                 f"token id {verified.token_id}")
        principal = self._principal_of(verified)
        if isinstance(principal, Denial):
            if trace is not None:
                note(trace, "principal", "deny", f"{principal.reason.value}: {principal.message}")
            return verified, None, _deny(principal)
        if check.stated_subject is not None:
            # INVARIANT: a stated subject is looked up only in the entity data of the token's own tenant.
            stated = bind_stated_subject(principal, check.stated_subject, verified.subject, self._pep_role,
                                         engine.compiled.entities.view(principal.tenant))
            if isinstance(stated, Denial):
                if trace is not None:
                    note(trace, "principal", "deny", f"{stated.reason.value}: {stated.message}")
                return verified, principal, _deny(stated)
            principal = stated
        check = _with_owning_tenant(check, principal)
        if principal.tenant == check.resource.tenant:
            principal = roles_from_entity_data(principal, engine.compiled.entities.view(principal.tenant))
        if trace is not None:
            note(trace, "principal", "pass", describe_principal(principal))
        try:
            if check.request_problem:
                raise RequestProblem(check.request_problem)
            check_shape(check)
            attrs = resource_attributes(check)
            context = request_context(check)
        except RequestProblem as problem:
            why = str(problem)
            if trace is not None:
                note(trace, "request", "deny", f"invalid_request: {why}")
            return verified, principal, Outcome(Decision.DENY, Reason.INVALID_REQUEST, why)
        if trace is not None:
            note(trace, "request", "pass", f'{check.action} on {check.resource.type}::"{check.resource.id}" '
                 f"owned by tenant {check.resource.tenant}")
        # INVARIANT: checked in code before Cedar; the built-in Cedar guardrail checks it again. The only
        # way past a tenant mismatch is an active break-glass grant for this operator, tenant and action.
        denial = check_tenant(principal, check.resource)
        same = denial is None
        if trace is not None:
            note(trace, "tenant", "pass" if same else "deny", f"caller tenant {principal.tenant} "
                 f"{'==' if same else '!='} resource tenant {check.resource.tenant}")
        grant: Grant | None = None
        mark = 0
        # A subject stated by an enforcement point is never an operator: break-glass needs the operator's token.
        if denial is not None and self._grants is not None and not principal.stated_by:
            try:
                mark = self._grants.revocation_mark()
                grant = self._grants.find(principal, check.resource.tenant, check.action)
            except GrantStoreUnavailable as err:
                self._grant_problems.occurred("grant store unavailable: %s", err, cause=str(err))
                if trace is not None:
                    note(trace, "grant", "deny", "grant_store_unavailable: the grant store could not be asked")
                return verified, principal, Outcome(
                    Decision.DENY, Reason.GRANT_STORE_UNAVAILABLE,
                    "the break-glass grant store is unavailable; cross-tenant access is denied")
            self._grant_problems.ended("the grant store answers again")
            if grant is not None:
                denial = None
                context["breakGlass"] = break_glass_context(grant)
                if trace is not None:
                    note(trace, "grant", "pass", f"active break-glass grant {grant.id} (ticket {grant.ticket!r}) "
                         f"covers {check.action} in {grant.target_tenant}")
            else:
                if trace is not None:
                    note(trace, "grant", "deny", "no active break-glass grant covers this operator, tenant and action")
        denial = denial or check_intent(principal, check.intent)
        grant_id = grant.id if grant else ""
        if denial is not None:
            if trace is not None and denial.reason in (Reason.INTENT_MISSING, Reason.INTENT_NOT_BOUND):
                note(trace, "intent", "deny", f"{denial.reason.value}: {denial.message}")
            return verified, principal, Outcome(Decision.DENY, denial.reason, denial.message, grant_id=grant_id)
        if trace is not None:
            note(trace, "intent", "pass", f"stated intent {check.intent!r}" + (
                " is bound by the token" if principal.intents is not None else " (the token binds no intents)"))
        result = engine.evaluate(principal, check.action, check.resource, attrs, context)
        reason = Reason.ALLOW_BREAK_GLASS if grant and result.decision is Decision.ALLOW else result.reason
        if trace is not None:
            note(trace, "cedar", "pass" if result.decision is Decision.ALLOW else "deny",
                 f"{reason.value}: {result.message}", result.policy_ids, result.errors)
        return verified, principal, Outcome(result.decision, reason, result.message, result.policy_ids, grant_id,
                                            mark if grant else 0)


def _uuid4() -> str:
    return str(uuid.uuid4())


def break_glass_context(grant: Grant) -> dict[str, object]:
    """What policies see as ``context.breakGlass`` (the key is reserved: requests cannot set it)."""
    return {"grantId": grant.id, "targetTenant": grant.target_tenant, "expiresAt": int(grant.expires_at),
            "reason": grant.reason, "ticket": grant.ticket}


def _with_owning_tenant(check: CheckInput, principal: Principal) -> CheckInput:
    tenant = owning_tenant(check, principal)
    if tenant == check.resource.tenant:
        return check
    return dataclasses.replace(check, resource=dataclasses.replace(check.resource, tenant=tenant))


def _deny(denial: Denial) -> Outcome:
    return Outcome(Decision.DENY, denial.reason, denial.message)


__all__ = ["DecisionPoint", "DecisionSettings"]
