"""One JWKS request over HTTP(S): a single GET with ``http.client``, bounded in time and size.

No redirect is followed (any status but 200 is a failure), the body is capped at ``MAX_JWKS_BYTES`` (1 MiB)
and the whole request at ``timeout`` seconds, enforced by a watchdog that shuts the socket down, so a server
that trickles its answer is cut off. When and how often a URL is fetched, and what is kept of its answers,
is ``tenantgate.identity.jwksurl``'s concern.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time

from tenantgate.errors import ConfigError
from tenantgate.identity.keys import MAX_JWKS_BYTES

_READ_CHUNK_BYTES = 8192
"""Largest single read of a JWKS response body: the fetch deadline is checked between reads."""


def fetch_jwks(host: str, port: int | None, target: str, tls: ssl.SSLContext | None, timeout: float) -> str:
    """The body of ``GET target`` from ``host:port`` (HTTPS with ``tls``, else HTTP), decoded as UTF-8.

    Raises ``ConfigError`` for a status other than 200 or a body over ``MAX_JWKS_BYTES`` (or shorter than its
    Content-Length), ``TimeoutError`` once ``timeout`` seconds have passed since the call, ``OSError`` and
    ``http.client`` errors for the network, ``UnicodeDecodeError`` for a body that is not UTF-8.
    """
    deadline = time.monotonic() + timeout
    connection: http.client.HTTPConnection
    if tls is not None:
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=tls)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    expired = threading.Event()
    watchdog: threading.Timer | None = None
    try:
        connection.connect()
        # A per-read socket timeout cannot stop a server that sends one byte just before each read would
        # time out; the watchdog shuts the socket down at the deadline whatever it is waiting for.
        watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), _abort, (connection.sock, expired))
        watchdog.daemon = True
        watchdog.start()
        connection.request("GET", target, headers={"Accept": "application/jwk-set+json, application/json"})
        response = connection.getresponse()
        if response.status != 200:
            raise ConfigError(f"HTTP status {response.status}")
        body = _read_body(response, deadline)
    except Exception as err:
        if expired.is_set():
            raise TimeoutError("JWKS fetch took too long") from err
        raise
    finally:
        if watchdog is not None:
            watchdog.cancel()
        connection.close()
    if expired.is_set():
        raise TimeoutError("JWKS fetch took too long")
    return body.decode("utf-8")


def _abort(sock: socket.socket | None, expired: threading.Event) -> None:
    expired.set()
    if sock is None:
        return
    try:
        # socket.socket's own shutdown, also for a TLS socket: it wakes a blocked read on another thread
        # without touching the TLS object that read is using.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: the fetch is over


def _read_body(response: http.client.HTTPResponse, deadline: float) -> bytes:
    if response.length is not None and response.length > MAX_JWKS_BYTES:
        raise ConfigError(f"response larger than {MAX_JWKS_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        # read1 returns what one socket read yields (read(n) would wait for all n bytes), so this check runs
        # between every few bytes a trickling server sends.
        if time.monotonic() >= deadline:
            raise TimeoutError("JWKS fetch took too long")
        chunk = response.read1(_READ_CHUNK_BYTES)
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_JWKS_BYTES:
            raise ConfigError(f"response larger than {MAX_JWKS_BYTES} bytes")
        chunks.append(chunk)
    if response.length:
        raise ConfigError("response ended before its Content-Length")
    return b"".join(chunks)
