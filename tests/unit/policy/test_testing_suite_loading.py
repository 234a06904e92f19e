"""Policy test suites load strictly (`tenantgate test`): mistakes are located by file and line and exit 1, invalid
policies exit 3, YAML anchors and several suites per file work, and hostile YAML is refused with a message."""

import json
import re
import shutil
import textwrap

import pytest

from support.policy_suites import BUNDLED, VIEWER_READS, cli, write_suite
from tenantgate.policy.testing import SuiteError, load_suites, run_suites

# ------------------------------------------------------------------------------------------------- errors


def test_bad_yaml_exits_1_with_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nnow: 2025-01-15T10:00:00Z\ncases: [\n  - {name: a\n", encoding="utf-8")
    code, _, err = cli(str(path))
    assert code == 1
    assert re.search(rf"{re.escape(str(path))}:\d+: invalid YAML", err)


def test_unknown_keys_are_errors_located_by_line_with_a_suggestion(tmp_path):
    path = write_suite(tmp_path, VIEWER_READS.replace("    expect:", "    expct: {decision: ALLOW}\n    expect:"))
    code, _, err = cli(str(path))
    assert code == 1
    assert f"{path}:12: unknown key 'expct' in case 'viewer reads own invoice'; did you mean 'expect'?" in err


def test_unknown_principal_exits_1_naming_the_defined_ones(tmp_path):
    path = write_suite(tmp_path, VIEWER_READS.replace("principal: vera", "principal: alice"))
    code, out, err = cli(str(path), "--json")
    assert code == 1
    assert "unknown principal 'alice' (defined: oscar, vera)" in err
    assert json.loads(out)["error"]["kind"] == "suite"


@pytest.mark.parametrize(("text", "message"), [
    ("now: 2025-01-15T10:00:00\n", "now must be an RFC 3339 time with an offset"),
    ("now: 2025-01-15T10:00:00Z\nnow: 2025-01-16T10:00:00Z\n", "duplicate key 'now'"),
    ("now: 2025-01-15T10:00:00Z\ncases: []\n", "cases must be a non-empty list"),
])
def test_suite_level_mistakes_are_errors(tmp_path, text, message):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nprincipals: {}\n" + text, encoding="utf-8")
    with pytest.raises(SuiteError, match=re.escape(message)):
        load_suites([path])


def test_case_level_mistakes_are_all_reported_at_once(tmp_path):
    bad = """\
  - name: bad
    principal: vera
    action: read
    resource: {type: Invoice, id: inv-1, tenant: acme, attributes: {due: !!timestamp 2025-01-01}}
    grant: {target_tenant: acme, actions: []}
    expect: {decision: allow, reason: nope}
"""
    with pytest.raises(SuiteError) as caught:
        load_suites([write_suite(tmp_path, bad)])
    text = str(caught.value)
    for message in ("holds a YAML timestamp", "actions must name at least one action",
                    "decision must be ALLOW or DENY", "'nope' is not a reason code"):
        assert message in text


def test_missing_path_and_empty_directory_exit_1(tmp_path):
    assert cli(str(tmp_path / "nope"))[0] == 1
    (tmp_path / "empty").mkdir()
    code, _, err = cli(str(tmp_path / "empty"))
    assert code == 1 and "no test suites" in err


def test_invalid_policies_exit_3_with_located_diagnostics(tmp_path):
    policies = tmp_path / "pol"
    shutil.copytree(BUNDLED, policies, ignore=shutil.ignore_patterns("tests"))
    (policies / "roles.cedar").write_text('permit (principal, action, resource) when { principal.nope };\n')
    write_suite(tmp_path / "suites", VIEWER_READS, policies=policies)
    code, _, err = cli(str(tmp_path / "suites"))
    assert code == 3
    assert f"{policies / 'roles.cedar'}:1" in err


# --------------------------------------------------------------------------------------------------- YAML


def test_anchors_merge_keys_and_several_suites_per_file(tmp_path):
    text = textwrap.dedent(f"""\
        name: first
        now: "2025-01-15T11:00:00+01:00"
        policies: {BUNDLED}
        principals:
          vera: {{tenant: acme, sub: vera, roles: [viewer]}}
        cases:
          - &read
            name: reads
            principal: vera
            action: read
            resource: {{type: Invoice, id: inv-1, tenant: acme}}
            expect: {{decision: ALLOW}}
          - <<: *read
            name: cannot update
            action: update
            expect: {{decision: DENY, reason: no_permit}}
        ---
        name: second
        now: 2025-01-15T10:00:00Z
        policies: {BUNDLED}
        principals:
          agent: {{tenant: acme, sub: vera, act: {{sub: bot}}, intents: [billing.reconcile]}}
        cases:
          - name: agent reconciles
            principal: agent
            action: reconcile
            intent: billing.reconcile
            resource: {{type: Invoice, id: inv-1, tenant: acme}}
            expect: {{decision: ALLOW, policy_ids: [agent-billing-reconcile]}}
        """)
    (tmp_path / "multi.yaml").write_text(text, encoding="utf-8")
    suites = load_suites([tmp_path])
    assert [s.name for s in suites] == ["first", "second"]
    assert suites[0].now == suites[1].now == 1_736_935_200.0
    assert suites[1].principals["agent"].act == "bot"
    report = run_suites(suites)
    assert (report.passed, report.failed) == (3, 0), report.failures_text()


def _alias_bomb() -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def _alias_bomb_key() -> str:
    # The same bomb as a mapping *key*: built outside the node budget, 10**9 items (review finding: 2 GB, then
    # a MemoryError traceback; a smaller one printed a message hundreds of MB long).
    anchors = ["&a0 [x, x, x, x, x, x, x, x, x, x]"]
    anchors += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    return f"? [{', '.join(anchors)}]\n: 1\nname: s\n"


@pytest.mark.parametrize(("text", "message"), [
    ("name: a\x07b\n", "1: invalid YAML: character #x0007 is not allowed"),
    ("", "1: no suite in this file"),
    ("- 1\n- 2\n", "1: a suite must be a mapping, not a list"),
    ("a: &x [*x]\n", "too large or too deep"),
    (_alias_bomb(), "too large or too deep"),
    # review finding: PyYAML's composer recursed past Python's limit first (RecursionError traceback)
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "1: document too large or too deep"),
    ("a:\n" + "".join("  " * i + "- \n" for i in range(200)), "too large or too deep"),
    ("name: s\n" + "a: {" * 70 + "}" * 70 + "\n", "2: document too large or too deep"),
    ("name: s\n1: x\n", "2: keys must be strings"),
    (_alias_bomb_key(), "1: keys must be strings, not a list or mapping"),
    ("? {a: 1}\n: x\n", "1: keys must be strings, not a list or mapping"),
])
def test_hostile_or_empty_files_are_refused_with_a_message(tmp_path, text, message):
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SuiteError) as caught:
        load_suites([path])
    assert message in str(caught.value)
