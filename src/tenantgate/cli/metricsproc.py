"""The /metrics process of ``serve --workers N``: its pid, its restart and its end, for the supervisor's loop.

With ``server.metrics_listen`` the supervisor binds the port and forks, before the workers, a process that
serves /metrics on it (``observability/multiprocess.py``), summing the workers' prometheus-client
multiprocess files. It never forks, so it may run threads, and a slow scraper can only hold it. It is not a
worker: it is restarted after ``METRICS_RESTART_SECONDS`` when it dies, outside the crash limit and
``tenantgate_workers``, and it gets SIGTERM with the workers. The supervisor reaps it and says when.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tenantgate.cli.children import describe, send
from tenantgate.cli.worker import die_with

if TYPE_CHECKING:
    from tenantgate.observability.multiprocess import MetricsEndpoint

log = logging.getLogger("tenantgate.supervisor")

METRICS_RESTART_SECONDS = 0.5  # before the /metrics process is started again after dying

Fork = Callable[[Callable[[], int], Any], int]  # (the child's body, its SIGINT handler) -> pid


class MetricsProcess:
    """The process that answers /metrics, forked with ``fork`` (the supervisor's: it closes the supervisor's
    files in the child)."""

    def __init__(self, fork: Fork) -> None:
        self.pid = 0  # 0 while not running
        self.restart_at: float | None = None
        self._fork = fork
        self._endpoint: MetricsEndpoint | None = None

    def start(self, endpoint: MetricsEndpoint | None) -> None:
        """Fork the process that answers /metrics on ``endpoint`` (none without one; threads are safe there: it
        never forks)."""
        self._endpoint = endpoint
        if endpoint is None:
            return
        supervisor = os.getpid()

        def serve() -> int:
            die_with(supervisor)
            endpoint.serve()
            return 0

        # SIGINT ignored: a Ctrl-C reaches the whole process group, and the supervisor stops it with SIGTERM.
        self.pid = self._fork(serve, signal.SIG_IGN)
        log.info("/metrics process started (pid %d)", self.pid)

    def exited(self, code: int, stopping: bool) -> None:
        """It was reaped with exit ``code``: due to start again after ``METRICS_RESTART_SECONDS`` unless
        ``stopping``."""
        pid, self.pid = self.pid, 0
        if not stopping:
            self.restart_at = time.monotonic() + METRICS_RESTART_SECONDS
            log.warning("/metrics process (pid %d) %s; restarting it in %.1f s", pid, describe(code),
                        METRICS_RESTART_SECONDS)

    def restart_due(self, now: float, stopping: bool) -> None:
        """Start it again when its restart is due at ``now`` (not while ``stopping``)."""
        if self.restart_at is not None and self.restart_at <= now and not stopping:
            self.restart_at = None
            self.start(self._endpoint)

    def stop(self) -> None:
        """No restart from now on; SIGTERM when running."""
        self.restart_at = None
        if self.pid:
            send(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL when running (the loop reaps it)."""
        if self.pid:
            send(self.pid, signal.SIGKILL)

    def release(self) -> None:
        """SIGKILL and wait for it, when running."""
        if self.pid:
            send(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = 0
