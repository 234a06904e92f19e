"""Policy test suites: the YAML format (``docs/policy-tests.md``) read into the suite model of ``testrun``.

A suite file holds one YAML document per suite. Loading is strict, like the config: unknown keys, missing
keys, wrong types, duplicate keys and unknown principals are errors located as ``file:line``; every problem
in every file is collected before ``SuiteError`` is raised, so one run shows them all. Nothing here decides
anything: ``tenantgate.policy.testrun`` runs the cases through ``DecisionPoint.decide()``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

from tenantgate.core.model import Decision, Reason, Resource
from tenantgate.policy.suitemodel import (
    DEFAULT_GRANT_SECONDS,
    Expectation,
    GrantSpec,
    PolicyCase,
    PolicySuite,
    PrincipalClaims,
    SuiteDiagnostic,
    SuiteError,
)
from tenantgate.policy.suiteyaml import LocatedList, LocatedMap, compose

MAX_SUITE_FILE_BYTES = 4 * 1024 * 1024
MAX_INSTANT = 1e11  # the verifier refuses token times beyond this (year ~5138)

SUITE_KEYS = ("name", "description", "now", "policies", "principals", "cases")
PRINCIPAL_KEYS = ("tenant", "sub", "roles", "intents", "act", "issuer")
CASE_KEYS = ("name", "description", "principal", "action", "resource", "intent", "context", "grant", "expect")
RESOURCE_KEYS = ("type", "id", "tenant", "attributes")
GRANT_KEYS = ("target_tenant", "actions", "reason", "ticket", "expires_in_seconds")
EXPECT_KEYS = ("decision", "reason", "policy_ids")


def discover(paths: Iterable[str | Path]) -> list[Path]:
    """Suite files: each file as given, each directory searched recursively for ``*.yaml`` / ``*.yml``.

    Raises ``SuiteError`` for a path that does not exist or when no suite file is found.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise SuiteError(f"no such file or directory: {path}")
    if not found:
        raise SuiteError("no test suites (*.yaml, *.yml) found in " + ", ".join(str(p) for p in paths))
    return list(dict.fromkeys(found))


def load_suites(paths: Iterable[str | Path]) -> list[PolicySuite]:
    """Discover and load every suite under ``paths``. Raises ``SuiteError`` listing every problem found."""
    suites: list[PolicySuite] = []
    problems: list[SuiteDiagnostic] = []
    for path in discover(paths):
        try:
            suites += load_suite_file(path)
        except SuiteError as err:
            problems += err.diagnostics or [SuiteDiagnostic(str(path), 1, str(err))]
    if problems:
        raise SuiteError(f"{len(problems)} problem(s) in test suites", problems)
    return suites


def load_suite_file(path: Path) -> list[PolicySuite]:
    """The suites (one per YAML document) of one file. Raises ``SuiteError`` with located diagnostics."""
    where = str(path)
    try:
        if path.stat().st_size > MAX_SUITE_FILE_BYTES:
            raise SuiteError("suite file too large", [SuiteDiagnostic(where, 1, "larger than 4 MiB")])
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SuiteError("suite file is not UTF-8", [SuiteDiagnostic(where, 1, "not UTF-8 text")]) from err
    except OSError as err:
        raise SuiteError(f"cannot read {where}: {err.strerror or err}") from err
    check = _Checker(where)
    documents = compose(text, check.problem)
    if not documents and not check.problems:
        check.problem(1, "no suite in this file (expected a mapping with name, now, principals and cases)")
    suites = [s for s in (_suite(doc, path, check) for doc in documents) if s is not None]
    if check.problems:
        located = sorted(check.problems, key=lambda d: d.line)
        raise SuiteError(f"{len(located)} problem(s) in {where}", located)
    return suites


# ------------------------------------------------------------------------------------------- validation


class _Checker:
    """Collects located problems and reads typed values out of ``LocatedMap``s."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[SuiteDiagnostic] = []

    def problem(self, line: int, message: str) -> None:
        self.problems.append(SuiteDiagnostic(self.path, line, message))

    def mapping(self, value: Any, line: int, what: str) -> LocatedMap | None:
        if isinstance(value, LocatedMap):
            return value
        self.problem(line, f"{what} must be a mapping, not {_kind(value)}")
        return None

    def section(self, m: LocatedMap, key: str, what: str) -> LocatedMap | None:
        """The mapping under ``key``; None (silently) when the key is missing: ``keys()`` reports that."""
        return self.mapping(m[key], m.line_of(key), f"{what}.{key}") if key in m else None

    def keys(self, m: LocatedMap, allowed: Sequence[str], required: Sequence[str], what: str) -> bool:
        ok = True
        for key in m:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f" (allowed: {', '.join(allowed)})"
                self.problem(m.line_of(key), f"unknown key {key!r} in {what}{hint}")
                ok = False
        for key in required:
            if key not in m:
                self.problem(m.line, f"{what} is missing the required key {key!r}")
                ok = False
        return ok

    def string(self, m: LocatedMap, key: str, what: str, default: str | None = None, *, empty: bool = False) -> str:
        value = m.get(key, default)
        if isinstance(value, str) and (empty or value):
            return value
        if key in m:  # a missing required key was reported by keys()
            self.problem(m.line_of(key), f"{what}.{key} must be a {'' if empty else 'non-empty '}string, "
                                         f"not {_kind(value)}")
        return ""

    def strings(self, m: LocatedMap, key: str, what: str) -> tuple[str, ...]:
        value = m.get(key)
        if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
            return tuple(value)
        self.problem(m.line_of(key), f"{what}.{key} must be a list of non-empty strings, not {_kind(value)}")
        return ()

    def record(self, m: LocatedMap, key: str, what: str) -> dict[str, Any]:
        value = m.get(key, {})
        if not isinstance(value, dict):
            self.problem(m.line_of(key), f"{what}.{key} must be a mapping, not {_kind(value)}")
            return {}
        bad = _first_non_json(value)
        if bad is not None:
            self.problem(m.line_of(key), f"{what}.{key} holds {bad}; quote it to make it a string")
        plain: dict[str, Any] = _plain(value)
        return plain


def _suite(doc: Any, path: Path, check: _Checker) -> PolicySuite | None:
    m = check.mapping(doc, getattr(doc, "line", 1), "a suite")
    if m is None:
        return None
    name = check.string(m, "name", "suite")
    what = f"suite {name!r}" if name else "the suite"
    check.keys(m, SUITE_KEYS, ("name", "now", "principals", "cases"), what)
    check.string(m, "description", what, "", empty=True)
    now = _instant(m.get("now"), m.line_of("now"), check) if "now" in m else 0.0
    policies = None
    if "policies" in m:
        policies = Path(os.path.normpath(path.parent / check.string(m, "policies", what)))
    principals: dict[str, PrincipalClaims] = {}
    table = check.section(m, "principals", what)
    for pname, value in (table or {}).items():
        principal = _principal(pname, value, table.line_of(pname) if table else m.line, check)
        if principal is not None:
            principals[pname] = principal
    cases: list[PolicyCase] = []
    raw_cases = m.get("cases")
    if not isinstance(raw_cases, LocatedList) or not raw_cases:
        if "cases" in m:
            check.problem(m.line_of("cases"), f"{what}.cases must be a non-empty list of cases")
    else:
        names: dict[str, int] = {}
        for item, line in zip(raw_cases, raw_cases.item_lines, strict=True):
            # Checked on the raw item, so a duplicate is reported in the same run as the case's other problems.
            case_name = item.get("name") if isinstance(item, LocatedMap) else None
            if isinstance(case_name, str) and case_name:
                if case_name in names:
                    check.problem(line, f"duplicate case name {case_name!r} in {what} (first at line "
                                        f"{names[case_name]})")
                names.setdefault(case_name, line)
            case = _case(item, line, principals, table is not None, check)
            if case is not None:
                cases.append(case)
    return PolicySuite(path=path, name=name, line=m.line, now=now, principals=principals, cases=tuple(cases),
                       policies=policies)


def _principal(name: str, value: Any, line: int, check: _Checker) -> PrincipalClaims | None:
    what = f"principal {name!r}"
    m = check.mapping(value, line, what)
    if m is None:
        return None
    check.keys(m, PRINCIPAL_KEYS, ("tenant", "sub"), what)
    act: str | None = None
    if "act" in m:
        raw = m["act"]
        if isinstance(raw, dict):  # the claim's own shape, {sub: agent-id}
            act = raw.get("sub") if set(raw) == {"sub"} else None
        elif isinstance(raw, str):
            act = raw
        if not isinstance(act, str) or not act:
            check.problem(m.line_of("act"), f"{what}.act must be an agent id string or {{sub: agent-id}}")
    return PrincipalClaims(
        name=name,
        tenant=check.string(m, "tenant", what),
        sub=check.string(m, "sub", what),
        roles=check.strings(m, "roles", what) if "roles" in m else None,
        intents=check.strings(m, "intents", what) if "intents" in m else None,
        act=act,
        issuer=check.string(m, "issuer", what) if "issuer" in m else None,
    )


def _case(item: Any, line: int, principals: Mapping[str, PrincipalClaims], have_table: bool,
          check: _Checker) -> PolicyCase | None:
    m = check.mapping(item, line, "a case")
    if m is None:
        return None
    name = check.string(m, "name", "case")
    what = f"case {name!r}" if name else "a case"
    check.keys(m, CASE_KEYS, ("name", "principal", "action", "resource", "expect"), what)
    check.string(m, "description", what, "", empty=True)
    principal = check.string(m, "principal", what)
    if principal and have_table and principal not in principals:
        known = ", ".join(sorted(principals)) or "none"
        check.problem(m.line_of("principal"), f"{what}: unknown principal {principal!r} (defined: {known})")
    resource = _resource(m, what, check)
    expect = _expect(m, what, check)
    grant = _grant(m, what, check) if "grant" in m else None
    if resource is None or expect is None:
        return None
    return PolicyCase(name=name, line=m.line, principal=principal, action=check.string(m, "action", what),
                      resource=resource, expect=expect, intent=check.string(m, "intent", what, "", empty=True),
                      context=check.record(m, "context", what), grant=grant)


def _resource(case: LocatedMap, what: str, check: _Checker) -> Resource | None:
    where = f"{what}.resource"
    m = check.section(case, "resource", what)
    if m is None:
        return None
    check.keys(m, RESOURCE_KEYS, ("type", "id", "tenant"), where)
    return Resource(type=check.string(m, "type", where), id=check.string(m, "id", where),
                    tenant=check.string(m, "tenant", where), attributes=check.record(m, "attributes", where))


def _expect(case: LocatedMap, what: str, check: _Checker) -> Expectation | None:
    where = f"{what}.expect"
    m = check.section(case, "expect", what)
    if m is None:
        return None
    check.keys(m, EXPECT_KEYS, ("decision",), where)
    decision = m.get("decision")
    if decision not in ("ALLOW", "DENY") and "decision" in m:
        check.problem(m.line_of("decision"), f"{where}.decision must be ALLOW or DENY, not {decision!r}")
    reason: Reason | None = None
    if "reason" in m:
        try:
            reason = Reason(m["reason"])
        except ValueError:
            codes = ", ".join(r.value for r in Reason)
            check.problem(m.line_of("reason"), f"{where}.reason {m['reason']!r} is not a reason code ({codes})")
    policy_ids = None
    if "policy_ids" in m:
        ids = m["policy_ids"]
        if isinstance(ids, list) and all(isinstance(i, str) and i for i in ids):
            policy_ids = tuple(sorted(set(ids)))
        else:
            check.problem(m.line_of("policy_ids"), f"{where}.policy_ids must be a list of policy id strings")
    if decision not in ("ALLOW", "DENY"):
        return None
    return Expectation(decision=Decision(decision), reason=reason, policy_ids=policy_ids)


def _grant(case: LocatedMap, what: str, check: _Checker) -> GrantSpec | None:
    where = f"{what}.grant"
    m = check.section(case, "grant", what)
    if m is None:
        return None
    check.keys(m, GRANT_KEYS, ("target_tenant", "actions"), where)
    seconds = m.get("expires_in_seconds", DEFAULT_GRANT_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or abs(seconds) > 366 * 86_400:
        check.problem(m.line_of("expires_in_seconds"), f"{where}.expires_in_seconds must be a whole number of "
                                                       "seconds within a year (<= 0: an expired grant)")
        seconds = DEFAULT_GRANT_SECONDS
    actions = check.strings(m, "actions", where) if "actions" in m else ()
    if not actions and "actions" in m and m["actions"] == []:
        check.problem(m.line_of("actions"), f"{where}.actions must name at least one action")
    return GrantSpec(target_tenant=check.string(m, "target_tenant", where), actions=actions,
                     reason=check.string(m, "reason", where, "policy test"),
                     ticket=check.string(m, "ticket", where, "TEST-1", empty=True), expires_in_seconds=seconds)


def _instant(value: Any, line: int, check: _Checker) -> float:
    """An RFC 3339 instant (quoted or a YAML timestamp) with an explicit offset, as epoch seconds."""
    moment: datetime | None = None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
    if moment is None or moment.tzinfo is None:
        shown = f"{value} (no offset)" if isinstance(value, datetime) else repr(value)
        check.problem(line, f"now must be an RFC 3339 time with an offset, e.g. 2025-01-15T10:00:00Z, not {shown}")
        return 0.0
    epoch = moment.timestamp()
    if not 0 <= epoch < MAX_INSTANT:
        check.problem(line, "now is out of range")
        return 0.0
    return epoch


def _first_non_json(value: Any) -> str | None:
    """A description of the first YAML-only value (timestamp, binary, set) inside ``value``, if any."""
    if isinstance(value, (datetime, date)):
        return f"a YAML timestamp ({value})"
    if isinstance(value, (bytes, set)):
        return f"a YAML {type(value).__name__}"
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((found for item in items if (found := _first_non_json(item)) is not None), None)


def _plain(value: Any) -> Any:
    """Plain dicts and lists (no line bookkeeping) for what goes into a request."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"
