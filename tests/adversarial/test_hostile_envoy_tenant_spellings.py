"""Other spellings of the caller's own tenant in an ext_authz path, against a real server: TenantGate folds
nothing, so each is another tenant (cross_tenant) or no tenant id (invalid_request), never the caller's.
A backend that folds one of them onto the caller's tenant id is the README's warning, not an allow here."""

import pytest

from support.audit import audit_lines
from support.envoy import envoy_request, http_status


@pytest.mark.parametrize(("spelling", "reason"), [
    ("Acme", "cross_tenant"), ("ACME", "cross_tenant"), ("acme.", "cross_tenant"), ("acme%2E", "cross_tenant"),
    ("acme%20", "invalid_request"), ("%20acme", "invalid_request"), ("acme%09", "invalid_request"),
    ("%EF%BD%81cme", "invalid_request"),  # fullwidth a
    ("%D0%B0cme", "invalid_request"),  # Cyrillic a
    ("acme%E2%80%8B", "invalid_request"),  # zero-width space
    ("acme%EF%BC%8E", "invalid_request"),  # fullwidth full stop
])
def test_another_spelling_of_the_callers_tenant_is_never_the_callers_tenant(envoy_served, issuer, spelling, reason):
    envoy, app = envoy_served
    token = issuer.mint(tenant="acme", roles=["admin"])
    response = envoy.Check(envoy_request("GET", f"/tenants/{spelling}/invoices/inv-1", token=token))
    record = audit_lines(app)[response.dynamic_metadata.fields["decision_id"].string_value]
    assert (http_status(response), record["decision"], record["reason"]) == (403, "DENY", reason)


def test_the_percent_encoded_spelling_of_the_same_tenant_is_that_tenant(envoy_served, issuer):
    # Decoded exactly once, as the backend decodes it: %61cme is acme for both.
    envoy, app = envoy_served
    token = issuer.mint(tenant="acme", roles=["admin"])
    response = envoy.Check(envoy_request("GET", "/tenants/%61cme/invoices/inv-1", token=token))
    record = audit_lines(app)[response.dynamic_metadata.fields["decision_id"].string_value]
    assert (http_status(response), record["resource_tenant"]) == (200, "acme")
