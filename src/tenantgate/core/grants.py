"""Break-glass grants: the nouns, the store port, and the pure rules of their lifecycle.

A grant lets one operator (a person in the operator tenant) act inside one target tenant, for named
actions, until it expires or is revoked. The store is asked on every cross-tenant decision, so expiry and
revocation take effect at the next request, on every replica sharing the store.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tenantgate.errors import GrantStoreUnavailable

# How far a replica's clock may lag the approver's and still honour a fresh grant. Beyond it, a grant whose
# approval lies in that replica's future covers nothing: a clock stepped back must not stretch a grant.
CLOCK_SKEW_SECONDS = 5.0
# How long a grant has been due, by the sweeping replica's clock, before the sweep marks it EXPIRED for good.
# Decisions judge expiry exactly, each by its own clock (``Grant.covers``, ``find_active``), so the sweep only
# keeps the books, and a replica whose clock runs ahead must not close a grant for every replica sharing the
# store (review finding: one 600 s ahead expired a 900 s grant 300 s after its approval; one stepped 2 days
# ahead expired every grant and pending request). 300 s is the clock skew Kerberos tolerates between hosts by
# default: well beyond NTP-synchronised hosts (milliseconds) and ``CLOCK_SKEW_SECONDS``, and what it costs
# is a ``grant.expired`` record up to 300 s (plus a sweep interval) after the expiry it records. A store with
# a clock of its own (PostgreSQL) also stops a replica ahead of it by more than this from sweeping at all.
SWEEP_MARGIN_SECONDS = 300.0


class GrantState(enum.Enum):
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"


@dataclass(frozen=True, slots=True)
class Grant:
    """One grant as stored. Times are epoch seconds (floats); 0 means "not yet".

    ``state`` is the stored state; ``effective_state(now)`` is what it means at ``now`` (an ACTIVE grant past
    ``expires_at``, or a PENDING one past its pending deadline, is EXPIRED even before the sweeper marks it).
    """

    id: str
    operator: str
    operator_tenant: str
    target_tenant: str
    actions: tuple[str, ...]
    reason: str
    ticket: str
    duration_seconds: int
    state: GrantState
    requested_at: float
    pending_until: float
    approved_by: str = ""
    approved_at: float = 0.0
    expires_at: float = 0.0
    revoked_by: str = ""
    revoked_at: float = 0.0
    revoke_reason: str = ""
    operator_issuer: str = ""  # the issuer of the requesting token: the same `sub` elsewhere is someone else

    def effective_state(self, now: float) -> GrantState:
        if self.state is GrantState.ACTIVE and now >= self.expires_at:
            return GrantState.EXPIRED
        if self.state is GrantState.PENDING and now >= self.pending_until:
            return GrantState.EXPIRED
        return self.state

    def covers(self, operator: str, operator_tenant: str, target_tenant: str, action: str, now: float,
               operator_issuer: str = "") -> bool:
        """INVARIANT: exactly this operator (subject and issuer), this target tenant, a granted action, and
        active at ``now``: approved (at most ``CLOCK_SKEW_SECONDS`` in the future) and not expired."""
        return (self.effective_state(now) is GrantState.ACTIVE and self.approved_at <= now + CLOCK_SKEW_SECONDS
                and self.operator == operator
                and self.operator_issuer == operator_issuer
                and self.operator_tenant == operator_tenant and self.target_tenant == target_tenant
                and action in self.actions)


@dataclass(frozen=True, slots=True)
class GrantEvent:
    """An audit record of a grant lifecycle step (written to the same audit log as decisions)."""

    event_id: str
    time: str
    # grant.requested | grant.approved | grant.revoked | grant.expired | grant.refused | grant.failed
    # (see ``tenantgate.core.grantevents`` for what each one means)
    event: str
    grant_id: str
    actor: str
    actor_tenant: str
    operator: str
    operator_tenant: str
    target_tenant: str
    actions: tuple[str, ...]
    reason: str
    ticket: str
    state: str
    expires_at: str
    detail: str = ""
    # Who acted, beyond the subject: the issuer of the actor's token (the same subject at another issuer is
    # someone else) and its token id (``jti``, or a fingerprint; never the token).
    actor_issuer: str = ""
    actor_token_id: str = ""
    record_type: str = field(default="grant_event")

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import fields

        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["actions"] = list(self.actions)
        return out


# Called by a store inside its transaction with the grant as it will be committed. If it raises, the
# store rolls back and re-raises: a grant change whose audit event cannot be written does not happen.
BeforeCommit = Callable[[Grant], None]
# The same for a change of several grants (a sweep's batch): called once with all of them, in order, so their
# events can be written together (one append, one fsync) while the transaction is open.
BeforeCommitAll = Callable[[Sequence[Grant]], None]

# The most grants one ``expire_due`` transaction expires. A sweep holds the store's write transaction (and, in
# process, the store's lock) while it writes their events: a bounded batch lets other changes in between.
EXPIRE_BATCH = 100


class CommitFailed(GrantStoreUnavailable):
    """A grant change reached ``before_commit`` (its audit events are written) but its commit failed.

    ``written``: the grants ``before_commit`` was called with, in order. ``standing``: grant id -> the grant as
    the store holds it after the failure (None: no grant with that id), read back through a fresh connection
    in a transaction that first waited for the failed one to end (so the answer cannot change afterwards);
    an id missing from it could not be read back, and ``unread`` says why: the outcome of that change is
    unknown and the store's state decides. Whether a change took effect is for the caller to judge from
    ``standing`` (it knows which fields its step sets).
    """

    def __init__(self, message: str, written: Sequence[Grant], standing: Mapping[str, Grant | None],
                 unread: str = "") -> None:
        super().__init__(message)
        self.written = tuple(written)
        self.standing = dict(standing)
        self.unread = unread


@dataclass(frozen=True, slots=True)
class PendingChange:
    """A grant change between its audit event and its commit: the step (``request``, ``approve``, ``revoke``,
    ``expire``), the grant as the change would leave it, and the id of the step's event."""

    step: str
    grant: Grant
    event_id: str


@dataclass(frozen=True, slots=True)
class AbandonedChanges:
    """The journal of a process that ended (``ChangeJournal.abandoned``): where it was, its changes never
    settled, the event ids of those whose event it had written (the others' events may be missing from the
    log), ``settled`` to mark one change as on record (a later call skips it) and ``discard`` to delete it."""

    name: str
    changes: tuple[PendingChange, ...]
    written: frozenset[str]
    settled: Callable[[PendingChange], None]
    discard: Callable[[], None]


class ChangeJournal(Protocol):
    """A durable note of the grant changes in flight in this process, so that a process killed between a change's
    audit event and its commit (SIGKILL, OOM, a lost machine) leaves a trace another process, or this one
    restarted, can settle: ``GrantEvents.reconcile`` asks the store whether each change took effect and writes
    ``grant.failed`` for those that did not."""

    def begin(self, changes: Sequence[PendingChange]) -> None:
        """Note ``changes`` durably, before their events are written. Raises ``AuditUnavailable`` when it
        cannot."""
        ...

    def written(self, changes: Sequence[PendingChange]) -> None:
        """The events of ``changes`` are written. Never raises."""
        ...

    def end(self, changes: Sequence[PendingChange]) -> None:
        """The outcome of ``changes`` is settled (committed, rolled back, or put on record): forget them. Never
        raises: a change not forgotten is judged again from the store, which finds it applied."""
        ...

    def abandoned(self) -> Iterator[AbandonedChanges]:
        """The journals of processes that ended, one at a time, each held while the caller has it so nobody
        else settles it too. Raises ``OSError`` when the journals cannot be looked for."""
        ...


class GrantStore(Protocol):
    """Persistent grants. Every method raises ``tenantgate.errors.GrantStoreUnavailable`` when the store
    cannot be reached (never a driver exception), and recovers by itself on a later call. Writes may also
    raise ``GrantConflict`` (duplicate id) or ``GrantInvalid`` (a value the database cannot hold).

    State changes are atomic conditional updates: of two racing approvers exactly one succeeds.
    ``before_commit`` runs inside the transaction and must not call back into the store. If the commit itself
    fails after ``before_commit`` ran, the change may or may not have happened: the store reads the grants
    back (waiting for the failed transaction to end) and raises ``CommitFailed`` saying what stands, so the
    caller can put the outcome on record after the event it already wrote.
    """

    def create(self, grant: Grant, before_commit: BeforeCommit, pending_limit: int = 0,
               hourly_limit: int = 0) -> Grant:
        """Insert a new grant (its id is fresh). Returns it as stored.

        ``pending_limit`` > 0 and ``grant`` PENDING: raises ``GrantConflict`` instead when its operator (subject,
        tenant, issuer) already has that many PENDING grants unexpired at ``grant.requested_at``.
        ``hourly_limit`` > 0: raises ``GrantConflict`` instead when the operator requested that many grants, in
        any state, in the hour before ``grant.requested_at``, saying when the next may be. Both are counted so
        that concurrent creates, on any replica, cannot exceed them; a refused grant is not stored. 0: no limit."""
        ...

    def get(self, grant_id: str) -> Grant | None: ...

    def activate(self, grant_id: str, approved_by: str, now: float, before_commit: BeforeCommit) -> Grant | None:
        """PENDING -> ACTIVE if the grant is PENDING and ``now < pending_until``: sets approved_by,
        approved_at = now, expires_at = now + duration_seconds. Returns None when the condition failed."""
        ...

    def revoke(self, grant_id: str, revoked_by: str, reason: str, now: float,
               before_commit: BeforeCommit) -> Grant | None:
        """PENDING or ACTIVE (not yet expired at ``now``) -> REVOKED. Returns None when the condition failed."""
        ...

    def find_active(self, operator: str, operator_tenant: str, target_tenant: str, action: str,
                    now: float, operator_issuer: str = "") -> Grant | None:
        """The active grant covering this (operator, issuer, operator tenant, target tenant, action) at ``now``.
        The hot path of cross-tenant decisions: one indexed query, which sees what is committed and does not
        wait for a change in progress (a sweep, an approval): a grant being revoked opens Checks until the
        revocation commits, as it does on every other replica."""
        ...

    def list(self, tenant: str | None, state: GrantState | None, now: float, limit: int = 1000) -> Sequence[Grant]:
        """Grants whose target tenant is ``tenant`` (all when None) in effective ``state`` at ``now`` (all when
        None), newest first."""
        ...

    def expire_due(self, now: float, before_commit: BeforeCommitAll, limit: int = EXPIRE_BATCH) -> Sequence[Grant]:
        """Mark at most ``limit`` of the ACTIVE grants with ``expires_at <= now`` and PENDING ones with
        ``pending_until <= now`` as EXPIRED (oldest requested first), in one transaction; call ``before_commit``
        once with them (not at all when there are none); return them. Fewer than ``limit``: no other grant was
        due and free (one another transaction is changing, e.g. a sweep on another replica, is left to it or to
        a later sweep). Racing calls, on any replica, never return the same grant. ValueError for ``limit`` < 1."""
        ...

    def read_back(self, grants: Sequence[Grant]) -> tuple[dict[str, Grant | None], str]:
        """Each of ``grants`` as the store holds it now (None: no grant with its id), read after waiting for a
        transaction still holding its row to end, as ``CommitFailed.standing``; and "" or why some could not
        be read (those are missing from the mapping). Never raises for a store that cannot be read."""
        ...

    def database_time(self) -> float | None:
        """The database server's clock now (epoch seconds), or None when the store keeps no clock apart from
        this host's (SQLite: a file on this host)."""
        ...

    def healthy(self) -> bool:
        """True when the store answers a trivial query now."""
        ...

    def close(self) -> None: ...
