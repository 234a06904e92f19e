"""``tenantgate serve --workers N``: one supervisor process and N forked worker processes sharing the ports.

Why forking is safe here: the supervisor never imports gRPC, builds no part of the application and runs no
thread, so every fork (at start, and to restart a worker) copies a process without a gRPC object, a channel
or a lock held by another thread. It holds the settings and a self-pipe for signals; nothing a client does
reaches its loop. Each worker builds its own app (policies, audit chain K, grant store connection) and gRPC
server, bound with SO_REUSEPORT, so the kernel spreads new connections over the workers.

Metrics: with ``server.metrics_listen`` the supervisor binds the port (a busy one fails at start) and forks,
before the workers, a process that serves /metrics on it; it is not a worker (``metricsproc.py``).

Ports: worker 0 starts alone and reports the ports it bound, so port 0 picks one free port for all of them,
and a configuration that cannot start (invalid policies, a busy port, unreadable TLS files) fails once, with
the usual message and exit code, before any other worker starts. The others, and every restarted worker,
bind the ports worker 0 reported.

Signals (read from a pipe, ``signalpipe.py``): SIGTERM/SIGINT drain every worker (SIGKILL after
``server.grace_seconds`` + ``STOP_MARGIN_SECONDS``) and exit 0, or 1 when a serving worker's drain failed
(non-zero exit) or a worker had to be killed. SIGHUP makes every worker reload its policies. A worker that
dies is restarted after a growing delay, or everything stops with exit code 1 when it keeps dying and no
other worker serves (``restarts.py``). Children get SIGTERM when the supervisor dies (``worker.py``).
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tenantgate.cli.children import EXIT_ERROR, Announce, Report, announcer, describe, fork, read_report, send
from tenantgate.cli.metricsdir import metrics_files
from tenantgate.cli.metricsproc import MetricsProcess
from tenantgate.cli.restarts import crash_looping, recent, restart_delay
from tenantgate.cli.shared_ports import check_free, joining, pinned, release_claims
from tenantgate.cli.signalpipe import HANDLED, open_pipe, received, restore_signals, route_signals
from tenantgate.config import Settings

if TYPE_CHECKING:
    from tenantgate.observability.multiprocess import MetricsEndpoint, SupervisorMetrics

log = logging.getLogger("tenantgate.supervisor")

STOP_MARGIN_SECONDS = 5.0  # after server.grace_seconds, before SIGKILL

WorkerMain = Callable[[Settings, int, Announce], int]  # (settings, worker index, announce) -> exit code


@dataclass(slots=True)
class _Worker:
    index: int
    pid: int = 0  # 0 while not running
    pipe: int = -1  # read end of the report pipe while the worker starts
    received: bytes = b""
    ready: bool = False
    hangup_pending: bool = False  # SIGHUP arrived while it started: send it once it handles signals
    restart_at: float | None = None
    deaths: deque[float] = field(default_factory=deque)
    files: str = ""  # the id its metric files are named by (one per start, see workerfiles)


class Supervisor:
    """Runs ``worker_main`` in ``settings.server.workers`` forked processes; ``on_ready(report, metrics_port)``
    is called once, when all of them serve, with worker 0's report."""

    def __init__(self, settings: Settings, worker_main: WorkerMain,
                 on_ready: Callable[[Report, int], None]) -> None:
        self._settings = settings  # what workers start with; ports made explicit once worker 0 reports
        self._worker_main = worker_main
        self._on_ready = on_ready
        self._workers = [_Worker(index) for index in range(settings.server.workers)]
        self._selector = selectors.DefaultSelector()
        self._wakeup: tuple[int, int] | None = None
        self._endpoint: MetricsEndpoint | None = None
        self._metrics: SupervisorMetrics | None = None
        self._files = ""
        self._first_report: Report | None = None
        self._announced = False
        self._exit_code: int | None = None  # set when stopping
        self._deadline = 0.0
        self._killed = False
        self._metrics_process = MetricsProcess(self._fork)
        self._starts = 0  # worker starts so far: each names its metric files anew

    def run(self) -> int:
        """Serve until stopped; return the exit code. Raises ``ConfigError`` for what fails before any fork."""
        self._files = metrics_files()
        try:
            return self._run()
        finally:
            self._release()
            release_claims()
            shutil.rmtree(self._files, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

    def _run(self) -> int:
        s = self._settings
        for listen, key in ((s.server.listen, "server.listen"), (s.server.health_listen, "server.health_listen"),
                            (s.http.listen, "http.listen")):
            check_free(listen, key)
        from tenantgate.observability import workerfiles
        from tenantgate.observability.multiprocess import MetricsEndpoint, SupervisorMetrics

        workerfiles.install()
        self._metrics = SupervisorMetrics()
        if s.server.metrics_listen:
            # Bound here and kept open: a busy port fails before any fork, and a restarted /metrics process
            # serves the same socket. The supervisor never accepts on it.
            self._endpoint = MetricsEndpoint(s.server.metrics_listen, self._files)
        self._handle_signals()
        self._metrics_process.start(self._endpoint)
        self._spawn(self._workers[0])
        while True:
            for ready, _events in self._selector.select(self._timeout()):
                ready.data()
            self._reap()
            self._restart_due()
            if self._exit_code is None:
                continue
            if not self._metrics_process.pid and not any(w.pid for w in self._workers):
                log.info("all workers stopped")
                return self._exit_code
            if not self._killed and time.monotonic() >= self._deadline:
                self._kill_remaining()

    # -- signals -----------------------------------------------------------------------------------------

    def _handle_signals(self) -> None:
        """Signals only write their number to a pipe the loop watches (no work in a handler, none lost)."""
        self._wakeup = read, write = open_pipe()
        route_signals(write)
        self._selector.register(read, selectors.EVENT_READ, self._on_signals)

    def _on_signals(self) -> None:
        assert self._wakeup is not None
        for number in received(self._wakeup[0]):
            if number in (signal.SIGTERM, signal.SIGINT):
                self._stop(0, f"{signal.Signals(number).name} received")
            elif number == signal.SIGHUP and self._exit_code is None:
                log.info("SIGHUP: every worker reloads its policies")
                for w in self._workers:
                    if w.pid and w.ready:
                        send(w.pid, signal.SIGHUP)
                    elif w.pid:
                        w.hangup_pending = True

    def _stop(self, code: int, why: str) -> None:
        if self._exit_code is not None:
            log.info("%s; already stopping", why)
            return
        self._exit_code = code
        self._deadline = time.monotonic() + self._settings.server.grace_seconds + STOP_MARGIN_SECONDS
        log.info("%s: stopping %d worker(s)", why, sum(1 for w in self._workers if w.pid))
        for w in self._workers:
            w.restart_at = None
            if w.pid:
                send(w.pid, signal.SIGTERM)
        self._metrics_process.stop()

    def _kill_remaining(self) -> None:
        self._killed = True
        for w in self._workers:
            if w.pid:
                log.warning("worker %d (pid %d) still running after the grace period: SIGKILL", w.index, w.pid)
                send(w.pid, signal.SIGKILL)
        self._metrics_process.kill()

    def _timeout(self) -> float | None:
        restarts = (self._metrics_process.restart_at, *(w.restart_at for w in self._workers))
        due = [at for at in restarts if at is not None]
        if self._exit_code is not None and not self._killed:
            due.append(self._deadline)
        return max(0.0, min(due) - time.monotonic()) if due else None

    # -- workers -----------------------------------------------------------------------------------------

    def _spawn(self, w: _Worker) -> None:
        from tenantgate.observability.workerfiles import become_worker, worker_identity

        read, write = os.pipe()
        settings, index, endpoint = self._settings, w.index, self._endpoint
        self._starts += 1
        files = w.files = worker_identity(self._starts)

        def work() -> int:
            become_worker(files)
            os.close(read)
            if endpoint is not None:
                endpoint.close()
            return self._worker_main(settings, index, announcer(write))

        pid = self._fork(work, signal.default_int_handler)
        os.close(write)
        os.set_blocking(read, False)
        w.pid, w.pipe, w.received, w.ready = pid, read, b"", False
        self._selector.register(read, selectors.EVENT_READ, lambda: self._on_report(w))
        log.info("worker %d started (pid %d)", w.index, pid)

    def _fork(self, child: Callable[[], int], on_interrupt: Any) -> int:
        return fork(child, on_interrupt=on_interrupt, handled=HANDLED, forget_parent=self._forget)

    def _forget(self) -> None:
        """In a forked child: close the supervisor's selector, wakeup pipe and report pipes."""
        self._selector.close()
        if self._wakeup is not None:
            for fd in self._wakeup:
                os.close(fd)
        for other in self._workers:
            if other.pipe >= 0:
                os.close(other.pipe)

    def _on_report(self, w: _Worker) -> None:
        try:
            chunk = os.read(w.pipe, 4096)
        except BlockingIOError:
            return
        if not chunk:  # the worker died before reporting: _reap says how
            self._close_pipe(w)
            return
        w.received += chunk
        if b"\n" not in w.received:
            return
        line = w.received.split(b"\n", 1)[0]
        self._close_pipe(w)
        parsed = read_report(line)
        if parsed is None:
            log.error("worker %d (pid %d) sent an unreadable report: killed", w.index, w.pid)
            send(w.pid, signal.SIGKILL)
            return
        self._ready(w, *parsed)

    def _ready(self, w: _Worker, report: Report, ports: tuple[int, int, int]) -> None:
        w.ready = True
        self._count_serving()
        log.info("worker %d (pid %d) serving", w.index, w.pid)
        if self._exit_code is not None:
            return
        if self._first_report is None:
            self._first_report = report
            # Every later start joins a serving set: a tenant whose files broke meanwhile is quarantined rather
            # than keeping the worker down (review finding: while a tenant was held back, a crashed worker never
            # came back, and the supervisor stopped once every worker had crashed).
            self._settings = joining(pinned(self._settings, *ports))
            for other in self._workers[1:]:
                self._spawn(other)
        if w.hangup_pending:
            w.hangup_pending = False
            send(w.pid, signal.SIGHUP)
        if not self._announced and all(other.ready for other in self._workers):
            self._announced = True
            self._on_ready(self._first_report, self._endpoint.port if self._endpoint is not None else 0)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self._metrics_process.pid:
                self._metrics_process.exited(os.waitstatus_to_exitcode(status), self._exit_code is not None)
            for w in self._workers:
                if w.pid == pid:
                    self._exited(w, os.waitstatus_to_exitcode(status))

    def _exited(self, w: _Worker, code: int) -> None:
        from tenantgate.observability.workerfiles import forget

        pid, how, serving = w.pid, describe(code), w.ready
        forget(w.files, self._files, keep=self._endpoint is not None)
        w.pid, w.ready, w.hangup_pending = 0, False, False
        self._close_pipe(w)
        self._count_serving()
        if self._exit_code is not None:
            self._stopped(w.index, pid, code, serving)
            return
        if not self._announced:
            log.error("worker %d (pid %d) %s while starting", w.index, pid, how)
            self._stop(code if code > 0 else EXIT_ERROR, "a worker could not start")
            return
        now = time.monotonic()
        w.deaths.append(now)
        deaths = recent(w.deaths, now)
        healthy = sum(1 for other in self._workers if other.ready and not crash_looping(other.deaths, now))
        delay = restart_delay(w.index, pid, code, serving, deaths, healthy, len(self._workers))
        if delay is None:
            self._stop(EXIT_ERROR, "too many worker deaths")
            return
        w.restart_at = now + delay

    def _stopped(self, index: int, pid: int, code: int, serving: bool) -> None:
        """A worker exited while stopping: a failed drain or a SIGKILL makes the supervisor exit 1."""
        how = describe(code)
        if code == 0 or (not serving and code != -signal.SIGKILL):  # one still starting had nothing to drain
            (log.info if code == 0 else log.warning)("worker %d (pid %d) %s", index, pid, how)
            return
        log.error("worker %d (pid %d) %s instead of draining cleanly: the supervisor exits with code %d",
                  index, pid, how, EXIT_ERROR)
        if self._exit_code == 0:
            self._exit_code = EXIT_ERROR

    def _restart_due(self) -> None:
        now = time.monotonic()
        self._metrics_process.restart_due(now, self._exit_code is not None)
        for w in self._workers:
            if w.restart_at is not None and w.restart_at <= now and self._exit_code is None:
                w.restart_at = None
                if self._metrics is not None:
                    self._metrics.restarts.inc()
                self._spawn(w)

    def _count_serving(self) -> None:
        if self._metrics is not None:
            self._metrics.workers.set(sum(1 for w in self._workers if w.ready))

    def _close_pipe(self, w: _Worker) -> None:
        if w.pipe >= 0:
            self._selector.unregister(w.pipe)
            os.close(w.pipe)
            w.pipe = -1

    def _release(self) -> None:
        """Leave no worker, signal handler or file behind (also when ``_run`` failed)."""
        for w in self._workers:
            if w.pid:
                send(w.pid, signal.SIGKILL)
                os.waitpid(w.pid, 0)
                w.pid = 0
            self._close_pipe(w)
        self._metrics_process.release()
        restore_signals(self._wakeup)
        self._wakeup = None
        if self._endpoint is not None:
            self._endpoint.close()
        self._selector.close()
