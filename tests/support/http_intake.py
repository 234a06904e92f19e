"""Raw HTTP/1.1 at the AuthZEN edge: requests written byte by byte on a socket, the answer's head and body read
back; and an AuthZEN ``HttpServer`` of one's own on its loop thread, its handlers' state in reach.

    head, body = _exchange(port, _request(token=alice, body=BODY, headers=["Expect: 100-continue"]))
    assert _status(head) == 200
"""

import asyncio
import logging
import socket
import threading

from support.issuers import FixedClock, TestIssuer, verifier_for
from support.server import BUNDLED_POLICIES
from tenantgate.audit import JsonlAuditSink
from tenantgate.core.pdp import DecisionPoint
from tenantgate.http.routes import Limits
from tenantgate.http.server import HttpOptions, HttpServer
from tenantgate.policy import PolicyStore

EVALUATION = "/access/v1/evaluation"
BODY = b'{"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"}, ' \
       b'"resource": {"type": "Invoice", "id": "inv-1"}}'


def _port(server):
    return int(server[0].rsplit(":", 1)[1])


def _request(path=EVALUATION, *, token=None, headers=(), body=b"", length=None):
    lines = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/json", *headers]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if not any(h.lower().startswith("transfer-encoding") for h in headers):
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _exchange(port, data, *, timeout=3.0, then=None):
    """Send ``data``; return the first answer's head and body (as far as it came within ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        try:
            while b"\r\n\r\n" not in received:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
            head, _, rest = received.partition(b"\r\n\r\n")
            if then is not None and head.startswith(b"HTTP/1.1 100"):
                sock.sendall(then)
                received = rest
                while b"\r\n\r\n" not in received:
                    received += sock.recv(65536)
                head, _, rest = received.partition(b"\r\n\r\n")
            length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")]
            while length and len(rest) < length[0]:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
        except TimeoutError:
            return received.decode("latin-1"), "<timeout>"
    return head.decode("latin-1"), rest.decode("utf-8", "replace")


def _status(head):
    return int(head.split(" ", 2)[1]) if head.startswith("HTTP/") else 0


def _errors(caplog):
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def _own_server(tmp_path, *, verifier_first):
    """An HttpServer on its own loop thread, its DecisionPoint's verifier given to it (or not)."""
    port, issuer, stop, _state = _own_server_and_state(tmp_path, verifier_first=verifier_first)
    return port, issuer, stop


def _own_server_and_state(tmp_path, *, verifier_first=True):
    """``_own_server`` (``Limits(1 MiB, 4, 10)``), and its handlers: their slots, body budget and large-body turns."""
    clock = FixedClock()
    issuer = TestIssuer(tmp_path, clock=clock)
    verifier = verifier_for(issuer, clock=clock)
    pdp = DecisionPoint(verifier=verifier, engine=PolicyStore.load(BUNDLED_POLICIES).current,
                        audit=JsonlAuditSink(tmp_path / "audit.jsonl"), clock=clock)
    server = HttpServer(HttpOptions("127.0.0.1:0", "user_token", Limits(1 << 20, 4, 10)), pdp, lambda *_: None,
                        verifier=verifier if verifier_first else None)
    state = next(route.handler.__self__ for route in server._runner.app.router.routes()
                 if getattr(route.handler, "__self__", None) is not None)
    port, stop = serve_on_own_loop(server)
    return port, issuer, stop, state


def serve_on_own_loop(server):
    """Start ``server`` (an ``HttpServer``) on an event loop of its own, in a daemon thread: ``(port, stop)``.
    ``stop()`` stops it, ends the connections aiohttp still drains and closes the loop."""
    loop = asyncio.new_event_loop()
    port = loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, name="authzen-test-loop", daemon=True)
    thread.start()

    async def finish_connections():
        # Connections aiohttp still drains after stop() (an early answer's lingering read): ended here, not
        # destroyed pending with the loop (asyncio's ERROR would land in a later test's caplog).
        rest = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def stop():
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        asyncio.run_coroutine_threadsafe(finish_connections(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    return port, stop
