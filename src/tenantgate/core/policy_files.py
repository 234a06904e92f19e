"""One policy file, parsed: its policies with their ids, Cedar's JSON form (EST) and where each stands, and
the checks every policy passes whoever owns it (ids, duplicates). ``compiler`` and ``tenant_compile`` build on
it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import cedarpy

from tenantgate.core.cedar_text import Statement, escape_unprintable, split_statements
from tenantgate.core.policy_errors import depth_diagnostics, locate_parse_error
from tenantgate.core.policy_ids import POSITIONAL, id_problem
from tenantgate.errors import PolicyDiagnostic


@dataclass(frozen=True, slots=True)
class PolicySource:
    """One file's text. ``path`` is how messages name it (relative to the policy directory)."""

    path: str
    text: str


@dataclass(frozen=True, slots=True)
class PolicyLocation:
    path: str
    line: int


@dataclass(slots=True)
class Parsed:
    """One policy of a file, as parsed: its id, EST, statement and whether the id came from ``@id``."""

    policy_id: str
    est: dict[str, Any]
    statement: Statement
    annotated: bool
    template: bool


def parse_file(source: PolicySource, schema: Any, diagnostics: list[PolicyDiagnostic]) -> list[Parsed]:
    statements = split_statements(source.text)
    too_deep = depth_diagnostics(source.path, statements)
    if too_deep:  # the file never reaches cedarpy (every later step, error location included, parses it)
        diagnostics.extend(too_deep)
        return []
    try:
        est = json.loads(cedarpy.policies_to_json_str(source.text))
    except ValueError as err:
        diagnostics.append(locate_parse_error(source.path, statements, err))
        return []
    policy_count = sum(len(est.get(kind, {})) for kind in ("staticPolicies", "templates"))
    if policy_count != len(statements):
        # Tenant partitions are built from the statement texts: if our split disagrees with Cedar's parse, a
        # policy Cedar validated could be left out of its partition or merged into another, so refuse.
        diagnostics.append(PolicyDiagnostic(source.path, 1, f"Cedar parses {policy_count} policies here but "
                                            f"TenantGate finds {len(statements)} statements; please report this"))
        return []

    def statement_of(positional_id: str) -> Statement:
        index = int(positional_id.removeprefix("policy")) if POSITIONAL.fullmatch(positional_id) else -1
        return statements[index] if 0 <= index < len(statements) else Statement(1, 1, "")

    parsed: list[Parsed] = []
    ours: dict[str, str] = {}
    for kind in ("staticPolicies", "templates"):
        for positional_id, policy in est.get(kind, {}).items():
            stmt = statement_of(positional_id)
            annotations = policy.get("annotations", {})
            has_id = "id" in annotations
            annotated = annotations.get("id") or ""
            if has_id and not annotated.strip():
                # An empty @id would otherwise be treated as missing and get a second @id added later.
                diagnostics.append(PolicyDiagnostic(source.path, stmt.line, "@id must not be empty",
                                                    column=stmt.column))
                continue
            policy_id = annotated if has_id else f"{source.path}:{stmt.line}"
            ours[positional_id] = policy_id
            parsed.append(Parsed(policy_id, policy, stmt, has_id, kind == "templates"))
    result = cedarpy.validate_policies(source.text, schema)
    if not result.validation_passed:
        found = []
        for error in result.errors:
            stmt = statement_of(error.policy_id)
            policy_id = escape_unprintable(ours.get(error.policy_id, error.policy_id))
            # Cedar names policies by position; say the id the author wrote (or file:line).
            message = escape_unprintable(error.error.replace(f"`{error.policy_id}`", f"`{policy_id}`"))
            found.append(PolicyDiagnostic(source.path, stmt.line, message, column=stmt.column, policy_id=policy_id))
        # Cedar lists them in no fixed order: sorted, two runs print alike (review finding: noisy diffs).
        diagnostics.extend(sorted(found, key=lambda d: (d.line, d.column, d.message)))
    return parsed


def admit(p: Parsed, source: PolicySource, problem: str | None, locations: dict[str, PolicyLocation],
           diagnostics: list[PolicyDiagnostic]) -> bool:
    """Common id rules; records the location and returns True when the policy may join its set."""
    line, column = p.statement.line, p.statement.column
    problem = id_problem(p.policy_id, problem)  # core.policy_ids: reserved ids and their look-alikes, ...
    if problem is None and p.policy_id in locations:
        problem = duplicate_id_message(locations[p.policy_id])
    if problem:
        diagnostics.append(PolicyDiagnostic(source.path, line, problem, column=column,
                                            policy_id=escape_unprintable(p.policy_id)))
        return False
    locations[p.policy_id] = PolicyLocation(source.path, line)
    return True


def duplicate_id_message(first: PolicyLocation, what: str = "") -> str:
    """The message for an id used again. Files are read in sorted path order (global files by name, then each
    tenant's directory by tenant and file name), so the diagnostic is on the later occurrence in that order
    and names the earlier one; both are in the output."""
    return (f"duplicate policy id: also defined at {first.path}:{first.line}{what}, which comes first in path "
            "order; rename one of them")
