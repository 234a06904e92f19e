"""Prometheus metrics for decisions. Labels are bounded: api, decision and reason code only."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tenantgate.core.model import DecisionResult, Reason
from tenantgate.policy import ReloadResult

_TOKEN_REASONS = frozenset({Reason.TOKEN_MISSING, Reason.TOKEN_INVALID, Reason.TOKEN_EXPIRED,
                            Reason.ISSUER_UNTRUSTED, Reason.AUDIENCE_MISMATCH, Reason.TOKEN_BINDING_MISMATCH,
                            Reason.TENANT_CLAIM_MISSING})


class DecisionMetrics:
    """Counters and a latency histogram, registered on the registry given (never the global one).

    ``multiprocess``: under ``serve --workers N`` the values live in prometheus-client's multiprocess files and
    the supervisor sums the workers' counters and histograms; each gauge says how it combines the workers'.
    """

    def __init__(self, registry: CollectorRegistry, *, multiprocess: bool = False) -> None:
        self._multiprocess = multiprocess
        self.decisions = Counter("tenantgate_decisions", "Decisions by API, decision and reason code.",
                                 ["api", "decision", "reason"], registry=registry)
        self.duration = Histogram("tenantgate_decision_duration_seconds", "Time spent in decide().", ["api"],
                                  registry=registry,
                                  buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0))
        self.token_failures = Counter("tenantgate_token_failures", "Token verification failures by reason.",
                                      ["reason"], registry=registry)
        self.cross_tenant = Counter("tenantgate_cross_tenant_denials", "Requests denied as cross-tenant.",
                                    registry=registry)
        self.break_glass = Counter("tenantgate_break_glass_decisions", "Decisions made under a break-glass "
                                   "grant (allowed or denied by policy).", registry=registry)
        self.audit_failures = Counter("tenantgate_audit_failures", "Decisions denied because the audit "
                                      "record could not be written.", registry=registry)
        self.callers_refused = Counter("tenantgate_callers_refused", "Calls refused because the client "
                                       "certificate names no identity in server.tls.allowed_callers.",
                                       registry=registry)

        self.policy_reloads = Counter("tenantgate_policy_reloads", "Policy reload attempts that found changes, by "
                                      "result (ok; held_back: some tenants kept their last valid files; refused).",
                                      ["result"], registry=registry)
        # Across workers: a version is 1 while any live worker uses it; a reload is ok only when every one's was.
        self.policy_info = Gauge("tenantgate_policy_info", "The policy version decisions use now (value 1).",
                                 ["version"], registry=registry, multiprocess_mode="livemax")
        self.policy_last_reload_ok = Gauge("tenantgate_policy_last_reload_ok", "1 when the last policy reload "
                                           "succeeded, 0 when the new set was refused, some tenants were held back "
                                           "or quarantined, or the start quarantined some.", registry=registry,
                                           multiprocess_mode="livemin")
        # The set loaded at start is valid (nothing serves otherwise): 1 until a reload is refused, not 0 until
        # the first reload (which left TenantGatePolicyReloadFailed firing on every server that never had one).
        # A start with tenants quarantined sets it to 0 (``policies_started``).
        self.policy_last_reload_ok.set(1)
        self.slow_evaluations = Counter("tenantgate_policy_slow_evaluations", "Decisions looked at because Cedar "
                                        "took longer than policies.tenant_evaluation_budget_ms on them, by cause "
                                        "(tenant: a tenant's own policies; global: the global policies; request: "
                                        "reading the request).", ["cause"], registry=registry)
        self.policy_quarantined = Gauge("tenantgate_policy_quarantined_tenants", "Tenants every decision about "
                                        "whose resources is denied: their policy files are invalid with no valid "
                                        "ones to fall back on, or their policies were too slow (with more than one "
                                        "worker: the most any one worker has).", registry=registry,
                                        multiprocess_mode="livemax")
        self._version = ""
        self._children: dict[tuple[str, object, object], tuple[Any, Any]] = {}

    def policy_loaded(self, version: str) -> None:
        """Point tenantgate_policy_info at ``version`` (one series at a time)."""
        if version == self._version:
            return
        if self._version and self._multiprocess:
            # A series cannot be removed from the multiprocess files: the old version drops to 0 instead.
            self.policy_info.labels(self._version).set(0)
        elif self._version:
            self.policy_info.remove(self._version)
        self.policy_info.labels(version).set(1)
        self._version = version

    def observe_reload(self, result: ReloadResult) -> None:
        if result.changed or not result.ok:
            self.policy_reloads.labels("ok" if result.ok else "held_back" if result.held_back else "refused").inc()
        self.policies_started(result)

    def policies_started(self, result: ReloadResult) -> None:
        """The policy gauges for the set loaded at start, or after a reload (``observe_reload``)."""
        self.policy_last_reload_ok.set(1 if result.ok else 0)
        self.policy_quarantined.set(len(result.quarantined))
        self.policy_loaded(result.version)

    def slow_evaluation(self, cause: str, quarantined: bool) -> None:
        self.slow_evaluations.labels(cause).inc()
        if quarantined:
            self.policy_quarantined.inc()

    def caller_refused(self, _method: str, _identities: tuple[str, ...]) -> None:
        """Count a call refused by the caller allow-list (identities stay in the log line, not in labels)."""
        self.callers_refused.inc()

    def observe(self, api: str, result: DecisionResult, seconds: float) -> None:
        reason = result.reason
        # labels() costs a lock and a tuple lookup per call; the label sets are few, so keep their children.
        key = (api, result.decision, reason)
        children = self._children.get(key)
        if children is None:
            children = (self.decisions.labels(api, result.decision.value.lower(), reason.value),
                        self.duration.labels(api))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if result.audit.grant_id:
            self.break_glass.inc()
        if reason in _TOKEN_REASONS:
            self.token_failures.labels(reason.value).inc()
        elif reason is Reason.CROSS_TENANT:
            self.cross_tenant.inc()
        elif reason is Reason.AUDIT_UNAVAILABLE:
            self.audit_failures.inc()
