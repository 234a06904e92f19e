"""What is logged and counted when Cedar takes longer than ``policies.tenant_evaluation_budget_ms`` on a
decision (``core.slowtenants``)."""

from __future__ import annotations

import logging
import time

from tenantgate.core.problemlog import ProblemLog
from tenantgate.core.slowtenants import SlowHook
from tenantgate.observability.metrics import DecisionMetrics

log = logging.getLogger("tenantgate.policy")


def slow_policy_reporter(metrics: DecisionMetrics, budget_ms: float) -> SlowHook:
    """Logs and counts decisions over ``policies.tenant_evaluation_budget_ms`` (``core.slowtenants``)."""
    slow = ProblemLog(log, now=time.monotonic, noun="slow decisions",
                      summary="%d decisions took longer than policies.tenant_evaluation_budget_ms; latest: %s")

    def report(cause: str, tenant: str, seconds: float, closed: bool) -> None:
        metrics.slow_evaluation(cause, closed)
        if closed:
            log.error(
                "tenant %s quarantined: its own policies took Cedar %.0f ms on a decision, over "
                "policies.tenant_evaluation_budget_ms (%g ms), repeatedly; every decision about its resources is "
                "denied (tenant_policies_unavailable) until its policies change (comments and whitespace between "
                "policies do not count)", tenant, seconds * 1000, budget_ms)
        elif cause == "tenant":
            slow.occurred("a decision about tenant %s took Cedar %.0f ms of its own policies", tenant,
                          seconds * 1000, cause=tenant)
        elif cause == "global":
            slow.occurred("a decision took Cedar %.0f ms of the global policies", seconds * 1000, cause=cause)
        else:
            slow.occurred("a request about tenant %s took Cedar %.0f ms to read (long or non-ASCII strings; "
                          "server.max_message_bytes bounds it)", tenant, seconds * 1000, cause=cause)

    return report
