"""The small interfaces the core needs from the outside world. Adapters implement them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from tenantgate.core.model import VerifiedClaims


class TokenVerifier(Protocol):
    """Verifies a bearer token.

    Returns the verified claims or raises a ``tenantgate.errors.TokenError`` subclass. Implementations must
    turn every failure (including unexpected exceptions from libraries) into a ``TokenError``.
    """

    def verify(self, token: str) -> VerifiedClaims: ...


class AuditRecord(Protocol):
    """Anything the audit log holds: decision records (``AuditEvent``) and grant events (``GrantEvent``)."""

    def to_dict(self) -> dict[str, Any]: ...


class AuditSink(Protocol):
    """Durably records audit events.

    ``write`` returns only once the event is handed to the OS (or better); it raises
    ``tenantgate.errors.AuditUnavailable`` when it cannot, and the decision then becomes a deny.
    """

    def write(self, event: AuditRecord) -> None: ...

    def write_many(self, events: Sequence[AuditRecord]) -> Sequence[Exception | None]:
        """Write ``events`` together; one entry per event: None when written, else the error that kept it
        out (never raises for an unwritable log: the entries say so)."""
        ...

    def healthy(self) -> bool: ...


class Clock(Protocol):
    """Wall-clock time in seconds since the epoch (injectable for tests)."""

    def now(self) -> float: ...


class SystemClock:
    """The real clock, which never goes backwards and never runs slower than real time within a process.

    ``now()`` is the wall clock (``time.time()``), except after it was stepped back: then it is the last value
    returned plus the time elapsed since on the monotonic clock, until the wall clock catches up. So a step
    back neither revives an expired token nor stretches a grant: a 4 s grant ends 4 s after its approval even
    if the clock is set back 3 s meanwhile (merely never going backwards would stand still for those 3 s and
    keep the grant 7 s). Steps forward are taken as they come. Another process (a restart with a clock behind,
    another replica) starts from its own wall clock; there ``Grant.covers`` refuses grants approved in its
    future (beyond ``CLOCK_SKEW_SECONDS``).

    On the decision path, so a few operations and no lock: the state is one float, the offset of the last
    value returned from its monotonic time. Threads racing on it can only lose an offset another thread set
    an instant earlier, so a value may come out below one returned to another thread at about the same time,
    by at most the time between the two reads, never by the size of a clock step. ``wall`` and ``monotonic``
    are injectable for tests.
    """

    __slots__ = ("_monotonic", "_offset", "_wall")

    def __init__(self, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._offset = wall() - monotonic()

    def now(self) -> float:
        wall = self._wall()
        elapsed = self._monotonic()
        floor = elapsed + self._offset
        if wall >= floor:
            self._offset = wall - elapsed
            return wall
        return floor
