"""The parsed-entity cache must never change a decision: a hit is the same entity set, a miss or a refusal
falls back to what Cedar does with the plain entity list."""

from pathlib import Path

import cedarpy
import pytest

from tenantgate.core.compiler import principal_entity
from tenantgate.core.engine import Engine
from tenantgate.core.entitycache import MAX_TEXT, EntityHandles
from tenantgate.core.model import Principal, Resource
from tenantgate.policy import load_policies

BUNDLED = Path(__file__).resolve().parents[3] / "policies"


@pytest.fixture(scope="module")
def compiled():
    return load_policies(BUNDLED)


def _principal(tenant="acme", roles=("viewer",), subject="alice"):
    return Principal("User", subject, subject, tenant, tuple(roles), None, "https://issuer.test", "jti")


def _entities(principal, rtype="Invoice", rid="inv-1", attrs=None):
    return [principal_entity(principal),
            {"uid": {"type": rtype, "id": rid}, "attrs": {"tenant": principal.tenant, **(attrs or {})},
             "parents": []}]


def _request(principal, action="read", rtype="Invoice", rid="inv-1"):
    return {"principal": {"type": "User", "id": principal.entity_id}, "action": {"type": "Action", "id": action},
            "resource": {"type": rtype, "id": rid}, "context": {"intent": ""}}


def _answer(compiled, request, entities):
    result = cedarpy.is_authorized(request, compiled.policy_set, entities, schema=compiled.schema)
    return result.decision.value, sorted(result.diagnostics.reasons), len(result.diagnostics.errors)


CASES = [
    # (roles, action, resource type, resource id, resource attributes)
    (("viewer",), "read", "Invoice", "inv-1", {}),
    (("viewer",), "update", "Invoice", "inv-1", {}),
    (("admin",), "delete", "Invoice", "inv-2", {"amount_cents": 5}),
    ((), "read", "Invoice", "inv-1", {}),
    (("viewer",), "read", "User", "alice", {}),  # the resource is the principal itself: same uid twice
    (("viewer",), "read", "Invoice", "inv-1", {"tenant": 5}),  # does not match the schema
    (("viewer",), "read", "Invoice", "inv-1", {"amount_cents": "lots"}),
]


@pytest.mark.parametrize(("roles", "action", "rtype", "rid", "attrs"), CASES)
def test_cached_handles_give_the_answer_of_the_plain_entity_list(compiled, roles, action, rtype, rid, attrs):
    handles = EntityHandles(compiled.schema)
    principal = _principal(roles=roles)
    entities = _entities(principal, rtype, rid, attrs)
    request = _request(principal, action, rtype, rid)
    expected = _answer(compiled, request, entities)
    for _ in range(3):  # miss, then hits
        assert _answer(compiled, request, handles.entities_for(entities)) == expected


def test_a_hit_returns_the_same_parsed_handle_and_entities_that_cedar_refuses_are_never_held(compiled):
    handles = EntityHandles(compiled.schema)
    good = _entities(_principal())
    first = handles.entities_for(good)
    assert isinstance(first, cedarpy.Entities) and handles.entities_for(good) is first
    held = len(handles)
    bad = _entities(_principal(), attrs={"tenant": 5})
    assert isinstance(handles.entities_for(bad), str)
    assert len(handles) == held


def test_one_principal_many_resources_differ_only_in_the_resource(compiled):
    handles = EntityHandles(compiled.schema)
    principal = _principal()
    a = handles.entities_for(_entities(principal, rid="inv-1"))
    b = handles.entities_for(_entities(principal, rid="inv-2"))
    assert a is not b
    assert _answer(compiled, _request(principal, rid="inv-2"), b)[0] == "Allow"
    # a resource of another tenant in the cached set is still that tenant's: the guardrail forbids it
    other = _entities(principal, rid="inv-3")
    other[1]["attrs"]["tenant"] = "globex"
    decision, reasons, _ = _answer(compiled, _request(principal, rid="inv-3"), handles.entities_for(other))
    assert decision == "Deny" and reasons


def test_the_cache_is_bounded_and_large_entity_sets_are_not_held(compiled):
    handles = EntityHandles(compiled.schema, capacity=8)
    for n in range(50):
        handles.entities_for(_entities(_principal(subject=f"user-{n}")))
    assert len(handles) <= 8
    huge = _entities(_principal(), attrs={"note": "x" * MAX_TEXT})
    held = len(handles)
    assert isinstance(handles.entities_for(huge), str) and len(handles) == held


def test_engine_answers_do_not_depend_on_the_cache_order(compiled):
    # the same principal alternating between tenants' resources and roles: each answer as if uncached
    engine = Engine(compiled)
    for _round in range(2):
        for tenant, roles, action, expected in [("acme", ("viewer",), "read", "ALLOW"),
                                                ("globex", ("viewer",), "read", "DENY"),
                                                ("acme", (), "read", "DENY"),
                                                ("acme", ("viewer",), "delete", "DENY")]:
            principal = _principal(roles=roles)
            out = engine.evaluate(principal, action, Resource("Invoice", "inv-1", tenant), {"tenant": tenant},
                                  {"intent": ""})
            assert out.decision.value == expected, (tenant, roles, action)
