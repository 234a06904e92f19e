"""A tenant's audit query lists the refused break-glass attempts on it, and those its people made.

Review finding (LOW): ``grant.refused`` events were written without a target tenant and the query's tenant filter
did not look at the actor's or the operator's tenant, so a self-approval attempt on an acme grant and a refused
over-long request for acme were missing from ``audit query --tenant acme --record-type grant_event``, and
``--tenant platform`` (the operator tenant) listed none of four events.
"""

import json
from pathlib import Path

import pytest

from support.grants import make_world
from tenantgate.audit.query import RecordFilter, query
from tenantgate.core.breakglass import GrantRequest
from tenantgate.errors import GrantConflict, GrantInvalid, GrantNotFound, GrantPermissionDenied


@pytest.fixture()
def world(tmp_path):
    world = make_world(tmp_path)
    yield world
    world.service.store.close()


def grant_events(world, tenant):
    """What ``audit query --tenant TENANT --record-type grant_event`` prints, parsed."""
    selection = RecordFilter(tenant=tenant, record_types=frozenset({"grant_event"}))
    return [json.loads(line) for line in query([Path(world.sink.path)], selection)]


def refusals(world):
    return [(e["detail"].split(":")[0], e["target_tenant"]) for e in world.events("grant.refused")]


def test_refused_attempts_on_acme_are_listed_for_acme_and_for_the_operator_tenant(world):
    grant = world.request(target="acme", sub="oscar")
    both_roles = world.caller("platform", "oscar", "breakglass-operator", "breakglass-approver")
    with pytest.raises(GrantPermissionDenied, match="self-approval"):
        world.service.approve(both_roles, grant.id)
    with pytest.raises(GrantInvalid, match=r"exceeds grants\.max_ttl_seconds"):
        world.request(target="acme", duration=3601)
    world.service.revoke(world.approver(), grant.id, "not needed")
    with pytest.raises(GrantConflict):
        world.service.revoke(world.approver(), grant.id, "again")
    assert refusals(world) == [("approve", "acme"), ("request", "acme"), ("revoke", "acme")]
    for_acme = grant_events(world, "acme")
    assert [e["event"] for e in for_acme] == ["grant.requested", "grant.refused", "grant.refused", "grant.revoked",
                                              "grant.refused"]
    assert len(grant_events(world, "platform")) == 5  # every one was made by a member of the operator tenant
    assert grant_events(world, "globex") == []


def test_a_refusal_names_a_target_only_when_it_is_a_tenant_id_or_a_grant_it_looked_up(world):
    with pytest.raises(GrantInvalid, match="not a valid tenant id"):
        world.service.request(world.operator(), GrantRequest("acme\u001b[2J", ("read",), "r", "t", 60))
    with pytest.raises(GrantNotFound):
        world.service.approve(world.approver(), "no-such-grant")
    grant = world.request(target="acme")
    with pytest.raises(GrantPermissionDenied):  # refused before the grant is looked up: its target is unknown
        world.service.approve(world.caller("globex", "gail", "breakglass-approver"), grant.id)
    assert refusals(world) == [("request", ""), ("approve", ""), ("approve", "")]
    assert [e["actor"] for e in grant_events(world, "globex")] == ["gail"]  # found by the actor's tenant


def test_a_refused_request_by_another_tenants_member_is_listed_for_both_tenants(world):
    with pytest.raises(GrantPermissionDenied):
        world.service.request(world.caller("globex", "gail", "breakglass-operator"),
                              GrantRequest("acme", ("read",), "r", "t", 60))
    assert refusals(world) == [("request", "acme")]
    assert [e["actor"] for e in grant_events(world, "acme")] == ["gail"]
    assert [e["actor"] for e in grant_events(world, "globex")] == ["gail"]
