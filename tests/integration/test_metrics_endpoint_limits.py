"""/metrics of a single ``serve`` process: bounded like the one of ``serve --workers N`` (a few connections,
each for a few seconds, none on the event loop), with prometheus_client's exposition unchanged, and gone
when the server stops. Loopback only; every wait is bounded."""

import gzip
import socket
import threading
import time
from urllib.request import Request, urlopen

import pytest
from prometheus_client import start_http_server

from support.issuers import TestIssuer
from support.server import running_server, write_config
from support.waiting import eventually
from tenantgate import config
from tenantgate.observability.endpoint import MAX_CONNECTIONS, REQUEST_DEADLINE_SECONDS

IDLE_CONNECTIONS = 40


@pytest.fixture()
def settings(tmp_path):
    issuer = TestIssuer(tmp_path)
    return config.load(write_config(tmp_path, issuer.settings),
                       env={"TENANTGATE_SERVER_METRICS_LISTEN": "127.0.0.1:0"})


def _scrape(port: int, *headers: tuple[str, str], path: str = "/metrics") -> tuple[str, str, bytes]:
    """Content-Type, Content-Encoding and the body (decompressed: gzip's header carries the time)."""
    with urlopen(Request(f"http://127.0.0.1:{port}{path}", headers=dict(headers)), timeout=5) as answer:
        encoding = answer.headers.get("Content-Encoding", "")
        body = answer.read()
        return answer.headers["Content-Type"], encoding, gzip.decompress(body) if encoding == "gzip" else body


def _answers(port: int) -> bool:
    try:
        return _scrape(port)[2].startswith(b"# HELP")
    except OSError:
        return False


def _closed_by_server(connection: socket.socket, deadline: float) -> bool:
    while (left := deadline - time.monotonic()) > 0:
        connection.settimeout(min(left, 0.2))
        try:
            if connection.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def test_idle_scrape_connections_hold_a_few_threads_for_a_few_seconds_and_scrapes_resume(settings):
    # Review finding: start_http_server ran a thread per connection with no timeout and no cap, in the deciding
    # process: 1,600 idle connections held 675 threads and as many descriptors until the client closed them.
    with running_server(settings) as (_address, app):
        port = app.metrics_port
        before = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(IDLE_CONNECTIONS)]
        try:
            time.sleep(0.5)  # every connection accepted
            grown = threading.active_count() - before
            deadline = time.monotonic() + REQUEST_DEADLINE_SECONDS + 3
            closed = [_closed_by_server(connection, deadline) for connection in idle]
        finally:
            for connection in idle:
                connection.close()
        eventually(lambda: _answers(port), "a scrape answered once the idle connections are gone")
    # A thread and a deadline timer per slot, and a few of the server's own that may start meanwhile.
    assert grown <= 2 * MAX_CONNECTIONS + 4, f"{grown} threads for {IDLE_CONNECTIONS} idle connections"
    assert all(closed), f"{closed.count(False)} idle connections still open after the deadline"


def test_the_exposition_is_prometheus_clients_for_every_negotiated_format(settings):
    with running_server(settings) as (_address, app):
        reference, _thread = start_http_server(0, addr="127.0.0.1", registry=app.registry)
        try:
            for headers in [(), (("Accept", "application/openmetrics-text; version=1.0.0"),),
                            (("Accept-Encoding", "gzip"),)]:
                for path in ("/metrics", "/metrics?name[]=tenantgate_policy_info"):
                    ours = _scrape(app.metrics_port, *headers, path=path)
                    theirs = _scrape(reference.server_port, *headers, path=path)
                    assert ours == theirs, (headers, path)
            content_type, encoding, body = _scrape(app.metrics_port, ("Accept-Encoding", "gzip"))
            assert (content_type.startswith("text/plain"), encoding) == (True, "gzip")
            assert b"tenantgate_policy_info" in body
        finally:
            reference.shutdown()
            reference.server_close()


def test_the_metrics_port_closes_when_the_server_stops(settings):
    with running_server(settings) as (_address, app):
        port = app.metrics_port
        assert _answers(port)
    assert app.metrics_port == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
