"""The supervisor's side of ``serve --workers N`` metrics: /metrics summed over every worker's files.

Workers keep their metrics in prometheus-client's multiprocess files (one directory, named by the supervisor
in ``PROMETHEUS_MULTIPROC_DIR`` before anything imports prometheus_client). /metrics reads them all on each
scrape: counters and histograms are summed (those of dead workers too, so totals never go back), gauges
combine as each declares (``multiprocess_mode``). Custom collectors read per process state and cannot be
summed this way; workers copy those numbers into real metrics instead (``collectors.MultiprocessMirror``).

The supervisor binds the endpoint (so a busy port fails at start) and serves it from a process of its own,
which never forks and so may run a thread per connection: a scraper holds at most one of
``MAX_CONNECTIONS`` slots for at most ``REQUEST_DEADLINE_SECONDS`` in all (request and response), however
slowly it sends or reads, and nothing it does reaches the supervisor's loop.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import MetricsHandler
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from tenantgate.errors import ConfigError

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
        _LockedCollector(registry, path=files_dir)  # type: ignore[no-untyped-call]
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


def forget(pid: int, files_dir: str) -> None:
    """Worker ``pid`` exited: drop its live-only gauges, and fold its counters and histograms into the
    archive files (``counter_archive.db``, ``histogram_archive.db``), which keep them in the sums.

    Folding keeps the directory from growing with every restart (review finding: a worker crash-looping
    every few seconds left two files per pid, and each scrape reads them all). It runs under an exclusive
    lock that scrapes take shared, so a scrape never sees a value twice or not at all; if the lock is not
    had soon (a slow scrape), the files stay as they are, still counted, for the next exit to leave alone.
    """
    mark_process_dead(pid, files_dir)  # type: ignore[no-untyped-call]
    try:
        with _files_locked(files_dir, exclusive=True, wait=FOLD_WAIT_SECONDS):
            for kind in ("counter", "histogram"):
                _fold(os.path.join(files_dir, f"{kind}_{pid}.db"), os.path.join(files_dir, f"{kind}_archive.db"))
    except (OSError, TimeoutError) as err:
        log.warning("metrics of exited worker %d not folded (its files stay and are still counted): %s", pid, err)


FOLD_WAIT_SECONDS = 2.0
_LOCK_FILE = ".files.lock"  # not *.db: the collector never reads it


class _LockedCollector(MultiProcessCollector):
    """The multiprocess collector, reading the files under the shared lock ``forget`` folds them under."""

    def collect(self) -> Any:
        with _files_locked(self._path, exclusive=False, wait=REQUEST_DEADLINE_SECONDS):
            return list(super().collect())  # type: ignore[no-untyped-call]


@contextmanager
def _files_locked(files_dir: str, *, exclusive: bool, wait: float) -> Iterator[None]:
    """``flock`` on the directory's lock file (between processes: scrapes run in the /metrics process,
    folding in the supervisor), polled for at most ``wait`` seconds. Raises ``TimeoutError``/``OSError``."""
    fd = os.open(os.path.join(files_dir, _LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"metrics files in {files_dir} stayed locked for {wait:g}s") from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fold(dead: str, archive: str) -> None:
    """Add the values of ``dead`` to ``archive``, then remove ``dead``. Called with the exclusive lock held.

    The archive is rebuilt beside it (``.tmp``, which no scrape reads) and renamed over it, after ``dead`` was
    renamed out of the collector's sight: a crash in between loses that worker's counts (a counter reset,
    which Prometheus handles), never counts them twice."""
    if not os.path.exists(dead):
        return
    values = MmapedDict.read_all_values_from_file(dead)  # type: ignore[no-untyped-call]
    building = archive + ".tmp"
    if os.path.exists(archive):
        shutil.copyfile(archive, building)
    else:
        open(building, "wb").close()
    into = MmapedDict(building)  # type: ignore[no-untyped-call]
    try:
        for key, value, timestamp, _position in values:
            total, _when = into.read_value(key)  # type: ignore[no-untyped-call]
            into.write_value(key, total + value, timestamp)  # type: ignore[no-untyped-call]
    finally:
        into.close()  # type: ignore[no-untyped-call]
    folding = dead + ".folding"
    os.rename(dead, folding)
    os.rename(building, archive)
    os.unlink(folding)


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
