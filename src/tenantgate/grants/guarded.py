"""A store wrapper that keeps an unreachable or hung grant store from stalling decisions.

Cross-tenant decisions call the store on the request path, on the servers' event loop thread: while a lookup
waits, that replica serves nothing else. ``GuardedStore`` therefore runs ``find_active`` (the decision path's
read) on its own lookup thread and waits at most ``lookup_timeout`` seconds for it. A lookup that takes longer
fails with ``GrantStoreUnavailable`` (the decision is denied ``grant_store_unavailable``); the lookup itself
goes on in the lookup thread, and until it returns (the store's own deadlines end it) every later call fails at
once instead of queueing behind it.

After any failure, calls fail fast for ``retry_seconds``, then one call tries again. The store is opened
lazily, so the PDP starts (and serves same-tenant Checks) while the store is still unreachable, and picks it up
when it returns.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, cast

from tenantgate.core.grants import EXPIRE_BATCH, BeforeCommit, BeforeCommitAll, Grant, GrantState, GrantStore
from tenantgate.errors import GrantStoreUnavailable

log = logging.getLogger("tenantgate.grants")
T = TypeVar("T")

# How long a decision waits for its grant lookup (one indexed query: about a millisecond on a healthy database,
# tens of milliseconds under load) before it is denied ``grant_store_unavailable``. It is also the longest a
# hung store can hold the event loop, and with it every other Check on the replica, per retry window: short
# enough that nobody's deadline notices, two orders of magnitude above a healthy answer.
# (Candidate setting: ``grants.lookup_timeout_seconds``.)
LOOKUP_TIMEOUT_SECONDS = 0.25
# Lookups waiting for the lookup thread (callers on several threads: the event loop, batch and HTTP workers).
# Beyond this many a lookup fails at once: never an unbounded queue.
MAX_WAITING_LOOKUPS = 64


class _Lookup(Generic[T]):
    """One lookup handed to the lookup thread, and its outcome."""

    __slots__ = ("abandoned", "done", "error", "result", "run")

    def __init__(self, run: Callable[[], T]) -> None:
        self.run = run
        self.done = threading.Event()
        self.abandoned = False  # its caller stopped waiting (under GuardedStore._lookup_state)
        self.result: T | None = None
        self.error: BaseException | None = None


class GuardedStore:
    """Implements ``GrantStore`` around the store ``opener`` returns; see the module docstring.

    ``find_active`` returns within about ``lookup_timeout`` seconds, with the answer or ``GrantStoreUnavailable``.
    The other methods run on the caller's thread (they are not on the decision path) and fail fast, like
    lookups, while a lookup the store has not answered is still outstanding or the retry window is open.
    """

    def __init__(self, opener: Callable[[], GrantStore], *, retry_seconds: float = 1.0,
                 lookup_timeout: float = LOOKUP_TIMEOUT_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._opener = opener
        self._retry = retry_seconds
        self._lookup_timeout = lookup_timeout
        self._monotonic = monotonic
        self._inner: GrantStore | None = None
        self._down_until = 0.0
        self._last_error = ""
        self._lock = threading.Lock()
        # The lookup thread: a bounded queue, one daemon thread (a hung store must not keep the process alive).
        self._lookups: queue.Queue[_Lookup[Any] | None] = queue.Queue(maxsize=MAX_WAITING_LOOKUPS)
        self._lookup_state = threading.Lock()
        self._running: _Lookup[Any] | None = None
        self._closed = False
        self._lookup_thread = threading.Thread(target=self._serve_lookups, name="tenantgate-grant-lookup",
                                               daemon=True)
        self._lookup_thread.start()
        try:
            self._store()
        except GrantStoreUnavailable as err:
            log.warning("grant store not reachable at start (cross-tenant checks denied until it is): %s", err)

    def _store(self) -> GrantStore:
        with self._lock:
            if self._inner is None:
                self._inner = self._opener()
            return self._inner

    def _stuck(self) -> bool:
        """True while a lookup whose caller gave up has not returned: the store is not answering."""
        with self._lookup_state:
            return self._running is not None and self._running.abandoned

    def _fail_fast(self) -> None:
        if self._monotonic() < self._down_until:
            # The last error already says "grant store unavailable: <reason>" (review finding: said twice).
            reason = self._last_error.removeprefix("grant store unavailable: ")
            raise GrantStoreUnavailable(f"grant store unavailable (retrying shortly): {reason}")
        if self._stuck():
            raise GrantStoreUnavailable("grant store unavailable: an earlier lookup is still waiting for it")

    def _failed(self, reason: str) -> None:
        self._last_error = reason
        self._down_until = self._monotonic() + self._retry

    def _call(self, operation: Callable[[GrantStore], T]) -> T:
        self._fail_fast()
        try:
            result = operation(self._store())
        except GrantStoreUnavailable as err:
            self._failed(str(err))
            raise
        self._down_until = 0.0
        return result

    def _bounded(self, operation: Callable[[GrantStore], T]) -> T:
        """``_call(operation)`` on the lookup thread; the caller waits at most ``lookup_timeout`` seconds."""
        if self._closed:
            raise GrantStoreUnavailable("grant store unavailable: store is closed")
        self._fail_fast()
        lookup: _Lookup[T] = _Lookup(lambda: self._call(operation))
        try:
            self._lookups.put_nowait(lookup)
        except queue.Full:
            raise GrantStoreUnavailable("grant store unavailable: too many lookups waiting for it") from None
        if not lookup.done.wait(self._lookup_timeout):
            with self._lookup_state:
                lookup.abandoned = True  # still queued: never run; running: later calls fail fast until it ends
                answered = lookup.done.is_set()
            if not answered:
                reason = f"no answer within {self._lookup_timeout:g}s"
                self._failed(reason)
                log.warning("grant lookup abandoned: %s (the store is slow or hung)", reason)
                raise GrantStoreUnavailable(f"grant store unavailable: {reason}")
        if lookup.error is not None:
            raise lookup.error
        return cast(T, lookup.result)  # set whenever error is None

    def _serve_lookups(self) -> None:
        while (lookup := self._lookups.get()) is not None:
            with self._lookup_state:
                if lookup.abandoned:
                    continue  # its caller gave up while it waited in the queue: the store never sees it
                self._running = lookup
            try:
                lookup.result = lookup.run()
            except BaseException as err:  # noqa: BLE001 - handed to the caller, who raises it
                lookup.error = err
            finally:
                with self._lookup_state:
                    self._running = None
                    lookup.done.set()

    def create(self, grant: Grant, before_commit: BeforeCommit, pending_limit: int = 0,
               hourly_limit: int = 0) -> Grant:
        return self._call(lambda s: s.create(grant, before_commit, pending_limit, hourly_limit))

    def get(self, grant_id: str) -> Grant | None:
        return self._call(lambda s: s.get(grant_id))

    def activate(self, grant_id: str, approved_by: str, now: float, before_commit: BeforeCommit) -> Grant | None:
        return self._call(lambda s: s.activate(grant_id, approved_by, now, before_commit))

    def revoke(self, grant_id: str, revoked_by: str, reason: str, now: float,
               before_commit: BeforeCommit) -> Grant | None:
        return self._call(lambda s: s.revoke(grant_id, revoked_by, reason, now, before_commit))

    def find_active(self, operator: str, operator_tenant: str, target_tenant: str, action: str,
                    now: float, operator_issuer: str = "") -> Grant | None:
        """The store's ``find_active``, answered within about ``lookup_timeout`` seconds or
        ``GrantStoreUnavailable`` (fail closed)."""
        return self._bounded(lambda s: s.find_active(operator, operator_tenant, target_tenant, action, now,
                                                     operator_issuer))

    def list(self, tenant: str | None, state: GrantState | None, now: float, limit: int = 1000) -> Sequence[Grant]:
        return self._call(lambda s: s.list(tenant, state, now, limit))

    def expire_due(self, now: float, before_commit: BeforeCommitAll, limit: int = EXPIRE_BATCH) -> Sequence[Grant]:
        return self._call(lambda s: s.expire_due(now, before_commit, limit))

    def read_back(self, grants: Sequence[Grant]) -> tuple[dict[str, Grant | None], str]:
        try:
            return self._call(lambda s: s.read_back(grants))
        except GrantStoreUnavailable as err:  # the fail-fast window, or the store could not be opened
            return {}, str(err)

    def database_time(self) -> float | None:
        return self._call(lambda s: s.database_time())

    def healthy(self) -> bool:
        """Probes the store itself (bypassing the fast-fail window), and ends the window when it answers. False
        without asking while a lookup the store has not answered is outstanding."""
        if self._stuck():
            return False
        try:
            ok = self._store().healthy()
        except GrantStoreUnavailable:
            return False
        if ok:
            self._down_until = 0.0
        return ok

    def close(self) -> None:
        with self._lookup_state:
            if not self._closed:
                self._closed = True
                try:
                    self._lookups.put_nowait(None)  # the lookup thread ends after what is queued
                except queue.Full:
                    pass  # a daemon thread: it cannot keep the process alive
        with self._lock:
            if self._inner is not None:
                self._inner.close()
