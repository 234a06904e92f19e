"""AuthZEN member rules over a real server (review findings): a tenant stated where gRPC names it is refused,
not ignored; an ill-typed member of one item is that item's audited denial; messages name AuthZEN members."""

import httpx
import pytest

from support.audit import audit_lines
from support.authzen import authzen_server, bearer, entity_policies, evaluation
from support.issuers import TestIssuer

EVALUATION, EVALUATIONS = "/access/v1/evaluation", "/access/v1/evaluations"
ALICE = {"type": "user", "id": "alice"}
READ = {"name": "read"}


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    return TestIssuer(tmp_path_factory.mktemp("issuer"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, issuer):
    tmp = tmp_path_factory.mktemp("authzen-members")
    with authzen_server(tmp, issuer, entity_policies(tmp)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=10) as http:
        yield http


@pytest.fixture(scope="module")
def alice(issuer):
    return issuer.mint(tenant="acme", sub="alice", roles=["viewer"])


def test_a_tenant_directly_on_the_resource_is_400_naming_resource_properties_tenant(client, alice):
    # Review finding: this was ALLOW (the member ignored, the resource taken as acme's) where
    # properties.tenant gives cross_tenant.
    as_grpc = {"subject": ALICE, "action": READ, "resource": {"type": "Invoice", "id": "inv-9", "tenant": "globex"}}
    response = client.post(EVALUATION, json=as_grpc, headers=bearer(alice, **{"X-Request-ID": "m-1"}))
    assert response.status_code == 400, response.text
    assert "resource.tenant is not an AuthZEN member" in response.text
    assert "resource.properties.tenant" in response.text and response.headers["x-request-id"] == "m-1"
    as_authzen = evaluation("alice", "read", "inv-9", tenant="globex")
    assert client.post(EVALUATION, json=as_authzen, headers=bearer(alice)).json()["context"]["reason"] == "cross_tenant"


def test_a_tenant_on_the_subject_is_400(client, alice):
    body = {**evaluation("alice", "read"), "subject": {**ALICE, "tenant": "acme"}}
    response = client.post(EVALUATION, json=body, headers=bearer(alice))
    assert response.status_code == 400 and "subject.tenant is not an AuthZEN member" in response.text


def test_ill_typed_or_refused_item_members_are_per_item_audited_denials(client, alice, server):
    _base, app = server
    body = {"subject": ALICE, "action": READ,
            "evaluations": [{"resource": {"type": "Invoice", "id": "1"}},
                            {"resource": "x"},
                            {"resource": {"type": "Invoice", "id": "inv-9", "tenant": "globex"}},
                            {"resource": {"type": "Invoice", "id": "3"}, "context": ["mfa"]},
                            {"resource": {"type": "Invoice", "id": "4"}}]}
    response = client.post(EVALUATIONS, json=body, headers=bearer(alice))
    assert response.status_code == 200, response.text
    answers = response.json()["evaluations"]
    assert [a["decision"] for a in answers] == [True, False, False, False, True]
    messages = [a["context"].get("error", {}).get("message") for a in answers]
    assert messages[1:4] == ["evaluations[1].resource must be an object",
                             "evaluations[2].resource.tenant is not an AuthZEN member: the owning tenant is "
                             "stated as evaluations[2].resource.properties.tenant",
                             "evaluations[3].context must be an object"]
    records = audit_lines(app)
    for answer in answers[1:4]:
        assert answer["context"]["reason"] == "invalid_request" and answer["context"]["error"]["status"] == 400
        assert records[answer["context"]["decision_id"]]["reason"] == "invalid_request"


def test_a_refused_item_is_audited_with_what_it_stated_its_tenant_included(client, alice, server):
    # Review finding: every refused item was recorded as the caller's tenant's request about nothing (no action,
    # type or id), so a cross-tenant probe in gRPC's shape read as same-tenant and `audit query --tenant globex`
    # missed it.
    _base, app = server
    long_id = "i" * 1000
    body = {"subject": ALICE, "action": READ,
            "evaluations": [{"resource": {"type": "Invoice", "id": "inv-9", "tenant": "globex"}},
                            {"resource": {"type": "Invoice", "id": long_id, "properties": {"tenant": "globex"},
                                          "tenant": "initech"}},
                            {"resource": {"type": "Invoice", "id": "", "properties": {"tenant": "globex"}}},
                            {"resource": {"type": "Invoice", "id": "inv-2", "tenant": 7}},
                            {"resource": {"type": 5, "id": "inv-3"}, "action": {"name": ["read"]}}]}
    answers = client.post(EVALUATIONS, json=body, headers=bearer(alice)).json()["evaluations"]
    records = audit_lines(app)
    stated = [records[a["context"]["decision_id"]] for a in answers]
    assert {r["reason"] for r in stated} == {"invalid_request"}
    assert [(r["action"], r["resource_type"], r["resource_id"][:10], r["resource_tenant"]) for r in stated] == [
        ("read", "Invoice", "inv-9", "globex"),
        ("read", "Invoice", "i" * 10, "initech"),
        ("read", "Invoice", "", "globex"),
        ("read", "Invoice", "inv-2", ""),  # a tenant member that is not a string: not the caller's either
        ("", "", "inv-3", "acme"),  # no tenant member at all: the caller's, as for a valid item
    ]
    assert len(stated[1]["resource_id"]) < 300  # clipped as every record's values are


@pytest.mark.parametrize(("body", "named"), [
    (evaluation("alice", "read", amount_cents=1.5), "resource.properties.amount_cents: only whole numbers"),
    (evaluation("alice", "read", amount_cents=None), "resource.properties.amount_cents: null"),
    (evaluation("alice", "read", amount_cents=1e300), "resource.properties.amount_cents: "),
    ({**evaluation("alice", "read"), "context": {"mfa": [1.5]}}, "context.mfa[]: only whole numbers"),
    ({**evaluation("alice", "read"), "context": {"breakGlass": {}}}, "context key(s) breakGlass are reserved"),
    (evaluation("alice", "read", tenant="acme\u200b"), "resource.properties.tenant is not a valid tenant id"),
    ({**evaluation("alice", "re\nad")}, "action.name must be 1-128 printable characters"),
    ({**evaluation("alice", "read"), "context": {"intent": "x" * 200}}, "context.intent must be at most 128"),
])
def test_messages_name_authzen_members_not_grpc_fields(client, alice, body, named):
    # Review finding: "resource.attributes.amount_cents: only whole numbers are supported" for a float in
    # resource.properties: the gRPC field name, which an AuthZEN caller never sent.
    response = client.post(EVALUATION, json=body, headers=bearer(alice))
    assert response.status_code == 200, response.text
    context = response.json()["context"]
    assert context["reason"] == "invalid_request"
    assert context["reason_admin"]["en"].startswith(named), context["reason_admin"]
    assert "resource.attributes" not in context["reason_admin"]["en"]
