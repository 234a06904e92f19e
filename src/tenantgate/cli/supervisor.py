"""``tenantgate serve --workers N``: one supervisor process and N forked worker processes sharing the ports.

Why forking is safe here: the supervisor never imports gRPC, builds no part of the application and runs no
thread, so every fork (at start, and to restart a worker) copies a process without a gRPC object, a channel
or a lock held by another thread. It holds the settings, a self-pipe for signals and, with
``server.metrics_listen``, the /metrics endpoint that sums the workers' prometheus-client multiprocess files.
Each worker builds its own app (policies, audit chain K, grant store connection) and gRPC server, bound with
SO_REUSEPORT, so the kernel spreads new connections over the workers.

Ports: worker 0 starts alone and reports the ports it bound, so port 0 picks one free port for all of them,
and a configuration that cannot start (invalid policies, a busy port, unreadable TLS files) fails once, with
the usual message and exit code, before any other worker starts. The others, and every restarted worker,
bind the ports worker 0 reported.

Signals: SIGTERM/SIGINT drain every worker (SIGKILL after ``server.grace_seconds`` + ``STOP_MARGIN_SECONDS``)
and exit 0. SIGHUP makes every worker reload its policies. A worker that dies is restarted after a growing
delay; ``CRASH_LIMIT`` deaths of one worker within ``CRASH_WINDOW_SECONDS`` stop everything with exit code 1.
Workers get SIGTERM when the supervisor dies (``worker.py``).
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from tenantgate.cli.shared_ports import check_free, pinned
from tenantgate.config import Settings
from tenantgate.errors import ConfigError

if TYPE_CHECKING:
    from tenantgate.observability.multiprocess import MetricsEndpoint, SupervisorMetrics

log = logging.getLogger("tenantgate.supervisor")

STOP_MARGIN_SECONDS = 5.0  # after server.grace_seconds, before SIGKILL
CRASH_LIMIT = 5
CRASH_WINDOW_SECONDS = 60.0
RESTART_DELAYS = (0.5, 1.0, 2.0, 4.0)  # seconds before a restart, by the worker's deaths within the window
EXIT_ERROR = 1
_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)

Report = Mapping[str, Any]  # a worker's JSON line once it serves: {"grpc": port, "health": port, "http": port, ...}
Announce = Callable[[Report], None]
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

    def run(self) -> int:
        """Serve until stopped; return the exit code. Raises ``ConfigError`` for what fails before any fork."""
        self._files = _metrics_files()
        try:
            return self._run()
        finally:
            self._release()
            shutil.rmtree(self._files, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

    def _run(self) -> int:
        s = self._settings
        for listen, key in ((s.server.listen, "server.listen"), (s.server.health_listen, "server.health_listen"),
                            (s.http.listen, "http.listen")):
            check_free(listen, key)
        from tenantgate.observability.multiprocess import MetricsEndpoint, SupervisorMetrics

        self._metrics = SupervisorMetrics()
        if s.server.metrics_listen:
            self._endpoint = MetricsEndpoint(s.server.metrics_listen, self._files)
            self._selector.register(self._endpoint.fileno(), selectors.EVENT_READ, self._endpoint.handle)
        self._handle_signals()
        self._spawn(self._workers[0])
        while True:
            for ready, _events in self._selector.select(self._timeout()):
                ready.data()
            self._reap()
            self._restart_due()
            if self._exit_code is None:
                continue
            if not any(w.pid for w in self._workers):
                log.info("all workers stopped")
                return self._exit_code
            if not self._killed and time.monotonic() >= self._deadline:
                self._kill_remaining()

    # -- signals -----------------------------------------------------------------------------------------

    def _handle_signals(self) -> None:
        """Signals only write their number to a pipe the loop watches (no work in a handler, none lost)."""
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        self._wakeup = (read, write)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        for sig in _HANDLED:
            signal.signal(sig, _ignore)
        self._selector.register(read, selectors.EVENT_READ, self._on_signals)

    def _on_signals(self) -> None:
        assert self._wakeup is not None
        try:
            received = os.read(self._wakeup[0], 512)
        except BlockingIOError:
            return
        for number in received:
            if number in (signal.SIGTERM, signal.SIGINT):
                self._stop(0, f"{signal.Signals(number).name} received")
            elif number == signal.SIGHUP and self._exit_code is None:
                log.info("SIGHUP: every worker reloads its policies")
                for w in self._workers:
                    if w.pid and w.ready:
                        _send(w, signal.SIGHUP)
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
                _send(w, signal.SIGTERM)

    def _kill_remaining(self) -> None:
        self._killed = True
        for w in self._workers:
            if w.pid:
                log.warning("worker %d (pid %d) still running after the grace period: SIGKILL", w.index, w.pid)
                _send(w, signal.SIGKILL)

    def _timeout(self) -> float | None:
        due = [w.restart_at for w in self._workers if w.restart_at is not None]
        if self._exit_code is not None and not self._killed:
            due.append(self._deadline)
        return max(0.0, min(due) - time.monotonic()) if due else None

    # -- workers -----------------------------------------------------------------------------------------

    def _spawn(self, w: _Worker) -> None:
        read, write = os.pipe()
        settings = self._settings
        sys.stdout.flush()  # nothing buffered here may be written twice, by the child too
        sys.stderr.flush()
        # Blocked across the fork: until the child has dropped the supervisor's handlers, a signal sent to
        # it would land in the supervisor's wakeup pipe.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        pid = os.fork()
        if pid == 0:
            os.close(read)
            self._run_child(settings, w.index, write, mask)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(write)
        os.set_blocking(read, False)
        w.pid, w.pipe, w.received, w.ready = pid, read, b"", False
        self._selector.register(read, selectors.EVENT_READ, lambda: self._on_report(w))
        log.info("worker %d started (pid %d)", w.index, pid)

    def _run_child(self, settings: Settings, index: int, report: int, mask: set[int | signal.Signals]) -> NoReturn:
        """In the forked worker: drop the supervisor's signals and files, run the worker, never return."""
        code = EXIT_ERROR
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            # Ignored until the worker's server handles it; the supervisor sends SIGHUP only after that.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            self._selector.close()
            if self._wakeup is not None:
                for fd in self._wakeup:
                    os.close(fd)
            if self._endpoint is not None:
                self._endpoint.close()
            for other in self._workers:
                if other.pipe >= 0:
                    os.close(other.pipe)
            code = self._worker_main(settings, index, _announcer(report))
        except BaseException:  # noqa: BLE001 - whatever happens, this process must not return into the loop
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(code)

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
        try:
            report = json.loads(line)
            ports = (int(report["grpc"]), int(report["health"]), int(report["http"]))
        except (ValueError, KeyError, TypeError):
            log.error("worker %d (pid %d) sent an unreadable report: killed", w.index, w.pid)
            _send(w, signal.SIGKILL)
            return
        self._ready(w, report, ports)

    def _ready(self, w: _Worker, report: Report, ports: tuple[int, int, int]) -> None:
        w.ready = True
        self._count_serving()
        log.info("worker %d (pid %d) serving", w.index, w.pid)
        if self._exit_code is not None:
            return
        if self._first_report is None:
            self._first_report = report
            self._settings = pinned(self._settings, *ports)
            for other in self._workers[1:]:
                self._spawn(other)
        if w.hangup_pending:
            w.hangup_pending = False
            _send(w, signal.SIGHUP)
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
            for w in self._workers:
                if w.pid == pid:
                    self._exited(w, os.waitstatus_to_exitcode(status))

    def _exited(self, w: _Worker, code: int) -> None:
        from tenantgate.observability.multiprocess import forget

        pid, how = w.pid, _describe(code)
        forget(pid, self._files)
        w.pid, w.ready, w.hangup_pending = 0, False, False
        self._close_pipe(w)
        self._count_serving()
        if self._exit_code is not None:
            (log.info if code == 0 else log.warning)("worker %d (pid %d) %s", w.index, pid, how)
            return
        if not self._announced:
            log.error("worker %d (pid %d) %s while starting", w.index, pid, how)
            self._stop(code if code > 0 else EXIT_ERROR, "a worker could not start")
            return
        now = time.monotonic()
        w.deaths.append(now)
        while w.deaths[0] < now - CRASH_WINDOW_SECONDS:
            w.deaths.popleft()
        if len(w.deaths) >= CRASH_LIMIT:
            message = (f"worker {w.index} died {len(w.deaths)} times within {CRASH_WINDOW_SECONDS:.0f} s "
                       f"(last: {how}); stopping all workers")
            log.error(message)
            print(f"tenantgate: {message}", file=sys.stderr, flush=True)
            self._stop(EXIT_ERROR, "too many worker deaths")
            return
        delay = RESTART_DELAYS[min(len(w.deaths), len(RESTART_DELAYS)) - 1]
        w.restart_at = now + delay
        log.warning("worker %d (pid %d) %s; restarting it in %.1f s", w.index, pid, how, delay)

    def _restart_due(self) -> None:
        now = time.monotonic()
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
                _send(w, signal.SIGKILL)
                os.waitpid(w.pid, 0)
                w.pid = 0
            self._close_pipe(w)
        signal.set_wakeup_fd(-1)
        if self._wakeup is not None:
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for fd in self._wakeup:
                os.close(fd)
            self._wakeup = None
        if self._endpoint is not None:
            self._endpoint.close()
        self._selector.close()


def _metrics_files() -> str:
    """A fresh private directory (0700) for prometheus-client's multiprocess files, named in the environment
    before prometheus_client is imported: it picks its value store at import, and the workers inherit both."""
    if "prometheus_client" in sys.modules:
        raise ConfigError("serve --workers N must start in a fresh process (prometheus_client is already loaded)")
    path = tempfile.mkdtemp(prefix="tenantgate-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def _announcer(fd: int) -> Announce:
    def announce(report: Report) -> None:
        os.write(fd, json.dumps(report).encode("utf-8") + b"\n")  # one small write: atomic on a pipe
        os.close(fd)

    return announce


def _send(w: _Worker, sig: signal.Signals) -> None:
    try:
        os.kill(w.pid, sig)
    except ProcessLookupError:  # exited; the loop reaps it
        pass


def _describe(code: int) -> str:
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def _ignore(_signum: int, _frame: Any) -> None:
    """The wakeup pipe carries the signal; the handler only keeps the default action away."""
