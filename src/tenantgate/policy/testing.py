"""Policy test suites, for ``tenantgate test`` and for pytest alike (one runner, one decision path).

    from tenantgate.policy.testing import PolicyDir, load_suites, run_suites

    report = run_suites(load_suites(["policies/tests"]), default=PolicyDir(Path("policies")))
    assert report.failed == 0, report.failures_text()
    assert all(c.percent == 100 for c in report.coverage())

The YAML format is read by ``tenantgate.policy.testsuite`` (documented in ``docs/policy-tests.md``) into
the suite model of ``tenantgate.policy.suitemodel``; the runner, results and coverage are
``tenantgate.policy.testrun``. ``load_suites`` raises ``SuiteError`` (a bad suite file, an unknown principal);
``run_suites`` raises ``PolicyError`` for an invalid policy set.
"""

from tenantgate.policy.suitemodel import (
    Expectation,
    GrantSpec,
    PolicyCase,
    PolicySuite,
    PrincipalClaims,
    SuiteDiagnostic,
    SuiteError,
)
from tenantgate.policy.testrun import (
    TOKEN_TTL_SECONDS,
    CaseResult,
    Coverage,
    MemoryAuditSink,
    PolicyCoverage,
    PolicyDir,
    RunReport,
    SuiteResult,
    run_suites,
)
from tenantgate.policy.testsuite import discover, load_suite_file, load_suites

__all__ = [
    "TOKEN_TTL_SECONDS",
    "CaseResult",
    "Coverage",
    "Expectation",
    "GrantSpec",
    "MemoryAuditSink",
    "PolicyCase",
    "PolicyCoverage",
    "PolicyDir",
    "PolicySuite",
    "PrincipalClaims",
    "RunReport",
    "SuiteDiagnostic",
    "SuiteError",
    "SuiteResult",
    "discover",
    "load_suite_file",
    "load_suites",
    "run_suites",
]
