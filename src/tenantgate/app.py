"""Composition root: the only reader of ``Settings``. Wires verifier, policies, audit sink and servers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, start_http_server

from tenantgate.audit import JsonlAuditSink
from tenantgate.config import Settings
from tenantgate.core.model import ClaimNames
from tenantgate.core.pdp import DecisionPoint
from tenantgate.core.ports import Clock, SystemClock
from tenantgate.errors import ConfigError
from tenantgate.identity import JwtVerifier, build_verifier
from tenantgate.observability.metrics import DecisionMetrics
from tenantgate.policy import PolicyStore, load_policies

log = logging.getLogger("tenantgate.app")


@dataclass(slots=True)
class App:
    settings: Settings
    verifier: JwtVerifier
    policies: PolicyStore
    audit: JsonlAuditSink
    pdp: DecisionPoint
    clock: Clock

    def ready(self) -> bool:
        """Policies are loaded (they are, once built) and the audit sink can write."""
        return self.audit.healthy()


def build(settings: Settings, clock: Clock | None = None) -> App:
    """Build every part from settings. Raises ConfigError / PolicyError / AuditUnavailable when unusable."""
    clock = clock or SystemClock()
    verifier = build_verifier(settings, clock)
    policies = PolicyStore(load_policies(settings.policies.dir, settings.policies.schema_file))
    audit = JsonlAuditSink(settings.audit.path)
    audit.open()
    t = settings.tokens
    pdp = DecisionPoint(
        verifier=verifier,
        engine=policies.current,
        audit=audit,
        clock=clock,
        claim_names=ClaimNames(tenant=t.tenant_claim, roles=t.roles_claim, intents=t.intents_claim),
    )
    return App(settings, verifier, policies, audit, pdp, clock)


async def serve(app: App, on_started: Callable[[int], None] | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Run the gRPC server (and /metrics) until SIGTERM/SIGINT (or ``stop`` is set), then drain and return."""
    from tenantgate.rpc.authorizer import AuthorizerService
    from tenantgate.rpc.server import GrpcServer, ServerOptions

    for problem in await asyncio.to_thread(app.verifier.prefetch_keys):
        log.warning("issuer keys not loaded yet (will retry on first use): %s", problem)
    s = app.settings.server
    registry = CollectorRegistry()
    metrics = DecisionMetrics(registry)
    server = GrpcServer(
        ServerOptions(s.listen, s.max_message_bytes, s.max_concurrent_rpcs, s.grace_seconds),
        AuthorizerService(app.pdp, metrics.observe),
        app.ready,
    )
    port = await server.start()
    if s.metrics_listen:
        host, _, mport = s.metrics_listen.rpartition(":")
        try:
            start_http_server(int(mport), addr=host, registry=registry)
        except OSError as err:
            await server.stop()
            raise ConfigError(f"cannot serve metrics on {s.metrics_listen}: {err.strerror}") from err
    if on_started is not None:
        on_started(port)
    try:
        if stop is None:
            await server.wait_for_signal()
        else:
            await stop.wait()
    finally:
        await server.stop()
        app.audit.close()
        log.info("stopped")
