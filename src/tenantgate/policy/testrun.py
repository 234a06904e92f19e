"""The policy test runner: every case through ``DecisionPoint.decide()``, exactly the server's path.

The suite model (``PolicySuite``, ``PolicyCase``, ...) is ``suitemodel``; ``testsuite`` reads it from YAML.

Per run: a throwaway signing key (``DevIssuer`` in a temporary directory) that the verifier alone trusts, so
suites state claims and the runner mints real tokens (exp = the suite's ``now`` + 300 s; tokens are never
printed or reported). Per suite: a fixed clock at its ``now``, the policies loaded with ``load_policies``, an
in-memory audit sink, and break-glass through ``BreakGlass`` over a real ``SqliteGrantStore``. A case's
grant is stored ACTIVE just for that case and revoked after it.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tenantgate.config import DevIssuerSettings, TokenSettings
from tenantgate.core.breakglass import BreakGlass
from tenantgate.core.compiler import DEFAULT_TENANT_LIMITS, TenantLimits
from tenantgate.core.engine import GUARDRAIL_ID, CompiledPolicies
from tenantgate.core.grants import Grant, GrantState
from tenantgate.core.model import CheckInput, ClaimNames, DecisionResult, Reason
from tenantgate.core.pdp import DecisionPoint, DecisionSettings
from tenantgate.core.ports import AuditRecord
from tenantgate.errors import (
    ConfigError,
    GrantError,
    GrantStoreUnavailable,
    PolicyDiagnostic,
    PolicyError,
)
from tenantgate.grants import SqliteGrantStore
from tenantgate.identity import DevIssuer, IssuerKeys, JwksFile, JwtVerifier
from tenantgate.policy import PolicyStore, load_policies
from tenantgate.policy.suitemodel import (
    GrantSpec,
    PolicyCase,
    PolicySuite,
    PrincipalClaims,
    SuiteError,
)
from tenantgate.policy.tenantsuites import confine_tenant_suites

TOKEN_TTL_SECONDS = 300
TEST_ISSUER = "https://policy-tests.tenantgate.invalid"
TEST_AUDIENCE = "tenantgate"
API = "test"


# ------------------------------------------------------------------------------------------ the runner


@dataclass(frozen=True, slots=True)
class PolicyDir:
    """A policy set on disk: a directory of ``*.cedar`` files and its schema (default ``<dir>/schema.cedarschema``)."""

    path: Path
    schema: Path | None = None

    def key(self) -> tuple[Path, Path]:
        return self.path.resolve(), (self.schema or self.path / "schema.cedarschema").resolve()


@dataclass(frozen=True, slots=True)
class _FixedClock:
    at: float

    def now(self) -> float:
        return self.at


class MemoryAuditSink:
    """An ``AuditSink`` that keeps every record in ``records``. Never fails (there is no disk to fill)."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def write(self, event: AuditRecord) -> None:
        self.records.append(event)

    def write_many(self, events: Sequence[AuditRecord]) -> list[Exception | None]:
        self.records.extend(events)
        return [None] * len(events)

    def healthy(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One case's outcome: the decision ``decide()`` returned and which expected fields it missed."""

    case: PolicyCase
    result: DecisionResult
    mismatches: tuple[str, ...]
    seconds: float

    @property
    def passed(self) -> bool:
        return not self.mismatches

    def diff(self) -> str:
        """Expected (``-``) against actual (``+``) for each checked field, then the decision's message."""
        want, got = self.case.expect, self.result
        rows: list[tuple[str, str | None, str]] = [
            ("decision", want.decision.value, got.decision.value),
            ("reason", want.reason.value if want.reason else None, got.reason.value),
            ("policy_ids", None if want.policy_ids is None else _ids(want.policy_ids), _ids(got.policy_ids)),
        ]
        lines = ["expected (-) vs actual (+):"]
        for name, expected, actual in rows:
            if name in self.mismatches:
                lines += [f"- {name}: {expected}", f"+ {name}: {actual}"]
            else:
                lines.append(f"  {name}: {actual}")
        lines.append(f"  message: {got.message}")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class SuiteResult:
    suite: PolicySuite
    policies: PolicyDir
    cases: tuple[CaseResult, ...]
    seconds: float


@dataclass(frozen=True, slots=True)
class PolicyCoverage:
    """One policy of a set: where it is, whether a case exercised it, whether it is TenantGate's own.

    ``tenant`` is set for a tenant's own policy (``tenants/<tenant>/*.cedar``), empty for a global one.
    """

    policy_id: str
    path: str
    line: int
    covered: bool
    built_in: bool
    tenant: str = ""


@dataclass(frozen=True, slots=True)
class Coverage:
    policies: PolicyDir
    entries: tuple[PolicyCoverage, ...]

    @property
    def covered(self) -> int:
        return sum(e.covered for e in self.entries)

    @property
    def total(self) -> int:
        return len(self.entries)

    @property
    def percent(self) -> float:
        return 100.0 * self.covered / self.total if self.total else 100.0

    @property
    def uncovered(self) -> tuple[PolicyCoverage, ...]:
        return tuple(e for e in self.entries if not e.covered)


@dataclass(frozen=True, slots=True)
class RunReport:
    suites: tuple[SuiteResult, ...]
    compiled: Mapping[PolicyDir, CompiledPolicies] = field(default_factory=dict)
    seconds: float = 0.0

    def cases(self) -> Iterable[tuple[SuiteResult, CaseResult]]:
        return ((s, c) for s in self.suites for c in s.cases)

    @property
    def passed(self) -> int:
        return sum(c.passed for _, c in self.cases())

    @property
    def failed(self) -> int:
        return sum(not c.passed for _, c in self.cases())

    def summary(self) -> str:
        """``12 passed, 1 failed in 0.05s`` (parts with zero are left out, except an empty run)."""
        parts = [f"{n} {word}" for n, word in ((self.passed, "passed"), (self.failed, "failed")) if n]
        return f"{', '.join(parts) or 'no cases'} in {self.seconds:.2f}s"

    def failures_text(self) -> str:
        """Every failing case as ``FAILED id`` plus its diff (for assertion messages in pytest)."""
        return "\n".join(f"FAILED {s.suite.case_id(c.case)}\n{c.diff()}" for s, c in self.cases() if not c.passed)

    def coverage(self) -> tuple[Coverage, ...]:
        """Per policy set: a policy is covered when it is in some case's ``policy_ids`` (it determined the
        decision, or its evaluation errored); a tenant's own policy only by cases on that tenant's resources.
        The built-in tenant guardrail also counts as covered by a ``cross_tenant`` denial: the decision path
        checks that invariant in code before Cedar, so the guardrail (its second line of defence) never shows
        up in ``policy_ids`` itself."""
        out = []
        for policies, compiled in self.compiled.items():
            seen: set[tuple[str, str]] = set()  # (resource tenant, policy id)
            for suite in self.suites:
                if suite.policies != policies:
                    continue
                for case in suite.cases:
                    tenant = case.case.resource.tenant
                    seen.update((tenant, pid) for pid in case.result.policy_ids)
                    if case.result.reason is Reason.CROSS_TENANT:
                        seen.add((tenant, GUARDRAIL_ID))
            global_seen = {pid for _, pid in seen}
            entries = [PolicyCoverage(pid, loc.path, loc.line, pid in global_seen, pid == GUARDRAIL_ID)
                       for pid, loc in compiled.locations.items()]
            entries += [PolicyCoverage(pid, loc.path, loc.line, (tenant, pid) in seen, False, tenant)
                        for tenant, partition in compiled.tenants.items() for pid, loc in partition.locations.items()]
            entries.sort(key=lambda e: (e.built_in, e.path, e.line))
            out.append(Coverage(policies, tuple(entries)))
        return tuple(out)


def run_suites(suites: Sequence[PolicySuite], default: PolicyDir | None = None,
               settings: DecisionSettings | None = None,
               limits: TenantLimits = DEFAULT_TENANT_LIMITS) -> RunReport:
    """Run every case of ``suites``; suites without their own ``policies:`` use ``default``. ``settings``: the
    deployment's claim names, break-glass rules and PEP role (``app.decision_settings``), as the server uses
    them; the built-in defaults when None. ``limits``: how much a tenant's own policy files may hold, as the
    server loads them (``app.tenant_limits``).

    A suite file inside a tenant's directory (``tenants/<tenant>/`` of its policy set or of ``default``, as
    written or once links are resolved) is that tenant's: it may decide only about that tenant's resources
    and may not name ``policies:`` (``confine_tenant_suites``).

    Raises ``PolicyError`` (diagnostic paths prefixed with the policy directory) when a policy set is invalid,
    ``SuiteError`` when a suite needs the default set and there is none, a tenant's suite reaches past its
    tenant, or a principal or grant cannot be set up. Failed expectations are results, not errors.
    """
    started = time.perf_counter()
    settings = settings or DecisionSettings()
    chosen = [PolicyDir(s.policies) if s.policies is not None else default for s in suites]
    confine_tenant_suites(suites, [[p.path for p in (policies, default) if p is not None] for policies in chosen])
    compiled: dict[PolicyDir, CompiledPolicies] = {}
    by_key: dict[tuple[Path, Path], PolicyDir] = {}
    for suite, policies in zip(suites, chosen, strict=True):
        if policies is None:
            raise SuiteError(f"{suite.path}: suite {suite.name!r} names no `policies:` and no default policy "
                             "directory was given")
        if policies.key() not in by_key:
            by_key[policies.key()] = policies
            compiled[policies] = _load(policies, limits)
    with tempfile.TemporaryDirectory(prefix="tenantgate-test-") as tmp:
        # One throwaway signing key per issuer the suites' principals name (review finding: a policy reading
        # `principal.issuer` could not be tested, and a suite passed while the server answered the opposite).
        named = sorted({p.issuer for s in suites for p in s.principals.values() if p.issuer is not None})
        issuers = {name: _throwaway_issuer(name, Path(tmp) / f"issuer-{n}")
                   for n, name in enumerate(dict.fromkeys([TEST_ISSUER, *named]))}
        keys = [IssuerKeys(issuer.issuer_settings(), JwksFile(issuer.jwks_path)) for issuer in issuers.values()]
        results = []
        for index, (suite, policies) in enumerate(zip(suites, chosen, strict=True)):
            assert policies is not None
            canonical = by_key[policies.key()]
            results.append(_run_suite(suite, canonical, PolicyStore(compiled[canonical]), issuers, keys,
                                      Path(tmp) / f"grants-{index}.db", settings))
    return RunReport(tuple(results), compiled, time.perf_counter() - started)


def _load(policies: PolicyDir, limits: TenantLimits) -> CompiledPolicies:
    try:
        return load_policies(policies.path, policies.schema, limits=limits)
    except PolicyError as err:
        head = str(err).split("\n", 1)[0]
        located = [PolicyDiagnostic(str(policies.path / d.path), d.line, d.message, d.column, d.policy_id)
                   for d in err.diagnostics]
        raise PolicyError(f"{policies.path}: {head}", located) from err


def _throwaway_issuer(name: str, key_dir: Path) -> DevIssuer:
    try:
        issuer = DevIssuer(DevIssuerSettings(enabled=True, issuer=name, audience=TEST_AUDIENCE, key_dir=str(key_dir),
                                             max_ttl_seconds=TOKEN_TTL_SECONDS))
        issuer.ensure_keys()
    except ConfigError as err:
        raise SuiteError(f"cannot set up a token issuer {name!r} for the suites: {err}") from err
    return issuer


def _run_suite(suite: PolicySuite, policies: PolicyDir, store: PolicyStore, issuers: dict[str, DevIssuer],
               keys: list[IssuerKeys], grants_db: Path, settings: DecisionSettings) -> SuiteResult:
    started = time.perf_counter()
    clock = _FixedClock(suite.now)
    names = settings.claim_names
    # A verifier per suite: its clock is the suite's `now`, and it trusts only this run's throwaway issuers.
    verifier = JwtVerifier(keys, TokenSettings(tenant_claim=names.tenant, roles_claim=names.roles,
                                                 intents_claim=names.intents), clock)
    sink = MemoryAuditSink()
    grants = SqliteGrantStore(grants_db)
    try:
        breakglass = BreakGlass(store=grants, audit=sink, clock=clock, rules=settings.rules, verifier=verifier,
                                claim_names=names)
        pdp = DecisionPoint(verifier=verifier, engine=store.current, audit=sink, clock=clock, claim_names=names,
                            grants=breakglass, pep_role=settings.pep_role)
        tokens: dict[str, str] = {}
        results = []
        for case in suite.cases:
            claims = suite.principals.get(case.principal)
            if claims is None:
                raise SuiteError(f"{suite.case_id(case)}: unknown principal {case.principal!r}")
            if case.principal not in tokens:
                tokens[case.principal] = _mint(issuers[claims.issuer or TEST_ISSUER], claims, suite, case, names)
            results.append(_run_case(suite, case, claims, tokens[case.principal], pdp, grants))
    finally:
        grants.close()
    return SuiteResult(suite, policies, tuple(results), time.perf_counter() - started)


def _mint(issuer: DevIssuer, claims: PrincipalClaims, suite: PolicySuite, case: PolicyCase,
          names: ClaimNames) -> str:
    try:
        return issuer.mint(tenant=claims.tenant, subject=claims.sub, roles=claims.roles, intents=claims.intents,
                           actor=claims.act, ttl_seconds=TOKEN_TTL_SECONDS, now=suite.now, claim_names=names)
    except ConfigError as err:
        raise SuiteError(f"{suite.case_id(case)}: cannot mint a token for principal {claims.name!r}: {err}") from err


def _run_case(suite: PolicySuite, case: PolicyCase, claims: PrincipalClaims, token: str, pdp: DecisionPoint,
              grants: SqliteGrantStore) -> CaseResult:
    started = time.perf_counter()
    grant = _store_grant(grants, case.grant, claims, suite, case) if case.grant else None
    try:
        result = pdp.decide(CheckInput(token=token, action=case.action, resource=case.resource,
                                       intent=case.intent, context=dict(case.context), api=API))
    finally:
        if grant is not None:
            try:  # the grant held for this case only; an already expired one needs no revoking
                grants.revoke(grant.id, "tenantgate-test", "case finished", suite.now, _no_event)
            except (GrantError, GrantStoreUnavailable) as err:
                raise SuiteError(f"{suite.case_id(case)}: cannot end the case's grant: {err}") from err
    return CaseResult(case, result, _mismatches(case, result), time.perf_counter() - started)


def _store_grant(grants: SqliteGrantStore, spec: GrantSpec, claims: PrincipalClaims, suite: PolicySuite,
                 case: PolicyCase) -> Grant:
    now = suite.now
    grant = Grant(
        id=str(uuid.uuid4()), operator=claims.sub, operator_tenant=claims.tenant, target_tenant=spec.target_tenant,
        actions=spec.actions, reason=spec.reason, ticket=spec.ticket,
        duration_seconds=max(spec.expires_in_seconds, 0), state=GrantState.ACTIVE, requested_at=now,
        pending_until=now, approved_by="tenantgate-test", approved_at=now, expires_at=now + spec.expires_in_seconds,
        operator_issuer=claims.issuer or TEST_ISSUER)
    try:
        return grants.create(grant, before_commit=_no_event)
    except (GrantError, GrantStoreUnavailable) as err:
        raise SuiteError(f"{suite.case_id(case)}: cannot store the case's grant: {err}") from err


def _ids(policy_ids: Iterable[str]) -> str:
    return "[" + ", ".join(sorted(policy_ids)) + "]"


def _no_event(_grant: Grant) -> None:
    """Grant set-up is scaffolding, not a lifecycle step under test: no grant event is recorded."""


def _mismatches(case: PolicyCase, result: DecisionResult) -> tuple[str, ...]:
    want = case.expect
    wrong = []
    if result.decision is not want.decision:
        wrong.append("decision")
    if want.reason is not None and result.reason is not want.reason:
        wrong.append("reason")
    if want.policy_ids is not None and tuple(sorted(set(result.policy_ids))) != want.policy_ids:
        wrong.append("policy_ids")
    return tuple(wrong)


__all__ = ["API", "TOKEN_TTL_SECONDS", "CaseResult", "Coverage", "MemoryAuditSink", "PolicyCoverage", "PolicyDir",
           "RunReport", "SuiteResult", "run_suites"]
