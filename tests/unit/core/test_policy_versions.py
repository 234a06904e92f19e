"""The policy version a decision shows: its tenant's (schema, global files, that tenant's files), never one
that moves when another tenant edits its policies (review finding: one hash over every tenant's files let a
caller of one tenant watch when, and how often, other tenants changed theirs)."""

import json
import shutil
from pathlib import Path

import pytest

from support.grants import make_world
from support.issuers import FixedClock, TestIssuer, verifier_for
from tenantgate.audit import JsonlAuditSink
from tenantgate.core.model import CheckInput, Reason, Resource
from tenantgate.core.pdp import DecisionPoint
from tenantgate.policy import PolicyStore

BUNDLED = Path(__file__).resolve().parents[3] / "policies"
NOW = 1_700_000_000
GLOBEX_POLICY = '@id("globex-own")\npermit (principal, action == Action::"read", resource is Invoice);\n'


@pytest.fixture()
def world(tmp_path):
    root = tmp_path / "policies"
    shutil.copytree(BUNDLED, root)  # acme has files of its own (tenants/acme), globex has none
    clock = FixedClock(NOW)
    issuer = TestIssuer(tmp_path, clock=clock)
    store = PolicyStore.load(root)
    pdp = DecisionPoint(verifier=verifier_for(issuer, clock=clock), engine=store.current,
                        audit=JsonlAuditSink(tmp_path / "audit.jsonl"), clock=clock)
    return root, store, pdp, issuer


def _shown(pdp, token, tenant):
    result = pdp.decide(CheckInput(token=token, action="read", resource=Resource("Invoice", "inv-1", tenant)))
    return result.reason, result.audit.policy_version


def _edit(store, path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    assert store.reload().changed


def test_another_tenants_edits_change_no_version_a_caller_is_shown(world):
    root, store, pdp, issuer = world
    acme = issuer.mint(tenant="acme", roles=["viewer"])
    before = store.current().compiled
    own, probe = _shown(pdp, acme, "acme"), _shown(pdp, acme, "globex")
    assert own == (Reason.ALLOW, before.version_for("acme")) and own[1] != before.global_version
    assert probe == (Reason.CROSS_TENANT, before.global_version)  # not globex's, whatever it is

    _edit(store, root / "tenants" / "globex" / "own.cedar", GLOBEX_POLICY)
    _edit(store, root / "tenants" / "globex" / "entities.json", json.dumps(
        [{"uid": {"type": "Invoice", "id": "inv-9"}, "attrs": {"tenant": "globex", "status": "paid"}}]))
    after = store.current().compiled
    assert after.version != before.version  # operators see the set change (status, reload log, validate)
    assert (_shown(pdp, acme, "acme"), _shown(pdp, acme, "globex")) == (own, probe)
    globex = _shown(pdp, issuer.mint(tenant="globex", roles=["viewer"]), "globex")
    assert globex[1] == after.version_for("globex") not in (before.global_version, own[1])


def test_a_global_file_or_the_tenants_own_file_changes_its_version(world):
    root, store, pdp, issuer = world
    acme = issuer.mint(tenant="acme", roles=["viewer"])
    first = _shown(pdp, acme, "acme")[1]
    _edit(store, root / "tenants" / "acme" / "support.cedar",
          (root / "tenants" / "acme" / "support.cedar").read_text() + "\n// edited\n")
    second = _shown(pdp, acme, "acme")[1]
    _edit(store, root / "roles.cedar", (root / "roles.cedar").read_text() + "\n// edited\n")
    third = _shown(pdp, acme, "acme")[1]
    assert len({first, second, third}) == 3
    assert _shown(pdp, acme, "globex")[1] == store.current().compiled.global_version


def test_an_operator_with_a_grant_is_shown_the_target_tenants_version(tmp_path):
    world = make_world(tmp_path)
    grant = world.active_grant(target="acme")
    result = world.pdp.decide(CheckInput(token=world.token("platform", "oscar", "breakglass-operator"),
                                         action="read", resource=Resource("Invoice", "inv-1", "acme")))
    compiled = world.pdp.current_engine().compiled
    assert (result.reason, result.audit.grant_id) == (Reason.ALLOW_BREAK_GLASS, grant.id)
    assert result.audit.policy_version == compiled.version_for("acme") != compiled.global_version
    without = world.pdp.decide(CheckInput(token=world.token("platform", "oscar", "breakglass-operator"),
                                          action="read", resource=Resource("Invoice", "inv-1", "globex")))
    assert (without.reason, without.audit.policy_version) == (Reason.CROSS_TENANT, compiled.global_version)
