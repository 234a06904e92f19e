"""Where a policy problem is: a statement too deeply nested for Cedar, the token a parse error stopped at, a
global policy Cedar cannot read back from JSON. Each becomes a located ``PolicyDiagnostic`` (file:line:column
and the policy's ``@id``), never a bare Cedar message. Used by ``compiler``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import cedarpy

from tenantgate.core.cedar_depth import policy_depth_problem
from tenantgate.core.cedar_text import Statement, annotated_id, escape_unprintable, parse_error_position
from tenantgate.errors import PolicyDiagnostic


class Located(Protocol):
    """Where a policy was defined (``compiler.PolicyLocation``)."""

    @property
    def path(self) -> str: ...

    @property
    def line(self) -> int: ...


def unassembled(kinds: Mapping[str, Mapping[str, Any]],
                locations: Mapping[str, Located]) -> list[PolicyDiagnostic]:
    """The global policies Cedar cannot read back from their JSON form, located. Every file parsed on its own,
    but the global set is assembled from JSON (so that policies carry our ids), and Cedar's JSON reader stops
    at 128 levels: about 60 levels of expression, each operator, `.`, set, record or call being one."""
    found = []
    for kind, policies in kinds.items():
        for policy_id, est in policies.items():
            try:
                cedarpy.PolicySet.from_json_str(json.dumps({"staticPolicies": {}, "templates": {}, "templateLinks": [],
                                                            kind: {policy_id: est}}))
            except ValueError as err:
                loc = locations.get(policy_id)
                path, line = (loc.path, loc.line) if loc is not None else ("<unknown>", 1)
                found.append(PolicyDiagnostic(
                    path, line, f"Cedar cannot read this policy back from its JSON form ({err}); a global "
                    "policy may nest about 60 levels of expression (each operator, `.`, set, record or call "
                    "counts): split it, or test membership in a set instead of a long `||` chain",
                    policy_id=escape_unprintable(policy_id)))
    return found


def depth_diagnostics(path: str, statements: Sequence[Statement]) -> list[PolicyDiagnostic]:
    """One diagnostic per statement nested too deeply for cedarpy to read safely (``core.cedar_depth``).
    Every token of a file is in one of its statements, so a file without any is safe to hand to Cedar."""
    found = []
    for stmt in statements:
        problem = policy_depth_problem(stmt)
        if problem is not None:
            found.append(PolicyDiagnostic(path, problem.line, problem.message, column=problem.column,
                                          policy_id=escape_unprintable(annotated_id(stmt.text))))
    return found


def locate_parse_error(path: str, statements: Sequence[Statement], err: ValueError) -> PolicyDiagnostic:
    """The first statement that fails to parse on its own, at the token the parser stopped at, with the id
    of its ``@id`` annotation when it has one."""
    for stmt in statements:
        try:
            cedarpy.policies_to_json_str(stmt.text)
        except ValueError as stmt_err:
            message = str(stmt_err)
            line, column = parse_error_position(stmt, message, parse_error_of)
            # Cedar quotes the offending input, control characters included: shown escaped.
            return PolicyDiagnostic(path, line, f"parse error: {escape_unprintable(message)}", column=column,
                                    policy_id=escape_unprintable(annotated_id(stmt.text)))
    return PolicyDiagnostic(path, 1, f"parse error: {escape_unprintable(str(err))}")


def parse_error_of(text: str) -> str:
    """Cedar's parse error for ``text``, "" when it parses."""
    try:
        cedarpy.policies_to_json_str(text)
    except ValueError as err:
        return str(err)
    return ""
