"""Composition root: the only reader of ``Settings``. Wires verifier, policies, audit sink and servers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry

from tenantgate.audit import JsonlAuditSink, StreamAuditSink, TeeAuditSink
from tenantgate.background import (
    Reloads,
    checkpoint_audit,
    in_daemon_thread,
    mirror_metrics,
    poll_policies,
    settle_heap,
    sweep_grants,
)
from tenantgate.config import AuditSettings, Settings
from tenantgate.core.breakglass import BreakGlass, GrantRules
from tenantgate.core.compiler import TenantLimits
from tenantgate.core.grants import GrantState
from tenantgate.core.model import ClaimNames
from tenantgate.core.pdp import DecisionPoint, DecisionSettings
from tenantgate.core.ports import Clock, SystemClock
from tenantgate.core.schema import undeclared_actions
from tenantgate.errors import AuditUnavailable
from tenantgate.grants import open_guarded_store
from tenantgate.grants.journal import FileChangeJournal, journal_prefix
from tenantgate.identity import JwtVerifier, build_verifier
from tenantgate.ids import decision_id
from tenantgate.observability import collectors
from tenantgate.observability.endpoint import MetricsEndpoint
from tenantgate.observability.grpc_metrics import GrpcMetrics
from tenantgate.observability.logging import AcceptFailureLog
from tenantgate.observability.metrics import DecisionMetrics
from tenantgate.observability.slow_policies import slow_policy_reporter
from tenantgate.policy import PolicyStore

if TYPE_CHECKING:
    from tenantgate.http.server import HttpServer
    from tenantgate.rpc.envoy_convert import ExtAuthzOptions
    from tenantgate.rpc.server import GrpcServer

log = logging.getLogger("tenantgate.app")
T = TypeVar("T")
UNLIMITED_OPEN_FILES_TARGET = 10_240  # the soft open-files limit sought when the hard one is unlimited (macOS)


@dataclass(slots=True)
class App:
    settings: Settings
    verifier: JwtVerifier
    policies: PolicyStore
    audit: JsonlAuditSink | TeeAuditSink
    pdp: DecisionPoint
    clock: Clock
    breakglass: BreakGlass
    registry: CollectorRegistry
    metrics: DecisionMetrics
    http_port: int = 0  # the AuthZEN HTTP API's bound port while serving ([http] listen), else 0
    health_port: int = 0  # the plaintext health port's bound port while serving (server.health_listen), else 0
    metrics_port: int = 0  # the /metrics port this process bound (server.metrics_listen, single process), else 0
    worker: int | None = None  # K under `serve --workers N`; None: the only server process
    mirror: collectors.MultiprocessMirror | None = None  # workers: audit and grant numbers for the supervisor
    journal: FileChangeJournal | None = None  # grant changes between their event and their commit

    def ready(self) -> bool:
        """Policies are loaded (they are, once built) and the audit sink can write."""
        return self.audit.healthy()

    def deciding(self) -> bool:
        """``ready`` and every issuer's signing keys are held: tokens can be verified, so decisions can allow."""
        return self.ready() and self.verifier.keys_ready()


def build(settings: Settings, clock: Clock | None = None, worker: int | None = None) -> App:
    """Build every part from settings. Raises ConfigError / PolicyError / AuditUnavailable when unusable.

    ``worker``: None for the only server process; K for worker K of ``serve --workers N``, which writes its
    own audit chain (``build_audit_sink``) and keeps its metrics in prometheus-client's multiprocess files
    (the supervisor serves /metrics).
    """
    clock = clock or SystemClock()
    verifier = build_verifier(settings, clock)
    registry = CollectorRegistry()
    metrics = DecisionMetrics(registry, multiprocess=worker is not None)
    p = settings.policies
    policies = PolicyStore.load(p.dir, p.schema_file, partition_cache_size=p.partition_cache_size,
                                decision_cache_size=p.decision_cache_size,
                                on_reload=metrics.observe_reload, limits=tenant_limits(settings),
                                quarantine=p.invalid_tenants_at_start == "quarantine",
                                evaluation_budget=p.tenant_evaluation_budget_ms / 1000,
                                on_slow=slow_policy_reporter(metrics, p.tenant_evaluation_budget_ms))
    metrics.policies_started(policies.last_result)
    audit = build_audit_sink(settings.audit, worker=worker or 0)
    audit.open()
    decisions = decision_settings(settings)
    names = decisions.claim_names
    store = open_guarded_store(settings.grants.store, lookup_timeout=settings.grants.lookup_timeout_seconds)
    journal = FileChangeJournal(journal_prefix(Path(settings.audit.path)), sync=settings.audit.durability == "fsync")
    breakglass = BreakGlass(store=store, audit=audit, clock=clock, journal=journal,
                            verifier=verifier, claim_names=names, rules=decisions.rules,
                            undeclared_actions=lambda names: undeclared_actions(policies.current().compiled.schema,
                                                                                 names))
    pep_role = decisions.pep_role

    def count_active() -> int:
        return len(breakglass.store.list(None, GrantState.ACTIVE, clock.now()))

    mirror = None
    if worker is None:
        collectors.register(registry, collectors.AuditCollector(audit_stats(audit)),
                            collectors.GrantCollector(count_active))
    else:
        mirror = collectors.MultiprocessMirror(registry, audit_stats(audit), count_active)
    pdp = DecisionPoint(verifier=verifier, engine=policies.current, audit=audit, clock=clock, claim_names=names,
                        grants=breakglass, pep_role=pep_role, new_id=decision_id)
    return App(settings, verifier, policies, audit, pdp, clock, breakglass, registry, metrics, worker=worker,
               mirror=mirror, journal=journal)


def build_audit_sink(a: AuditSettings, worker: int = 0) -> JsonlAuditSink | TeeAuditSink:
    """The hash-chained audit log (worker N > 0 writes its own chain, audit-wN.jsonl), teed to stdout when
    ``audit.stdout``. Raises ConfigError for an unusable checkpoint key."""
    chained = JsonlAuditSink(a.path, durability="fsync" if a.durability == "fsync" else "flush",
                             rotate_bytes=a.rotate_bytes, keep_files=a.keep_files,
                             checkpoint_key=a.checkpoint_key_file or None, checkpoint_every=a.checkpoint_every,
                             checkpoint_seconds=a.checkpoint_seconds, worker=worker, deployment=a.deployment_id)
    return TeeAuditSink(chained, StreamAuditSink()) if a.stdout else chained


def audit_stats(audit: JsonlAuditSink | TeeAuditSink) -> Callable[[], Any]:
    """The chained sink's counters, also behind a stdout tee."""
    chained = audit.primary if isinstance(audit, TeeAuditSink) else audit
    assert isinstance(chained, JsonlAuditSink)
    return chained.stats


def close(app: App) -> None:
    """Release files and connections."""
    app.audit.close()
    app.breakglass.store.close()
    if app.journal is not None:
        app.journal.close()


async def serve(app: App, on_started: Callable[[int], None] | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Run the gRPC server (and /metrics) until SIGTERM/SIGINT (or ``stop`` is set), then drain and return.

    A worker of ``serve --workers N`` binds its ports with SO_REUSEPORT and serves no /metrics of its own.
    ``on_started(port)`` is called once everything listens (and the signals are handled). Raises the soft
    limit on open files to the hard one first, and logs failing accepts on this loop in summary
    (``AcceptFailureLog``).
    """
    from tenantgate.rpc.admin import AdminService
    from tenantgate.rpc.authorizer import AuthorizerService
    from tenantgate.rpc.breakglass import BreakGlassService
    from tenantgate.rpc.ext_authz import ExtAuthzService
    from tenantgate.rpc.server import GrpcServer, ServerOptions, max_metadata_bytes
    from tenantgate.rpc.tls import TlsFiles

    raise_open_files_limit()
    # On a daemon thread: a SIGTERM while a JWKS URL keeps start-up waiting stops the process at once.
    for problem in await asyncio.wrap_future(in_daemon_thread(app.verifier.prefetch_keys, "tenantgate-prefetch")):
        log.warning("issuer keys not loaded yet (fetched again in the background; not ready to decide until "
                    "they load): %s", problem)
    s = app.settings.server
    tls = TlsFiles(s.tls.cert_file, s.tls.key_file, s.tls.client_ca_file) if s.tls.cert_file else None
    grpc_metrics = GrpcMetrics(app.registry)

    def refused(method: str, identities: tuple[str, ...]) -> None:
        try:
            grpc_metrics.refused(method)
        finally:
            app.metrics.caller_refused(method, identities)

    server = GrpcServer(
        ServerOptions(s.listen, s.max_message_bytes, s.max_concurrent_rpcs, s.grace_seconds, tls=tls,
                      allowed_callers=s.tls.allowed_callers, health_listen=s.health_listen,
                      reuse_port=app.worker is not None,
                      max_connection_age_seconds=s.max_connection_age_seconds,
                      max_metadata_bytes=max_metadata_bytes(app.settings.tokens.max_token_bytes)),
        AuthorizerService(app.pdp, app.metrics.observe),
        app.ready,
        app.deciding,
        BreakGlassService(app.breakglass),
        app.breakglass.store.healthy,
        AdminService(app.policies, app.audit.healthy, app.breakglass.store.healthy),
        ext_authz=ExtAuthzService(app.pdp, ext_authz_options(app.settings), app.metrics.observe),
        on_caller_refused=refused,
        instrument=grpc_metrics.measured,
    )
    port = await server.start()
    app.health_port = server.health_port
    accept_failures = AcceptFailureLog()  # the AuthZEN port's accepts run on this loop (gRPC's do not)
    accept_failures.install(asyncio.get_running_loop())
    metrics: MetricsEndpoint | None = None
    try:
        metrics = _start_metrics(app)
        http = await _start_http(app)
    except BaseException:
        if metrics is not None:
            await _stop_metrics(app, metrics)
        await server.stop()
        accept_failures.close()
        raise
    if app.journal is not None:
        try:  # now, so a directory where it cannot be is known at start, not at the first grant change
            app.journal.start()
        except AuditUnavailable as err:
            log.error("%s: grant requests and approvals are refused until it can be (revocations and expiries go "
                      "ahead without it)", err)
    reloads = Reloads(app.policies, keys=app.verifier.reread_keys, settle=settle_heap)
    background = [asyncio.create_task(sweep_grants(app)), asyncio.create_task(poll_policies(app, reloads)),
                  asyncio.create_task(checkpoint_audit(app)), asyncio.create_task(mirror_metrics(app))]
    signalled = server.handle_signals(on_hangup=reloads.soon) if stop is None else None
    settle_heap()  # everything is built and listening: what a full collection would walk from here on is frozen
    if on_started is not None:
        on_started(port)
    try:
        if signalled is not None:
            await server.wait_for(signalled)
        elif stop is not None:
            await stop.wait()
    finally:
        for task in background:
            task.cancel()
        await _drain(server, http, s.grace_seconds)
        app.http_port = 0
        if metrics is not None:
            await _stop_metrics(app, metrics)
        accept_failures.close()
        if app.mirror is not None:
            await asyncio.to_thread(app.mirror.sync)
        close(app)
        if app.mirror is not None:
            app.mirror.sync_audit()  # the closing checkpoint
        log.info("stopped")


async def _drain(server: GrpcServer, http: HttpServer | None, grace: float) -> None:
    """Stop serving within one grace period: gRPC health turns NOT_SERVING, then both ports stop taking new
    calls and connections at once and drain together, each until the same deadline. Raises the first error a
    stop raised, once both have ended.

    Review finding: HTTP drained first and gRPC after it, so the drain took up to twice ``grace`` (the
    supervisor of ``serve --workers N`` killed such a worker before its closing audit checkpoint), and while
    HTTP drained the gRPC port kept taking new calls and reporting SERVING."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    await server.report_not_serving()
    remaining = max(0.0, deadline - loop.time())
    stops = [server.stop(remaining)] + ([http.stop(remaining)] if http is not None else [])
    for outcome in await asyncio.gather(*stops, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


def decision_settings(settings: Settings) -> DecisionSettings:
    """How ``settings`` shape decisions beyond policies: claim names, break-glass rules, the trusted PEP role.
    The server and ``tenantgate test`` both take them from here, so a suite decides as the server does."""
    t, g = settings.tokens, settings.grants
    return DecisionSettings(
        claim_names=ClaimNames(tenant=t.tenant_claim, roles=t.roles_claim, intents=t.intents_claim),
        rules=GrantRules(operator_tenant=g.operator_tenant, operator_role=g.operator_role,
                         approver_role=g.approver_role, require_approval=g.require_approval,
                         require_ticket=g.require_ticket, max_ttl_seconds=g.max_ttl_seconds,
                         pending_ttl_seconds=g.pending_ttl_seconds,
                         max_pending_per_operator=g.max_pending_per_operator,
                         max_requests_per_operator_per_hour=g.max_requests_per_operator_per_hour),
        # Only a trusted-PEP AuthZEN setup lets a token with this role state subjects; otherwise nobody may.
        pep_role=settings.http.pep_role if settings.http.mode == "trusted_pep" else "",
    )


def tenant_limits(settings: Settings) -> TenantLimits:
    """How much one tenant's own policy files may hold, for the server, `validate` and `tenantgate test`."""
    p = settings.policies
    return TenantLimits(max_bytes=p.max_tenant_policy_bytes, max_policies=p.max_tenant_policies,
                        max_entity_bytes=p.max_tenant_entity_bytes,
                        max_entity_ancestry=p.max_tenant_entity_ancestry,
                        max_entity_decision_bytes=p.max_tenant_entity_decision_bytes,
                        max_like_chars=p.max_tenant_like_pattern_chars)


def ext_authz_options(settings: Settings) -> ExtAuthzOptions:
    """The Envoy ext_authz route table, intent header, dry-run flag and certificate forwarders."""
    from tenantgate.rpc.envoy_convert import ExtAuthzOptions
    from tenantgate.rpc.routes import Route, RouteTable

    e = settings.ext_authz
    routes = RouteTable(Route.build(r.methods, r.path, r.action, r.resource_type, r.tenant_from, r.id_from)
                        for r in e.routes)
    return ExtAuthzOptions(routes=routes, intent_header=e.intent_header, dry_run=e.dry_run,
                           certificate_forwarders=frozenset(e.certificate_forwarders))


def _start_metrics(app: App) -> MetricsEndpoint | None:
    """The single server's /metrics on ``server.metrics_listen``, answered on a daemon thread (never on the
    event loop), each scraper bounded in time and number (``observability.endpoint``); a worker serves none
    (the supervisor does). Raises ``ConfigError`` when the address cannot be bound."""
    listen = app.settings.server.metrics_listen
    if not listen or app.worker is not None:
        return None
    endpoint = MetricsEndpoint(listen, app.registry)
    endpoint.serve_in_thread()
    app.metrics_port = endpoint.port
    return endpoint


async def _stop_metrics(app: App, endpoint: MetricsEndpoint) -> None:
    await asyncio.to_thread(endpoint.shutdown)  # returns once serve() has (within its 0.5 s poll)
    endpoint.close()
    app.metrics_port = 0


def raise_open_files_limit() -> None:
    """Raise this process's soft limit on open files to its hard limit (logged at debug): every connection
    holds a descriptor, and with a soft limit of 1,024 (a common default) 1,100 idle connections made the
    AuthZEN port stop answering (review finding). A limit that cannot be raised is left as it is."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit (macOS) cannot be the soft one: aim for the usual per-process cap instead.
    target = hard if hard != resource.RLIM_INFINITY else max(soft, UNLIMITED_OPEN_FILES_TARGET)
    if soft == resource.RLIM_INFINITY or soft >= target:
        log.debug("open files limit: %s (hard limit %s)", soft, hard)
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as err:
        log.debug("open files limit left at %d (hard limit %s): %s", soft, hard, err)
        return
    log.debug("open files limit raised from %d to %d (hard limit %s)", soft, target, hard)


async def _start_http(app: App) -> HttpServer | None:
    """Start the AuthZEN HTTP API on this loop when ``[http] listen`` is set (raises ``ConfigError``)."""
    h = app.settings.http
    if not h.listen:
        return None
    from tenantgate.http.routes import Limits
    from tenantgate.http.server import HttpOptions, HttpServer

    http = HttpServer(HttpOptions(h.listen, h.mode, Limits(h.max_body_bytes, h.max_concurrent_requests,
                                                           h.max_evaluations),
                                  h.cert_file, h.key_file, h.public_url, app.settings.server.grace_seconds,
                                  reuse_port=app.worker is not None,
                                  max_token_bytes=app.settings.tokens.max_token_bytes),
                      app.pdp, app.metrics.observe, verifier=app.verifier)
    app.http_port = await http.start()
    return http
