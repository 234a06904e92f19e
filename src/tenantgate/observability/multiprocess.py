"""The supervisor's side of ``serve --workers N`` metrics: /metrics summed over every worker's files.

Workers keep their metrics in prometheus-client's multiprocess files (one directory, named by the supervisor
in ``PROMETHEUS_MULTIPROC_DIR`` before anything imports prometheus_client). The supervisor reads them all on
each scrape: counters and histograms are summed (those of dead workers too, so totals never go back), gauges
combine as each declares (``multiprocess_mode``). Custom collectors read per process state and cannot be
summed this way; workers copy those numbers into real metrics instead (``collectors.MultiprocessMirror``).

The supervisor forks (at start and to restart a worker) at any moment, so it runs no thread: ``handle()``
answers one request when its selector finds the socket readable, and a client gets at most
``REQUEST_TIMEOUT_SECONDS`` to send its request, which bounds how long a slow one holds the supervisor.
"""

from __future__ import annotations

import logging
import socket
from http.server import HTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import MetricsHandler
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from tenantgate.errors import ConfigError

log = logging.getLogger("tenantgate.metrics")

REQUEST_TIMEOUT_SECONDS = 2.0


class MetricsEndpoint:
    """``/metrics`` on ``listen`` (HOST:PORT, port 0 picks one) from the files in ``files_dir``.

    Binds at once, raising ``ConfigError`` when it cannot. Labels are the workers' own: no pid is added.
    """

    def __init__(self, listen: str, files_dir: str) -> None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=files_dir)  # type: ignore[no-untyped-call]
        handler = type("_Handler", (MetricsHandler.factory(registry),), {"timeout": REQUEST_TIMEOUT_SECONDS})
        host, _, port = listen.rpartition(":")
        try:
            family, address = _family(host.strip("[]"), int(port))
            server_class = type("_Server", (_QuietServer,), {"address_family": family})
            self._server = server_class((address, int(port)), handler)
        except OSError as err:
            raise ConfigError(f"cannot serve metrics on {listen}: {err.strerror or err}") from err
        self._server.timeout = 0  # handle() is called when a connection waits: never block for one
        self.port = int(self._server.server_address[1])

    def fileno(self) -> int:
        return int(self._server.fileno())

    def handle(self) -> None:
        """Answer the connection waiting on the socket (a failed request is logged, never raised)."""
        self._server.handle_request()

    def close(self) -> None:
        self._server.server_close()


class SupervisorMetrics:
    """The supervisor's own series, written to the same files as the workers' (its pid, not registered)."""

    def __init__(self) -> None:
        self.restarts = Counter("tenantgate_worker_restarts", "Worker processes restarted after dying.",
                                registry=None)
        self.workers = Gauge("tenantgate_workers", "Worker processes serving now.", registry=None,
                             multiprocess_mode="livesum")


def forget(pid: int, files_dir: str) -> None:
    """Worker ``pid`` exited: drop its live-only gauges; its counters and histograms stay in the sums."""
    mark_process_dead(pid, files_dir)  # type: ignore[no-untyped-call]


class _QuietServer(HTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("metrics request from %s failed", client_address, exc_info=True)


def _family(host: str, port: int) -> tuple[socket.AddressFamily, str]:
    """The address family and address to bind ``host`` (IPv6 too; HTTPServer assumes IPv4)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _type, _proto, _name, address = infos[0]
    return family, str(address[0])
