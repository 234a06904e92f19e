"""A tiny loopback TCP proxy whose link can be cut, or made silent, and restored, for outage tests.

    with TcpProxy("127.0.0.1", 5432) as proxy:
        store = PostgresGrantStore(url_with(url, port=proxy.port))
        proxy.cut()        # every open connection is reset; new ones are accepted and closed at once
        ...                # the client sees the server vanish
        proxy.restore()    # new connections are forwarded again
        proxy.stall()      # every connection, open or new, goes silent: bytes are accepted (the kernel
        ...                # acknowledges them, keepalives too) and never answered, like a stalled PostgreSQL
        proxy.resume()     # or a pgbouncer whose queue does not move; new connections are forwarded again

A cut looks like a server restart or a broken link that the peer notices (EOF). A stall tells the client
nothing: only a client-side deadline notices it. A stalled connection stays silent until it is closed (its
protocol stream is broken).
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Self


class _Link:
    """One client connection and, unless it arrived while stalled, its upstream connection."""

    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client = client
        self.upstream = upstream
        self.silent = upstream is None


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``(target_host, target_port)``, one thread per direction."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # the accept loop polls so stop() never waits long
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._cut = False
        self._stalled = False
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._start(self._accept_loop)

    def cut(self) -> None:
        """Reset every forwarded connection and refuse new ones until ``restore()``."""
        with self._lock:
            self._cut = True
            doomed, self._links = self._links, []
        for link in doomed:
            _close(link)

    def restore(self) -> None:
        """Forward new connections again."""
        with self._lock:
            self._cut = False

    def stall(self) -> None:
        """Stop answering: open connections go silent, new ones are accepted and never answered."""
        with self._lock:
            self._stalled = True
            for link in self._links:
                link.silent = True

    def resume(self) -> None:
        """Forward new connections again (stalled ones stay silent until closed)."""
        with self._lock:
            self._stalled = False

    def connections(self) -> int:
        """Connections currently open to the proxy."""
        with self._lock:
            return len(self._links)

    def stop(self) -> None:
        """Cut everything (a client stuck on a silent connection sees end-of-file) and stop listening."""
        self._stopping.set()
        self.cut()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _start(self, target, *args) -> None:  # type: ignore[no-untyped-def]
        thread = threading.Thread(target=target, args=args, name="tcpproxy", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                cut, stalled = self._cut, self._stalled
            if cut:
                _shut(client)
                continue
            upstream = None
            if not stalled:
                try:
                    upstream = socket.create_connection(self._target, timeout=2)
                    upstream.settimeout(None)
                except OSError:
                    _shut(client)
                    continue
            link = _Link(client, upstream)
            with self._lock:
                if self._cut:
                    accepted = False
                else:
                    self._links.append(link)
                    accepted = True
            if not accepted:
                _close(link)
                continue
            self._start(self._pump, link, client, upstream)
            if upstream is not None:
                self._start(self._pump, link, upstream, client)

    def _pump(self, link: _Link, src: socket.socket, dst: socket.socket | None) -> None:
        """Copy src to dst until either end closes; once the link is silent, read and drop (keep acknowledging)."""
        try:
            while data := src.recv(65536):
                with self._lock:
                    silent = link.silent
                if not silent and dst is not None:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                if link in self._links:
                    self._links.remove(link)
            _close(link)


def _close(link: _Link) -> None:
    _shut(link.client)
    if link.upstream is not None:
        _shut(link.upstream)


def _shut(sock: socket.socket) -> None:
    """Shut down (waking any thread blocked in recv) and close, ignoring sockets already gone."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
