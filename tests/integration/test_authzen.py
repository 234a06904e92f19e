"""The AuthZEN Authorization API 1.0 over a real HTTP server on a loopback port: protocol rules.

Tenant binding (modes, cross-tenant matrix, entity data) is in test_authzen_tenancy.py.
"""

import json
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from support.audit import audit_lines
from support.authzen import authzen_server, bearer, entity_policies, evaluation, self_signed
from support.issuers import TestIssuer
from support.server import swapping_engines


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    return TestIssuer(tmp_path_factory.mktemp("issuer"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, issuer):
    tmp = tmp_path_factory.mktemp("authzen")
    with authzen_server(tmp, issuer, entity_policies(tmp), max_evaluations=5, max_body_bytes=8192,
                        max_concurrent_requests=2) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    base_url, _app = server
    with httpx.Client(base_url=base_url, timeout=10) as http:
        yield http


@pytest.fixture(scope="module")
def alice(issuer):
    return issuer.mint(tenant="acme", sub="alice", roles=["viewer"])


def test_an_allow_and_a_deny_are_both_200_with_our_reason_and_decision_id(client, alice, server):
    _base, app = server
    allow = client.post("/access/v1/evaluation", json=evaluation("alice", "read"), headers=bearer(alice))
    deny = client.post("/access/v1/evaluation", json=evaluation("alice", "update"), headers=bearer(alice))
    assert (allow.status_code, deny.status_code) == (200, 200)
    assert allow.headers["content-type"].startswith("application/json")
    assert allow.json()["decision"] is True and allow.json()["context"]["reason"] == "allow"
    body = deny.json()
    assert body["decision"] is False and body["context"]["reason"] == "no_permit"
    assert deny.headers["x-tenantgate-decision-id"] == body["context"]["decision_id"]
    record = audit_lines(app)[body["context"]["decision_id"]]
    assert (record["api"], record["decision"], record["reason"]) == ("authzen", "DENY", "no_permit")


def test_unknown_members_are_ignored(client, alice):
    body = {**evaluation("alice", "read"), "extension": {"x": 1}}
    body["subject"]["flavour"] = "vanilla"
    assert client.post("/access/v1/evaluation", json=body, headers=bearer(alice)).json()["decision"] is True


@pytest.mark.parametrize("content,content_type,status", [
    (b"{", "application/json", 400),
    (b"[1, 2]", "application/json", 400),
    (b'{"subject": 1, "subject": 2}', "application/json", 400),  # duplicate members (I-JSON)
    (b'{"a": NaN}', "application/json", 400),
    (b"\xff\xfe{}", "application/json", 400),
    (json.dumps(evaluation("alice", "read")).encode(), "text/plain", 400),
    (json.dumps(evaluation("alice", "read")).encode(), "application/json; charset=latin-1", 400),
    (json.dumps({"subject": {"type": "user"}, "action": {"name": "read"}}).encode(), "application/json", 400),
])
def test_non_json_bodies_bad_content_types_and_missing_members_are_400(client, alice, content, content_type, status):
    response = client.post("/access/v1/evaluation", content=content,
                           headers=bearer(alice, **{"Content-Type": content_type}))
    assert response.status_code == status and response.text


def test_a_body_over_the_limit_is_413(client, alice):
    big = {**evaluation("alice", "read"), "context": {"blob": "x" * 10_000}}
    assert client.post("/access/v1/evaluation", json=big, headers=bearer(alice)).status_code == 413


@pytest.mark.parametrize("headers,challenge", [
    ({}, 'Bearer realm="tenantgate"'),
    ({"Authorization": "Bearer not-a-token"}, 'Bearer realm="tenantgate", error="invalid_token"'),
    ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, 'Bearer realm="tenantgate", error="invalid_token"'),
])
def test_an_unauthenticated_caller_gets_401_with_www_authenticate(client, headers, challenge, server):
    _base, app = server
    response = client.post("/access/v1/evaluation", json=evaluation("alice", "read"), headers=headers)
    assert response.status_code == 401 and response.headers["www-authenticate"] == challenge
    # Still a decision: denied and audited like any other.
    assert audit_lines(app)[response.headers["x-tenantgate-decision-id"]]["decision"] == "DENY"


def test_two_authorization_headers_are_refused(client, alice):
    response = client.post("/access/v1/evaluation", json=evaluation("alice", "read"),
                           headers=[("Authorization", f"Bearer {alice}"), ("Authorization", f"Bearer {alice}")])
    assert response.status_code == 401


def test_x_request_id_is_echoed_on_every_answer(client, alice):
    for body, headers in ((evaluation("alice", "read"), bearer(alice)), ({}, bearer(alice)),
                          (evaluation("alice", "read"), {})):
        response = client.post("/access/v1/evaluation", json=body, headers={**headers, "X-Request-ID": "req-42"})
        assert response.headers["x-request-id"] == "req-42"
    assert "x-request-id" not in client.post("/access/v1/evaluation", json=evaluation("alice", "read"),
                                             headers=bearer(alice)).headers


def test_discovery_lists_the_evaluation_endpoints_only(client, server):
    base, _app = server
    response = client.get("/.well-known/authzen-configuration")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    assert response.json() == {"policy_decision_point": base,
                               "access_evaluation_endpoint": f"{base}/access/v1/evaluation",
                               "access_evaluations_endpoint": f"{base}/access/v1/evaluations"}


def test_wrong_methods_and_paths_are_refused(client, alice):
    wrong_method = client.get("/access/v1/evaluation", headers=bearer(alice))
    assert wrong_method.status_code == 405 and "POST" in wrong_method.headers["allow"]
    assert client.post("/access/v1/search/subject", json={}, headers=bearer(alice)).status_code == 404


# ------------------------------------------------------------------------------------------ evaluations


def _batch(semantic=None, **top):
    body = {"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"}, **top,
            "evaluations": [{"resource": {"type": "Invoice", "id": "1"}},
                            {"resource": {"type": "Invoice", "id": "2", "properties": {"tenant": "globex"}}},
                            {"resource": {"type": "Invoice", "id": "3"}}]}
    if semantic:
        body["options"] = {"evaluations_semantic": semantic, "unknown_option": True}
    return body


def test_every_evaluation_of_a_request_is_decided_on_one_policy_version_while_reloads_swap_the_set(
        server, client, alice, tmp_path, monkeypatch):
    # Review finding (gRPC's BatchCheck, the same here): each item read the current set anew.
    _base, app = server
    engines = swapping_engines(app, tmp_path)
    monkeypatch.setattr(app.pdp, "_engine", engines)
    body = client.post("/access/v1/evaluations", json=_batch(), headers=bearer(alice)).json()
    records = audit_lines(app)
    versions = [records[item["context"]["decision_id"]]["policy_version"] for item in body["evaluations"]]
    # acme's items carry acme's version, the globex probe the global one: all of one set, whichever it was.
    expected = [[e.compiled.version_for("acme"), e.compiled.global_version, e.compiled.version_for("acme")]
                for e in engines.engines]
    assert len(body["evaluations"]) == 3 and versions in expected and expected[0] != expected[1]


@pytest.mark.parametrize("semantic,decisions", [
    (None, [True, False, True]),
    ("execute_all", [True, False, True]),
    ("deny_on_first_deny", [True, False]),
])
def test_evaluations_semantics(client, alice, semantic, decisions):
    response = client.post("/access/v1/evaluations", json=_batch(semantic), headers=bearer(alice))
    assert response.status_code == 200
    body = response.json()
    assert "decision" not in body  # RECOMMENDED to be omitted when evaluations are present
    assert [item["decision"] for item in body["evaluations"]] == decisions
    assert body["evaluations"][1]["context"]["reason"] == "cross_tenant"


def test_permit_on_first_permit_stops_at_the_first_permit(client, alice):
    body = _batch("permit_on_first_permit")
    body["evaluations"].insert(0, {"action": {"name": "update"}, "resource": {"type": "Invoice", "id": "0"}})
    response = client.post("/access/v1/evaluations", json=body, headers=bearer(alice))
    assert [item["decision"] for item in response.json()["evaluations"]] == [False, True]


def test_an_item_replaces_a_default_instead_of_merging_with_it(client, alice):
    body = {"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"},
            "resource": {"type": "Invoice", "id": "9", "properties": {"tenant": "globex"}},
            "evaluations": [{}, {"resource": {"type": "Invoice", "id": "2"}}]}
    decisions = client.post("/access/v1/evaluations", json=body, headers=bearer(alice)).json()["evaluations"]
    # The default resource is globex's; the second item's own resource carries no tenant: the caller's.
    assert [(d["decision"], d["context"]["reason"]) for d in decisions] == [(False, "cross_tenant"), (True, "allow")]


def test_an_item_problem_is_that_items_denial_with_an_error(client, alice, server):
    _base, app = server
    body = {"subject": {"type": "user", "id": "alice"}, "resource": {},
            "evaluations": [{"action": {"name": "read"}, "resource": {"type": "Invoice", "id": "1"}},
                            {"action": {"name": "read"}},
                            {"action": {"name": "read"}, "resource": {"type": "Invoice", "id": "3"}}]}
    response = client.post("/access/v1/evaluations", json=body, headers=bearer(alice))
    first, broken, third = response.json()["evaluations"]
    assert response.status_code == 200 and first["decision"] is True and third["decision"] is True
    assert broken["decision"] is False and broken["context"]["reason"] == "invalid_request"
    assert broken["context"]["error"] == {"status": 400, "message": "evaluations[1].resource.type is required"}
    assert audit_lines(app)[broken["context"]["decision_id"]]["reason"] == "invalid_request"


def test_absent_or_empty_evaluations_answer_as_a_single_evaluation(client, alice):
    for body in (evaluation("alice", "read"), {**evaluation("alice", "read"), "evaluations": []}):
        response = client.post("/access/v1/evaluations", json=body, headers=bearer(alice))
        assert response.status_code == 200 and response.json()["decision"] is True


@pytest.mark.parametrize("body", [
    {**_batch(), "evaluations": [{}] * 6},
    {**_batch(), "options": {"evaluations_semantic": "majority"}},
    {**_batch(), "evaluations": "all"},
    {**_batch(), "subject": ["alice"]},
])
def test_payload_level_problems_of_evaluations_are_400(client, alice, body):
    assert client.post("/access/v1/evaluations", json=body, headers=bearer(alice)).status_code == 400


def test_a_batch_with_a_bad_token_is_one_401_and_one_audit_record(client, server):
    _base, app = server
    before = len(audit_lines(app))
    response = client.post("/access/v1/evaluations", json=_batch(), headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401 and "invalid_token" in response.headers["www-authenticate"]
    assert len(audit_lines(app)) == before + 1


def test_decisions_are_counted_under_api_authzen(client, alice, server):
    _base, app = server
    client.post("/access/v1/evaluation", json=evaluation("alice", "read"), headers=bearer(alice))
    value = app.registry.get_sample_value("tenantgate_decisions_total",
                                          {"api": "authzen", "decision": "allow", "reason": "allow"})
    assert value and value >= 1


def test_requests_over_the_concurrency_limit_get_503(server, alice, monkeypatch):
    base, app = server
    entered, release = threading.Semaphore(0), threading.Event()
    real_decide = app.pdp.decide

    def held_decide(check, pinned=None, refused=None):
        if check.action == "hold":  # decision work that does not finish until the test says so
            entered.release()
            release.wait(30)
        return real_decide(check, pinned, refused)

    monkeypatch.setattr(app.pdp, "decide", held_decide)
    held_batch = {"evaluations": [evaluation("alice", "hold")]}  # batches are decided off the event loop
    with ThreadPoolExecutor(2) as pool:
        try:
            # Two decisions in flight fill both slots (max_concurrent_requests = 2).
            held = [pool.submit(httpx.post, f"{base}/access/v1/evaluations", json=held_batch,
                                headers=bearer(alice), timeout=30) for _ in range(2)]
            assert entered.acquire(timeout=10) and entered.acquire(timeout=10)
            response = httpx.post(f"{base}/access/v1/evaluation", json=evaluation("alice", "read"),
                                  headers=bearer(alice))
            assert response.status_code == 503 and response.headers["retry-after"] == "1"
        finally:
            release.set()
        assert [future.result().status_code for future in held] == [200, 200]
    # Slots are released once the held requests end.
    assert httpx.post(f"{base}/access/v1/evaluation", json=evaluation("alice", "read"),
                      headers=bearer(alice)).status_code == 200


def test_slow_uploads_do_not_take_decision_slots_from_others(server, alice):
    base, _app = server
    port = int(base.rsplit(":", 1)[1])
    stalled = []
    try:
        # More authenticated uploads stall mid-body than there are decision slots (2): they wait for their
        # bytes without holding a slot, so everybody else is still answered.
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"POST /access/v1/evaluation HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Authorization: Bearer {alice}\r\n".encode() + b"Content-Length: 100\r\n\r\n{")
            stalled.append(sock)
        for _ in range(5):
            response = httpx.post(f"{base}/access/v1/evaluation", json=evaluation("alice", "read"),
                                  headers=bearer(alice))
            assert response.status_code == 200, response.text
    finally:
        for sock in stalled:
            sock.close()


def test_https_when_a_certificate_is_configured(tmp_path, issuer, alice):
    cert_file, key_file = self_signed(tmp_path)
    with authzen_server(tmp_path / "tls", issuer, entity_policies(tmp_path), cert_file=str(cert_file),
                        key_file=str(key_file)) as (base, _app):
        assert base.startswith("https://")
        trust = ssl.create_default_context(cafile=str(cert_file))
        with httpx.Client(base_url=base, verify=trust, timeout=10) as https:
            assert https.post("/access/v1/evaluation", json=evaluation("alice", "read"),
                              headers=bearer(alice)).json()["decision"] is True
            assert https.get("/.well-known/authzen-configuration").json()["policy_decision_point"] == base
        with pytest.raises(httpx.HTTPError):
            httpx.post(base.replace("https", "http") + "/access/v1/evaluation", json={}, timeout=5)
