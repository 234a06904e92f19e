"""gRPC call metrics: the status a call is counted under, and which methods are measured."""

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2  # noqa: F401 - loads grpc.health.v1 into the descriptor pool
from prometheus_client import CollectorRegistry, generate_latest

from tenantgate.observability.grpc_metrics import GrpcMetrics, _final_code, unary_methods


class _Context:
    def __init__(self, code=None, remaining=None):
        self._code, self._remaining = code, remaining

    def code(self):
        return self._code

    def time_remaining(self):
        return self._remaining


@pytest.mark.parametrize(("context", "error", "expected"), [
    (_Context(), None, "OK"),
    (_Context(grpc.StatusCode.OK), None, "OK"),
    (_Context(grpc.StatusCode.INVALID_ARGUMENT), RuntimeError("aborted"), "INVALID_ARGUMENT"),
    (_Context(), RuntimeError("bug"), "UNKNOWN"),
    (_Context(remaining=-0.01), asyncio.CancelledError(), "DEADLINE_EXCEEDED"),  # was UNKNOWN (review)
    (_Context(remaining=3.0), asyncio.CancelledError(), "CANCELLED"),
    (_Context(), asyncio.CancelledError(), "CANCELLED"),
])
def test_a_call_is_counted_under_the_status_it_ends_with(context, error, expected):
    assert _final_code(context, error) == expected


def test_unary_methods_come_from_the_proto_descriptor():
    assert {"Check", "List"} <= unary_methods("grpc.health.v1.Health")
    assert "Watch" not in unary_methods("grpc.health.v1.Health")
    assert unary_methods("no.such.Service") == frozenset()


class _Servicer:
    async def Check(self, request, context):
        return "answer"

    def List(self, request, context):  # a plain (not async) behaviour, like grpc's generated base stubs
        raise NotImplementedError

    async def Watch(self, request, context):
        return None


def test_plain_and_async_unary_methods_are_both_measured_and_streams_are_not():
    registry = CollectorRegistry()
    metrics = GrpcMetrics(registry)
    servicer = metrics.measured("grpc.health.v1.Health", _Servicer())
    assert asyncio.iscoroutinefunction(servicer.Check)  # grpc.aio runs it as before
    assert asyncio.run(servicer.Check(None, _Context())) == "answer"
    assert not asyncio.iscoroutinefunction(servicer.List)
    with pytest.raises(NotImplementedError):
        servicer.List(None, _Context(grpc.StatusCode.UNIMPLEMENTED))
    assert servicer.Watch.__func__ is _Servicer.Watch  # a stream: handed out as it is
    metrics.refused("/grpc.health.v1.Health/Watch")  # a refused stream is not counted either
    metrics.refused("/grpc.health.v1.Health/Check")
    text = generate_latest(registry).decode()
    handled = 'tenantgate_grpc_server_handled_total{code="%s",method="/grpc.health.v1.Health/%s"} 1.0'
    assert handled % ("OK", "Check") in text
    assert handled % ("UNIMPLEMENTED", "List") in text
    assert handled % ("PERMISSION_DENIED", "Check") in text
    assert "Health/Watch" not in text
