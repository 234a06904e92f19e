"""What is logged and counted when Cedar takes longer than ``policies.tenant_evaluation_budget_ms`` on a
decision (``core.slowtenants``)."""

from __future__ import annotations

import logging
import time

from tenantgate.core.problemlog import ProblemLog
from tenantgate.core.slowtenants import SlowHook
from tenantgate.observability.metrics import DecisionMetrics

log = logging.getLogger("tenantgate.policy")


def slow_policy_reporter(metrics: DecisionMetrics) -> SlowHook:
    """Logs and counts decisions over ``policies.tenant_evaluation_budget_ms`` (``core.slowtenants``)."""
    slow = ProblemLog(log, now=time.monotonic, noun="slow decisions",
                      summary="%d decisions took longer than policies.tenant_evaluation_budget_ms; latest: %s")

    def report(tenant: str, seconds: float, closed: bool) -> None:
        metrics.slow_evaluation(tenant != "", closed)
        if closed:
            log.error(
                "tenant %s quarantined: its own policies took Cedar %.0f ms on a decision, over "
                "policies.tenant_evaluation_budget_ms, repeatedly; every decision about its resources is denied "
                "(tenant_policies_unavailable) until its policy files change", tenant, seconds * 1000)
        elif tenant:
            slow.occurred("a decision about tenant %s took Cedar %.0f ms, its own policies being slow",
                          tenant, seconds * 1000, cause=tenant)
        else:
            slow.occurred("a decision took Cedar %.0f ms, the global policies being slow on it", seconds * 1000,
                          cause="global")

    return report
