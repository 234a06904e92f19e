"""``tenantgate test [PATHS...]``: run policy test suites (YAML) through the decision path.

Exit codes: 0 every case passed (and coverage reached ``--min-coverage``), 1 error (unreadable or invalid
suite file, unknown principal, unwritable JUnit file, bad config, usage error), 2 a case failed or coverage
is below ``--min-coverage``, 3 a policy set is invalid. Tokens minted for the run are never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tenantgate.cli.verdict import settle
from tenantgate.core.cedar_text import escape_unprintable
from tenantgate.errors import PolicyError, TenantGateError
from tenantgate.numerals import NUMBER_SPELLING, read_number

if TYPE_CHECKING:  # the runner pulls in the identity and grant stacks: imported when the command runs
    from collections.abc import Sequence

    from tenantgate.policy.testing import Coverage, PolicyCase, PolicyCoverage, PolicyDir, PolicySuite, RunReport

EXIT_OK, EXIT_ERROR, EXIT_FAILED, EXIT_INVALID_POLICIES = 0, 1, 2, 3

# Characters XML 1.0 cannot carry at all (escaping does not help); replaced so the report always parses.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def add_command(sub: Any) -> None:
    """Register ``test`` on an argparse subparsers object; its handler returns the exit code."""
    cmd = sub.add_parser("test", help="run policy test suites (YAML) through the decision path",
                         description="Run policy test suites. See docs/policy-tests.md for the format.")
    cmd.add_argument("paths", nargs="*", metavar="PATH",
                     help="suite files or directories (searched for *.yaml, *.yml); default: <policies.dir>/tests")
    cmd.add_argument("--config", default=os.environ.get("TENANTGATE_CONFIG"),
                     help="TOML config file giving policies.dir, and the token claim names, [grants] rules and "
                          "http.pep_role the suites decide with (default: $TENANTGATE_CONFIG, else embedded "
                          "defaults)")
    cmd.add_argument("--policies", default=None, metavar="DIR",
                     help="policy directory for suites without their own `policies:` (default: policies.dir)")
    cmd.add_argument("--schema", default=None, metavar="FILE", help="schema for --policies")
    cmd.add_argument("--junit", default=None, metavar="FILE", help="also write a JUnit XML report")
    cmd.add_argument("--json", action="store_true", help="print a JSON report instead of text")
    cmd.add_argument("--coverage", action="store_true", help="report policies no case exercised")
    cmd.add_argument("--min-coverage", type=_percent, default=None, metavar="PERCENT",
                     help="exit 2 when a policy set's coverage is below PERCENT (implies --coverage)")
    cmd.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    cmd.set_defaults(handler=run)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Load the suites, run them, print the report; return the exit code. Never raises for expected problems."""
    from tenantgate.policy.testing import PolicyDir, SuiteError, load_suites, run_suites

    stdout, stderr = out or sys.stdout, err or sys.stderr
    try:
        default = PolicyDir(Path(args.policies), Path(args.schema) if args.schema else None) if args.policies else None
        if default is None and not args.paths:
            default = _configured_policies(args)
        if args.paths:
            suites = load_suites(args.paths)
        else:  # the suites next to the policies: <policies.dir>/tests
            assert default is not None
            suites = load_suites([default.path / "tests"])
        if default is None:  # also where tenants' suites are recognised when every suite names `policies:`
            default = _configured_policies(args)
        report = run_suites(suites, default, _decision_settings(args), _tenant_limits(args))
    except SuiteError as problem:
        return _fail(args, stderr, stdout, "suite", problem, EXIT_ERROR)
    except PolicyError as problem:
        return _fail(args, stderr, stdout, "policies", problem, EXIT_INVALID_POLICIES)
    except TenantGateError as problem:
        return _fail(args, stderr, stdout, "error", problem, EXIT_ERROR)

    want_coverage = args.coverage or args.min_coverage is not None
    coverage = report.coverage() if want_coverage else ()
    low = [c for c in coverage if args.min_coverage is not None and c.percent < args.min_coverage]
    if args.junit:
        try:
            write_junit(report, Path(args.junit))
        except OSError as problem:
            print(f"tenantgate: cannot write {args.junit}: {problem.strerror or problem}", file=stderr)
            return EXIT_ERROR
    code = settle(EXIT_FAILED if report.failed or low else EXIT_OK)
    if args.json:
        json.dump(json_report(report, coverage if want_coverage else None, args.min_coverage), stdout, indent=2)
        stdout.write("\n")
    else:
        _print_text(report, coverage, args, stdout)
    if low:
        for c in low:
            print(f"coverage of {_shown(c.policies.path)} is {c.percent:.1f}%, below --min-coverage "
                  f"{args.min_coverage:g}%", file=stderr)
    return code


def _decision_settings(args: argparse.Namespace) -> Any:
    """The config's claim names, break-glass rules and PEP role, as the server applies them (review finding:
    suites ran with the built-in defaults, so a suite could pass while the server answered the opposite)."""
    from tenantgate import app, config

    return app.decision_settings(config.load(args.config))


def _tenant_limits(args: argparse.Namespace) -> Any:
    """The config's bounds on a tenant's own policy files, as the server loads them."""
    from tenantgate import app, config

    return app.tenant_limits(config.load(args.config))


def _configured_policies(args: argparse.Namespace) -> PolicyDir:
    """``policies.dir`` and ``policies.schema_file`` (or ``--schema``) from the config. Raises ConfigError."""
    from tenantgate import config
    from tenantgate.policy.testing import PolicyDir as Dir

    settings = config.load(args.config)
    schema = args.schema or settings.policies.schema_file
    return Dir(Path(settings.policies.dir), Path(schema) if schema else None)


def _percent(text: str) -> float:
    try:
        value = read_number(text.removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a percentage: {text[:40]!r} ({NUMBER_SPELLING}, then "
                                         "an optional '%')") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError("must be between 0 and 100")
    return value


def _fail(args: argparse.Namespace, stderr: TextIO, stdout: TextIO, kind: str, problem: Exception,
          code: int) -> int:
    label = {"suite": "invalid test suite", "policies": "invalid policies", "error": "error"}[kind]
    print(f"tenantgate: {label}: {problem}", file=stderr)
    if args.json:
        diagnostics = [str(d) for d in getattr(problem, "diagnostics", ())]
        message = str(problem).split("\n", 1)[0]
        json.dump({"error": {"kind": kind, "message": message, "diagnostics": diagnostics}}, stdout, indent=2)
        stdout.write("\n")
    return code


def _shown(path: Path | str) -> str:
    """A path relative to the working directory when it is below it (as pytest shows test ids)."""
    text = str(path)
    try:
        relative = os.path.relpath(text)
    except ValueError:
        return text
    return relative if not relative.startswith("..") else text


def _case_id(suite: PolicySuite, case: PolicyCase) -> str:
    # Escaped: suite and case names are the suite author's text (review finding: ESC sequences reached the
    # terminal).
    return escape_unprintable(f"{_shown(suite.path)}::{suite.name}::{case.name}")


def _print_text(report: RunReport, coverage: Sequence[Coverage], args: argparse.Namespace, out: TextIO) -> None:
    for suite_result, case_result in report.cases():
        case_id = _case_id(suite_result.suite, case_result.case)
        if not case_result.passed:
            print(f"FAILED {case_id}", file=out)
            print("\n".join("    " + escape_unprintable(line) for line in case_result.diff().splitlines()), file=out)
        elif args.verbose:
            print(f"PASSED {case_id}", file=out)
    for c in coverage:
        print(f"coverage: {c.covered}/{c.total} policies in {_shown(c.policies.path)} exercised ({c.percent:.1f}%)",
              file=out)
        for entry in c.uncovered:
            owner = f" [tenant {entry.tenant}]" if entry.tenant else ""
            print(f"  not covered: {entry.policy_id}{owner} ({_location(c, entry)})", file=out)
    print(report.summary(), file=out)


def _location(coverage: Coverage, entry: PolicyCoverage) -> str:
    return "built-in" if entry.built_in else f"{_shown(coverage.policies.path / entry.path)}:{entry.line}"


def json_report(report: RunReport, coverage: Sequence[Coverage] | None,
                min_coverage: float | None = None) -> dict[str, Any]:
    """The ``--json`` document: suites, cases (expected, actual with decision ids), summary, coverage."""
    suites = []
    for s in report.suites:
        cases = []
        for c in s.cases:
            want, got = c.case.expect, c.result
            cases.append({
                "id": _case_id(s.suite, c.case),
                "name": c.case.name,
                "outcome": "passed" if c.passed else "failed",
                "mismatches": list(c.mismatches),
                "expected": {"decision": want.decision.value,
                             "reason": want.reason.value if want.reason else None,
                             "policy_ids": list(want.policy_ids) if want.policy_ids is not None else None},
                "actual": {"decision": got.decision.value, "reason": got.reason.value,
                           "policy_ids": list(got.policy_ids), "message": got.message,
                           "decision_id": got.decision_id, "grant_id": got.audit.grant_id},
                "seconds": round(c.seconds, 6),
            })
        suites.append({"file": _shown(s.suite.path), "name": s.suite.name, "policies": _shown(s.policies.path),
                       "cases": cases, "seconds": round(s.seconds, 6)})
    doc: dict[str, Any] = {
        "suites": suites,
        "summary": {"passed": report.passed, "failed": report.failed, "seconds": round(report.seconds, 6)},
    }
    if coverage is not None:
        doc["coverage"] = [{
            "policies": _shown(c.policies.path), "covered": c.covered, "total": c.total,
            "percent": round(c.percent, 2),
            "below_minimum": min_coverage is not None and c.percent < min_coverage,
            "uncovered": [{"policy_id": e.policy_id, "tenant": e.tenant, "built_in": e.built_in,
                           "location": _location(c, e)} for e in c.uncovered],
        } for c in coverage]
    return doc


def write_junit(report: RunReport, path: Path) -> None:
    """JUnit XML: ``<testsuites>``, a ``<testsuite>`` per suite, a ``<testcase>`` per case, failures with diffs.

    Raises ``OSError`` when the file cannot be written.
    """
    root = ET.Element("testsuites", name="tenantgate policy tests", tests=str(report.passed + report.failed),
                      failures=str(report.failed), errors="0", time=f"{report.seconds:.3f}")
    for s in report.suites:
        failed = sum(not c.passed for c in s.cases)
        file = _shown(s.suite.path)
        element = ET.SubElement(root, "testsuite", name=_xml(s.suite.name), file=_xml(file), tests=str(len(s.cases)),
                                failures=str(failed), errors="0", skipped="0", time=f"{s.seconds:.3f}")
        for c in s.cases:
            case = ET.SubElement(element, "testcase", classname=_xml(f"{file}::{s.suite.name}"),
                                 name=_xml(c.case.name), file=_xml(file), line=str(c.case.line),
                                 time=f"{c.seconds:.6f}")
            if not c.passed:
                want, got = c.case.expect, c.result
                message = (f"expected {want.decision.value}"
                           + (f" ({want.reason.value})" if want.reason else "")
                           + f", got {got.decision.value} ({got.reason.value}); differs in {', '.join(c.mismatches)}")
                failure = ET.SubElement(case, "failure", message=_xml(message), type="PolicyExpectationMismatch")
                failure.text = _xml(c.diff())
    tree = ET.ElementTree(root)
    ET.indent(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=True)


def _xml(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)
