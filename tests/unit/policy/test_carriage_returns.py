"""Policy text with `\r` line breaks: what Cedar validates is exactly what lands in a tenant's partition."""

from pathlib import Path

import pytest

from tenantgate.core import policy_files
from tenantgate.core.engine import Engine, PolicySource, compile_policies
from tenantgate.core.model import Decision, Principal, Resource
from tenantgate.errors import PolicyError

BUNDLED = Path(__file__).resolve().parents[3] / "policies"
SCHEMA = PolicySource("schema.cedarschema", (BUNDLED / "schema.cedarschema").read_text())


def _decide(engine, action, roles=()):
    alice = Principal("User", "alice", "alice", "acme", tuple(roles), None, "https://issuer.test", "jti")
    return engine.evaluate(alice, action, Resource("Invoice", "inv-1", "acme"), {"tenant": "acme"},
                           {"intent": ""})


def test_a_policy_after_a_cr_ended_comment_is_in_its_tenants_partition_as_cedar_parsed_it():
    # The loader reads files with universal newlines today; the core must not depend on it.
    text = ('// acme may approve\r@id("acme-approves") permit (principal, action == Action::"approve", resource);\r'
            '// and forbids deletes\rforbid (principal, action == Action::"delete", resource);\r')
    compiled = compile_policies(SCHEMA, [], {"acme": [PolicySource("tenants/acme/own.cedar", text)]})
    partition = compiled.tenants["acme"]
    assert partition.ids == ("acme-approves", "tenants/acme/own.cedar:4")
    assert partition.locations["acme-approves"].line == 2
    engine = Engine(compiled)
    assert _decide(engine, "approve").decision is Decision.ALLOW
    deleted = _decide(engine, "delete")
    assert (deleted.decision, deleted.policy_ids) == (Decision.DENY, ("tenants/acme/own.cedar:4",))


def test_a_file_whose_statements_disagree_with_cedars_parse_is_refused(monkeypatch):
    # Backstop for any other way the statement split could drift from Cedar's lexer: fail closed at load.
    monkeypatch.setattr(policy_files, "split_statements", lambda text: [])
    text = 'permit (principal, action == Action::"approve", resource);'
    with pytest.raises(PolicyError, match="Cedar parses 1 policies here but TenantGate finds 0 statements"):
        compile_policies(SCHEMA, [], {"acme": [PolicySource("tenants/acme/own.cedar", text)]})
