"""The parsed-entity cache must never change a decision: a hit is the same entity set, a miss or a refusal
falls back to what Cedar does with the plain entity list."""

import json
from pathlib import Path

import cedarpy
import pytest

from tenantgate.core.engine import Engine
from tenantgate.core.entitycache import MAX_TEXT, EntityHandles
from tenantgate.core.model import Principal, Resource
from tenantgate.core.schema import principal_entity
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


def _entities_for(handles, entities):
    """What the cache gives Cedar for the entity list ``entities``: a parsed handle, or their JSON text."""
    return handles.for_text(json.dumps(entities), len(entities))


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
    for _ in range(4):  # seen once (text), parsed, then hits
        assert _answer(compiled, request, _entities_for(handles, entities)) == expected


def test_a_set_is_parsed_the_second_time_it_comes_and_then_the_same_handle_is_returned(compiled):
    handles = EntityHandles(compiled.schema)
    good = _entities(_principal())
    assert isinstance(_entities_for(handles, good), str) and len(handles) == 0  # seen once: as without a cache
    second = _entities_for(handles, good)
    assert isinstance(second, cedarpy.Entities) and _entities_for(handles, good) is second
    bad = _entities(_principal(), attrs={"tenant": 5})
    assert all(isinstance(_entities_for(handles, bad), str) for _ in range(3))  # refused by Cedar: never held
    assert len(handles) == 1


def test_distinct_requests_fill_nothing(compiled):
    handles = EntityHandles(compiled.schema)
    for n in range(500):
        assert isinstance(_entities_for(handles, _entities(_principal(), rid=f"inv-{n}")), str)
    assert len(handles) == 0 and handles.entities_held == 0


def test_a_cached_principal_set_with_another_tenants_resource_is_still_that_tenants(compiled):
    handles = EntityHandles(compiled.schema)
    principal = _principal()
    other = _entities(principal, rid="inv-3")
    other[1]["attrs"]["tenant"] = "globex"
    for _ in range(3):
        decision, reasons, _ = _answer(compiled, _request(principal, rid="inv-3"), _entities_for(handles, other))
        assert decision == "Deny" and reasons


def test_the_cache_is_bounded_by_handles_and_by_entities_and_large_sets_are_not_held(compiled):
    handles = EntityHandles(compiled.schema, capacity=8)
    for n in range(50):
        for _ in range(2):
            _entities_for(handles, _entities(_principal(subject=f"user-{n}")))
    assert len(handles) == 8
    per_handle = handles.entities_held // 8
    small = EntityHandles(compiled.schema, max_entities=per_handle * 8 * 3)
    for n in range(50):
        for _ in range(2):
            _entities_for(small, _entities(_principal(subject=f"user-{n}")))
    assert small.entities_held <= per_handle * 24 and len(small) == 24  # the entity budget, not the capacity
    tiny = EntityHandles(compiled.schema, max_entities=per_handle * 4)  # one handle > 1/8 of the budget
    for _ in range(3):
        assert isinstance(_entities_for(tiny, _entities(_principal())), str)
    huge = _entities(_principal(), attrs={"note": "x" * MAX_TEXT})
    for _ in range(3):
        assert isinstance(_entities_for(handles, huge), str)


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


@pytest.mark.parametrize(("roles", "action", "rtype", "rid", "attrs"),
                         [*CASES, (("viewer",), "fly", "Invoice", "inv-1", {}),  # no such action
                          (("viewer",), "read", "Nope", "x", {})])  # no such entity type
def test_the_native_cedar_call_answers_as_the_public_is_authorized(compiled, monkeypatch, roles, action, rtype, rid,
                                                                    attrs):
    """``engine.answer_text`` calls cedarpy's native function directly; its answer must be the public API's."""
    from tenantgate.core import engine

    principal = _principal(roles=roles)
    request = _request(principal, action, rtype, rid)
    handles = EntityHandles(compiled.schema)
    text = _entities_for(handles, _entities(principal, rtype, rid, attrs))
    handle = _entities_for(handles, _entities(principal, rtype, rid, attrs))  # a parsed handle where Cedar accepts it
    public = cedarpy.is_authorized(request, compiled.policy_set, text, schema=compiled.schema)
    expected = (public.decision.value, list(public.diagnostics.reasons), list(public.diagnostics.errors))
    native_request = dict(request, context='{"intent": ""}')

    def seen(text):  # as Engine.evaluate reads an answer
        answer = json.loads(text)
        diagnostics = answer.get("diagnostics") or {}
        return answer.get("decision"), list(diagnostics.get("reason") or ()), list(diagnostics.get("errors") or ())

    for entities in (text, handle):
        assert seen(engine.answer_text(native_request, compiled.policy_set, entities, compiled.schema)) == expected
    monkeypatch.setattr(engine, "_NATIVE_BATCH", None)  # a cedarpy without the native entry point
    assert seen(engine.answer_text(native_request, compiled.policy_set, text, compiled.schema)) == expected


def test_principal_entity_texts_are_kept_per_principal_value_and_bounded(compiled, monkeypatch):
    from tenantgate.core import engine as engine_module

    monkeypatch.setattr(engine_module, "PRINCIPAL_TEXTS", 16)
    engine = Engine(compiled)
    for n in range(100):
        viewer, outsider = _principal(subject=f"user-{n}"), _principal(subject=f"user-{n}", roles=())
        resource = Resource("Invoice", f"inv-{n}", "acme")
        assert engine.evaluate(viewer, "read", resource, {"tenant": "acme"}, {"intent": ""}).decision.value == "ALLOW"
        # The same subject without the role is another principal value: never served the viewer's entity.
        assert engine.evaluate(outsider, "read", resource, {"tenant": "acme"}, {"intent": ""}).decision.value == "DENY"
        assert len(engine._principal_texts) <= 16


ERRORING_FORBID = cedarpy.PolicySet.from_str(
    'permit (principal, action, resource);\n'
    'forbid (principal, action, resource) when { resource.amount > 100 };')  # errors: no attribute amount
_PROBE_REQUEST = {"principal": {"type": "User", "id": "alice"}, "action": {"type": "Action", "id": "read"},
                  "resource": {"type": "Invoice", "id": "inv-1"}, "context": "{}"}
_PROBE_ENTITIES = '[{"uid": {"type": "Invoice", "id": "inv-1"}, "attrs": {}, "parents": []}]'


def _outcome_of(engine_module):
    answer = json.loads(engine_module.answer_text(_PROBE_REQUEST, ERRORING_FORBID, _PROBE_ENTITIES, None))
    diagnostics = answer.get("diagnostics") or {}
    return engine_module.interpret(answer["decision"], tuple(diagnostics.get("reason") or ()),
                                   tuple(diagnostics.get("errors") or ()))


def test_an_allow_with_an_erroring_forbid_is_denied_through_the_native_call():
    from tenantgate.core import engine

    assert engine.native_agrees()  # the installed cedarpy: the native call is in use
    outcome = _outcome_of(engine)
    assert outcome.decision.value == "DENY" and outcome.reason.value == "internal_error"


@pytest.mark.parametrize("broken", ["renamed errors key", "changed signature"])
def test_a_native_call_that_answers_otherwise_is_not_used(monkeypatch, broken):
    """A cedarpy release whose private entry point changed must not turn an erroring forbid into an allow."""
    from tenantgate.core import engine

    real = engine._NATIVE_BATCH

    def renamed(requests, policies, entities, schema, verbose):
        answers = [json.loads(a) for a in real(requests, policies, entities, schema, verbose)]
        for a in answers:
            a["diagnostics"]["failures"] = a["diagnostics"].pop("errors")
        return [json.dumps(a) for a in answers]

    def changed(requests, policies, entities):
        raise TypeError("is_authorized_batch() takes 3 positional arguments")

    monkeypatch.setattr(engine, "_NATIVE_BATCH", renamed if broken == "renamed errors key" else changed)
    monkeypatch.setattr(engine, "_NATIVE_CHECKED", None)
    assert not engine.native_agrees()
    outcome = _outcome_of(engine)  # answered by the public API instead
    assert outcome.decision.value == "DENY" and outcome.reason.value == "internal_error"


def test_a_very_large_principal_entity_is_not_held(compiled):
    engine = Engine(compiled)
    crowded = _principal(roles=["viewer", *(f"role-{n:04d}-{'x' * 24}" for n in range(200))])
    resource = Resource("Invoice", "inv-1", "acme")
    assert engine.evaluate(crowded, "read", resource, {"tenant": "acme"}, {"intent": ""}).decision.value == "ALLOW"
    assert crowded not in engine._principal_texts and len(engine._principal_texts) == 0


def _pair(principal, rtype="Invoice", rid="inv-1", attrs=None):
    first, second = (json.dumps(e) for e in _entities(principal, rtype, rid, attrs))
    return f"[{first}, {second}]", first, second


@pytest.mark.parametrize(("roles", "action", "rtype", "rid", "attrs"), CASES)
def test_a_principal_handle_with_the_resource_added_gives_the_answer_of_the_plain_entity_list(
        compiled, roles, action, rtype, rid, attrs):
    handles = EntityHandles(compiled.schema)
    principal = _principal(roles=roles)
    for n in range(2):  # the principal's own set seen twice: held from then on
        handles.for_pair(*_pair(principal, rid=f"warm-{n}"))
    request = _request(principal, action, rtype, rid)
    text, first, second = _pair(principal, rtype, rid, attrs)
    expected = _answer(compiled, request, json.loads(text))
    for _ in range(4):  # a new pair (from the principal's handle), parsed, then hits
        assert _answer(compiled, request, handles.for_pair(text, first, second)) == expected


def test_a_caller_asking_about_new_resources_pays_for_the_resource_only(compiled, monkeypatch):
    handles = EntityHandles(compiled.schema)
    principal = _principal()
    assert isinstance(handles.for_pair(*_pair(principal, rid="inv-0")), str)  # nothing seen before: the text
    parsed = []
    real = cedarpy.Entities.from_json_str
    monkeypatch.setattr(cedarpy.Entities, "from_json_str",
                        staticmethod(lambda text, **kw: parsed.append(text) or real(text, **kw)))
    for n in range(1, 20):
        assert isinstance(handles.for_pair(*_pair(principal, rid=f"inv-{n}")), cedarpy.Entities)
    assert len(parsed) == 1 and "inv" not in parsed[0]  # the principal's set alone, parsed once
    bad = _pair(principal, rid="inv-x", attrs={"tenant": 5})  # refused by the schema: Cedar gets the text
    assert all(handles.for_pair(*bad) == bad[0] for _ in range(3))
