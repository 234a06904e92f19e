"""Server assembly: Authorizer, Envoy ext_authz, health, reflection, TLS/mTLS and the caller allow-list,
limits, and a graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from tenantgate.errors import ConfigError
from tenantgate.rpc.admin import AdminService
from tenantgate.rpc.authorizer import AuthorizerService
from tenantgate.rpc.breakglass import BreakGlassService
from tenantgate.rpc.decoding import Instrument, add_service
from tenantgate.rpc.ext_authz import SERVICE_NAME as EXT_AUTHZ
from tenantgate.rpc.ext_authz import ExtAuthzService
from tenantgate.rpc.ext_authz import add_to_server as add_ext_authz
from tenantgate.rpc.tls import CallerAllowList, CertificateReloader, RefusalObserver, TlsFiles, server_credentials
from tenantgate.v1 import admin_pb2, authorizer_pb2, breakglass_pb2

log = logging.getLogger("tenantgate.server")

AUTHORIZER = authorizer_pb2.DESCRIPTOR.services_by_name["Authorizer"].full_name
BREAKGLASS = breakglass_pb2.DESCRIPTOR.services_by_name["BreakGlass"].full_name
ADMIN = admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name
HEALTH_INTERVAL_SECONDS = 1.0
# A connection with no call in flight for this long is closed (GOAWAY; a client reconnects on its next call).
# Review finding: without it each idle HTTP/2 connection held ~15 KiB and a descriptor for good (4,000: +59 MiB;
# 1,100 under a 1,024 descriptor limit: the AuthZEN port stopped answering). Five minutes: a client's
# long-lived channel between two bursts pays one reconnect, not one per call.
MAX_CONNECTION_IDLE_SECONDS = 300.0
# A call's metadata (HTTP/2 headers) may hold this much beside the token: the bearer token in metadata must fit
# whenever it fits the verifier's tokens.max_token_bytes (review finding: a 16,152-byte token, accepted in the
# request, got RESOURCE_EXHAUSTED without a decision on about one call in ten when sent in metadata).
METADATA_HEADROOM_BYTES = 8 * 1024
DEFAULT_MAX_METADATA_BYTES = 16 * 1024
# The plaintext health port has no port-wide cap on calls: any peer can reach it, and a call whose request never
# arrives (no deadline) holds its slot for good, so 64 of them (the cap it had) failed every probe RESOURCE_EXHAUSTED
# (review finding). A connection may carry this many calls at once instead (a probe makes one): what a peer holds
# then costs it connections (descriptors, each closed after the idle time), and never keeps another's probe out.
HEALTH_PORT_STREAMS_PER_CONNECTION = 4
HEALTH_PORT_MAX_WATCHES = 32


def max_metadata_bytes(max_token_bytes: int) -> int:
    """The serving port's metadata limit for tokens of up to ``max_token_bytes``."""
    return max(DEFAULT_MAX_METADATA_BYTES, max_token_bytes + METADATA_HEADROOM_BYTES)


class StreamSlots:
    """At most ``limit`` long-lived streams (``Health/Watch``, reflection) open at once on one port; one more is
    refused ``RESOURCE_EXHAUSTED``, so that the calls left under the port's ``maximum_concurrent_rpcs`` always
    serve ``Check`` (probes) and decisions. Review finding: a stream holds its slot for as long as the client keeps
    it open (the idle timeout never fires: a call is in flight), so 64 Watch streams on the plaintext health port
    made every probe's Check fail ``RESOURCE_EXHAUSTED``, and ``max_concurrent_rpcs`` Watch or reflection streams
    on the gRPC port (no allow-list) every decision."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._open = 0  # on the event loop only: no lock

    @contextlib.asynccontextmanager
    async def taken(self, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        if self._open >= self.limit:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"at most {self.limit} streams (Health/Watch, reflection) at once on this port")
        self._open += 1
        try:
            yield
        finally:
            self._open -= 1


class BoundedWatches:
    """``health`` whose ``Watch`` streams take one of ``slots`` each (``Check`` is as it is)."""

    def __init__(self, health_servicer: health.aio.HealthServicer, slots: StreamSlots) -> None:
        self._health = health_servicer
        self._slots = slots

    def __getattr__(self, name: str) -> Any:  # Check, List: as they are
        return getattr(self._health, name)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        async with self._slots.taken(context):
            await self._health.Watch(request, context)


class BoundedReflection:
    """Server reflection whose streams take one of ``slots`` each."""

    def __init__(self, servicer: Any, slots: StreamSlots) -> None:
        self._reflection = servicer
        self._slots = slots

    async def ServerReflectionInfo(self, requests: AsyncIterator[Any],
                                   context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with self._slots.taken(context):
            async for response in self._reflection.ServerReflectionInfo(requests, context):
                yield response


def _as_is(_service: str, servicer: Any) -> Any:
    return servicer


@dataclass(frozen=True, slots=True)
class ServerOptions:
    listen: str
    max_message_bytes: int
    max_concurrent_rpcs: int
    grace_seconds: float
    tls: TlsFiles | None = None  # None: plaintext; with client_ca_file: mTLS
    allowed_callers: tuple[str, ...] = ()  # with mTLS: client certificate identities that may call
    health_listen: str = ""  # a second, plaintext port serving only grpc.health.v1 (probes); "" = none
    # grpc.so_reuseport: only `serve --workers N` (N > 1) turns it on, so its processes can share the ports.
    # Off otherwise, so a second server on a busy port fails instead of silently sharing its traffic.
    reuse_port: bool = False
    max_connection_age_seconds: float = 0.0  # 0 = connections live as long as clients keep them
    max_connection_idle_seconds: float = MAX_CONNECTION_IDLE_SECONDS  # also on the health port; 0 = never
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES  # see max_metadata_bytes()


def channel_options(max_message_bytes: int, *, reuse_port: bool = False, max_connection_age: float = 0.0,
                    grace: float = 0.0,
                    max_connection_idle: float = MAX_CONNECTION_IDLE_SECONDS,
                    max_metadata: int = DEFAULT_MAX_METADATA_BYTES) -> list[tuple[str, int]]:
    """The limits and socket options of the serving port (also used by the benchmark's sync server).

    ``max_connection_age`` > 0 (seconds): gRPC sends a connection GOAWAY after about that long (it adds
    ±10% jitter) and gives the calls in flight on it ``grace`` seconds (at least 1) to finish; clients then
    open a new connection, which SO_REUSEPORT places on a worker anew. ``max_connection_idle`` > 0 (seconds):
    a connection without a call in flight (a stream such as ``Health/Watch`` counts as one) for that long gets
    GOAWAY and is closed; the age applies to busy and idle connections alike. ``max_metadata`` is both gRPC's
    soft and hard metadata limit: with the soft one alone, gRPC refuses calls between it and 1.25 times it at
    random.
    """
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max(max_message_bytes, 16 * 1024 * 1024)),
        ("grpc.max_metadata_size", max_metadata),
        ("grpc.absolute_max_metadata_size", max_metadata),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.so_reuseport", int(reuse_port)),
    ]
    if max_connection_idle > 0:
        options.append(("grpc.max_connection_idle_ms", _milliseconds(max_connection_idle)))
    if max_connection_age > 0:
        options += [("grpc.max_connection_age_ms", _milliseconds(max_connection_age)),
                    ("grpc.max_connection_age_grace_ms", _milliseconds(max(grace, 1.0)))]
    return options


def _health_port_options(options: ServerOptions) -> list[tuple[str, int]]:
    """The plaintext health port's: its idle connections are closed as the serving port's are (not aged)."""
    health_options = [("grpc.so_reuseport", int(options.reuse_port)),
                      ("grpc.max_concurrent_streams", HEALTH_PORT_STREAMS_PER_CONNECTION)]
    if options.max_connection_idle_seconds > 0:
        health_options.append(("grpc.max_connection_idle_ms", _milliseconds(options.max_connection_idle_seconds)))
    return health_options


def _milliseconds(seconds: float) -> int:
    return int(min(seconds, (2**31 - 1) / 1000) * 1000)  # gRPC channel arguments are C ints


class GrpcServer:
    """One grpc.aio server. ``start()`` binds (raising ConfigError when it cannot); ``stop()`` drains."""

    def __init__(self, options: ServerOptions, authorizer: AuthorizerService, ready: Callable[[], bool],
                 deciding: Callable[[], bool] | None = None, breakglass: BreakGlassService | None = None,
                 breakglass_ready: Callable[[], bool] | None = None, admin: AdminService | None = None,
                 ext_authz: ExtAuthzService | None = None, on_caller_refused: RefusalObserver | None = None,
                 instrument: Instrument | None = None) -> None:
        self._options = options
        # Health per service: the overall status (liveness) is the process's own: policies loaded, audit
        # writable. The deciding services (Authorizer, ext_authz: readiness) also need ``deciding``: every
        # issuer's keys held, or a pod that cannot fetch its identity provider's keys would take traffic and
        # deny every token. BreakGlass needs its grant store, whose outage never affects same-tenant Checks.
        deciding = deciding or ready
        self._probes: dict[str, Callable[[], bool]] = {"": ready, AUTHORIZER: deciding}
        # TLS files are checked here (ConfigError when unusable) and re-read on change before each handshake.
        self._credentials: grpc.ServerCredentials | None = None
        self.certificates: CertificateReloader | None = None
        if options.tls is not None:
            self._credentials, self.certificates = server_credentials(options.tls)
        chain = ([CallerAllowList(options.allowed_callers, on_caller_refused)]
                 if options.allowed_callers else [])
        # ``instrument`` (metrics) wraps each servicer once, at registration: cheaper per call than an interceptor.
        wrap = instrument or _as_is
        self._server = grpc.aio.server(
            interceptors=chain,
            options=channel_options(options.max_message_bytes, reuse_port=options.reuse_port,
                                    max_connection_age=options.max_connection_age_seconds,
                                    grace=options.grace_seconds,
                                    max_connection_idle=options.max_connection_idle_seconds,
                                    max_metadata=options.max_metadata_bytes),
            maximum_concurrent_rpcs=options.max_concurrent_rpcs,
        )
        self._authorizer = authorizer
        self._ext_authz = ext_authz
        # Registered so that a request protobuf cannot decode still gets a clear answer (see rpc.decoding).
        add_service(self._server, AUTHORIZER, authorizer, handles_undecodable={"Check"}, instrument=wrap)
        names = [AUTHORIZER, health.SERVICE_NAME, reflection.SERVICE_NAME]
        if breakglass is not None:
            add_service(self._server, BREAKGLASS, breakglass, handles_undecodable=BreakGlassService.HANDLES_UNDECODABLE,
                        instrument=wrap)
            names.append(BREAKGLASS)
            store_ok = breakglass_ready or (lambda: True)
            self._probes[BREAKGLASS] = lambda: ready() and store_ok()
        if admin is not None:
            add_service(self._server, ADMIN, admin, instrument=wrap)
            names.append(ADMIN)
        if ext_authz is not None:
            add_ext_authz(ext_authz, self._server, instrument=wrap)
            names.append(EXT_AUTHZ)
            self._probes[EXT_AUTHZ] = deciding
        self._health = health.aio.HealthServicer()
        streams = StreamSlots(options.max_concurrent_rpcs // 2)  # Watch and reflection together
        health_pb2_grpc.add_HealthServicer_to_server(
            wrap(health.SERVICE_NAME, BoundedWatches(self._health, streams)), self._server)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            BoundedReflection(reflection.aio.ReflectionServicer(names), streams), self._server)
        # Probes (kubelet's gRPC probe cannot do TLS) may get a plaintext port that serves health only.
        self._health_server: grpc.aio.Server | None = None
        if options.health_listen:
            self._health_server = grpc.aio.server(options=_health_port_options(options))
            health_pb2_grpc.add_HealthServicer_to_server(
                BoundedWatches(self._health, StreamSlots(HEALTH_PORT_MAX_WATCHES)), self._health_server)
        self.port = 0
        self.health_port = 0
        self._monitor: asyncio.Task[None] | None = None

    async def start(self) -> int:
        self.port = self._bind(self._server, self._options.listen, self._credentials)
        if self._health_server is not None:
            self.health_port = self._bind(self._health_server, self._options.health_listen, None)
            await self._health_server.start()
        await self._server.start()
        await self._set_health()
        self._monitor = asyncio.create_task(self._watch_health())
        return self.port

    async def report_not_serving(self) -> None:
        """Report NOT_SERVING for every service from now on (the probes stop updating it): the first step of a
        drain, so a Health/Watch stream and the health port tell it at once. Idempotent."""
        if self._monitor is not None:
            self._monitor.cancel()
        await self._health.enter_graceful_shutdown()

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, stop accepting calls and connections at once (a new call gets UNAVAILABLE), let
        in-flight calls finish within ``grace`` seconds (default: ``grace_seconds``), then cancel them. The
        health port answers NOT_SERVING until the serving port has drained."""
        await self.report_not_serving()
        await self._server.stop(self._options.grace_seconds if grace is None else grace)
        if self._health_server is not None:
            await self._health_server.stop(0)
        # Batch chunks and large requests still running finish (their records written) before the app closes its
        # audit sink.
        await asyncio.to_thread(self._authorizer.close)
        if self._ext_authz is not None:
            await asyncio.to_thread(self._ext_authz.close)

    @staticmethod
    def _bind(server: grpc.aio.Server, listen: str, credentials: grpc.ServerCredentials | None) -> int:
        """Add a listening port (TLS when ``credentials``); ConfigError when the address cannot be bound."""
        try:
            port = (server.add_insecure_port(listen) if credentials is None
                    else server.add_secure_port(listen, credentials))
        except RuntimeError as err:
            raise ConfigError(f"cannot listen on {listen}: {err}") from err
        if port == 0:
            raise ConfigError(f"cannot listen on {listen} (address in use?)")
        return int(port)

    async def wait_for_signal(self, on_hangup: Callable[[], None] | None = None) -> None:
        """Return on SIGTERM/SIGINT; call ``on_hangup`` on SIGHUP (policy reload)."""
        await self.wait_for(self.handle_signals(on_hangup))

    def handle_signals(self, on_hangup: Callable[[], None] | None = None) -> asyncio.Event:
        """Handle the signals now: the event returned is set on SIGTERM/SIGINT; SIGHUP calls ``on_hangup``.

        Installed before a server announces itself, so a signal sent right after the announcement is not lost.
        """
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if on_hangup is not None:
            loop.add_signal_handler(signal.SIGHUP, on_hangup)
        return stop

    async def wait_for(self, stop: asyncio.Event) -> None:
        """Return once ``stop`` (from ``handle_signals``) is set."""
        await stop.wait()
        log.info("signal received; draining in-flight calls (up to %.0fs)", self._options.grace_seconds)

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_SECONDS)
            try:
                await self._set_health()
            except Exception:
                log.exception("health probe failed")

    async def _set_health(self) -> None:
        for service, probe in self._probes.items():
            # Probes may touch the disk or a database: keep them off the event loop.
            ok = await asyncio.to_thread(probe)
            status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            await self._health.set(service, status)
