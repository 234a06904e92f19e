"""Tenant isolation on the AuthZEN API, through a real HTTP server: both subject modes, entity data,
break-glass, and the cross-tenant matrix (a caller bound to tenant A gets no allow on tenant B's resources)."""

import httpx
import pytest

from support.audit import audit_lines
from support.authzen import PEP_ROLE, authzen_server, bearer, entity_policies, evaluation
from support.issuers import TestIssuer
from tenantgate.core.breakglass import GrantRequest

ACTIONS = ("read", "update", "delete", "approve", "reconcile")


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    return TestIssuer(tmp_path_factory.mktemp("issuer"))


@pytest.fixture(scope="module")
def user_token(tmp_path_factory, issuer):
    tmp = tmp_path_factory.mktemp("user-token")
    with authzen_server(tmp, issuer, entity_policies(tmp), mode="user_token") as (base, app), \
            httpx.Client(base_url=base, timeout=10) as client:
        yield client, app


@pytest.fixture(scope="module")
def trusted_pep(tmp_path_factory, issuer):
    tmp = tmp_path_factory.mktemp("trusted-pep")
    with authzen_server(tmp, issuer, entity_policies(tmp), mode="trusted_pep") as (base, app), \
            httpx.Client(base_url=base, timeout=10) as client:
        yield client, app


def _pep(issuer, tenant="acme", sub="todo-backend", roles=(PEP_ROLE,)):
    return issuer.mint(tenant=tenant, sub=sub, roles=list(roles))


def _ask(client, token, body, path="/access/v1/evaluation"):
    return client.post(path, json=body, headers=bearer(token))


# ------------------------------------------------------------------------------------------- user token


def test_user_token_mode_requires_the_stated_subject_to_be_the_tokens(user_token, issuer):
    client, app = user_token
    alice = issuer.mint(tenant="acme", sub="alice", roles=["viewer"])
    assert _ask(client, alice, evaluation("alice", "read")).json()["decision"] is True
    for body in (evaluation("bob", "read"), {**evaluation("alice", "read"), "subject": {"type": "robot",
                                                                                          "id": "alice"}}):
        response = _ask(client, alice, body)
        assert response.status_code == 403 and response.text.startswith("subject_mismatch")
        record = audit_lines(app)[response.headers["x-tenantgate-decision-id"]]
        assert (record["reason"], record["subject"]) == ("subject_mismatch", "alice")


def test_user_token_mode_takes_tenant_and_roles_from_the_token_never_from_subject_properties(user_token, issuer):
    client, app = user_token
    alice = issuer.mint(tenant="acme", sub="alice", roles=["viewer"])
    body = evaluation("alice", "update")
    body["subject"]["properties"] = {"roles": ["admin"], "tenant": "globex"}
    response = _ask(client, alice, body).json()
    assert (response["decision"], response["context"]["reason"]) == (False, "no_permit")
    record = audit_lines(app)[response["context"]["decision_id"]]
    assert (record["principal_tenant"], record["resource_tenant"], record["stated_subject"]) == ("acme", "acme",
                                                                                                 "alice")


def test_a_pep_role_gives_no_privilege_in_user_token_mode(user_token, issuer):
    client, _app = user_token
    assert _ask(client, _pep(issuer), evaluation("alice", "read")).status_code == 403


def test_a_mismatching_item_of_a_batch_is_that_items_403(user_token, issuer):
    client, _app = user_token
    alice = issuer.mint(tenant="acme", sub="alice", roles=["viewer"])
    body = {"action": {"name": "read"}, "resource": {"type": "Invoice", "id": "inv-1"},
            "evaluations": [{"subject": {"type": "user", "id": "alice"}},
                            {"subject": {"type": "user", "id": "mallory"}}]}
    ok, refused = _ask(client, alice, body, "/access/v1/evaluations").json()["evaluations"]
    assert ok["decision"] is True
    assert refused["decision"] is False and refused["context"]["error"]["status"] == 403


def test_break_glass_applies_to_authzen_like_check(user_token, issuer):
    client, app = user_token
    oscar = issuer.mint(tenant="platform", sub="oscar", roles=["breakglass-operator"])
    body = evaluation("oscar", "read", tenant="acme")
    assert _ask(client, oscar, body).json()["context"]["reason"] == "cross_tenant"
    service = app.breakglass
    grant = service.request(service.caller(oscar), GrantRequest("acme", ("read",), "INC-7 outage", "INC-7", 600))
    service.approve(service.caller(issuer.mint(tenant="platform", sub="ada", roles=["breakglass-approver"])),
                    grant.id)
    try:
        answer = _ask(client, oscar, body).json()
        assert (answer["decision"], answer["context"]["reason"]) == (True, "allow_break_glass")
        assert audit_lines(app)[answer["context"]["decision_id"]]["grant_id"] == grant.id
    finally:
        service.revoke(service.caller(oscar), grant.id, "done")


# ------------------------------------------------------------------------------------------ trusted PEP


def test_a_trusted_pep_states_a_user_whose_attributes_come_from_the_tenants_entity_data(trusted_pep, issuer):
    client, app = trusted_pep
    pep = _pep(issuer)
    # alice is a viewer in acme's entity data and a member of acme's finance group: she may approve.
    answer = _ask(client, pep, evaluation("alice", "approve")).json()
    assert (answer["decision"], answer["context"]["policy_ids"]) == (True, ["acme-finance-approves"])
    record = audit_lines(app)[answer["context"]["decision_id"]]
    # Both are on record: the enforcement point (the token's subject) and the user it spoke for.
    assert (record["subject"], record["stated_subject"], record["principal_type"], record["principal_tenant"]) == (
        "todo-backend", "alice", "User", "acme")


def test_subject_properties_never_give_a_stated_subject_attributes(trusted_pep, issuer):
    client, _app = trusted_pep
    body = evaluation("erin", "approve")
    body["subject"]["properties"] = {"roles": ["admin"], "tenant": "globex"}
    assert _ask(client, _pep(issuer), body).json()["context"]["reason"] == "no_permit"  # erin is an editor
    assert _ask(client, _pep(issuer), evaluation("erin", "update")).json()["decision"] is True


def test_only_a_token_with_the_pep_role_may_state_subjects(trusted_pep, issuer):
    client, _app = trusted_pep
    plain = issuer.mint(tenant="acme", sub="alice", roles=["viewer"])
    response = _ask(client, plain, evaluation("alice", "read"))
    assert response.status_code == 403 and response.text.startswith("pep_role_missing")
    batch = {"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"},
             "evaluations": [{"resource": {"type": "Invoice", "id": "1"}},
                             {"resource": {"type": "Invoice", "id": "2"}}]}
    assert _ask(client, plain, batch, "/access/v1/evaluations").status_code == 403
    agent = issuer.mint(tenant="acme", sub="alice", roles=[PEP_ROLE], act={"sub": "bot"}, intents=["x"])
    assert _ask(client, agent, evaluation("alice", "read")).status_code == 403


def test_a_subject_missing_from_the_tenants_entity_data_is_denied(trusted_pep, issuer):
    client, _app = trusted_pep
    for subject in ("nobody", "gina"):  # gina exists, but in globex's entity data: never resolved for acme
        answer = _ask(client, _pep(issuer), evaluation(subject, "read")).json()
        assert (answer["decision"], answer["context"]["reason"]) == (False, "subject_unknown")


def test_the_same_user_id_in_two_tenants_are_two_users(trusted_pep, issuer):
    client, _app = trusted_pep
    # globex's alice has no roles and is in no group: globex's PEP gets nothing for her.
    answer = _ask(client, _pep(issuer, tenant="globex"), evaluation("alice", "approve")).json()
    assert answer["context"]["reason"] == "no_permit"


def test_a_stated_subject_never_uses_break_glass(trusted_pep, issuer):
    client, app = trusted_pep
    oscar = issuer.mint(tenant="platform", sub="oscar", roles=["breakglass-operator"])
    service = app.breakglass
    grant = service.request(service.caller(oscar), GrantRequest("acme", ("read",), "INC-8 outage", "INC-8", 600))
    service.approve(service.caller(issuer.mint(tenant="platform", sub="ada", roles=["breakglass-approver"])),
                    grant.id)
    try:
        answer = _ask(client, _pep(issuer, tenant="platform"), evaluation("oscar", "read", tenant="acme")).json()
        assert (answer["decision"], answer["context"]["reason"]) == (False, "cross_tenant")
    finally:
        service.revoke(service.caller(oscar), grant.id, "done")


# ---------------------------------------------------------------------------------- cross-tenant matrix


def _matrix(client, token, subject, resource_tenant):
    bodies = [evaluation(subject, action, f"inv-{action}", tenant=resource_tenant) for action in ACTIONS]
    bodies.append(evaluation(subject, "read", "inv-paid", tenant=resource_tenant))  # an id acme's data knows
    answers = [_ask(client, token, body) for body in bodies]
    batch = {"subject": {"type": "user", "id": subject},
             "evaluations": [{k: v for k, v in body.items() if k != "subject"} for body in bodies]}
    batched = _ask(client, token, batch, "/access/v1/evaluations")
    return answers, batched


@pytest.mark.parametrize("caller_tenant,resource_tenant", [("acme", "globex"), ("globex", "acme")])
def test_user_token_caller_of_one_tenant_gets_no_allow_on_another(user_token, issuer, caller_tenant,
                                                                  resource_tenant):
    client, _app = user_token
    boss = issuer.mint(tenant=caller_tenant, sub="boss", roles=["admin", "editor", "viewer"])
    answers, batched = _matrix(client, boss, "boss", resource_tenant)
    assert all(a.status_code == 200 and a.json()["decision"] is False for a in answers)
    assert {a.json()["context"]["reason"] for a in answers} == {"cross_tenant"}
    assert [e["decision"] for e in batched.json()["evaluations"]] == [False] * len(answers)


@pytest.mark.parametrize("caller_tenant,resource_tenant,subject", [
    ("acme", "globex", "adam"),    # an acme admin, on globex's resources
    ("acme", "globex", "gina"),    # globex's admin, stated by acme's PEP
    ("globex", "acme", "gina"),    # a globex admin, on acme's resources
    ("globex", "acme", "adam"),    # acme's admin, stated by globex's PEP
])
def test_trusted_pep_of_one_tenant_gets_no_allow_on_another(trusted_pep, issuer, caller_tenant, resource_tenant,
                                                            subject):
    client, _app = trusted_pep
    answers, batched = _matrix(client, _pep(issuer, tenant=caller_tenant), subject, resource_tenant)
    assert all(a.status_code == 200 and a.json()["decision"] is False for a in answers)
    assert {a.json()["context"]["reason"] for a in answers} <= {"cross_tenant", "subject_unknown"}
    assert [e["decision"] for e in batched.json()["evaluations"]] == [False] * len(answers)
