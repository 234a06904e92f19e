"""A tiny loopback TCP proxy whose link can be cut and restored, for outage tests.

    with TcpProxy("127.0.0.1", 5432) as proxy:
        store = PostgresGrantStore(url_with(url, port=proxy.port))
        proxy.cut()        # every open connection is reset; new ones are accepted and closed at once
        ...                # the client sees the server vanish
        proxy.restore()    # new connections are forwarded again

A cut looks like a server restart or a broken link that the peer notices (EOF), not a silent black hole.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Self


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``(target_host, target_port)``, one thread per direction."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # the accept loop polls so stop() never waits long
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, name="tcpproxy-accept", daemon=True)
        self._acceptor.start()

    def cut(self) -> None:
        """Reset every forwarded connection and refuse new ones until ``restore()``."""
        with self._lock:
            self._cut = True
            doomed, self._open = self._open, set()
        for sock in doomed:
            _shut(sock)

    def restore(self) -> None:
        """Forward new connections again."""
        with self._lock:
            self._cut = False

    def stop(self) -> None:
        """Cut everything and stop listening."""
        self._stopping.set()
        self.cut()
        self._acceptor.join(timeout=5)
        self._listener.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            if self._is_cut():
                _shut(client)
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=2)
                upstream.settimeout(None)
            except OSError:
                _shut(client)
                continue
            with self._lock:
                if self._cut:
                    accepted = False
                else:
                    self._open.update((client, upstream))
                    accepted = True
            if not accepted:
                _shut(client)
                _shut(upstream)
                continue
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), name="tcpproxy-pump", daemon=True).start()

    def _is_cut(self) -> bool:
        with self._lock:
            return self._cut

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)
            _shut(src)
            _shut(dst)


def _shut(sock: socket.socket) -> None:
    """Shut down (waking any thread blocked in recv) and close, ignoring sockets already gone."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
