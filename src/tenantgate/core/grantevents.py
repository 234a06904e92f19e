"""Grant events: what each break-glass step (``tenantgate.core.breakglass``) writes to the audit log, and how
a change whose commit failed is put on record.

Every lifecycle step writes a ``GrantEvent`` to the audit sink inside the store's transaction, so a step whose
event cannot be written does not happen, and the log says what happened when the step fails afterwards. The
events (``event``), each naming the grant, the actor and a ``detail`` that starts with the step (``request``,
``approve``, ``revoke``, ``expire``):

- ``grant.requested``, ``grant.approved``, ``grant.revoked``, ``grant.expired``: the step, written just before
  its change commits. A sweep expires due grants in batches of at most ``EXPIRE_BATCH``, one store transaction
  each, and writes a batch's ``grant.expired`` events together (one append, one fsync).
- ``grant.refused``: the step was refused before any change: no permission, self-approval, an invalid or
  unknown grant, a state that does not allow it, an operator with ``max_pending_per_operator`` requests
  pending already or ``max_requests_per_operator_per_hour`` requests in the last hour, or the grant store
  unavailable (including the fail-fast window after an outage).
  ``detail``: ``<step>: <error>: <why>``. ``target_tenant``: the tenant the step was for when it is known (a
  request's, when it is a tenant id; the grant's, once an approval or revocation looked it up), else "".
- ``grant.failed``: follows the step's event when the change then failed to commit. Either it did not take
  effect (``<step> not applied: ...``; ``state`` is the state that stands, "" when no such grant was stored),
  or its outcome is unknown because the store could not be read back (``<step> outcome unknown: ...``;
  ``state`` ""; the grant store's state decides). A change whose commit failed but took effect gets no further
  event. The caller gets ``GrantStoreUnavailable`` in every case. The third case: the process ended (SIGKILL,
  OOM) between the event and the commit. Each change is noted in the process's ``ChangeJournal`` before its
  event, marked once its event is written, and forgotten once settled; ``reconcile`` (at start and every
  sweep, in any process on the same journals) writes ``grant.failed`` for each change a dead process left
  that did not take effect: ``<step> not applied: the process that wrote its <event> event (<id>) ended
  before its commit; ...``, or, when the event was not known to be written, ``... the process making it ended
  before its commit, while or before writing its <event> event (<id>), which the log may therefore not hold``.
  A journal that cannot be written holds back requests and approvals, never revocations or expiries.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from tenantgate.core.grants import (
    AbandonedChanges,
    BeforeCommit,
    BeforeCommitAll,
    ChangeJournal,
    CommitFailed,
    Grant,
    GrantEvent,
    GrantState,
    PendingChange,
)
from tenantgate.core.model import Principal, rfc3339
from tenantgate.core.ports import AuditSink, Clock
from tenantgate.core.problemlog import ProblemLog
from tenantgate.errors import AuditUnavailable, GrantError, GrantStoreUnavailable

log = logging.getLogger("tenantgate.grants")
T = TypeVar("T")

# The event each step writes just before its change commits.
STEP_EVENTS = {"request": "grant.requested", "approve": "grant.approved", "revoke": "grant.revoked",
               "expire": "grant.expired"}
# Steps that go ahead when the change journal cannot be written: they only take access away.
UNHELD_STEPS = frozenset({"revoke", "expire"})


@dataclass(slots=True)
class Attempt:
    """What a step has learnt of its target so far, for its ``grant.refused`` event should it be refused. Mutable
    on purpose: one per call, filled in as the step learns it (the grant it looked up)."""

    target_tenant: str = ""


class GrantEvents:
    """Writes the grant events of the break-glass steps to ``audit``: refusals, each change's events before it
    commits, and ``grant.failed`` after a change that then failed."""

    def __init__(self, audit: AuditSink, clock: Clock, *, max_grant_id: int, max_why: int,
                 journal: ChangeJournal | None = None) -> None:
        """``max_grant_id``, ``max_why``: a refusal's grant id and reason (the caller's, unchecked) are clipped
        to these many characters. ``journal``: where changes between their event and their commit are noted
        (None: nowhere, and a process killed there leaves its event with no ``grant.failed``)."""
        self._audit = audit
        self._journal = journal
        self._clock = clock
        self._max_grant_id = max_grant_id
        self._max_why = max_why
        # grant.refused and grant.failed events that cannot be written: an error line, then one a minute
        # counting them, and the first grant event written after them says so. Review finding: a line per
        # refused call (any client can make one) while the audit log could not be written.
        self._unwritten = ProblemLog(log, now=clock.now, level=logging.ERROR, noun="grant events not written",
                                     summary="%d more grant events not written since the last line (latest: %s)")
        self._unjournaled = ProblemLog(log, now=clock.now, level=logging.ERROR, noun="grant changes not journaled",
                                       summary="%d more grant changes went ahead without their journal since the "
                                               "last line (latest: %s)")

    def recorded(self, step: str, caller: Principal | None, grant_id: str, change: Callable[[], Grant],
                 attempt: Attempt | None = None) -> Grant:
        """``change()``; a refusal (any ``GrantError``: no permission, self-approval, invalid, unknown grant,
        not in a state that allows it; or ``GrantStoreUnavailable`` before any change, the fail-fast window
        included) is first written as a ``grant.refused`` event naming ``attempt``'s target tenant as it stands
        then, and raised. A change that failed to commit (``CommitFailed``) is on record already (``change``)."""
        try:
            return change()
        except CommitFailed:
            raise
        except (GrantError, GrantStoreUnavailable) as refusal:
            self.refused(step, caller, grant_id, f"{type(refusal).__name__}: {refusal}",
                         attempt.target_tenant if attempt else "")
            raise

    def change(self, step: str, caller: Principal | None, apply: Callable[[BeforeCommit], T],
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
        noted: list[PendingChange] = []

        def record(grant: Grant) -> None:
            entry = self._grant_event(event, caller, grant, detail)
            change = self._begin(noted, [PendingChange(step, grant, entry.event_id)])
            self._write(entry)
            if change and self._journal is not None:
                self._journal.written(change)
            written.append(grant)

        return self._settled(step, caller, written, noted, lambda: apply(record))

    def expire_batch(self, apply: Callable[[BeforeCommitAll], T]) -> T:
        """``apply(record_all)``: one ``expire_due`` batch, as ``change`` does a change, its ``grant.expired``
        events written together with one ``write_many``. An event the sink could not write rolls the whole batch
        back (raised as the sink's error): the events it did write are followed by ``grant.failed``."""
        written: list[Grant] = []
        noted: list[PendingChange] = []

        def record_all(grants: Sequence[Grant]) -> None:
            events = [self._grant_event(STEP_EVENTS["expire"], None, grant) for grant in grants]
            changes = self._begin(noted, [PendingChange("expire", grant, entry.event_id)
                                          for grant, entry in zip(grants, events, strict=True)])
            errors = self._audit.write_many(events)
            if len(errors) != len(events):
                written.extend(grants)  # which are on record is unknown: each gets its grant.failed
                raise AuditUnavailable(f"the audit sink answered for {len(errors)} of {len(events)} events")
            written.extend(grant for grant, error in zip(grants, errors, strict=True) if error is None)
            if changes and self._journal is not None:
                self._journal.written([change for change, error in zip(changes, errors, strict=True) if error is None])
            failure = next((error for error in errors if error is not None), None)
            if failure is not None:
                raise failure  # INVARIANT: nothing of the batch commits unless all its events are on record

        return self._settled("expire", None, written, noted, lambda: apply(record_all))

    def reconcile(self, read_back: Callable[[Sequence[Grant]], tuple[dict[str, Grant | None], str]]) -> int:
        """Settle the changes of processes that ended between a change's event and its commit (the journal's
        ``abandoned``): ``read_back`` (the store's) says what stands; each change that did not take effect gets
        a ``grant.failed`` event saying so, and is marked settled in its journal, which is deleted once all its
        changes are. Returns how many events it wrote. A journal that cannot be settled now (its grants cannot
        be read, an event cannot be written) is kept for a later call and the others are settled all the same;
        the first such error is raised at the end."""
        if self._journal is None:
            return 0
        recorded = 0
        errors: list[Exception] = []
        for journal in self._journal.abandoned():
            try:
                recorded += self._settle_abandoned(journal, read_back)
            except Exception as err:  # noqa: BLE001 - kept for a later call; the others go on
                errors.append(err)
        if errors:
            raise errors[0]
        return recorded

    def _settle_abandoned(self, journal: AbandonedChanges,
                          read_back: Callable[[Sequence[Grant]], tuple[dict[str, Grant | None], str]]) -> int:
        standing, unread = read_back([change.grant for change in journal.changes]) if journal.changes else ({}, "")
        if any(change.grant.id not in standing for change in journal.changes):
            raise GrantStoreUnavailable(f"the grant changes left by an ended process ({journal.name}) could not be "
                                        f"read back: {unread}")
        failed = 0
        for change in journal.changes:
            now = standing[change.grant.id]
            if not took_effect(change.step, change.grant, now):
                event = STEP_EVENTS[change.step]
                how = (f"the process that wrote its {event} event ({change.event_id}) ended before its commit"
                       if change.event_id in journal.written else
                       f"the process making it ended before its commit, while or before writing its {event} "
                       f"event ({change.event_id}), which the log may therefore not hold")
                stands = f"the grant stands {now.state.value}" if now else "no such grant was stored"
                self._event("grant.failed", None, now or change.grant, f"{change.step} not applied: {how}; {stands}",
                            state=now.state.value if now else "")
                failed += 1
            journal.settled(change)  # on record: a later call, after a failure below, does not write it again
        journal.discard()
        if journal.changes:
            log.warning("settled %d grant change(s) left by an ended process (%s): %d did not take effect, each now "
                        "followed by grant.failed in the audit log", len(journal.changes), journal.name, failed)
        return failed

    def refused(self, step: str, caller: Principal | None, grant_id: str, why: str, target_tenant: str = "") -> None:
        """Write a ``grant.refused`` event: ``step`` (request, approve, revoke) of ``grant_id`` by ``caller``
        (None: no verified caller, e.g. a refused or certificate-bound token), for ``target_tenant`` ("":
        unknown), was refused for ``why``. The refusal stands whether or not its event can be written. The grant
        id is the caller's: clipped; ``target_tenant`` must be a tenant id (the caller checks)."""
        try:
            self._event("grant.refused", caller, None, f"{step}: {_clip(why, self._max_why)}",
                        _clip(grant_id, self._max_grant_id), nobody="(unauthenticated)", target_tenant=target_tenant)
        except Exception as err:  # noqa: BLE001 - the caller is refused either way
            self._unwritten.occurred("grant.refused event (%s %s) not written: %s", step,
                                     _clip(grant_id, self._max_grant_id), err)

    def _settled(self, step: str, caller: Principal | None, written: Sequence[Grant],
                 noted: Sequence[PendingChange], change: Callable[[], T]) -> T:
        """``change()``, whose before-commit hook appends to ``written`` each grant whose event it wrote (and to
        ``noted`` each change it put in the journal); puts the outcome on record when it fails after that (see
        ``change``), then takes the changes out of the journal."""
        event = STEP_EVENTS[step]
        try:
            return change()
        except CommitFailed as failed:
            raise self._settle(step, caller, written, failed, noted) from failed
        except BaseException as err:
            on_record = {grant.id for grant in written}
            self._end([change for change in noted if change.grant.id not in on_record])  # rolled back, no event
            for grant in written:
                self._failed(step, caller, grant, None, f"not applied: rolled back ({type(err).__name__}: {err}); "
                             f"the {event} event before this one did not take effect; the grant keeps its "
                             "previous state")
                self._end_grant(noted, grant)
            raise
        finally:
            self._end(noted)

    def _end(self, changes: Sequence[PendingChange]) -> None:
        if changes and self._journal is not None:
            self._journal.end(changes)

    def _end_grant(self, noted: Sequence[PendingChange], grant: Grant) -> None:
        """``grant``'s change is on record (its ``grant.failed`` written): out of the journal at once, so a kill
        before the next one cannot have it recorded twice (review finding)."""
        self._end([change for change in noted if change.grant.id == grant.id])

    def _begin(self, noted: list[PendingChange], changes: list[PendingChange]) -> list[PendingChange]:
        """Put ``changes`` in the journal (if there is one) before their events are written; those noted. A
        journal that cannot be written holds back requests and approvals (``AuditUnavailable``), never a
        revocation or an expiry: they only take access away, and holding them back would leave it open."""
        if self._journal is None:
            return []
        try:
            self._journal.begin(changes)
        except AuditUnavailable as err:
            if changes[0].step not in UNHELD_STEPS:
                raise
            self._unjournaled.occurred("grant %s of %s goes ahead without its journal (a process killed before its "
                                       "commit would leave its event without grant.failed): %s", changes[0].step,
                                       changes[0].grant.id, err, cause=str(err))
            return []
        noted.extend(changes)
        return changes

    def _settle(self, step: str, caller: Principal | None, written: Sequence[Grant],
                failed: CommitFailed, noted: Sequence[PendingChange]) -> CommitFailed:
        """Record the outcome of each change in ``written`` after ``failed``; the error to raise, saying it."""
        event = STEP_EVENTS[step]
        outcomes: list[str] = []
        for intended in written:
            outcomes.append(f"{intended.id}: {self._settle_one(step, caller, intended, failed, event)}")
            self._end_grant(noted, intended)
        return CommitFailed(f"{failed} (while committing the {step} of grant {'; '.join(outcomes)})",
                            failed.written, failed.standing, failed.unread)

    def _settle_one(self, step: str, caller: Principal | None, intended: Grant, failed: CommitFailed,
                    event: str) -> str:
        """Record the outcome of the change that would have made ``intended``; what it was, for the caller."""
        if intended.id not in failed.standing:
            self._failed(step, caller, intended, None,
                         f"outcome unknown: the commit failed ({failed}) and the grant could not be read back "
                         f"({failed.unread}); the grant store's state decides whether the {event} event "
                         "before this one took effect")
            return "outcome unknown, list the grant to see"
        standing = failed.standing[intended.id]
        if took_effect(step, intended, standing):
            return "it was applied"
        stands = f"the grant stands {standing.state.value}" if standing else "no such grant was stored"
        self._failed(step, caller, standing or intended, standing,
                     f"not applied: the commit failed ({failed}); the {event} event before this one did not "
                     f"take effect; {stands}")
        return "it was not applied"

    def _failed(self, step: str, caller: Principal | None, grant: Grant, standing: Grant | None,
                detail: str) -> None:
        """Write a ``grant.failed`` event for ``grant``: its ``state`` is ``standing``'s ("" when None: no such
        grant, or unknown). Never raises: the caller is told UNAVAILABLE either way."""
        try:
            self._event("grant.failed", caller, grant, f"{step} {detail}",
                        state=standing.state.value if standing else "")
        except Exception as err:  # noqa: BLE001 - the change failed either way; its caller is told
            self._unwritten.occurred("grant.failed event (%s %s) not written: %s", step, grant.id, err)

    def _event(self, event: str, caller: Principal | None, grant: Grant | None, detail: str = "",
               grant_id: str = "", nobody: str = "(tenantgate)", state: str | None = None,
               target_tenant: str = "") -> None:
        """Write one grant event (see ``_grant_event``); raises what the sink raises."""
        self._write(self._grant_event(event, caller, grant, detail, grant_id, nobody, state, target_tenant))

    def _write(self, entry: GrantEvent) -> None:
        self._audit.write(entry)
        self._unwritten.ended("grant events are written to the audit log again")

    def _grant_event(self, event: str, caller: Principal | None, grant: Grant | None, detail: str = "",
                     grant_id: str = "", nobody: str = "(tenantgate)", state: str | None = None,
                     target_tenant: str = "") -> GrantEvent:
        """One grant event; without ``grant`` (a refusal before it was looked up) only ``grant_id`` and
        ``target_tenant``; without ``caller`` the actor is ``nobody`` (TenantGate itself, or an unverified
        caller). ``state`` overrides the grant's state ("": none or unknown, and then no expiry either)."""
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
            target_tenant=grant.target_tenant if grant else target_tenant,
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
