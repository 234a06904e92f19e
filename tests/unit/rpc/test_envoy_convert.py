"""Envoy ext_authz conversions: what is read from Envoy's request, and the answers built from decisions."""

import base64
import hashlib
import json
import urllib.parse

import pytest
from cryptography.hazmat.primitives import serialization
from google.rpc import code_pb2

from support.certs import TestCA
from support.envoy import denied_body, envoy_request, http_status, set_headers
from tenantgate.core.model import AuditEvent, Decision, DecisionResult, Reason
from tenantgate.rpc import envoy_convert
from tenantgate.rpc.envoy_convert import ExtAuthzOptions, Translated
from tenantgate.rpc.routes import Route, RouteTable

ENVOY = "spiffe://mesh.test/ns/edge/sa/envoy"
OPTIONS = ExtAuthzOptions(RouteTable([Route.build(["GET"], "/tenants/{tenant}/invoices/{id}", "read", "Invoice")]),
                          certificate_forwarders=frozenset({ENVOY}))
TOKEN = "aaa.bbb.ccc"


def _translate(request, options=OPTIONS, caller=(ENVOY,)):
    return envoy_convert.check_input(request, options, lambda: caller)


def test_a_matched_request_becomes_a_check_input_for_the_same_decision_path():
    t = _translate(envoy_request(token=TOKEN, headers={"x-tenantgate-intent": "billing.reconcile"}))
    c = t.check
    assert (c.token, c.action, c.resource.type, c.resource.id, c.resource.tenant) == (
        TOKEN, "read", "Invoice", "inv-1", "acme")
    assert (c.intent, c.api, c.token_problem, c.request_problem, c.dry_run) == (
        "billing.reconcile", "ext_authz", "", "", False)


def test_no_header_can_set_the_callers_tenant():
    forged = {"x-tenant-id": "globex", "tenant": "globex", "x-tenantgate-tenant": "globex"}
    c = _translate(envoy_request(token=TOKEN, headers=forged)).check
    # Only the path names a tenant, and that is the resource's owner; the caller's comes from the token.
    assert c.resource.tenant == "acme" and "globex" not in repr(c)


def test_missing_authorization_header_leaves_the_token_empty_for_token_missing():
    c = _translate(envoy_request()).check
    assert (c.token, c.token_problem) == ("", "")


@pytest.mark.parametrize("request_,problem", [
    (envoy_request(headers={"authorization": f"Bearer {TOKEN},Bearer {TOKEN}"}), "more than one"),
    (envoy_request(header_map=[("authorization", f"Bearer {TOKEN}"), ("Authorization", f"Bearer {TOKEN}")]),
     "more than one"),
    (envoy_request(headers={"authorization": f"Basic {TOKEN}"}), "Bearer"),
    (envoy_request(headers={"authorization": "Bearer "}), "Bearer"),
    (envoy_request(headers={"authorization": f"Bearer {TOKEN}\u00e9"}), "printable ASCII"),
    (envoy_request(header_map=[("authorization", b"Bearer \xff\xfe")]), "printable ASCII"),
    (envoy_request(headers={"authorization": "Bearer " + "a" * 70_000}), "too large"),
])
def test_ambiguous_or_malformed_authorization_is_a_token_problem(request_, problem):
    c = _translate(request_).check
    assert c.token == "" and problem in c.token_problem


def test_header_map_wins_over_the_headers_map_and_names_are_lowercased():
    request = envoy_request(headers={"authorization": "Bearer from.map.entry"},
                            header_map=[("Authorization", f"Bearer {TOKEN}"), (":path", "/x")])
    assert _translate(request).check.token == TOKEN


def test_raw_header_values_are_read_as_utf8():
    request = envoy_request(header_map=[("authorization", f"Bearer {TOKEN}".encode()),
                                        ("x-tenantgate-intent", b"data.export")])
    c = _translate(request).check
    assert (c.token, c.intent) == (TOKEN, "data.export")


@pytest.mark.parametrize("header_map,problem", [
    ([("x-note", b"\xc3\x28")], "not UTF-8"),
    ([("x-note", "a\x00b")], "NUL"),
    ([("x-tenantgate-intent", "a"), ("x-tenantgate-intent", "b")], "more than one x-tenantgate-intent"),
    ([("x-tenantgate-intent", "a,b")], "more than one x-tenantgate-intent"),
])
def test_bad_header_values_or_repeated_intent_are_a_request_problem(header_map, problem):
    c = _translate(envoy_request(header_map=[("authorization", f"Bearer {TOKEN}"), *header_map])).check
    assert problem in c.request_problem and c.intent == ""


@pytest.mark.parametrize("name", ["x-api-\u212aey", "coo\u212aie", "authorization\nx-note", "x-note\n"], ids=ascii)
@pytest.mark.parametrize("use_header_map", [True, False])
def test_a_header_name_is_checked_as_sent_not_as_lowercased(name, use_header_map):
    # Review finding: the Kelvin sign U+212A lowercases to an ASCII 'k', so "x-api-\u212aey" passed as x-api-key.
    headers = [("authorization", f"Bearer {TOKEN}"), (name, "v")]
    request = envoy_request(header_map=headers) if use_header_map else envoy_request(headers=dict(headers))
    assert "is not an HTTP token" in _translate(request).check.request_problem


def test_mixed_case_and_pseudo_header_names_are_http_tokens():
    headers = [("Authorization", f"Bearer {TOKEN}"), (":authority", "a"), ("X-B3-TraceId", "t"),
               ("x_y.z~!#$%&'*+^`|", "v")]
    for request in (envoy_request(header_map=headers), envoy_request(headers=dict(headers))):
        assert _translate(request).check.request_problem == ""


def test_a_custom_intent_header_is_read():
    options = ExtAuthzOptions(OPTIONS.routes, intent_header="x-purpose")
    assert _translate(envoy_request(headers={"x-purpose": "audit"}), options).check.intent == "audit"


@pytest.mark.parametrize("method,path,problem", [
    ("DELETE", "/tenants/acme/invoices/inv-1", "no [[ext_authz.routes]] entry"),
    ("GET", "/tenants/acme/invoices/%2e%2e", "'..'"),
    ("GET", "/tenants/acme%2Fglobex/invoices/1", "encoded slash"),
])
def test_unmatched_or_refused_paths_are_a_request_problem(method, path, problem):
    c = _translate(envoy_request(method, path, token=TOKEN)).check
    assert problem in c.request_problem
    assert (c.action, c.resource.tenant) == ("", "")


def test_dry_run_is_carried_into_the_check_input():
    options = ExtAuthzOptions(OPTIONS.routes, dry_run=True)
    assert _translate(envoy_request(token=TOKEN), options).check.dry_run is True


def test_the_forwarded_client_certificate_becomes_its_sha256():
    leaf = TestCA().issue("client", uris=["spiffe://mesh.test/client"])
    c = _translate(envoy_request(token=TOKEN, certificate=leaf.envoy_encoded)).check
    der = leaf.certificate.public_bytes(serialization.Encoding.DER)
    assert c.client_cert_sha256 == hashlib.sha256(der).hexdigest() and c.request_problem == ""


@pytest.mark.parametrize("certificate,problem", [
    ("not-a-certificate", "exactly one PEM"),
    ("-----BEGIN%20CERTIFICATE-----%0AAAAA%0A-----END%20CERTIFICATE-----%0A", "cannot be parsed"),
    ("%ff%fe", "not UTF-8"),
])
def test_an_unusable_forwarded_certificate_is_a_request_problem(certificate, problem):
    c = _translate(envoy_request(token=TOKEN, certificate=certificate)).check
    assert c.client_cert_sha256 == "" and problem in c.request_problem


def _with_version(leaf, version: int) -> str:
    """``leaf`` URL-encoded as Envoy forwards it, its version field set to ``version`` (2 is X.509 v3)."""
    der = bytearray(leaf.certificate.public_bytes(serialization.Encoding.DER))
    at = der.index(b"\xa0\x03\x02\x01\x02")  # [0] EXPLICIT INTEGER 2
    der[at + 4] = version
    pem = "-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bytes(der)).decode() + "-----END CERTIFICATE-----\n"
    return urllib.parse.quote(pem, safe="")


def test_a_forwarded_certificate_cryptography_refuses_without_a_value_error_is_a_request_problem():
    # Review finding: a certificate with an unknown version raised InvalidVersion (not a ValueError) out of the
    # translation: ext_authz answered internal_error with a decision id that no audit record holds.
    c = _translate(envoy_request(token=TOKEN, certificate=_with_version(TestCA().issue("client"), 3))).check
    assert c.client_cert_sha256 == "" and "cannot be parsed" in c.request_problem


@pytest.mark.parametrize("caller", [(), ("spiffe://mesh.test/ns/other/sa/app", "gateway.mesh.test")])
def test_a_certificate_forwarded_by_a_caller_not_trusted_to_forward_is_ignored(caller):
    # Review finding: anyone who could reach the port pasted a victim's (public) certificate into
    # attributes.source.certificate and used the victim's stolen certificate-bound token.
    leaf = TestCA().issue("client", uris=["spiffe://mesh.test/client"])
    for certificate in (leaf.envoy_encoded, "not-a-certificate"):
        c = _translate(envoy_request(token=TOKEN, certificate=certificate), caller=caller).check
        assert c.client_cert_sha256 == "" and c.request_problem == ""
        assert "ext_authz.certificate_forwarders" in c.client_cert_ignored


def test_no_forwarders_configured_means_no_forwarded_certificate_counts():
    leaf = TestCA().issue("client")
    options = ExtAuthzOptions(OPTIONS.routes)
    c = _translate(envoy_request(token=TOKEN, certificate=leaf.envoy_encoded), options).check
    assert c.client_cert_sha256 == "" and c.client_cert_ignored


def test_the_caller_is_only_looked_at_when_a_certificate_is_forwarded():
    def caller():
        raise AssertionError("caller identities read for a request without a forwarded certificate")

    c = envoy_convert.check_input(envoy_request(token=TOKEN), OPTIONS, caller).check
    assert (c.client_cert_sha256, c.client_cert_ignored) == ("", "")


def test_two_forwarded_certificates_are_refused():
    ca = TestCA()
    two = ca.issue("a").envoy_encoded + ca.issue("b").envoy_encoded
    assert "exactly one" in _translate(envoy_request(token=TOKEN, certificate=two)).check.request_problem


def test_two_forwarded_certificates_are_refused_whatever_their_pem_label():
    # Review finding: cryptography also reads the label "X509 CERTIFICATE"; one such block before a
    # "CERTIFICATE" block passed the "exactly one" count and the first certificate was used.
    ca = TestCA()
    first = ca.issue("a").cert_pem.decode().replace("CERTIFICATE-----", "X509 CERTIFICATE-----")
    two = urllib.parse.quote(first + ca.issue("b").cert_pem.decode(), safe="")
    c = _translate(envoy_request(token=TOKEN, certificate=two)).check
    assert c.client_cert_sha256 == "" and "exactly one" in c.request_problem


def test_incoming_reserved_headers_are_collected_except_the_intent_header():
    request = envoy_request(token=TOKEN, headers={"x-tenantgate-tenant": "globex", "x-tenantgate-role": "admin",
                                                  "x-tenantgate-intent": "x", "x-other": "1"})
    assert _translate(request).reserved_headers == ("x-tenantgate-role", "x-tenantgate-tenant")


# ----------------------------------------------------------------------------------------------- answers


def _result(decision, reason, principal_tenant="acme"):
    audit = AuditEvent(decision_id="d-1", time="t", decision=decision.value, reason=reason.value, message="m",
                       api="ext_authz", subject="alice", actor="", principal_type="User",
                       principal_tenant=principal_tenant, resource_type="Invoice", resource_id="inv-1",
                       resource_tenant="acme", action="read", intent="", policy_ids=(), grant_id="",
                       policy_version="v", issuer="i", token_id="j")
    return DecisionResult(decision, reason, "m", (), "d-1", audit)


def _translated(dry_run=False, reserved=()):
    check = _translate(envoy_request(token=TOKEN), ExtAuthzOptions(OPTIONS.routes, dry_run=dry_run)).check
    return Translated(check, tuple(reserved))


def test_allow_sets_decision_and_tenant_headers_and_strips_forged_reserved_headers():
    response = envoy_convert.check_response(_result(Decision.ALLOW, Reason.ALLOW),
                                            _translated(reserved=("x-tenantgate-role", "x-tenantgate-tenant")))
    assert http_status(response) == 200
    assert set_headers(response) == {"x-tenantgate-decision-id": "d-1", "x-tenantgate-tenant": "acme"}
    # Headers we set overwrite every incoming copy; removing them too would delete ours (Envoy removes last).
    assert list(response.ok_response.headers_to_remove) == ["x-tenantgate-role"]
    assert response.dynamic_metadata["decision_id"] == "d-1"


DENY_REASONS = [r for r in Reason if r not in (Reason.ALLOW, Reason.ALLOW_BREAK_GLASS)]


@pytest.mark.parametrize("reason", DENY_REASONS)
def test_every_denial_is_explicit_with_401_for_token_problems_and_403_otherwise(reason):
    response = envoy_convert.check_response(_result(Decision.DENY, reason, ""), _translated())
    token_problem = reason in envoy_convert.UNAUTHENTICATED_REASONS
    assert http_status(response) == (401 if token_problem else 403)
    assert response.status.code == (code_pb2.UNAUTHENTICATED if token_problem else code_pb2.PERMISSION_DENIED)
    assert denied_body(response) == {"reason": reason.value, "decision_id": "d-1"}
    headers = {h.header.key: h.header.value for h in response.denied_response.headers}
    assert headers["content-type"] == "application/json" and headers["x-tenantgate-decision-id"] == "d-1"
    assert ("www-authenticate" in headers) == token_problem


def test_token_reasons_are_exactly_the_token_steps():
    assert {r.value for r in envoy_convert.UNAUTHENTICATED_REASONS} == {
        "token_missing", "token_invalid", "token_expired", "issuer_untrusted", "audience_mismatch",
        "tenant_claim_missing", "token_binding_mismatch"}


@pytest.mark.parametrize("reason", list(Reason))
def test_no_answer_leaves_with_ok_unless_the_decision_was_allow(reason):
    decision = Decision.ALLOW if reason in (Reason.ALLOW, Reason.ALLOW_BREAK_GLASS) else Decision.DENY
    response = envoy_convert.check_response(_result(decision, reason), _translated())
    assert response.HasField("status")
    assert (response.status.code == code_pb2.OK) == (decision is Decision.ALLOW)


def test_dry_run_answers_ok_for_a_denial_and_flags_it_in_metadata():
    response = envoy_convert.check_response(_result(Decision.DENY, Reason.CROSS_TENANT), _translated(dry_run=True))
    assert http_status(response) == 200
    metadata = dict(response.dynamic_metadata)
    assert metadata == {"decision_id": "d-1", "decision": "DENY", "reason": "cross_tenant", "dry_run": True}


def test_without_a_verified_tenant_the_tenant_header_is_removed_not_set():
    response = envoy_convert.check_response(_result(Decision.DENY, Reason.TOKEN_INVALID, ""),
                                            _translated(dry_run=True))
    assert set_headers(response) == {"x-tenantgate-decision-id": "d-1"}
    assert "x-tenantgate-tenant" in response.ok_response.headers_to_remove


def test_internal_denial_is_a_403_with_a_json_body():
    response = envoy_convert.denied_response(Reason.INTERNAL_ERROR, "d-9")
    assert http_status(response) == 403 and json.loads(response.denied_response.body)["reason"] == "internal_error"


# --- review findings (each failed before its fix) --------------------------------------------------------------


def test_dry_run_never_lets_a_request_through_whose_audit_record_was_not_written():
    response = envoy_convert.check_response(_result(Decision.DENY, Reason.AUDIT_UNAVAILABLE, ""),
                                            _translated(dry_run=True))
    assert http_status(response) == 403 and denied_body(response)["reason"] == "audit_unavailable"


@pytest.mark.parametrize("forms", [
    {"headers": {"x-tenantgate-intent": "billing.reconcile", "x_tenantgate_intent": "data.export"}},
    {"headers": {"x_tenantgate_intent": "data.export"}},
    {"header_map": [("authorization", f"Bearer {TOKEN}"), ("x-tenantgate-intent", "billing.reconcile"),
                    ("X_TenantGate_Intent", "data.export")]},
], ids=["both-spellings", "underscore-only", "header-map"])
def test_another_spelling_of_the_intent_header_is_refused_not_forwarded(forms):
    # CGI-style backends read x_tenantgate_intent as X-TenantGate-Intent: an intent the decision never saw.
    request = envoy_request(token=TOKEN, **forms) if "headers" in forms else envoy_request(**forms)
    problem = _translate(request).check.request_problem
    assert "x_tenantgate_intent" in problem and "another spelling of x-tenantgate-intent" in problem


def test_another_spelling_of_a_custom_intent_header_is_refused_too():
    options = ExtAuthzOptions(OPTIONS.routes, intent_header="x-purpose")
    request = envoy_request(token=TOKEN, headers={"x-purpose": "billing", "x_purpose": "export"})
    assert "another spelling of x-purpose" in _translate(request, options).check.request_problem
    assert _translate(envoy_request(token=TOKEN, headers={"x-purpose": "billing"}), options).check.request_problem \
        == ""
