"""The policy test runner (`tenantgate test`): cases run through decide(), reports are exact (summary, diffs, JUnit,
JSON, coverage), and a case's break-glass grant holds for that case only. How suites load, and what they refuse, is
in test_testing_suite_loading.py."""

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from support.policy_suites import BUNDLED, VIEWER_READS, cli, write_suite
from tenantgate.policy.testing import SuiteError, load_suites, run_suites

VIEWER_CROSS_TENANT = """\
  - name: viewer cannot read another tenant
    principal: vera
    action: read
    resource: {type: Invoice, id: inv-9, tenant: globex}
    expect: {decision: DENY, reason: cross_tenant}
"""

WRONG_EXPECTATION = """\
  - name: viewer updates (wrongly expected)
    principal: vera
    action: update
    resource: {type: Invoice, id: inv-1, tenant: acme}
    expect: {decision: ALLOW, reason: allow, policy_ids: [editor-can-edit]}
"""


def _line_of(text: str, path: Path) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


# ----------------------------------------------------------------------------------------------- passing


def test_passing_suite_exits_0_with_a_pytest_style_summary(tmp_path):
    write_suite(tmp_path, VIEWER_READS, VIEWER_CROSS_TENANT)
    code, out, err = cli(str(tmp_path))
    assert code == 0, out + err
    assert "FAILED" not in out
    assert re.fullmatch(r"2 passed in \d+\.\d\ds", out.strip().splitlines()[-1])


def test_verbose_lists_passing_cases_by_file_suite_and_case(tmp_path):
    path = write_suite(tmp_path, VIEWER_READS)
    code, out, _ = cli(str(path), "-v")
    assert code == 0
    assert f"PASSED {path}::basics::viewer reads own invoice" in out


def test_runner_is_a_library_returning_decisions_with_audited_ids(tmp_path):
    write_suite(tmp_path, VIEWER_READS, VIEWER_CROSS_TENANT)
    report = run_suites(load_suites([tmp_path]))
    assert (report.passed, report.failed) == (2, 0)
    results = [case.result for _, case in report.cases()]
    assert all(r.audit.decision_id == r.decision_id and r.audit.api == "test" for r in results)
    assert results[1].audit.principal_tenant == "acme" and results[1].audit.resource_tenant == "globex"


def test_suite_without_policies_uses_the_default_policy_dir(tmp_path):
    path = write_suite(tmp_path, VIEWER_READS)
    path.write_text(path.read_text().replace(f"policies: {BUNDLED}\n", ""))
    assert load_suites([path])[0].policies is None
    with pytest.raises(SuiteError, match="no default policy directory"):
        run_suites(load_suites([path]))
    code, out, _ = cli(str(path), "--policies", str(BUNDLED))
    assert code == 0, out


def test_default_paths_are_the_tests_directory_of_the_configured_policies(tmp_path):
    shutil.copytree(BUNDLED, tmp_path / "pol", ignore=shutil.ignore_patterns("tests"))
    write_suite(tmp_path / "pol" / "tests", VIEWER_READS, policies=tmp_path / "pol")
    config = tmp_path / "tenantgate.toml"
    config.write_text('[dev_issuer]\nenabled = true\n\n[policies]\ndir = "pol"\n', encoding="utf-8")
    code, out, err = cli("--config", str(config))
    assert code == 0, out + err
    assert out.strip().startswith("1 passed")


# ----------------------------------------------------------------------------------------------- failing


def test_broken_expectation_fails_with_a_diff_and_exit_2(tmp_path):
    path = write_suite(tmp_path, VIEWER_READS, WRONG_EXPECTATION)
    code, out, _ = cli(str(path))
    assert code == 2
    lines = out.splitlines()
    failed = f"FAILED {path}::basics::viewer updates (wrongly expected)"
    assert failed in lines
    diff = "\n".join(lines[lines.index(failed) + 1:])
    for expected in ("- decision: ALLOW", "+ decision: DENY", "- reason: allow", "+ reason: no_permit",
                     "- policy_ids: [editor-can-edit]", "+ policy_ids: []", "message: no policy permits this request"):
        assert expected in diff
    assert re.fullmatch(r"1 passed, 1 failed in \d+\.\d\ds", lines[-1])


def test_only_expected_fields_are_compared(tmp_path):
    # No reason or policy_ids stated: only the decision is checked, but the diff still shows them.
    case = WRONG_EXPECTATION.replace("{decision: ALLOW, reason: allow, policy_ids: [editor-can-edit]}",
                                     "{decision: DENY}")
    write_suite(tmp_path, case)
    assert cli(str(tmp_path))[0] == 0


def test_policy_ids_compare_as_a_set(tmp_path):
    case = VIEWER_READS.replace("[viewer-can-read]", "[viewer-can-read, viewer-can-read]")
    write_suite(tmp_path, case)
    assert cli(str(tmp_path))[0] == 0


def test_junit_report_parses_with_a_testsuite_per_suite_and_failures_with_diffs(tmp_path):
    write_suite(tmp_path / "s", VIEWER_READS, WRONG_EXPECTATION, name="first", file="a.yaml")
    write_suite(tmp_path / "s", VIEWER_CROSS_TENANT, name="second", file="b.yml")
    junit = tmp_path / "out" / "junit.xml"
    code, _, _ = cli(str(tmp_path / "s"), "--junit", str(junit))
    assert code == 2
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "3" and root.get("failures") == "1"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["first", "second"]
    assert [len(s.findall("testcase")) for s in suites] == [2, 1]
    failures = root.findall(".//failure")
    assert len(failures) == 1
    assert "+ decision: DENY" in failures[0].text
    assert "expected ALLOW" in failures[0].get("message")
    failing_case = root.find(".//testcase[failure]")
    assert failing_case.get("name") == "viewer updates (wrongly expected)"
    assert failing_case.get("classname").endswith("a.yaml::first")


def test_json_report_has_expected_actual_and_decision_ids_but_never_tokens(tmp_path):
    write_suite(tmp_path, VIEWER_READS, WRONG_EXPECTATION)
    code, out, _ = cli(str(tmp_path), "--json", "--coverage")
    assert code == 2
    doc = json.loads(out)
    cases = doc["suites"][0]["cases"]
    assert [c["outcome"] for c in cases] == ["passed", "failed"]
    assert cases[1]["mismatches"] == ["decision", "reason", "policy_ids"]
    assert cases[1]["expected"]["decision"] == "ALLOW" and cases[1]["actual"]["decision"] == "DENY"
    assert re.fullmatch(r"[0-9a-f-]{36}", cases[0]["actual"]["decision_id"])
    assert doc["summary"]["passed"] == 1 and doc["summary"]["failed"] == 1
    from tenantgate.policy import load_policies

    assert doc["coverage"][0]["total"] == load_policies(BUNDLED).total_policies
    assert "eyJ" not in out  # no JWT (base64url of '{"') anywhere in the report


# ----------------------------------------------------------------------------------------------- coverage


def _bundled_total() -> int:
    from tenantgate.policy import load_policies

    return load_policies(BUNDLED).total_policies


def test_coverage_lists_uncovered_policies_with_file_and_line(tmp_path):
    write_suite(tmp_path, VIEWER_READS, VIEWER_CROSS_TENANT)
    code, out, _ = cli(str(tmp_path), "--coverage")
    assert code == 0
    total = _bundled_total()
    assert re.search(rf"^coverage: 2/{total} policies in \S*policies exercised \({200 / total:.1f}%\)$", out, re.M)
    line = _line_of('@id("editor-can-edit")', BUNDLED / "roles.cedar")
    assert re.search(rf"^  not covered: editor-can-edit \(\S*policies/roles\.cedar:{line}\)$", out, re.M)
    assert "not covered: viewer-can-read" not in out
    # Covered by the cross-tenant denial it backs up; it is listed (as built-in) when nothing exercises it.
    assert "tenant-guardrail" not in out
    write_suite(tmp_path, VIEWER_READS)
    assert "not covered: tenantgate::tenant-guardrail (built-in)" in cli(str(tmp_path), "--coverage")[1]


def test_min_coverage_below_exits_2_after_printing(tmp_path):
    write_suite(tmp_path, VIEWER_READS)
    code, out, err = cli(str(tmp_path), "--min-coverage", "50")
    assert code == 2
    assert f"coverage: 1/{_bundled_total()}" in out and "1 passed" in out
    assert "below --min-coverage 50%" in err


def test_min_coverage_met_exits_0(tmp_path):
    write_suite(tmp_path, VIEWER_READS, VIEWER_CROSS_TENANT)
    assert cli(str(tmp_path), "--min-coverage", f"{200 // _bundled_total()}%")[0] == 0


def test_min_coverage_outside_0_to_100_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit):
        cli(str(tmp_path), "--min-coverage", "120")


# -------------------------------------------------------------------------------------------- break-glass


GRANTED_READ = """\
  - name: granted read
    principal: oscar
    action: read
    resource: {type: Invoice, id: inv-1, tenant: acme}
    grant: {target_tenant: acme, actions: [read], ticket: INC-1}
    expect: {decision: ALLOW, reason: allow_break_glass, policy_ids: [break-glass-operators]}
"""


def test_a_case_grant_is_active_for_that_case_only(tmp_path):
    after = GRANTED_READ.replace("granted read", "next case, no grant").replace(
        "    grant: {target_tenant: acme, actions: [read], ticket: INC-1}\n", "").replace(
        "{decision: ALLOW, reason: allow_break_glass, policy_ids: [break-glass-operators]}",
        "{decision: DENY, reason: cross_tenant}")
    report = run_suites(load_suites([write_suite(tmp_path, GRANTED_READ, after)]))
    assert report.failed == 0, report.failures_text()
    granted = next(iter(report.cases()))[1].result
    assert granted.audit.grant_id  # the decision names the grant that opened it


def test_an_expired_grant_opens_nothing(tmp_path):
    expired = GRANTED_READ.replace("ticket: INC-1}", "ticket: INC-1, expires_in_seconds: 0}").replace(
        "{decision: ALLOW, reason: allow_break_glass, policy_ids: [break-glass-operators]}",
        "{decision: DENY, reason: cross_tenant}")
    report = run_suites(load_suites([write_suite(tmp_path, expired)]))
    assert report.failed == 0, report.failures_text()
