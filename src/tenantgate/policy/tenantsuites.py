"""Which suites are a tenant's, and what they may ask: a suite file in ``tenants/<tenant>/`` is writable by that
tenant, so the runner (``testrun``) lets it decide only about that tenant's resources. Pure path and model checks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tenantgate.policy.suitemodel import PolicySuite, SuiteDiagnostic, SuiteError
from tenantgate.policy.tenantdirs import TENANTS_DIR


def confine_tenant_suites(suites: Sequence[PolicySuite], roots: Sequence[Sequence[Path]]) -> None:
    """Refuse a tenant's suite that reaches past its tenant: a suite file in ``<root>/tenants/<tenant>/`` of one of
    its ``roots`` (the policy directories it runs against or is recognised in), as written or once links are
    resolved. Raises ``SuiteError`` listing every such case.

    A suite file in ``tenants/<tenant>/`` is writable by that tenant, and the runner mints tokens for any
    claims and reports every decision's reason, policy ids and message (review finding: a suite in
    ``tenants/acme/tests/``, picked up by ``tenantgate test policies``, decided about globex's documents as
    globex's users and printed globex's policy ids and its users' roles from its entity data). So it may only
    ask about its own tenant's resources, where no other tenant's policies or entity data ever apply (a
    principal of another tenant is denied ``cross_tenant``, or, as a break-glass operator, read from its token
    alone), and grants only into its own tenant; ``policies:`` could point the runner at any directory.
    """
    problems: list[SuiteDiagnostic] = []
    for suite, own_roots in zip(suites, roots, strict=True):
        owners = {owner for root in own_roots for owner in _tenants_holding(suite.path, root)}
        if not owners:
            continue
        where = str(suite.path)
        if len(owners) > 1:  # e.g. a link in one tenant's directory to another's suite
            problems.append(SuiteDiagnostic(where, suite.line, "a suite file in the directories of several tenants "
                                            f"({', '.join(sorted(owners))}) cannot be run"))
            continue
        tenant = owners.pop()
        if suite.policies is not None:
            problems.append(SuiteDiagnostic(where, suite.line, f"a suite in tenant {tenant}'s directory may not name "
                                            "`policies:`: it runs against the policy set it belongs to"))
        for case in suite.cases:
            if case.resource.tenant != tenant:
                problems.append(SuiteDiagnostic(where, case.line, f"case {case.name!r}: a suite in tenant {tenant}'s "
                                                f"directory may only decide about tenant {tenant}'s resources"))
            elif case.grant is not None and case.grant.target_tenant != tenant:
                problems.append(SuiteDiagnostic(where, case.line, f"case {case.name!r}: a suite in tenant {tenant}'s "
                                                f"directory may only give grants into tenant {tenant}"))
    if problems:
        raise SuiteError(f"{len(problems)} problem(s) in tenants' test suites", problems)


def _tenants_holding(path: Path, root: Path) -> set[str]:
    """The tenants whose directory under ``root/tenants/`` holds ``path``: as written, or once links are
    resolved (the suite file's, ``tenants/``'s or a linked tenant directory's)."""
    tenants = root / TENANTS_DIR
    files = {path.absolute(), path.resolve()}
    bases = {tenants.absolute(), tenants.resolve()}
    owners = {parts[0] for file in files for base in bases if file.is_relative_to(base)
              and len(parts := file.relative_to(base).parts) >= 2}
    try:
        linked = [d for d in tenants.iterdir() if d.is_symlink()]
    except OSError:
        linked = []
    owners.update(d.name for d in linked if path.resolve().is_relative_to(d.resolve()))
    return owners


__all__ = ["confine_tenant_suites"]
