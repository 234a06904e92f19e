"""``/metrics`` over HTTP, bounded: what a scraper holds is capped in number and in time.

One endpoint serves both modes: the single ``serve`` process exposes its own registry (``app.serve`` runs
``serve()`` on a daemon thread, off the event loop), and ``serve --workers N`` the sum of the workers' files
from a process of its own (``multiprocess.MetricsEndpoint``). A scraper holds at most one of
``MAX_CONNECTIONS`` slots for at most ``REQUEST_DEADLINE_SECONDS`` in all (request and response), however
slowly it sends or reads; a connection beyond the cap is closed unanswered. Review finding: the single
process used prometheus_client's ``start_http_server``, a thread per connection with no timeout and no cap,
so 1,600 idle connections held 675 threads and as many descriptors in the deciding process until the client
closed them. The exposition is prometheus_client's own (``MetricsHandler``: the same text, OpenMetrics and
gzip negotiation, ``name[]`` filter).
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler

from tenantgate.core.problemlog import ProblemLog
from tenantgate.errors import ConfigError

log = logging.getLogger("tenantgate.metrics")

REQUEST_DEADLINE_SECONDS = 5.0  # a connection's whole life, from accept to the last byte of the answer
MAX_CONNECTIONS = 8  # open at once; a connection beyond them is closed unanswered


class MetricsEndpoint:
    """``/metrics`` on ``listen`` (HOST:PORT, port 0 picks one; ``[::1]:PORT`` too) from ``registry``.

    Binds at once, raising ``ConfigError`` when it cannot; ``serve()`` answers until ``shutdown()``.
    """

    def __init__(self, listen: str, registry: CollectorRegistry, *, deadline: float = REQUEST_DEADLINE_SECONDS,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        handler = type("_Handler", (_DeadlineHandler,),
                       {"registry": registry, "deadline": deadline, "timeout": deadline})
        host, _, port = listen.rpartition(":")
        try:
            family, address = _family(host.strip("[]"), int(port))
            server_class = type("_Server", (_BoundedServer,), {"address_family": family})
            self._server = server_class((address, int(port)), handler)
        except OSError as err:
            raise ConfigError(f"cannot serve metrics on {listen}: {err.strerror or err}") from err
        self._server.broken = ProblemLog(log, now=time.monotonic, noun="failed connections",
                                         summary="metrics requests failed %d more times since the last line "
                                                 "(latest: %s)")
        self._max_connections = max_connections
        self.port = int(self._server.server_address[1])

    def serve(self) -> None:
        """Answer scrapes, one thread per connection (at most ``max_connections``), until ``shutdown()``.
        Threads: only in a process that never forks (the single server, or the supervisor's /metrics child)."""
        self._server.slots = threading.BoundedSemaphore(self._max_connections)
        self._server.serve_forever()

    def serve_in_thread(self) -> threading.Thread:
        """``serve()`` on a daemon thread (started; returned): a scrape never runs on an event loop."""
        thread = threading.Thread(target=self.serve, name="tenantgate-metrics", daemon=True)
        thread.start()
        return thread

    def shutdown(self) -> None:
        """Make ``serve()`` return (from another thread; blocks until it has)."""
        self._server.shutdown()

    def close(self) -> None:
        """Close the listening socket (connections still being answered end at their deadline); log the
        failed connections not counted yet."""
        self._server.server_close()
        self._server.broken.summarize()


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
    broken: ProblemLog  # set by MetricsEndpoint: connections that failed mid-request

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
        """A connection that failed mid-request: one ``warning``, then, for a broken connection (reset, broken
        pipe, timed out, ended by its deadline: any client can make one per connection), one line a minute
        counting them. Review finding: a line per reset, 1,000 per 1,000 connections."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            self.broken.occurred("metrics request from %s failed: %r", _peer(client_address), error,
                                 cause=type(error).__name__)
        else:
            log.warning("metrics request from %s failed: %r", _peer(client_address), error)


def _peer(client_address: Any) -> str:
    """``HOST:PORT`` of a client address (``[HOST]:PORT`` for IPv6)."""
    try:
        host, port = client_address[:2]
    except (TypeError, ValueError):
        return str(client_address)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _family(host: str, port: int) -> tuple[socket.AddressFamily, str]:
    """The address family and address to bind ``host`` (IPv6 too; HTTPServer assumes IPv4)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _type, _proto, _name, address = infos[0]
    return family, str(address[0])
