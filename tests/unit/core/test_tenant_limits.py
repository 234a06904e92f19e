"""How much one tenant's own policy files may hold (review finding: one tenant's 8 MB file of 60,000 policies,
under the per-file limit, stalled every other tenant's decisions for 6 s at reload and 2 s at its first request,
because Cedar parses and builds a partition holding the GIL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.issuers import TestIssuer
from support.server import write_config
from tenantgate import app as application
from tenantgate import config
from tenantgate.core.compiler import DEFAULT_TENANT_LIMITS, PolicySource, TenantLimits, compile_policies
from tenantgate.errors import ConfigError, PolicyError

BUNDLED = Path(__file__).resolve().parents[3] / "policies"
SCHEMA = PolicySource("schema.cedarschema", (BUNDLED / "schema.cedarschema").read_text())
GLOBAL = [PolicySource("g.cedar", "permit(principal, action, resource);")]


def _rules(count: int, start: int = 0) -> str:
    return "".join(f'@id("r{n}")\npermit (principal is User, action == Action::"read", resource is Invoice)\n'
                   f'when {{ resource has status && resource.status == "s{n}" }};\n'
                   for n in range(start, start + count))


def test_a_tenant_over_the_byte_limit_is_refused_before_anything_is_parsed():
    # the second file does not even parse: with the limit checked first, Cedar never sees it
    files = [PolicySource("tenants/acme/a.cedar", _rules(3)), PolicySource("tenants/acme/b.cedar", "permit(" * 50)]
    size = sum(len(f.text.encode()) for f in files)
    with pytest.raises(PolicyError) as caught:
        compile_policies(SCHEMA, GLOBAL, {"acme": files, "globex": [PolicySource("tenants/globex/x.cedar", _rules(1))]},
                         limits=TenantLimits(max_bytes=size - 1))
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.path == "tenants/acme" and "policies.max_tenant_policy_bytes" in diagnostic.message
    assert f"{size:,} bytes" in diagnostic.message


def test_a_tenant_over_the_policy_count_is_refused_and_one_at_it_is_not():
    files = {"acme": [PolicySource("tenants/acme/a.cedar", _rules(2)), PolicySource("tenants/acme/b.cedar",
                                                                                     _rules(1, start=2))]}
    compiled = compile_policies(SCHEMA, GLOBAL, files, limits=TenantLimits(max_policies=3))
    assert len(compiled.tenants["acme"].ids) == 3
    with pytest.raises(PolicyError) as caught:
        compile_policies(SCHEMA, GLOBAL, files, limits=TenantLimits(max_policies=2))
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.path == "tenants/acme" and "3 policies, more than policies.max_tenant_policies (2)" in (
        diagnostic.message)


def test_the_defaults_bound_a_tenant_to_a_thousand_policies_and_256_kib():
    assert (DEFAULT_TENANT_LIMITS.max_policies, DEFAULT_TENANT_LIMITS.max_bytes) == (1000, 262_144)
    big = [PolicySource("tenants/acme/big.cedar", _rules(1001))]
    with pytest.raises(PolicyError, match=r"policies\.max_tenant_policies"):
        compile_policies(SCHEMA, GLOBAL, {"acme": big})


def test_the_server_loads_with_the_configured_limits(tmp_path):
    (tmp_path / "issuer").mkdir()
    issuer = TestIssuer(tmp_path / "issuer")
    path = write_config(tmp_path, issuer.settings)  # the bundled acme's own file is larger than 100 bytes
    text = path.read_text().replace("[policies]\n", "[policies]\nmax_tenant_policy_bytes = 100\n")
    path.write_text(text)
    with pytest.raises(PolicyError, match=r"policies\.max_tenant_policy_bytes"):
        application.build(config.load(path, env={}))


@pytest.mark.parametrize("key", ["max_tenant_policies", "max_tenant_policy_bytes", "max_tenant_entity_bytes"])
def test_limits_must_be_positive(tmp_path, key):
    path = tmp_path / "c.toml"
    path.write_text(f"[dev_issuer]\nenabled = true\n[policies]\n{key} = 0\n")
    with pytest.raises(ConfigError, match=f"policies.{key} must be > 0"):
        config.load(path, env={})


def _invoices(count: int, tenant: str = "acme") -> str:
    return json.dumps([{"uid": {"type": "Invoice", "id": f"inv-{n}"}, "attrs": {"tenant": tenant, "status": "paid"}}
                       for n in range(count)])


def test_a_tenants_entity_file_over_the_byte_limit_is_refused_before_it_is_parsed():
    # Review finding: a tenant's 8 MB entities.json stalled every tenant's Checks at reload (Python's JSON
    # parser and writer, and Cedar, holding the GIL). Not even valid JSON here: the size is checked first.
    text = _invoices(50)[:-1]
    size = len(text.encode())
    entities = {"acme": PolicySource("tenants/acme/entities.json", text), "": PolicySource("entities.json", "[]")}
    with pytest.raises(PolicyError) as caught:
        compile_policies(SCHEMA, GLOBAL, {}, entity_sources=entities, limits=TenantLimits(max_entity_bytes=size - 1))
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.path == "tenants/acme/entities.json"
    assert f"{size:,} bytes, more than policies.max_tenant_entity_bytes ({size - 1:,})" in diagnostic.message
    assert DEFAULT_TENANT_LIMITS.max_entity_bytes == 1_048_576  # about 8,000 entities of 128 bytes


def _likes(count: int, chars: int, start: int = 0) -> str:
    """``count`` policies, each with one ``like`` pattern of ``chars`` characters (a wildcard and literals)."""
    return "".join(f'@id("l{n}")\nforbid (principal, action, resource is Invoice)\n'
                   f'when {{ resource has status && resource.status like "*{"a" * (chars - 1)}" }};\n'
                   for n in range(start, start + count))


def test_like_patterns_over_the_limit_are_refused_at_the_policy_that_crosses_it():
    # Review finding: 1,147 patterns of 200 characters, within the byte limit, took Cedar 13 s per decision
    # against a 64 KiB string (about 50 µs per pattern character), holding every tenant's decisions.
    files = {"acme": [PolicySource("tenants/acme/a.cedar", _likes(2, 40)),
                      PolicySource("tenants/acme/b.cedar", _likes(2, 40, start=2))]}
    compiled = compile_policies(SCHEMA, GLOBAL, files, limits=TenantLimits(max_like_chars=160))
    assert len(compiled.tenants["acme"].ids) == 4
    with pytest.raises(PolicyError) as caught:
        compile_policies(SCHEMA, GLOBAL, files, limits=TenantLimits(max_like_chars=159))
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.path, diagnostic.line, diagnostic.policy_id) == ("tenants/acme/b.cedar", 4, "l3")
    assert "policies.max_tenant_like_pattern_chars (159)" in diagnostic.message
    # Global policies are the operator's: not counted.
    many = [PolicySource("g.cedar", _likes(30, 100))]
    assert compile_policies(SCHEMA, many, {}, limits=TenantLimits(max_like_chars=0)).policy_count >= 30


def test_like_patterns_are_counted_wherever_they_nest_and_the_default_is_256():
    from tenantgate.core.scoping import like_pattern_chars

    assert DEFAULT_TENANT_LIMITS.max_like_chars == 256
    est = {"conditions": [{"kind": "when", "body": {"&&": {
        "left": {"like": {"left": {"Var": "context"}, "pattern": ["Wildcard", {"Literal": "a"}]}},
        "right": {"!": {"arg": {"like": {"left": {"Var": "context"}, "pattern": [{"Literal": "b"}] * 5}}}}}}}]}
    assert like_pattern_chars(est) == (7, len("context"))
    over = [PolicySource("tenants/acme/a.cedar", _likes(6, 200))]
    with pytest.raises(PolicyError, match=r"policies\.max_tenant_like_pattern_chars \(256\)"):
        compile_policies(SCHEMA, GLOBAL, {"acme": over})


def test_like_on_a_string_literal_longer_than_a_request_string_is_refused():
    # Review finding: one `like` between a 100,000-character literal and a 50,000-character pattern took 2 s.
    def policy(length: int) -> str:
        return f'@id("x")\nforbid (principal, action, resource) when {{ "{"a" * length}" like "*b" }};\n'

    compile_policies(SCHEMA, GLOBAL, {"acme": [PolicySource("tenants/acme/a.cedar", policy(65_536))]})
    with pytest.raises(PolicyError) as caught:
        compile_policies(SCHEMA, GLOBAL, {"acme": [PolicySource("tenants/acme/a.cedar", policy(65_537))]})
    (diagnostic,) = caught.value.diagnostics
    assert "`like` applied to a string literal of 65,537 characters (at most 65,536" in diagnostic.message


def test_a_like_limit_of_0_says_like_is_not_allowed():
    no_like = r"tenant policies may not use `like` \(policies\.max_tenant_like_pattern_chars is 0\)"
    with pytest.raises(PolicyError, match=no_like):
        compile_policies(SCHEMA, GLOBAL, {"acme": [PolicySource("tenants/acme/a.cedar", _likes(1, 4))]},
                         limits=TenantLimits(max_like_chars=0))
