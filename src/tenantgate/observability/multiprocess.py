"""The supervisor's side of ``serve --workers N`` metrics: /metrics summed over every worker's files.

Workers keep their metrics in prometheus-client's multiprocess files (one directory, named by the supervisor
in ``PROMETHEUS_MULTIPROC_DIR`` before anything imports prometheus_client). /metrics reads them all on each
scrape: counters and histograms are summed exactly (those of exited workers too, folded into one archive so
their files do not pile up: ``workerfiles.py``), gauges combine as each declares (``multiprocess_mode``).
Custom collectors read per process state and cannot be summed this way; workers copy those numbers into
real metrics instead (``collectors.MultiprocessMirror``).

The supervisor binds the endpoint (so a busy port fails at start) and serves it from a process of its own,
which never forks and so may run a thread per connection: a scraper holds at most one of
``MAX_CONNECTIONS`` slots for at most ``REQUEST_DEADLINE_SECONDS`` in all (request and response), however
slowly it sends or reads, and nothing it does reaches the supervisor's loop.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from http.server import ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import MetricsHandler

from tenantgate.errors import ConfigError
from tenantgate.observability.workerfiles import ExactCollector

log = logging.getLogger("tenantgate.metrics")

REQUEST_DEADLINE_SECONDS = 5.0  # a connection's whole life, from accept to the last byte of the answer
MAX_CONNECTIONS = 8  # open at once; a connection beyond them is closed unanswered


class MetricsEndpoint:
    """``/metrics`` on ``listen`` (HOST:PORT, port 0 picks one) from the files in ``files_dir``.

    Binds at once, raising ``ConfigError`` when it cannot; ``serve()`` answers. Labels are the workers' own:
    no pid is added.
    """

    def __init__(self, listen: str, files_dir: str, *, deadline: float = REQUEST_DEADLINE_SECONDS,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        registry = CollectorRegistry()
        registry.register(ExactCollector(files_dir))
        handler = type("_Handler", (_DeadlineHandler,),
                       {"registry": registry, "deadline": deadline, "timeout": deadline})
        host, _, port = listen.rpartition(":")
        try:
            family, address = _family(host.strip("[]"), int(port))
            server_class = type("_Server", (_BoundedServer,), {"address_family": family})
            self._server = server_class((address, int(port)), handler)
        except OSError as err:
            raise ConfigError(f"cannot serve metrics on {listen}: {err.strerror or err}") from err
        self._max_connections = max_connections
        self.port = int(self._server.server_address[1])

    def serve(self) -> None:
        """Answer scrapes, one thread per connection, until ``shutdown()``: only in a process that never forks."""
        self._server.slots = threading.BoundedSemaphore(self._max_connections)
        self._server.serve_forever()

    def shutdown(self) -> None:
        """Make ``serve()`` return (from another thread)."""
        self._server.shutdown()

    def close(self) -> None:
        self._server.server_close()


class SupervisorMetrics:
    """The supervisor's own series, written to the same files as the workers' (its pid, not registered)."""

    def __init__(self) -> None:
        self.restarts = Counter("tenantgate_worker_restarts", "Worker processes restarted after dying.",
                                registry=None)
        self.workers = Gauge("tenantgate_workers", "Worker processes serving now.", registry=None,
                             multiprocess_mode="livesum")


class _DeadlineHandler(MetricsHandler):
    """Ends its connection ``deadline`` seconds after accepting it: the socket timeout alone bounds each
    read, so a client sending one byte at a time would hold the connection forever."""

    deadline = REQUEST_DEADLINE_SECONDS

    def setup(self) -> None:
        super().setup()
        self._expiry = threading.Timer(self.deadline, self._expire)
        self._expiry.daemon = True
        self._expiry.start()

    def finish(self) -> None:
        self._expiry.cancel()
        super().finish()

    def _expire(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)  # wakes the handler's blocked read or write
        except OSError:  # already closed
            pass


class _BoundedServer(ThreadingHTTPServer):
    daemon_threads = True  # a connection never delays the process's exit
    block_on_close = False
    slots: threading.BoundedSemaphore  # set by serve()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # at the cap: closed at once, nothing waits for a slot
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("metrics request from %s failed: %r", client_address, sys.exc_info()[1])


def _family(host: str, port: int) -> tuple[socket.AddressFamily, str]:
    """The address family and address to bind ``host`` (IPv6 too; HTTPServer assumes IPv4)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _type, _proto, _name, address = infos[0]
    return family, str(address[0])
