"""A store wrapper that keeps an unreachable grant store from stalling decisions.

Cross-tenant decisions call the store on the request path. While the store is down, each call could wait
for a connect timeout; ``GuardedStore`` fails fast instead for ``retry_seconds`` after a failure, then lets
one call try again. It also opens the store lazily, so the PDP starts (and serves same-tenant Checks) while
the store is still unreachable, and picks it up when it returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from tenantgate.core.grants import BeforeCommit, Grant, GrantState, GrantStore
from tenantgate.errors import GrantStoreUnavailable

log = logging.getLogger("tenantgate.grants")
T = TypeVar("T")


class GuardedStore:
    """Implements ``GrantStore`` around the store ``opener`` returns; see the module docstring."""

    def __init__(self, opener: Callable[[], GrantStore], *, retry_seconds: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._opener = opener
        self._retry = retry_seconds
        self._monotonic = monotonic
        self._inner: GrantStore | None = None
        self._down_until = 0.0
        self._last_error = ""
        self._lock = threading.Lock()
        try:
            self._store()
        except GrantStoreUnavailable as err:
            log.warning("grant store not reachable at start (cross-tenant checks denied until it is): %s", err)

    def _store(self) -> GrantStore:
        with self._lock:
            if self._inner is None:
                self._inner = self._opener()
            return self._inner

    def _call(self, operation: Callable[[GrantStore], T]) -> T:
        if self._monotonic() < self._down_until:
            raise GrantStoreUnavailable(f"grant store unavailable (retrying shortly): {self._last_error}")
        try:
            result = operation(self._store())
        except GrantStoreUnavailable as err:
            self._last_error = str(err)
            self._down_until = self._monotonic() + self._retry
            raise
        self._down_until = 0.0
        return result

    def create(self, grant: Grant, before_commit: BeforeCommit) -> Grant:
        return self._call(lambda s: s.create(grant, before_commit))

    def get(self, grant_id: str) -> Grant | None:
        return self._call(lambda s: s.get(grant_id))

    def activate(self, grant_id: str, approved_by: str, now: float, before_commit: BeforeCommit) -> Grant | None:
        return self._call(lambda s: s.activate(grant_id, approved_by, now, before_commit))

    def revoke(self, grant_id: str, revoked_by: str, reason: str, now: float,
               before_commit: BeforeCommit) -> Grant | None:
        return self._call(lambda s: s.revoke(grant_id, revoked_by, reason, now, before_commit))

    def find_active(self, operator: str, operator_tenant: str, target_tenant: str, action: str,
                    now: float, operator_issuer: str = "") -> Grant | None:
        return self._call(lambda s: s.find_active(operator, operator_tenant, target_tenant, action, now,
                                                  operator_issuer))

    def list(self, tenant: str | None, state: GrantState | None, now: float, limit: int = 1000) -> Sequence[Grant]:
        return self._call(lambda s: s.list(tenant, state, now, limit))

    def expire_due(self, now: float, before_commit: BeforeCommit) -> Sequence[Grant]:
        return self._call(lambda s: s.expire_due(now, before_commit))

    def healthy(self) -> bool:
        """Probes the store itself (bypassing the fast-fail window), and ends the window when it answers."""
        try:
            ok = self._store().healthy()
        except GrantStoreUnavailable:
            return False
        if ok:
            self._down_until = 0.0
        return ok

    def close(self) -> None:
        with self._lock:
            if self._inner is not None:
                self._inner.close()
