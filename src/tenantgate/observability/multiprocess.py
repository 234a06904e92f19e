"""The supervisor's side of ``serve --workers N`` metrics: /metrics summed over every worker's files.

Workers keep their metrics in prometheus-client's multiprocess files (one directory, named by the supervisor
in ``PROMETHEUS_MULTIPROC_DIR`` before anything imports prometheus_client). /metrics reads them all on each
scrape: counters and histograms are summed exactly (those of exited workers too, folded into one archive so
their files do not pile up: ``workerfiles.py``; also on a timer, for when nothing scrapes), gauges combine as
each declares (``multiprocess_mode``). Custom collectors read per process state and cannot be summed this
way; workers copy those numbers into real metrics instead (``collectors.MultiprocessMirror``).

The supervisor binds the endpoint (so a busy port fails at start) and serves it from a process of its own,
which never forks and so may run a thread per connection (and one that folds); what a scraper may hold is
bounded as everywhere (``endpoint.py``), and nothing it does reaches the supervisor's loop.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge

from tenantgate.observability import endpoint
from tenantgate.observability.endpoint import MAX_CONNECTIONS, REQUEST_DEADLINE_SECONDS
from tenantgate.observability.workerfiles import FOLD_SECONDS, ExactCollector


class MetricsEndpoint(endpoint.MetricsEndpoint):
    """``/metrics`` on ``listen`` (HOST:PORT, port 0 picks one) from the files in ``files_dir``.

    Binds at once, raising ``ConfigError`` when it cannot; ``serve()`` answers, and folds exited workers' files
    every ``fold_interval`` seconds. Labels are the workers' own: no pid is added.
    """

    def __init__(self, listen: str, files_dir: str, *, deadline: float = REQUEST_DEADLINE_SECONDS,
                 max_connections: int = MAX_CONNECTIONS, fold_interval: float = FOLD_SECONDS) -> None:
        self._collector = ExactCollector(files_dir)
        self._fold_interval = fold_interval
        registry = CollectorRegistry()
        registry.register(self._collector)
        super().__init__(listen, registry, deadline=deadline, max_connections=max_connections)

    def serve(self) -> None:
        """Answer scrapes until ``shutdown()``; meanwhile a thread folds (this process never forks). Review
        finding: with nothing scraping, a worker that kept dying left three files per start behind."""
        served = threading.Event()
        folding = threading.Thread(target=self._fold_until, args=(served,), name="tenantgate-metrics-fold",
                                   daemon=True)
        folding.start()
        try:
            super().serve()
        finally:
            served.set()

    def _fold_until(self, served: threading.Event) -> None:
        while not served.wait(self._fold_interval):
            self._collector.fold()


class SupervisorMetrics:
    """The supervisor's own series, written to the same files as the workers' (its pid, not registered)."""

    def __init__(self) -> None:
        self.restarts = Counter("tenantgate_worker_restarts", "Worker processes restarted after dying.",
                                registry=None)
        self.workers = Gauge("tenantgate_workers", "Worker processes serving now.", registry=None,
                             multiprocess_mode="livesum")
