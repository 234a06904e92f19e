"""Quarantining a tenant whose own policies take Cedar too long to evaluate.

Cedar evaluates holding Python's GIL, so one slow decision holds every tenant's. The compiler's limits bound
what a tenant's files may hold (bytes, policies, ``like`` patterns), not every slow construct within them
(comparing sets of 5,000 values in each of 3,500 policies took 320 ms a decision; review finding). So each
Cedar call is timed by the calling thread's CPU time (waiting for the GIL or being preempted does not count).
A decision over the budget may be looked at: at most once a second per tenant, and then only by a random draw
(``LOOK_CHANCE``), so a caller cannot choose which one (review finding: a cheap decoy sent as each second
began took every look, and 56 ms decisions went on unseen). Looking runs it again, the global set alone and an
empty set (what reading the request costs). The tenant's own share is the faster of its two runs minus the
global run; over the budget, it is a strike; at ``STRIKES`` strikes within ``WINDOW_SECONDS`` the tenant is
quarantined: every later decision about its resources is denied without asking Cedar, until its own policy
text changes. A decision slow for the global policies, or for the request itself, is only reported, as such.

One ``SlowTenants`` serves every engine of a policy store, so strikes and quarantines outlive reloads that
leave the tenant's own text unchanged (review finding: any reload reset the strikes).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping

STRIKES = 3  # slow decisions within the window that quarantine a tenant
WINDOW_SECONDS = 60.0
LOOK_SECONDS = 1.0  # at most one slow decision per tenant looked at (run again) per this many seconds
LOOK_CHANCE = 4  # once that long has passed, each slow decision is looked at with a chance of 1 in this

# (cause: "tenant", "global" or "request"; the tenant; seconds of that cause; whether the tenant is now
# quarantined) -> nothing. Must not raise.
SlowHook = Callable[[str, str, float, bool], None]


class SlowTenants:
    """Strikes and quarantines of the tenants of one policy store. Thread-safe."""

    __slots__ = ("_clock", "_closed", "_hook", "_lock", "_looked_at", "_strikes", "budget")

    def __init__(self, budget_seconds: float, hook: SlowHook | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget_seconds  # 0: off
        self._hook = hook
        self._clock = clock
        self._lock = threading.Lock()
        self._strikes: dict[str, tuple[str, list[float]]] = {}  # tenant -> (its own text, strike times)
        self._closed: dict[str, str] = {}  # quarantined tenant -> its own text then
        self._looked_at: dict[str, float] = {}  # tenant -> when a slow decision of its was last looked at

    def quarantined(self, texts: Mapping[str, str]) -> set[str]:
        """The quarantined tenants among ``texts`` (tenant -> its own policy text now); a tenant whose text
        changed is released, and its strikes forgotten."""
        with self._lock:
            for tenant in [t for t, text in self._closed.items() if texts.get(t) != text]:
                del self._closed[tenant]
            for tenant in [t for t, (text, _) in self._strikes.items() if texts.get(t) != text]:
                del self._strikes[tenant]
            return set(self._closed)

    def closed(self, tenant: str, text: str) -> bool:
        """Whether ``tenant`` (its own policy text ``text``) is quarantined: an engine built before that
        quarantine learns of it here."""
        with self._lock:
            return self._closed.get(tenant) == text

    def look(self, tenant: str) -> bool:
        """Whether to look at a slow decision about ``tenant`` now: at most once per ``LOOK_SECONDS`` (looking
        runs it three times more, so a caller cannot have every decision's cost multiplied), and then by a draw
        of 1 in ``LOOK_CHANCE``, so a caller cannot choose the decision looked at."""
        if secrets.randbelow(LOOK_CHANCE):
            return False
        now = self._clock()
        with self._lock:
            last = self._looked_at.get(tenant)
            if last is not None and 0 <= now - last < LOOK_SECONDS:
                return False
            if len(self._looked_at) > 10_000:
                self._looked_at.clear()  # bounded; a tenant looked at again is at most looked at once more
            self._looked_at[tenant] = now
            return True

    def slow(self, tenant: str, own_seconds: float, global_seconds: float, request_seconds: float,
             text: str) -> bool:
        """Note a decision about ``tenant`` over the budget: ``own_seconds`` its own policies' share (``text``
        their text), ``global_seconds`` the global set's, ``request_seconds`` what reading the request took.
        True when this quarantines the tenant."""
        if own_seconds <= self.budget:
            if self._hook is not None and max(global_seconds, request_seconds) > self.budget:
                cause = "global" if global_seconds >= request_seconds else "request"
                self._hook(cause, tenant, max(global_seconds, request_seconds), False)  # the operator's to see
            return False
        now = self._clock()
        with self._lock:
            known, times = self._strikes.get(tenant, (text, []))
            recent = [at for at in times if now - at < WINDOW_SECONDS] if known == text else []
            recent.append(now)
            closing = len(recent) >= STRIKES and self._closed.get(tenant) != text
            if closing:
                self._closed[tenant] = text
                self._strikes.pop(tenant, None)
            else:
                self._strikes[tenant] = (text, recent)
        if self._hook is not None:
            self._hook("tenant", tenant, own_seconds, closing)
        return closing
