"""Hostile header names in Envoy ext_authz requests, against a real server.

Review findings: a header name that is not an HTTP token (a trailing space, NUL, a non-ASCII letter) was
ignored, so a second token under `authorization ` rode along with an allowed request to a backend that trims or
cuts names; and a name that made the request a problem (a NUL value, bytes that are not UTF-8) was quoted whole
in the denial's message, which is kept in the audit record: a 1 MB name wrote a 1 MB record per request.
"""

import pytest

from support.audit import audit_lines
from support.envoy import envoy_request, http_status

BIG_NAME = "x" * 1_000_000  # with the request's other bytes, just under the default 1 MiB message limit



def _decided(envoy_served, request):
    envoy, app = envoy_served
    response = envoy.Check(request)
    decision_id = response.dynamic_metadata.fields["decision_id"].string_value
    return http_status(response), audit_lines(app)[decision_id]


@pytest.mark.parametrize("name", ["authorization ", " authorization", "authorization\x00", "author\x00ization",
                                  "authorizat\u0131on", "Authorization\t", "x-note\x00", ""], ids=ascii)
@pytest.mark.parametrize("use_header_map", [True, False])
def test_a_second_token_under_a_name_that_is_no_http_token_is_refused(envoy_served, issuer, name, use_header_map):
    acme, globex = issuer.mint(tenant="acme", roles=["admin"]), issuer.mint(tenant="globex", roles=["admin"])
    headers = [("authorization", f"Bearer {acme}"), (name, f"Bearer {globex}")]
    request = (envoy_request(header_map=headers) if use_header_map
               else envoy_request(headers=dict(headers)))
    status, record = _decided(envoy_served, request)
    assert (status, record["decision"], record["reason"]) == (403, "DENY", "invalid_request")
    assert "is not an HTTP token" in record["message"] and globex not in record["message"]


@pytest.mark.parametrize(("value", "use_header_map"), [("a\x00", True), (b"\xff", True), ("a\x00", False)],
                         ids=["nul-value", "not-utf8", "nul-value-headers-map"])
def test_a_huge_header_name_is_not_copied_into_the_audit_record(envoy_served, issuer, value, use_header_map):
    token = issuer.mint(tenant="acme", roles=["admin"])
    if use_header_map:
        request = envoy_request(header_map=[(BIG_NAME, value), ("authorization", f"Bearer {token}")])
    else:
        request = envoy_request(headers={BIG_NAME: value, "authorization": f"Bearer {token}"})
    status, record = _decided(envoy_served, request)
    assert (status, record["decision"], record["reason"]) == (403, "DENY", "invalid_request")
    assert record["message"].startswith("header 'xxx") and len(record["message"]) < 200, len(record["message"])


def test_ordinary_and_pseudo_header_names_still_pass(envoy_served, issuer):
    token = issuer.mint(tenant="acme", roles=["admin"])
    headers = [(":authority", "app.example.com"), (":method", "GET"), ("X-Request-Id", "r-1"),
               ("x-b3-traceid", "abc"), ("accept", "*/*"), ("authorization", f"Bearer {token}")]
    status, record = _decided(envoy_served, envoy_request(header_map=headers))
    assert (status, record["decision"]) == (200, "ALLOW")
