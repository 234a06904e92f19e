"""Composition root: the only reader of ``Settings``. Wires verifier, policies, audit sink and servers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, start_http_server

from tenantgate.audit import JsonlAuditSink
from tenantgate.config import Settings
from tenantgate.core.breakglass import BreakGlass, GrantRules
from tenantgate.core.model import ClaimNames
from tenantgate.core.pdp import DecisionPoint
from tenantgate.core.ports import Clock, SystemClock
from tenantgate.errors import ConfigError
from tenantgate.grants import open_guarded_store
from tenantgate.identity import JwtVerifier, build_verifier
from tenantgate.observability.metrics import DecisionMetrics
from tenantgate.policy import PolicyStore

log = logging.getLogger("tenantgate.app")


@dataclass(slots=True)
class App:
    settings: Settings
    verifier: JwtVerifier
    policies: PolicyStore
    audit: JsonlAuditSink
    pdp: DecisionPoint
    clock: Clock
    breakglass: BreakGlass
    registry: CollectorRegistry
    metrics: DecisionMetrics

    def ready(self) -> bool:
        """Policies are loaded (they are, once built) and the audit sink can write."""
        return self.audit.healthy()


def build(settings: Settings, clock: Clock | None = None) -> App:
    """Build every part from settings. Raises ConfigError / PolicyError / AuditUnavailable when unusable."""
    clock = clock or SystemClock()
    verifier = build_verifier(settings, clock)
    registry = CollectorRegistry()
    metrics = DecisionMetrics(registry)
    p = settings.policies
    policies = PolicyStore.load(p.dir, p.schema_file, partition_cache_size=p.partition_cache_size,
                                on_reload=metrics.observe_reload)
    metrics.policy_loaded(policies.current().version)
    audit = JsonlAuditSink(settings.audit.path)
    audit.open()
    t, g = settings.tokens, settings.grants
    names = ClaimNames(tenant=t.tenant_claim, roles=t.roles_claim, intents=t.intents_claim)
    breakglass = BreakGlass(
        store=open_guarded_store(g.store),
        audit=audit,
        clock=clock,
        verifier=verifier,
        claim_names=names,
        rules=GrantRules(operator_tenant=g.operator_tenant, operator_role=g.operator_role,
                         approver_role=g.approver_role, require_approval=g.require_approval,
                         require_ticket=g.require_ticket, max_ttl_seconds=g.max_ttl_seconds,
                         pending_ttl_seconds=g.pending_ttl_seconds),
    )
    pdp = DecisionPoint(verifier=verifier, engine=policies.current, audit=audit, clock=clock, claim_names=names,
                        grants=breakglass)
    return App(settings, verifier, policies, audit, pdp, clock, breakglass, registry, metrics)


def close(app: App) -> None:
    """Release files and connections."""
    app.audit.close()
    app.breakglass.store.close()


async def serve(app: App, on_started: Callable[[int], None] | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Run the gRPC server (and /metrics) until SIGTERM/SIGINT (or ``stop`` is set), then drain and return."""
    from tenantgate.rpc.admin import AdminService
    from tenantgate.rpc.authorizer import AuthorizerService
    from tenantgate.rpc.breakglass import BreakGlassService
    from tenantgate.rpc.server import GrpcServer, ServerOptions

    for problem in await asyncio.to_thread(app.verifier.prefetch_keys):
        log.warning("issuer keys not loaded yet (will retry on first use): %s", problem)
    s = app.settings.server
    server = GrpcServer(
        ServerOptions(s.listen, s.max_message_bytes, s.max_concurrent_rpcs, s.grace_seconds),
        AuthorizerService(app.pdp, app.metrics.observe),
        app.ready,
        BreakGlassService(app.breakglass),
        app.breakglass.store.healthy,
        AdminService(app.policies, app.audit.healthy, app.breakglass.store.healthy),
    )
    port = await server.start()
    if s.metrics_listen:
        host, _, mport = s.metrics_listen.rpartition(":")
        try:
            start_http_server(int(mport), addr=host, registry=app.registry)
        except OSError as err:
            await server.stop()
            raise ConfigError(f"cannot serve metrics on {s.metrics_listen}: {err.strerror}") from err
    background = [asyncio.create_task(_sweep_grants(app)), asyncio.create_task(_poll_policies(app))]
    if on_started is not None:
        on_started(port)
    try:
        if stop is None:
            await server.wait_for_signal(on_hangup=lambda: _reload_soon(app))
        else:
            await stop.wait()
    finally:
        for task in background:
            task.cancel()
        await server.stop()
        close(app)
        log.info("stopped")


def _reload_soon(app: App) -> None:
    """SIGHUP: reload the policies now (on a worker thread; decisions keep being answered meanwhile)."""
    log.info("SIGHUP: reloading policies")
    asyncio.get_running_loop().run_in_executor(None, lambda: app.policies.reload(force=True))


async def _poll_policies(app: App) -> None:
    """Reload when the policy directory changes (checked every ``policies.poll_interval_seconds``)."""
    interval = app.settings.policies.poll_interval_seconds
    if interval <= 0:
        return
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(app.policies.reload)


async def _sweep_grants(app: App) -> None:
    """Mark due grants EXPIRED (each with a grant.expired audit event) every sweep interval.

    Expiry itself never waits for this: decisions compare ``expires_at`` with the clock on every request.
    """
    while True:
        await asyncio.sleep(app.settings.grants.sweep_interval_seconds)
        try:
            for grant in await asyncio.to_thread(app.breakglass.sweep):
                log.info("grant %s expired", grant.id)
        except Exception as err:  # noqa: BLE001 - retried next interval; the store may be down
            log.warning("grant sweep failed: %s", err)
