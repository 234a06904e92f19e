"""The policy test suite model: suites, their principals, cases, grants and expectations, and the errors that
locate a problem in a suite file. Read from YAML by ``testsuite``, run by ``testrun``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tenantgate.core.model import Decision, Reason, Resource
from tenantgate.errors import TenantGateError

DEFAULT_GRANT_SECONDS = 900



@dataclass(frozen=True, slots=True)
class SuiteDiagnostic:
    """One problem in a suite file: ``path:line: message``."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class SuiteError(TenantGateError):
    """A suite file (or a path given to the runner) is unusable. ``diagnostics`` locate each problem."""

    def __init__(self, message: str, diagnostics: Sequence[SuiteDiagnostic] = ()) -> None:
        self.diagnostics = tuple(diagnostics)
        super().__init__(message + "".join(f"\n  {d}" for d in self.diagnostics))


@dataclass(frozen=True, slots=True)
class PrincipalClaims:
    """Token claims for a named principal. ``roles`` / ``intents`` None: no such claim (roles: entity data may
    give them); ``act``: agent id (RFC 8693); ``issuer``: the token's ``iss`` (None: the runner's own), what
    policies read as ``principal.issuer``."""

    name: str
    tenant: str
    sub: str
    roles: tuple[str, ...] | None = None
    intents: tuple[str, ...] | None = None
    act: str | None = None
    issuer: str | None = None


@dataclass(frozen=True, slots=True)
class GrantSpec:
    """An ACTIVE break-glass grant held by the case's principal (its operator) while the case runs.

    ``expires_in_seconds`` is relative to the suite's ``now``; zero or less gives an already expired grant.
    """

    target_tenant: str
    actions: tuple[str, ...]
    reason: str = "policy test"
    ticket: str = "TEST-1"
    expires_in_seconds: int = DEFAULT_GRANT_SECONDS


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a case expects. ``reason`` / ``policy_ids`` None: not checked. ``policy_ids`` compare as sets."""

    decision: Decision
    reason: Reason | None = None
    policy_ids: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class PolicyCase:
    """One request and its expected answer. ``line`` is where the case starts in its file."""

    name: str
    line: int
    principal: str
    action: str
    resource: Resource
    expect: Expectation
    intent: str = ""
    context: Mapping[str, Any] = field(default_factory=dict)
    grant: GrantSpec | None = None


@dataclass(frozen=True, slots=True)
class PolicySuite:
    """A named set of cases sharing principals, a fixed clock (``now``, epoch seconds) and a policy set.

    ``policies`` is the suite's own policy directory (resolved against the suite file), or None for the
    runner's default.
    """

    path: Path
    name: str
    line: int
    now: float
    principals: Mapping[str, PrincipalClaims]
    cases: tuple[PolicyCase, ...]
    policies: Path | None = None

    def case_id(self, case: PolicyCase) -> str:
        """``file::suite::case``, as failures and JUnit name it."""
        return f"{self.path}::{self.name}::{case.name}"
