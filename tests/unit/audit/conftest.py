"""Shared fixtures for the audit tests: an event factory and a signing key."""

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tenantgate.core.grants import GrantEvent
from tenantgate.core.model import AuditEvent


def make_event(i=0, **kw):
    base = dict(decision_id=f"id-{i}", time="2026-01-01T00:00:00.000Z", decision="DENY", reason="cross_tenant",
                message="m", api="check", subject="alice", actor="", principal_type="User", principal_tenant="acme",
                resource_type="Invoice", resource_id="inv-1", resource_tenant="globex", action="read",
                intent="", policy_ids=("a",), grant_id="", policy_version="v", issuer="iss", token_id="jti")
    base.update(kw)
    return AuditEvent(**base)


def make_grant_event(i=0, **kw):
    base = dict(event_id=f"ev-{i}", time="2026-01-01T00:00:00.000Z", event="grant.requested", grant_id="g-1",
                actor="oscar", actor_tenant="platform", operator="oscar", operator_tenant="platform",
                target_tenant="acme", actions=("read",), reason="INC", ticket="T-1", state="pending", expires_at="")
    base.update(kw)
    return GrantEvent(**base)


@pytest.fixture
def event():
    return make_event


@pytest.fixture
def grant_event():
    return make_grant_event


@pytest.fixture
def signing_key():
    return Ed25519PrivateKey.generate()
