"""Quarantining a tenant whose own policies take Cedar too long to evaluate.

Cedar evaluates holding Python's GIL, so one slow decision holds every tenant's. The compiler's limits bound
what a tenant's files may hold (bytes, policies, ``like`` patterns), not every slow construct within them
(comparing sets of 5,000 values in each of 3,500 policies took 320 ms a decision; review finding). So each
Cedar call is timed (wall time: two cheap clock reads). One over the budget is run again, timed by the thread's
CPU time, so that preemption by other processes does not count, and so is the global set alone on the same
request: when the first takes longer than the budget and the second less than half of it (the tenant's own
policies are what is slow), the tenant gets a strike; at ``STRIKES`` strikes within ``WINDOW_SECONDS`` it is
quarantined: every later decision about its resources is denied without asking Cedar, until its own policy
text changes (a reload carries the quarantine over while the text is the same). A decision the global set
alone is slow on too is the operator's, and only reported.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

STRIKES = 3  # slow decisions within the window that quarantine a tenant
WINDOW_SECONDS = 60.0
# After the global set alone was found slow, slow decisions are taken as its for this long without timing it
# again: a caller whose requests make a global policy slow cannot have every decision evaluated twice.
GLOBAL_SLOW_SECONDS = 1.0

# (tenant, seconds its decision took, whether it is now quarantined) -> nothing; must not raise.
SlowHook = Callable[[str, float, bool], None]


class SlowTenants:
    """Strikes and quarantines for one engine. Thread-safe."""

    __slots__ = ("_clock", "_global_slow_at", "_hook", "_lock", "_strikes", "budget", "closed")

    def __init__(self, budget_seconds: float, hook: SlowHook | None = None, inherited: Mapping[str, str] = (
            {}), clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget_seconds  # 0: off
        self._hook = hook
        self._clock = clock
        self._lock = threading.Lock()
        self._strikes: dict[str, list[float]] = {}
        self._global_slow_at = -GLOBAL_SLOW_SECONDS
        # tenant -> its own policy text when quarantined (what a reload compares to carry it over)
        self.closed: dict[str, str] = dict(inherited)

    def global_was_slow(self) -> bool:
        """True within ``GLOBAL_SLOW_SECONDS`` of finding the global set alone slow."""
        return 0 <= self._clock() - self._global_slow_at < GLOBAL_SLOW_SECONDS

    def carried_over(self, texts: Mapping[str, str]) -> dict[str, str]:
        """The quarantines to keep in an engine whose tenants have ``texts`` (tenant -> own policy text): those
        whose text is unchanged."""
        return {tenant: text for tenant, text in self.closed.items() if texts.get(tenant) == text}

    def slow(self, tenant: str, seconds: float, global_seconds: float, text: str) -> bool:
        """Note a decision about ``tenant`` that took ``seconds`` (over the budget), the global set alone
        ``global_seconds`` on the same request; True when this quarantines the tenant (``text``: its own
        policy text)."""
        now = self._clock()
        if global_seconds * 2 >= seconds:
            self._global_slow_at = now
            if self._hook is not None:
                self._hook("", seconds, False)  # the global policies are slow: the operator's to fix
            return False
        with self._lock:
            recent = [at for at in self._strikes.get(tenant, ()) if now - at < WINDOW_SECONDS]
            recent.append(now)
            self._strikes[tenant] = recent
            closing = len(recent) >= STRIKES and tenant not in self.closed
            if closing:
                self.closed[tenant] = text
                del self._strikes[tenant]
        if self._hook is not None:
            self._hook(tenant, seconds, closing)
        return closing
