"""``audit query --tenant T`` finds a grant event by any tenant it names: the target's, the actor's, the operator's
(review finding: refused break-glass attempts named only the actor's tenant, which the filter did not read)."""

import pytest

from tenantgate.audit.query import RecordFilter

REFUSED = {"record_type": "grant_event", "event": "grant.refused", "actor_tenant": "platform", "operator": "",
           "operator_tenant": "", "target_tenant": ""}
EXPIRED = {"record_type": "grant_event", "event": "grant.expired", "actor_tenant": "", "operator": "oscar",
           "operator_tenant": "platform", "target_tenant": "acme"}


@pytest.mark.parametrize("record,tenant,matches", [
    (REFUSED, "platform", True),  # the actor's tenant
    (EXPIRED, "platform", True),  # the operator's tenant (TenantGate acted: no actor tenant)
    (EXPIRED, "acme", True),
    (REFUSED, "acme", False),
    (EXPIRED, "globex", False),
    (REFUSED, "", True),  # no tenant filter
])
def test_a_grant_event_matches_the_tenant_of_its_target_actor_or_operator(record, tenant, matches):
    assert RecordFilter(tenant=tenant).matches(record) is matches
