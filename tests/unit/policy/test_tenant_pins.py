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
    'when { "acme" == principal.tenant && resource.tenant == "acme" }',
    'when { principal has tenant && principal.tenant == "acme" && principal.roles.contains("x") }',
    'unless { principal.roles.isEmpty() } when { context.intent == "" && ("acme" == principal.tenant) }',
])
def test_a_global_policy_naming_an_entity_may_pin_in_a_when_conjunct(condition):
    compiled = compile_policies(SCHEMA, [PolicySource("named.cedar", ALICE_APPROVES + condition + ";")])
    assert compiled.policy_count == 2  # the policy and the guardrail


@pytest.mark.parametrize("policy,accepted", [
    ('permit (principal == User::"alice", action, resource) when { resource.tenant == "acme" };', False),
    ('forbid (principal, action, resource == Invoice::"inv-1") when { principal.tenant == "ops" };', False),
    ('forbid (principal, action, resource == Invoice::"inv-1") when { resource.tenant == "acme" };', True),
    ('permit (principal == User::"alice", action, resource) when { principal.tenant == "acme" };', True),
    ('permit (principal, action, resource) when { resource == Invoice::"inv-9" && resource.tenant == "acme" };',
     True),
    ('permit (principal, action, resource) when { resource == Invoice::"inv-9" };', False),
])
def test_a_named_principal_or_resource_needs_a_pin_on_its_own_side(policy, accepted):
    # In a break-glass decision the operator's tenant is not the resource's: a pin on one side says nothing
    # about whose entity the other side names (review finding).
    if accepted:
        compile_policies(SCHEMA, [PolicySource("named.cedar", policy)])
    else:
        with pytest.raises(PolicyError, match="does not pin a tenant"):
            compile_policies(SCHEMA, [PolicySource("named.cedar", policy)])


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
def test_a_tenant_policy_may_compare_its_own_tenant_anywhere(condition):
    # A tenant's policies apply only to its own resources; telling its people from a break-glass operator
    # (as roles or issuer can too) may restrict the operator there, never widen the grant, which code checks.
    text = 'forbid (principal, action, resource) ' + condition + ";"
    compiled = compile_policies(SCHEMA, [], _tenant_sources(text))
    assert len(compiled.tenants["acme"].ids) == 1


@pytest.mark.parametrize("condition", [
    'when { principal.tenant == resource.tenant }',
    'when { principal has tenant }',
    'when { principal.tenant == "globex" }',
    'unless { principal.tenant != "acme" || resource.tenant == "globex" }',
])
def test_a_tenant_policy_may_not_use_a_tenant_attribute_otherwise(condition):
    text = 'forbid (principal, action, resource) ' + condition + ";"
    with pytest.raises(PolicyError, match="tenant") as info:
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
