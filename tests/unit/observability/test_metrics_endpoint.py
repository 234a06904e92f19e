"""The /metrics endpoint of ``serve --workers N`` (served in a thread here): nothing a client does holds it."""

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.request import urlopen

import pytest

from support.waiting import eventually
from tenantgate.observability.multiprocess import MetricsEndpoint


@contextmanager
def _serving(files_dir, **limits) -> Iterator[MetricsEndpoint]:
    endpoint = MetricsEndpoint("127.0.0.1:0", str(files_dir), **limits)
    thread = threading.Thread(target=endpoint.serve, daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        endpoint.shutdown()
        endpoint.close()
        thread.join(5)


def _answers(port: int) -> bool:
    try:
        return urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).status == 200
    except OSError:
        return False


def _seconds_until_closed(connection: socket.socket, limit: float) -> float:
    """Send one byte every 0.1 s (each read well within any per-read timeout) until the server closes."""
    started = time.monotonic()
    connection.settimeout(0.1)
    while time.monotonic() - started < limit:
        try:
            if connection.recv(4096) == b"":
                break
        except TimeoutError:
            try:
                connection.sendall(b"x")
            except OSError:
                break
        except OSError:
            break
    return time.monotonic() - started


def test_a_client_trickling_its_request_is_cut_off_at_the_deadline_while_others_are_answered(tmp_path):
    with _serving(tmp_path, deadline=0.5) as endpoint, socket.create_connection(("127.0.0.1", endpoint.port)) as slow:
        slow.sendall(b"GET /metrics")
        assert all(_answers(endpoint.port) for _ in range(3))
        assert _seconds_until_closed(slow, limit=5) < 4


def test_connections_beyond_the_cap_are_closed_unanswered_until_a_slot_is_free(tmp_path):
    with _serving(tmp_path, max_connections=2) as endpoint:
        held = [socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) for _ in range(2)]
        for connection in held:
            connection.sendall(b"GET /metrics")  # no end of request: each holds a slot
        with pytest.raises(OSError):
            urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=5)
        for connection in held:
            connection.close()
        eventually(lambda: _answers(endpoint.port), "an answer once the held connections are gone")
