"""What a serving process runs beside its requests: policy reloads on threads of their own (polling and
SIGHUP), the metrics mirror of a worker, timed audit checkpoints and the grant sweep. ``app.serve`` starts
them and cancels them at shutdown. Also ``settle_heap``, which keeps the cyclic garbage collector off what a
load or reload left in memory."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from tenantgate.core.problemlog import ProblemLog
from tenantgate.errors import AuditUnavailable
from tenantgate.policy import PolicyStore, ReloadResult

if TYPE_CHECKING:
    from tenantgate.app import App

log = logging.getLogger("tenantgate.app")
T = TypeVar("T")
MIRROR_INTERVAL_SECONDS = 1.0  # how stale a worker's audit counters and grant count on /metrics may be


def settle_heap() -> None:
    """Collect once, then freeze what survived (``gc.freeze``): call after policies are loaded or reloaded.

    A serving process keeps its policies, entity data and their indexes for as long as it serves; at 10,000
    tenants that is about 300,000 objects the cyclic collector walks on every full (oldest-generation)
    collection, which stops the whole process for about 90 ms (measured: scenario 4 of ``make bench``). Under
    steady traffic the caches' turnover triggers one every few hundred thousand decisions, landing on whatever
    is in flight. Frozen objects are left out of every later collection. Reference counting still frees them
    when dropped; only reference cycles among them would stay, so each call first unfreezes and collects, and a
    replaced policy set's cycles are freed at the next reload (that one collection is the pause, now at a
    reload instead of at random).
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class Reloads:
    """Policy reloads on threads of their own, one at a time, never on the event loop's default executor:
    health, status, metrics and shutdown use that one, and a reload that hangs (a policy directory on a stuck
    network mount) must not take it over (review finding: seven SIGHUPs during a hung reload filled it, and
    health, status and SIGTERM stopped working). A SIGHUP while a forced reload is still waiting is folded
    into it, so at most one poll, one running and one waiting reload exist. Daemon threads: a hung reload
    never keeps the process from exiting.

    ``keys(force=...)`` (``JwtVerifier.reread_keys``), when given, runs first in each reload: JWKS files are
    re-read at the policies' cadence (when changed; every one on SIGHUP), never on the request path.
    ``settle`` (``settle_heap``), when given, runs after a reload that replaced the policy set."""

    def __init__(self, policies: PolicyStore, keys: Callable[..., object] | None = None,
                 settle: Callable[[], None] | None = None) -> None:
        self._policies = policies
        self._keys = keys
        self._settle = settle
        self._one = threading.Lock()  # one reload at a time
        self._queued = threading.Event()  # a forced reload is waiting for its turn

    def soon(self) -> None:
        """SIGHUP: reload the policies (and JWKS files) now, forced (decisions keep being answered meanwhile)."""
        if self._queued.is_set():
            log.info("SIGHUP: a reload is already waiting; this one is folded into it")
            return
        log.info("SIGHUP: reloading policies")
        self._queued.set()
        self._start(self._forced)

    async def poll(self) -> None:
        """One unforced reload (only when the directory's or a JWKS file's fingerprint changed), waited for."""
        await asyncio.wrap_future(self._start(self._polled))

    def _polled(self) -> object:
        if self._keys is not None:
            self._keys(force=False)
        return self._settled(self._policies.reload())

    def _forced(self) -> object:
        self._queued.clear()  # from here on, a new SIGHUP waits for a reload that reads what changed since
        if self._keys is not None:
            self._keys(force=True)
        return self._settled(self._policies.reload(force=True))

    def _settled(self, result: ReloadResult) -> ReloadResult:
        if self._settle is not None and result.changed:
            self._settle()
        return result

    def _start(self, work: Callable[[], object]) -> concurrent.futures.Future[object]:
        return in_daemon_thread(work, "tenantgate-reload", turn=self._one)


def in_daemon_thread(work: Callable[[], T], name: str,
                     turn: threading.Lock | None = None) -> concurrent.futures.Future[T]:
    """``work()`` on a new daemon thread (holding ``turn`` while it runs, when given); its result or exception
    in the future returned. Unlike asyncio's default executor, whose threads ``asyncio.run`` joins at exit, a
    thread stuck on the network never keeps the process from stopping. A future cancelled before its turn
    came is skipped."""
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        with turn or contextlib.nullcontext():
            if not done.set_running_or_notify_cancel():
                return  # whoever awaited it was cancelled (shutdown) before its turn came
            try:
                done.set_result(work())
            except BaseException as err:  # noqa: BLE001 - handed to whoever awaits the future
                done.set_exception(err)

    threading.Thread(target=run, name=name, daemon=True).start()
    return done


async def poll_policies(app: App, reloads: Reloads) -> None:
    """Reload when the policy directory changes (checked every ``policies.poll_interval_seconds``)."""
    interval = app.settings.policies.poll_interval_seconds
    if interval <= 0:
        return
    while True:
        await asyncio.sleep(interval)
        await reloads.poll()


async def mirror_metrics(app: App) -> None:
    """A worker: copy the audit and grant numbers into the multiprocess metrics every second."""
    if app.mirror is None:
        return
    while True:
        await asyncio.sleep(MIRROR_INTERVAL_SECONDS)
        await asyncio.to_thread(app.mirror.sync)


async def checkpoint_audit(app: App) -> None:
    """Sign the audit tail every ``audit.checkpoint_seconds`` even while no decision arrives (with a key)."""
    a = app.settings.audit
    if not a.checkpoint_key_file or a.checkpoint_seconds <= 0:
        return
    while True:
        await asyncio.sleep(a.checkpoint_seconds)
        try:
            await asyncio.to_thread(app.audit.checkpoint_if_due)
        except AuditUnavailable as err:
            log.warning("audit checkpoint not written (retried next interval): %s", err)


async def sweep_grants(app: App) -> None:
    """Mark due grants EXPIRED (each with a grant.expired audit event) every sweep interval, and log one line
    per sweep that expired any: how many, and the first few ids (the audit log names every one). At start and
    before every sweep, settle the grant changes that processes which ended left between their audit event and
    their commit (``BreakGlass.settle_abandoned``).

    Expiry itself never waits for this: decisions compare ``expires_at`` with the clock on every request.
    """
    # One line per sweep, not per grant: a sweep can expire thousands at once, and it logs from the event loop
    # (review finding: 11,328 lines when a flood of requests expired).
    shown = 3
    # An outage fails every sweep (every 5 s by default): a line, then one a minute (review finding: a line a sweep).
    failures = ProblemLog(log, now=time.monotonic, noun="failed sweeps",
                          summary="grant sweep failed %d more times since the last line (latest: %s)")
    unsettled = ProblemLog(log, now=time.monotonic, noun="failed settlements",
                           summary="grant changes left by ended processes not settled %d more times since the last "
                                   "line (latest: %s)")
    while True:
        try:  # at start, then before every sweep: changes a process that ended left between event and commit
            await asyncio.to_thread(app.breakglass.settle_abandoned)
            unsettled.ended("grant changes left by ended processes are settled again")
        except Exception as err:  # noqa: BLE001 - their journals are kept: retried next interval
            unsettled.occurred("grant changes left by an ended process not settled (retried every sweep "
                               "interval): %s", err, cause=str(err))
        await asyncio.sleep(app.settings.grants.sweep_interval_seconds)
        try:
            expired = await asyncio.to_thread(app.breakglass.sweep)
        except Exception as err:  # noqa: BLE001 - retried next interval; the store may be down
            failures.occurred("grant sweep failed (retried every sweep interval): %s", err, cause=str(err))
            continue
        failures.ended("grant sweeps succeed again")
        if expired:
            ids = ", ".join(grant.id for grant in expired[:shown])
            more = f" and {len(expired) - shown} more (grant.expired in the audit log)" if len(expired) > shown else ""
            log.info("grant sweep: %d grant(s) expired: %s%s", len(expired), ids, more)
