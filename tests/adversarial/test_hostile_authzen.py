"""Hostile AuthZEN bodies against a real server: never a 5xx, never an allow outside the caller's tenant.

An acme-bound caller (an admin in user_token mode, acme's PEP in trusted_pep mode) sends generated
requests: look-alike tenant names, tenant claims in every property bag, forged reserved context keys,
odd JSON values. Whatever it sends, a resource that is not exactly acme's is never allowed.
"""

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.authzen import PEP_ROLE, authzen_server, bearer, entity_policies
from support.issuers import TestIssuer

TENANTS = st.sampled_from(["acme", "globex", "ACME", " acme", "acme ", "acme\u200b", "аcme", "acme\x00", "",
                           "platform", "acme/globex", "*", "globex.acme"])
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                 st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=3)), max_leaves=8)
SUBJECTS = st.sampled_from(["alice", "adam", "gina", "oscar", "ALICE", "alice\u200b", "", "*"])
ACTIONS = st.sampled_from(["read", "update", "delete", "approve", "reconcile", "share", "comment", "admin"])


@st.composite
def hostile_evaluations(draw):
    properties = draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3))
    if draw(st.booleans()):
        properties["tenant"] = draw(st.one_of(TENANTS, JSON_VALUES))
    context = draw(st.dictionaries(st.sampled_from(["intent", "breakGlass", "mfa", "tenant", "__entity"]),
                                   JSON_VALUES, max_size=3))
    subject = {"type": draw(st.sampled_from(["user", "User", "agent"])), "id": draw(SUBJECTS),
               "properties": {"tenant": draw(TENANTS), "roles": ["admin", PEP_ROLE]}}
    return {"subject": subject, "action": {"name": draw(ACTIONS)},
            "resource": {"type": draw(st.sampled_from(["Invoice", "Document", "Ticket"])), "id": "inv-1",
                         "properties": properties},
            "context": context}


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    return TestIssuer(tmp_path_factory.mktemp("issuer"))


@pytest.fixture(scope="module", params=["user_token", "trusted_pep"])
def caller(request, tmp_path_factory, issuer):
    tmp = tmp_path_factory.mktemp(request.param)
    with authzen_server(tmp, issuer, entity_policies(tmp), mode=request.param) as (base, _app), \
            httpx.Client(base_url=base, timeout=10) as client:
        yield request.param, client


def _owned_by_acme(body):
    properties = body["resource"]["properties"]
    return "tenant" not in properties or properties["tenant"] == "acme"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=hostile_evaluations())
def test_no_hostile_evaluation_allows_outside_the_callers_tenant(caller, issuer, body):
    mode, client = caller
    if mode == "user_token":
        token = issuer.mint(tenant="acme", sub=body["subject"]["id"] or "x", roles=["admin", "editor", "viewer"])
    else:
        token = issuer.mint(tenant="acme", sub="backend", roles=[PEP_ROLE])
    response = client.post("/access/v1/evaluation", json=body, headers=bearer(token))
    assert response.status_code in (200, 400, 403), response.text
    if response.status_code == 200:
        answer = response.json()
        assert isinstance(answer["decision"], bool) and answer["context"]["decision_id"]
        if not _owned_by_acme(body):
            assert answer["decision"] is False, body
    batch = client.post("/access/v1/evaluations", headers=bearer(token),
                        json={"evaluations": [body, body], "options": {"evaluations_semantic": "execute_all"}})
    assert batch.status_code in (200, 403), batch.text
    if batch.status_code == 200 and not _owned_by_acme(body):
        assert [item["decision"] for item in batch.json()["evaluations"]] == [False, False]
