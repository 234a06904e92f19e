"""Hostile Envoy ext_authz requests against a real server: whatever the path, headers, token or certificate,
no answer leaves with status OK unless the audited decision was ALLOW for the token's own tenant."""

import pytest
from google.rpc import code_pb2
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support.audit import audit_lines
from support.certs import TestCA
from support.envoy import denied_body, envoy_request, http_status, set_headers


@pytest.fixture(scope="module")
def material(issuer):
    leaf = TestCA().issue("client")
    tokens = {
        "acme-viewer": issuer.mint(tenant="acme", roles=["viewer"]),
        "acme-admin": issuer.mint(tenant="acme", roles=["admin"]),
        "globex-admin": issuer.mint(tenant="globex", roles=["admin"]),
        "bound": issuer.mint(tenant="acme", roles=["admin"], cnf={"x5t#S256": leaf.x5t_s256}),
        "garbage": "e30.e30.e30",
    }
    return tokens, leaf


SEGMENTS = st.one_of(
    st.sampled_from(["tenants", "acme", "globex", "invoices", "inv-1", "..", ".", "%2e%2e", "%2F", "%00", "%ff",
                     "acme%2Fglobex", "%61cme", "", "reconcile", "%", "a b", "caf\u00e9", "x?tenant=acme", "#f"]),
    st.text(alphabet="abc%2Ff./\\\x00", max_size=6),
)
FORGED = st.dictionaries(st.sampled_from(["x-tenantgate-tenant", "x-tenantgate-decision-id", "x-tenantgate-x",
                                          "x-tenant-id", "tenant", "x-tenantgate-intent"]),
                         st.sampled_from(["globex", "acme", "admin", ""]), max_size=3)


@example(method="GET", segments=["tenants", "acme", "invoices", "inv-1"], token_names=["acme-viewer"],
         use_header_map=False, forged={"x-tenantgate-tenant": "globex", "x-tenantgate-x": "admin"}, with_cert=False)
@example(method="GET", segments=["tenants", "acme", "invoices", "inv-1"], token_names=["bound"],
         use_header_map=True, forged={}, with_cert=True)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "get", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]),
       segments=st.one_of(st.tuples(st.just("tenants"), st.sampled_from(["acme", "globex", "%61cme"]),
                                    st.just("invoices"), st.sampled_from(["inv-1", "inv%2F1", "..", "inv-1?x=1"])
                                    ).map(list),
                          st.lists(SEGMENTS, max_size=6)),
       token_names=st.lists(st.sampled_from(["acme-viewer", "acme-admin", "globex-admin", "bound", "garbage"]),
                            max_size=2),
       use_header_map=st.booleans(), forged=FORGED, with_cert=st.booleans())
def test_ok_leaves_only_for_an_audited_allow_of_the_tokens_own_tenant(envoy_served, material, method, segments,
                                                                       token_names, use_header_map, forged, with_cert):
    envoy, app = envoy_served
    tokens, leaf = material
    path = "/" + "/".join(segments)
    authorization = [("authorization", f"Bearer {tokens[name]}") for name in token_names]
    kwargs = {"certificate": leaf.envoy_encoded if with_cert else ""}
    if use_header_map:
        kwargs["header_map"] = authorization + list(forged.items())
    else:
        joined = ",".join(value for _k, value in authorization)
        kwargs["headers"] = {**forged, **({"authorization": joined} if joined else {})}
    response = envoy.Check(envoy_request(method, path, **kwargs))

    assert response.HasField("status")
    status = http_status(response)
    decision_id = set_headers(response)["x-tenantgate-decision-id"] if status == 200 else denied_body(response)[
        "decision_id"]
    record = audit_lines(app)[decision_id]
    assert (response.status.code == code_pb2.OK) == (record["decision"] == "ALLOW")
    if status == 200:
        # Allowed: exactly one token, a matched route, and the resource in the token's own tenant.
        assert len(token_names) == 1 and token_names[0] != "garbage"
        assert record["principal_tenant"] == record["resource_tenant"] == set_headers(response)["x-tenantgate-tenant"]
        assert token_names[0] != "bound" or with_cert
        stripped = {name for name in forged if name.startswith("x-tenantgate-") and name != "x-tenantgate-intent"}
        assert stripped - {"x-tenantgate-tenant", "x-tenantgate-decision-id"} <= set(
            response.ok_response.headers_to_remove)
    else:
        assert status in (401, 403) and denied_body(response)["reason"] == record["reason"]
