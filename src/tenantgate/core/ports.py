"""The small interfaces the core needs from the outside world. Adapters implement them."""

from __future__ import annotations

import time
from collections.abc import Sequence
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
    """The real clock: the wall clock as the host keeps it.

    Not made monotonic on purpose: a clock that refused to go back after a step would keep a host clock that
    ran ahead, once NTP corrected it, ahead for the life of the process (refusing fresh tokens there while
    other processes accept them). So a clock stepped back by X seconds stretches a live grant, and revives a
    token, by up to X seconds; ``Grant.covers`` refuses grants approved in a process's future (beyond
    ``CLOCK_SKEW_SECONDS``). Keep hosts' clocks synchronised (NTP slews small errors instead of stepping).
    """

    def now(self) -> float:
        return time.time()
