"""gRPC server metrics: calls handled by method and status code, and their latency.

Labels are bounded: only calls to registered methods are measured (an unknown method has no handler), so
the method label is one of the served RPC names; never a tenant, subject or resource id.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram


class GrpcMetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, registry: CollectorRegistry) -> None:
        self._handled = Counter("tenantgate_grpc_server_handled", "gRPC calls completed, by method and code.",
                                ["method", "code"], registry=registry)
        self._seconds = Histogram("tenantgate_grpc_server_handling_seconds", "gRPC call latency by method.",
                                  ["method"], registry=registry,
                                  buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5))
        # Wrapped handler per served handler: built once, not for every call. The handlers a server returns are
        # its registered ones (one per method); an interceptor further in that builds a handler per call (the
        # caller allow-list) only ever misses, so the cache stops growing at a few dozen entries.
        self._wrapped: dict[int, tuple[Any, Any]] = {}

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # streaming (reflection) or unknown: not measured
        held = self._wrapped.get(id(handler))
        if held is not None and held[0] is handler:
            return held[1]
        wrapped = self._wrap(handler, str(handler_call_details.method))
        if len(self._wrapped) < 64:
            self._wrapped[id(handler)] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: Any, method: str) -> Any:
        inner = handler.unary_unary
        handled, seconds = self._handled, self._seconds.labels(method)

        async def measured(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "OK"
            try:
                return await inner(request, context)
            except BaseException:
                code = (context.code() or grpc.StatusCode.UNKNOWN).name if context.code() else "UNKNOWN"
                raise
            finally:
                if code == "OK" and context.code() not in (None, grpc.StatusCode.OK):
                    code = context.code().name
                handled.labels(method, code).inc()
                seconds.observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(measured, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)
