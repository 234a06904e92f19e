"""gRPC server metrics: calls handled by method and status code, and their latency.

Measured by wrapping each servicer's unary methods once, when the servicer is registered (``measured``), not
by a server interceptor: grpc.aio runs an interceptor chain as extra coroutines on every call, which cost
more server CPU than the measurement itself. Streaming methods (health Watch, reflection) are not measured.

Labels are bounded: the method label is one of the served RPC names (``/package.Service/Method``); never a
tenant, subject or resource id. Calls the caller allow-list refuses never reach a servicer; ``refused``
counts them under ``PERMISSION_DENIED``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from prometheus_client import CollectorRegistry, Counter, Histogram


class GrpcMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._handled = Counter("tenantgate_grpc_server_handled", "gRPC calls completed, by method and code.",
                                ["method", "code"], registry=registry)
        self._seconds = Histogram("tenantgate_grpc_server_handling_seconds", "gRPC call latency by method.",
                                  ["method"], registry=registry,
                                  buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5))

    def measured(self, service: str, servicer: Any) -> Any:
        """``servicer`` as the ``add_*Servicer_to_server`` functions see it, its unary methods measured.

        ``service`` is the full service name (``tenantgate.v1.Authorizer``)."""
        return _MeasuredServicer(self, service, servicer)

    def refused(self, method: str) -> None:
        """Count a call the caller allow-list refused before any servicer ran (unary-unary methods only, like
        the calls that reach a servicer; a refused stream is not measured, as an allowed one is not)."""
        service, _, name = method.lstrip("/").rpartition("/")
        if name in unary_methods(service):
            self._handled.labels(method, grpc.StatusCode.PERMISSION_DENIED.name).inc()

    def wrap(self, method: str, inner: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """``inner`` (a unary behaviour, async or not) counting its call by final status code and observing
        its latency. An async behaviour stays async and a plain one plain: grpc.aio runs them as before."""
        handled, seconds = self._handled, self._seconds.labels(method)
        handled_ok = handled.labels(method, "OK")  # the common outcome: its child kept, not looked up per call

        def record(context: Any, started: float, error: BaseException | None) -> None:
            code = _final_code(context, error)
            (handled_ok if code == "OK" else handled.labels(method, code)).inc()
            seconds.observe(time.perf_counter() - started)

        if inspect.iscoroutinefunction(inner):
            async def measured(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with _Measuring(record, context):
                    return await inner(request, context)

            return measured

        def measured_plain(request: Any, context: Any) -> Any:
            with _Measuring(record, context):
                return inner(request, context)

        return measured_plain


class _Measuring:
    """Times the ``with`` body and records how it ended (``record(context, started, error or None)``)."""

    __slots__ = ("_context", "_record", "_started")

    def __init__(self, record: Callable[[Any, float, BaseException | None], None], context: Any) -> None:
        self._record, self._context = record, context
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, _type: object, error: BaseException | None, _tb: object) -> None:
        self._record(self._context, self._started, error)


def _final_code(context: Any, error: BaseException | None) -> str:
    """The status the call ends with: the one the servicer set (abort, set_code), else from how it ended."""
    code = context.code()
    if code is not None:
        return str(code.name)
    if error is None:
        return "OK"
    if isinstance(error, asyncio.CancelledError):  # grpc.aio cancels the handler when the call ends early
        remaining = context.time_remaining()
        return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
    return "UNKNOWN"


class _MeasuredServicer:
    """Hands out the servicer's attributes; those that are unary-unary methods of ``service`` (as its proto
    descriptor says) come measured, anything else as it is."""

    def __init__(self, metrics: GrpcMetrics, service: str, servicer: Any) -> None:
        self._metrics = metrics
        self._service = service
        self._servicer = servicer
        self._unary = unary_methods(service)

    def __getattr__(self, name: str) -> Any:
        inner = getattr(self._servicer, name)
        if name not in self._unary or not callable(inner):
            return inner
        return self._metrics.wrap(f"/{self._service}/{name}", inner)


def unary_methods(service: str) -> frozenset[str]:
    """The unary-unary method names of a service whose proto is loaded; none for an unknown service."""
    try:
        methods = descriptor_pool.Default().FindServiceByName(service).methods
    except KeyError:
        return frozenset()
    return frozenset(m.name for m in methods if not m.client_streaming and not m.server_streaming)
