"""Suite YAML is read with JSON's plain scalars (review finding: YAML 1.1 implicit typing turned `status: off`
into False, `1:20` into 80 and `010` into 8), and a duplicate case name is reported with every other problem."""

import textwrap
from pathlib import Path

import pytest

from tenantgate.policy.testing import SuiteError, load_suites

BUNDLED = Path(__file__).resolve().parents[3] / "policies"


def _suite(tmp_path, cases):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: typing
        now: 2025-01-15T10:00:00Z
        policies: {BUNDLED}
        principals:
          vera: {{tenant: acme, sub: vera, roles: [viewer]}}
        cases:
        """) + textwrap.indent(textwrap.dedent(cases), "  "), encoding="utf-8")
    return path


@pytest.mark.parametrize(("written", "value"), [
    ("off", "off"), ("on", "on"), ("yes", "yes"), ("no", "no"), ("True", "True"), ("FALSE", "FALSE"),
    ("1:20", "1:20"), ("010", "010"), ("0x1F", "0x1F"), ("0o17", "0o17"), ("1_000", "1_000"),
    ("2025-01-01", "2025-01-01"), ("2025-01-15T10:00:00Z", "2025-01-15T10:00:00Z"), (".inf", ".inf"),
    ("NULL", "NULL"), ("'true'", "true"), ('"5"', "5"),
    ("true", True), ("false", False), ("0", 0), ("42", 42), ("-7", -7), ("9007199254740993", 9007199254740993),
    ("1.5", 1.5), ("2e3", 2000.0),
])
def test_only_json_like_plain_scalars_are_typed(tmp_path, written, value):
    path = _suite(tmp_path, f"""\
        - name: typed
          principal: vera
          action: read
          resource: {{type: Invoice, id: inv-1, tenant: acme, attributes: {{status: {written}}}}}
          context: {{flag: {written}}}
          expect: {{decision: ALLOW}}
        """)
    (suite,) = load_suites([path])
    (case,) = suite.cases
    assert case.resource.attributes["status"] == value and type(case.resource.attributes["status"]) is type(value)
    assert case.context["flag"] == value and type(case.context["flag"]) is type(value)


def test_on_and_off_as_keys_are_strings_not_booleans(tmp_path):
    path = _suite(tmp_path, """\
        - name: keys
          principal: vera
          action: read
          resource: {type: Invoice, id: inv-1, tenant: acme}
          context: {on: 1, off: 2, yes: 3}
          expect: {decision: ALLOW}
        """)
    (suite,) = load_suites([path])
    assert suite.cases[0].context == {"on": 1, "off": 2, "yes": 3}


def test_a_duplicate_case_name_is_reported_with_the_other_problems_in_one_run(tmp_path):
    # Review finding: reported only once the other problems of the duplicate cases were fixed.
    path = _suite(tmp_path, """\
        - name: twice
          principal: vera
          action: read
          resource: {type: Invoice, id: inv-1}
          expect: {decision: allow}
        - name: twice
          principal: vera
          action: read
          resource: {type: Invoice, id: inv-1, tenant: acme}
          expect: {decision: maybe, reason: nope}
        - name: once
          principal: vera
          action: read
          resource: {type: Invoice, id: inv-1, tenant: acme}
          expect: {decision: ALLOW}
        """)
    with pytest.raises(SuiteError) as caught:
        load_suites([path])
    text = str(caught.value)
    assert "s.yaml:12: duplicate case name 'twice' in suite 'typing' (first at line 7)" in text
    for message in ("missing the required key 'tenant'", "decision must be ALLOW or DENY, not 'allow'",
                    "decision must be ALLOW or DENY, not 'maybe'", "'nope' is not a reason code"):
        assert message in text
    assert "'once'" not in text
