"""The small interfaces the core needs from the outside world. Adapters implement them."""

from __future__ import annotations

from typing import Protocol

from tenantgate.core.model import AuditEvent, VerifiedClaims


class TokenVerifier(Protocol):
    """Verifies a bearer token.

    Returns the verified claims or raises a ``tenantgate.errors.TokenError`` subclass. Implementations must
    turn every failure (including unexpected exceptions from libraries) into a ``TokenError``.
    """

    def verify(self, token: str) -> VerifiedClaims: ...


class AuditSink(Protocol):
    """Durably records audit events.

    ``write`` returns only once the event is handed to the OS (or better); it raises
    ``tenantgate.errors.AuditUnavailable`` when it cannot, and the decision then becomes a deny.
    """

    def write(self, event: AuditEvent) -> None: ...

    def healthy(self) -> bool: ...


class Clock(Protocol):
    """Wall-clock time in seconds since the epoch (injectable for tests)."""

    def now(self) -> float: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        import time

        return time.time()
