"""What counts as pinning a tenant: only `principal.tenant` / `resource.tenant == "<id>"` that every
application of the policy must satisfy (a conjunct of a `when` clause's top-level `&&` chain)."""

from pathlib import Path

import pytest

from tenantgate.core.engine import Engine, PolicySource, compile_policies
from tenantgate.core.model import Decision, Principal, Resource
from tenantgate.errors import PolicyError

BUNDLED = Path(__file__).resolve().parents[3] / "policies"
# The bundled schema plus an optional request-controlled `context.tenant`, to show it pins nothing.
SCHEMA = PolicySource("schema.cedarschema", (BUNDLED / "schema.cedarschema").read_text().replace(
    "  mfa?: Bool,\n", "  mfa?: Bool,\n  tenant?: String,\n"))
assert "tenant?: String" in SCHEMA.text

ALICE_APPROVES = 'permit (principal == User::"alice", action == Action::"approve", resource is Invoice) '
NOT_PINS = [
    'unless { principal.tenant == "acme" }',
    'when { principal.tenant == "acme" || true }',
    'when { true || resource.tenant == "acme" }',
    'when { (principal.tenant == "acme" && true) || true }',
    'when { !(principal.tenant == "acme") }',
    'when { if principal.tenant == "acme" then true else true }',
    'when { context has tenant && context.tenant == "acme" }',
    'when { principal.tenant != "globex" }',
]


def _principal(tenant, roles=()):
    return Principal("User", "alice", "alice", tenant, tuple(roles), None, "https://issuer.test", "jti")


def _approve(engine, tenant):
    return engine.evaluate(_principal(tenant), "approve", Resource("Invoice", "inv-1", tenant),
                           {"tenant": tenant}, {"intent": ""}).decision


@pytest.mark.parametrize("condition", NOT_PINS)
def test_a_global_policy_naming_an_entity_is_refused_when_its_tenant_condition_can_be_bypassed(condition):
    # Each of these lets globex's alice (the same Cedar entity as acme's) match a policy meant for acme.
    with pytest.raises(PolicyError, match="does not pin a tenant"):
        compile_policies(SCHEMA, [PolicySource("named.cedar", ALICE_APPROVES + condition + ";")])


@pytest.mark.parametrize("condition", [
    'when { principal.tenant == "acme" }',
    'when { "acme" == resource.tenant }',
    'when { principal has tenant && principal.tenant == "acme" && principal.roles.contains("x") }',
    'unless { principal.roles.isEmpty() } when { context.intent == "" && ("acme" == principal.tenant) }',
])
def test_a_global_policy_naming_an_entity_may_pin_in_a_when_conjunct(condition):
    compiled = compile_policies(SCHEMA, [PolicySource("named.cedar", ALICE_APPROVES + condition + ";")])
    assert compiled.policy_count == 2  # the policy and the guardrail


def test_a_pinned_global_policy_applies_to_its_tenants_alice_only():
    text = ALICE_APPROVES + 'when { principal.tenant == "acme" };'
    engine = Engine(compile_policies(SCHEMA, [PolicySource("named.cedar", text)]))
    assert (_approve(engine, "acme"), _approve(engine, "globex")) == (Decision.ALLOW, Decision.DENY)


def _tenant_sources(text):
    return {"acme": [PolicySource("tenants/acme/own.cedar", text)],
            "globex": [PolicySource("tenants/globex/own.cedar", "permit (principal, action, resource);")]}


@pytest.mark.parametrize("condition", [
    *NOT_PINS[:6],
    'unless { resource.tenant == "acme" }',
    'when { principal.tenant == "acme" } unless { principal.tenant == "acme" }',
])
def test_a_tenant_policy_may_compare_its_tenant_only_as_a_pin(condition):
    # In acme's partition `principal.tenant == "acme"` is false only for a break-glass operator, so outside a
    # `when` conjunct it would let acme write rules for (or against) break-glass operators alone.
    text = 'forbid (principal, action, resource) ' + condition + ";"
    with pytest.raises(PolicyError, match="tenant attribute only") as info:
        compile_policies(SCHEMA, [], _tenant_sources(text))
    assert info.value.diagnostics[0].path == "tenants/acme/own.cedar"


def test_a_tenant_policy_may_not_read_the_request_controlled_context_tenant():
    text = 'permit (principal, action, resource) when { context has tenant && context.tenant == "acme" };'
    with pytest.raises(PolicyError, match="tenant attribute only"):
        compile_policies(SCHEMA, [], _tenant_sources(text))


def test_a_tenant_policy_may_pin_its_own_tenant_in_a_when_conjunct():
    text = ('@id("acme-approve") permit (principal, action == Action::"approve", resource) '
            'when { principal.tenant == "acme" && "acme" == resource.tenant };')
    compiled = compile_policies(SCHEMA, [], _tenant_sources(text))
    assert compiled.tenants["acme"].ids == ("acme-approve",)
    assert _approve(Engine(compiled), "acme") is Decision.ALLOW
