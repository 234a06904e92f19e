"""What a client can make the server log is bounded per cause: a broken /metrics connection and gRPC's error for
an answer to a call that had ended are one line, then one line a minute counting them."""

import logging
import socket
import struct
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from support.waiting import eventually
from tenantgate.observability import logging as tg_logging
from tenantgate.observability.endpoint import MetricsEndpoint

BATCH_CHECK = "/tenantgate.v1.Authorizer/BatchCheck"


def _reset(connection: socket.socket) -> None:
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def _metrics_lines(caplog):
    return [r for r in caplog.records if r.name == "tenantgate.metrics"]


def test_connections_reset_mid_request_are_one_warning_then_a_count(caplog):
    caplog.set_level(logging.DEBUG, logger="tenantgate.metrics")
    endpoint = MetricsEndpoint("127.0.0.1:0", CollectorRegistry(), deadline=2.0)
    thread = threading.Thread(target=endpoint.serve, daemon=True)
    thread.start()
    try:
        for _ in range(200):  # half a request line, then a reset: the handler's read meets ECONNRESET
            connection = socket.create_connection(("127.0.0.1", endpoint.port), timeout=5)
            connection.sendall(b"GET /metr")
            time.sleep(0.001)
            _reset(connection)
        eventually(lambda: len(_metrics_lines(caplog)) >= 1, "the first reset is logged")
        time.sleep(0.5)  # the handler threads finish
        (first,) = _metrics_lines(caplog)
        assert first.levelname == "WARNING" and "ConnectionResetError" in first.getMessage()
        assert "one line every 60 s counts the failed connections" in first.getMessage()
    finally:
        endpoint.shutdown()
        endpoint.close()
        thread.join(5)
    (_first, summary) = _metrics_lines(caplog)  # close() writes the count
    count = int(summary.getMessage().split("metrics requests failed ")[1].split()[0])
    assert 150 <= count <= 199 and "ConnectionResetError" in summary.getMessage()


@pytest.fixture()
def configured(caplog):
    """``observability.logging.configure`` in force, the test's capture handler kept on the root logger."""
    root, grpc_aio = logging.getLogger(), logging.getLogger("grpc._cython.cygrpc")
    handlers, level, aio_level = root.handlers[:], root.level, grpc_aio.level
    tg_logging.configure("info")
    root.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        root.handlers[:], grpc_aio.filters[:] = handlers, []
        root.setLevel(level)
        grpc_aio.setLevel(aio_level)


def test_grpc_errors_for_answers_to_ended_calls_are_one_warning_then_a_count(configured):
    grpc_aio = logging.getLogger("grpc._cython.cygrpc")
    for _ in range(200):
        try:
            raise RuntimeError('Failed "execute_batch"')  # stands for grpc's ExecuteBatchError
        except RuntimeError:
            # grpc.aio formats the method name into the message itself
            grpc_aio.exception(f"ExecuteBatchError raised in core by servicer method [{BATCH_CHECK}]")
    grpc_aio.error("Unexpected [ValueError] raised by servicer method [/tenantgate.v1.Authorizer/Check]")
    lines = [(r.name, r.levelname, r.getMessage()) for r in configured.records]
    assert lines == [
        ("tenantgate.rpc", "WARNING", "the answer to a /tenantgate.v1.Authorizer/BatchCheck call was not sent: the "
                                      "call had ended (its deadline passed or the client left); while this goes "
                                      "on, one line every 60 s counts the calls"),
        ("grpc._cython.cygrpc", "ERROR", "Unexpected [ValueError] raised by servicer method "
                                         "[/tenantgate.v1.Authorizer/Check]")]  # anything else passes


def test_configuring_twice_keeps_one_filter(configured):
    tg_logging.configure("info")
    assert sum(isinstance(f, tg_logging.EndedCallErrors) for f in logging.getLogger("grpc._cython.cygrpc").filters) == 1
