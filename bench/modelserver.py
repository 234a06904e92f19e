"""``python -m bench.modelserver --config FILE --model sync|aio [--threads W]``: scenario 8's other servers.

Bench-only. Builds the app exactly like ``tenantgate serve`` (``tenantgate.app.build(config.load(FILE))``)
and serves ``Authorizer.Check`` plus ``grpc.health.v1`` on the config's ``server.listen`` until SIGTERM:

- ``sync``: ``grpc.server`` on a ``ThreadPoolExecutor(max_workers=W)`` with the production server options.
  Each call runs the production handler, ``AuthorizerService.Check`` (token from metadata, convert, decide,
  observe, convert back), to completion on the pool thread: same code, no copy of it.
- ``aio``: the production ``GrpcServer`` (grpc.aio, same options, health, reflection) without the gRPC
  call metrics ``tenantgate serve`` wraps its servicers in (async wrappers the sync server cannot run): it
  measures what those metrics cost.

Neither runs the background loops of ``tenantgate serve`` (policy polling, grant sweep), nor /metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from collections.abc import Coroutine, Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tenantgate import app as application
from tenantgate import config
from tenantgate.observability.logging import configure
from tenantgate.rpc.authorizer import AuthorizerService
from tenantgate.rpc.server import AUTHORIZER, GrpcServer, ServerOptions, channel_options
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc


def run_to_completion(step: Coroutine[Any, Any, Any]) -> Any:
    """The result of a coroutine that never suspends, run on the calling thread (no event loop).

    Raises RuntimeError when it does suspend: then it needs a loop and this server would not be serving
    the production handler any more.
    """
    try:
        step.send(None)
    except StopIteration as done:
        return done.value
    step.close()
    raise RuntimeError("AuthorizerService.Check suspended; the sync server cannot run it without an event loop")


class SyncAuthorizer(pb_grpc.AuthorizerServicer):
    """``Authorizer.Check`` for a thread-pool server: the production handler, run synchronously."""

    def __init__(self, service: AuthorizerService) -> None:
        self._service = service

    def Check(self, request: pb.CheckRequest, context: grpc.ServicerContext) -> pb.CheckResponse:
        response: pb.CheckResponse = run_to_completion(self._service.Check(request, context))
        return response


def serve_sync(app: application.App, threads: int) -> None:
    """Serve until SIGTERM/SIGINT, then report NOT_SERVING and drain within the configured grace period."""
    s = app.settings.server
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: stop.set())
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="check"),
                         options=channel_options(s.max_message_bytes),
                         maximum_concurrent_rpcs=s.max_concurrent_rpcs)
    servicer = SyncAuthorizer(AuthorizerService(app.pdp, app.metrics.observe))
    pb_grpc.add_AuthorizerServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    checker = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    if server.add_insecure_port(s.listen) == 0:
        raise SystemExit(f"cannot listen on {s.listen}")
    server.start()
    status = health_pb2.HealthCheckResponse.SERVING if app.ready() else health_pb2.HealthCheckResponse.NOT_SERVING
    for service in ("", AUTHORIZER):
        checker.set(service, status)
    while not stop.wait(0.5):
        pass
    checker.enter_graceful_shutdown()
    server.stop(s.grace_seconds).wait(s.grace_seconds + 5)


async def serve_aio(app: application.App) -> None:
    """The production grpc.aio server assembly without gRPC call metrics, until SIGTERM/SIGINT."""
    s = app.settings.server
    server = GrpcServer(ServerOptions(s.listen, s.max_message_bytes, s.max_concurrent_rpcs, s.grace_seconds),
                        AuthorizerService(app.pdp, app.metrics.observe), app.ready)
    await server.start()
    try:
        await server.wait_for_signal()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.modelserver", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--model", choices=("sync", "aio"), required=True)
    p.add_argument("--threads", type=int, default=8, help="sync: the thread pool's max_workers")
    args = p.parse_args(argv)
    settings = config.load(args.config)
    configure(settings.log.level)
    app = application.build(settings)
    try:
        app.verifier.prefetch_keys()
        if args.model == "sync":
            serve_sync(app, args.threads)
        else:
            asyncio.run(serve_aio(app))
    finally:
        application.close(app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
