"""Deeply nested policy and schema text is refused before cedarpy reads it (review finding: a 2 KB tenant policy
with 1,000 nested parentheses killed the server with SIGSEGV on reload, and `validate`, `fmt` and `test` too).

Every test that would crash the interpreter without the check runs the call in a subprocess, bounded by a
timeout, so a regression fails the test instead of killing pytest. Tenant entity data (parent chains, ancestry
links, attribute bytes) is bounded in test_policy_depth_entities.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from support.policy_depth import BUNDLED, GLOBAL, SCHEMA_TEXT, TIMEOUT, _in_subprocess
from tenantgate.core.cedar_depth import (
    MAX_EXPRESSION_DEPTH,
    MAX_HAS_PATH,
    MAX_NESTING,
    MAX_SCHEMA_MEMBERSHIPS,
    policy_depth_problem,
    schema_depth_problem,
)
from tenantgate.core.cedar_text import split_statements
from tenantgate.core.compiler import PolicySource, compile_policies, format_policy_text
from tenantgate.core.engine import Engine
from tenantgate.core.model import Decision, Principal, Resource
from tenantgate.errors import PolicyError

SCHEMA = PolicySource("schema.cedarschema", SCHEMA_TEXT)


def _policy(condition: str, policy_id: str = "deep") -> str:
    return f'@id("{policy_id}") permit(principal, action, resource is Invoice) when {{ {condition} }};\n'


# What crashed cedarpy 4.12.2 (measured in subprocesses, 8 MiB stack; see core.cedar_depth), each well past
# the crash depth, and the message TenantGate gives instead.
CRASHING_POLICIES = {
    "parentheses": ("(" * 1000 + "true" + ")" * 1000, "nested more than 64"),
    "sets": ("[" * 1000 + "1" + "]" * 1000 + ' == [1]', "nested more than 64"),
    "records": ("{a: " * 1000 + "1" + "}" * 1000 + " == {a: 1}", "nested more than 64"),
    "function_calls": ("ip(" * 1200 + '"1.1.1.1"' + ")" * 1200 + ".isIpv4()", "nested more than 64"),
    "if_then_else": ("if true then " * 5000 + "true" + " else false" * 5000, "nested more than 64"),
    "else_if_chain": ("if false then false else " * 5000 + "true", "nested more than 64"),
    "and_chain": (" && ".join(["true"] * 20000), "more than 256 levels deep"),
    "or_chain": (" || ".join(["true"] * 20000), "more than 256 levels deep"),
    "member_chain": ('resource' + ".owner" * 20000 + ' == ""', "more than 256 levels deep"),
    "index_chain": ('resource' + '["owner"]' * 20000 + ' == ""', "more than 256 levels deep"),
    "method_chain": ("[1]" + ".contains(1)" * 20000, "more than 256 levels deep"),
}


@pytest.mark.parametrize("construct", sorted(CRASHING_POLICIES))
def test_a_tenant_policy_nested_past_cedars_stack_is_refused_at_its_line_not_a_crash(construct):
    condition, message = CRASHING_POLICIES[construct]
    text = "// a tenant's file\n" + _policy(condition)
    out = _in_subprocess({"kind": "policy", "schema": SCHEMA_TEXT, "text": text})
    (diagnostic,) = out["compile"]
    assert diagnostic.startswith("tenants/acme/deep.cedar:2:") and "[deep]" in diagnostic and message in diagnostic
    assert str(out["fmt"]).startswith("cannot format: line 2, column ") and message in str(out["fmt"])


CRASHING_SCHEMAS = {
    "records": "entity Deep = " + "{ a: " * 3000 + "Long" + " }" * 3000 + ";\n",
    "sets_of_records": "entity Deep = { a: " + "Set<{ a: " * 2000 + "Long" + " }>" * 2000 + " };\n",
    "sets": "entity Deep = { a: " + "Set<" * 8000 + "Long" + ">" * 8000 + " };\n",
    "entity_hierarchy": "".join(f"entity E{k} in [E{k + 1}];\n" for k in range(30000)) + "entity E30000;\n",
}
SCHEMA_MESSAGES = {"entity_hierarchy": "the schema has more than 1000 `in` clauses"}


@pytest.mark.parametrize("construct", sorted(CRASHING_SCHEMAS))
def test_a_schema_nested_past_cedars_stack_is_refused_at_its_line_not_a_crash(construct):
    out = _in_subprocess({"kind": "schema", "text": SCHEMA_TEXT + "\n" + CRASHING_SCHEMAS[construct]})
    (diagnostic,) = out["compile"]
    line = SCHEMA_TEXT.count("\n") + 2 + (1000 if construct == "entity_hierarchy" else 0)
    assert diagnostic.startswith(f"schema.cedarschema:{line}:")
    assert SCHEMA_MESSAGES.get(construct, "the schema nests more than 64") in diagnostic


def test_schema_in_clauses_up_to_the_bound_pass_the_scan_and_strings_and_comments_do_not_count():
    chain = "".join(f"entity E{k} in [E{k + 1}];\n" for k in range(MAX_SCHEMA_MEMBERSHIPS))
    assert schema_depth_problem(chain) is None
    assert schema_depth_problem(chain + "entity X in [E0];\n") is not None
    assert schema_depth_problem(chain + '// in in in\n@doc("in in")\nentity Y;\n') is None


def test_a_long_has_path_is_refused_before_cedar_expands_it():
    # `e has a.b.c...` becomes one test per prefix: 4,000 names took 48 s and 7 GiB in cedarpy.
    out = _in_subprocess({"kind": "policy", "schema": SCHEMA_TEXT,
                          "text": _policy("resource has " + ".".join(["owner"] * 4000))})
    (diagnostic,) = out["compile"]
    assert "more than 8 names after `has`" in diagnostic


def test_validate_and_fmt_exit_3_on_the_reviewers_policy_instead_of_sigsegv(tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(BUNDLED, policies)
    deep = policies / "tenants" / "acme" / "deep.cedar"
    deep.parent.mkdir(parents=True, exist_ok=True)
    deep.write_text('@id("deep") permit(principal, action, resource) when { ' + "(" * 1000 + "true" + ")" * 1000
                    + " };\n")
    for argv in (["validate", "--policies", str(policies)], ["fmt", "--check", str(deep)]):
        done = subprocess.run([sys.executable, "-m", "tenantgate.cli.main", *argv], capture_output=True, text=True,
                              timeout=TIMEOUT, check=False, cwd=tmp_path)
        assert done.returncode == 3, (argv, done.returncode, done.stdout[-300:], done.stderr[-300:])
        assert "nested more than 64 levels deep" in done.stdout + done.stderr


# ------------------------------------------------------------------------------------------ the bounds


def _refused(text: str) -> str:
    with pytest.raises(PolicyError) as caught:
        compile_policies(SCHEMA, GLOBAL, {"acme": [PolicySource("tenants/acme/p.cedar", text)]})
    return "\n".join(str(d) for d in caught.value.diagnostics)


def _compiles(text: str) -> None:
    compile_policies(SCHEMA, GLOBAL, {"acme": [PolicySource("tenants/acme/p.cedar", text)]})


def test_nesting_up_to_the_bound_compiles_and_one_level_more_is_refused_at_that_bracket():
    # The statement's own `when {` is one level: 63 parentheses inside it make 64.
    _compiles(_policy("(" * (MAX_NESTING - 1) + "true" + ")" * (MAX_NESTING - 1)))
    text = _policy("(" * MAX_NESTING + "true" + ")" * MAX_NESTING)
    column = text.index("(" * MAX_NESTING) + MAX_NESTING  # the 64th parenthesis, 1-based
    assert _refused(text).startswith(f"tenants/acme/p.cedar:1:{column}: [deep] nested more than 64 levels deep")


def test_a_long_chain_within_the_bound_compiles_and_decides():
    # `.`, `==` and `||` each count: 80 terms are 239 operators, with `is` and the statement's three brackets 243.
    text = _policy(" || ".join([f'context.intent == "i{k}"' for k in range(80)]))
    assert policy_depth_problem(split_statements(text)[0]) is None
    engine = Engine(compile_policies(SCHEMA, GLOBAL, {"acme": [PolicySource("tenants/acme/p.cedar", text)]}))
    alice = Principal("User", "alice", "alice", "acme", ("viewer",), None, "https://issuer.test", "jti")
    decided = engine.evaluate(alice, "read", Resource("Invoice", "inv-1", "acme"), {"tenant": "acme"},
                              {"intent": "i79"})
    assert (decided.decision, decided.policy_ids) == (Decision.ALLOW, ("deep",))


def test_an_expression_one_operator_past_the_bound_is_refused():
    # `when {` is one level; a chain of N operands is N - 1 more.
    within = _policy(" && ".join(["true"] * MAX_EXPRESSION_DEPTH))
    assert policy_depth_problem(split_statements(within)[0]) is None
    past = _policy(" && ".join(["true"] * (MAX_EXPRESSION_DEPTH + 1)))
    assert "more than 256 levels deep" in _refused(past)


def test_operators_inside_brackets_add_to_those_around_them():
    inner = " && ".join(["true"] * 100)
    outer = " && ".join(["true"] * 100)
    assert "levels deep" in _refused(_policy(f"{outer} && ({outer} && ({inner}))"))
    # Siblings do not add up: each list element, argument or record field is measured on its own.
    sibling = "[" + ", ".join(f"({inner})" for _ in range(20)) + "].contains(true)"
    assert policy_depth_problem(split_statements(_policy(sibling))[0]) is None


def test_a_long_or_of_ordinary_clauses_counts_by_precedence_not_by_every_operator():
    # Review finding: every operator of a level was summed, so 60 clauses of 5 operators each (a real tree
    # about 63 levels high) were refused and a tenant policy valid before would stop the server from starting.
    clauses = [f'resource has status && resource.status == "blocked-{k}"' for k in range(60)]
    _compiles(_policy(" || ".join(clauses)))
    # ... while the height of a run still counts in full: about 250 such clauses are the most
    long = [f'resource has status && resource.status == "u{k}"' for k in range(260)]
    assert "levels deep" in _refused(_policy(" || ".join(long)))


def test_brackets_and_ifs_in_strings_and_comments_do_not_count():
    text = ('// ' + "(" * 5000 + "\n" + _policy(f'context.intent != "{"([{" * 5000} if if if" && true'))
    _compiles(text)


def test_large_flat_sets_records_and_sequential_ifs_compile():
    members = ", ".join(f'"i{k}"' for k in range(5000))
    _compiles(_policy(f"[{members}].contains(context.intent)"))
    _compiles(_policy(" && ".join("(if true then true else false)" for _ in range(50))))


def test_if_then_else_nesting_counts_like_brackets():
    assert "nested more than 64" in _refused(_policy("if true then " * 70 + "true" + " else false" * 70))
    assert "nested more than 64" in _refused(_policy("if false then false else " * 70 + "true"))
    # An `if` ends with its list element: these do not nest.
    listed = "[" + ", ".join("if true then 1 else 2" for _ in range(100)) + "].contains(1)"
    assert policy_depth_problem(split_statements(_policy(listed))[0]) is None


def test_has_paths_up_to_the_bound_compile_and_longer_ones_are_refused():
    schema = PolicySource("s.cedarschema", SCHEMA_TEXT.replace(
        "entity Invoice = {", "type Nest = { n?: { n?: { n?: { n?: { n?: { n?: { n?: { n?: Long } } } } } } } };\n"
                              "entity Invoice = {\n  nest?: Nest,", 1))
    ok = _policy("resource has nest." + ".".join(["n"] * (MAX_HAS_PATH - 1)))
    compile_policies(schema, GLOBAL, {"acme": [PolicySource("tenants/acme/p.cedar", ok)]})
    long = _policy("resource has nest." + ".".join(["n"] * MAX_HAS_PATH))
    with pytest.raises(PolicyError, match=r"p.cedar:1:\d+: \[deep\] an attribute path of more than 8 names"):
        compile_policies(schema, GLOBAL, {"acme": [PolicySource("tenants/acme/p.cedar", long)]})


def test_a_global_file_is_checked_like_a_tenant_file():
    text = "permit(principal, action, resource);\n" + _policy("(" * 100 + "true" + ")" * 100)
    deep = PolicySource("deep.cedar", text)
    with pytest.raises(PolicyError, match=r"deep.cedar:2:\d+: \[deep\] nested more than 64"):
        compile_policies(SCHEMA, [deep])


def test_every_deep_statement_of_a_file_is_reported():
    text = _policy("(" * 70 + "true" + ")" * 70, "a") + _policy("true") + _policy("[" * 70 + "1" + "]" * 70, "b")
    found = _refused(text).splitlines()
    assert [line.split(" ")[1] for line in found] == ["[a]", "[b]"]
    assert [line.split(":")[1] for line in found] == ["1", "3"]


def test_schema_nesting_within_the_bound_loads_and_strings_and_comments_do_not_count():
    nested = "entity Deep = { a: " + "Set<" * 60 + "Long" + ">" * 60 + " };\n"
    comment = "// " + "{" * 5000 + "\n" + '@doc("' + "Set<" * 5000 + '")\nentity Doc;\n'
    compile_policies(PolicySource("s.cedarschema", SCHEMA_TEXT + nested + comment), GLOBAL)
    assert schema_depth_problem(SCHEMA_TEXT) is None


def test_format_refuses_deep_text_with_its_line_and_policy_id():
    text = "permit(principal, action, resource);\n" + _policy("(" * 100 + "true" + ")" * 100)
    with pytest.raises(PolicyError, match=r"^cannot format: line 2, column \d+: \[deep\] nested more than 64"):
        format_policy_text(text)


def test_a_global_policy_cedar_cannot_read_back_from_json_is_located():
    # Within TenantGate's bounds, but past the 128 levels of Cedar's JSON reader, through which the global set
    # is assembled: the problem used to be reported without a file or line.
    text = "permit(principal, action, resource);\n" + _policy(" && ".join(["true"] * 70), "long-chain")
    with pytest.raises(PolicyError) as caught:
        compile_policies(SCHEMA, [PolicySource("chain.cedar", text)])
    (diagnostic,) = caught.value.diagnostics
    assert str(diagnostic).startswith("chain.cedar:2: [long-chain] Cedar cannot read this policy back")
