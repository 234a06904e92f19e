"""One tenant's invalid files hold back only that tenant, on its last valid files; every other change applies.

Review finding (MEDIUM): with `tenants/evil/oops.cedar` missing a `;`, acme's emergency forbid added next to it
never applied (the whole reload was refused), and a restart would not start at all.
"""

import logging
import shutil
from pathlib import Path

import pytest

from tenantgate.core.compiler import DEFAULT_TENANT_LIMITS
from tenantgate.errors import PolicyError
from tenantgate.policy import PolicyStore, load_policies
from tenantgate.policy.loader import TenantFiles, load_holding_back
from tenantgate.rpc.admin import HELD_BACK

BUNDLED = Path(__file__).resolve().parents[3] / "policies"
LOCKDOWN = '@id("acme-emergency-lockdown")\nforbid (principal, action, resource is Invoice);\n'
EVIL_OWN = '@id("evil-own")\npermit (principal, action == Action::"read", resource);\n'
BROKEN = '@id("oops")\npermit (principal, action, resource)\n'  # no `;`


@pytest.fixture()
def policy_dir(tmp_path):
    root = tmp_path / "policies"
    shutil.copytree(BUNDLED, root)
    (root / "tenants" / "evil").mkdir()
    (root / "tenants" / "evil" / "own.cedar").write_text(EVIL_OWN)
    return root


def _ids(store, tenant):
    return set(store.current().compiled.tenants[tenant].ids)


def test_a_broken_tenant_file_holds_back_only_that_tenant(policy_dir, caplog):
    store = PolicyStore.load(policy_dir)
    (policy_dir / "tenants" / "evil" / "own.cedar").write_text(EVIL_OWN.replace("read", "update"))
    (policy_dir / "tenants" / "evil" / "oops.cedar").write_text(BROKEN)
    (policy_dir / "tenants" / "acme" / "lockdown.cedar").write_text(LOCKDOWN)
    with caplog.at_level(logging.ERROR, logger="tenantgate.policy"):
        result = store.reload(force=True)
    assert (result.ok, result.changed, result.held_back) == (False, True, ("evil",))
    assert "tenants/evil/oops.cedar" in result.message
    assert "acme-emergency-lockdown" in _ids(store, "acme")  # applied
    kept = store.current().compiled.tenants["evil"]
    assert set(kept.ids) == {"evil-own"} and 'Action::"read"' in kept.text  # its last valid file, not the edit
    assert any("held back" in r.getMessage() and "evil" in r.getMessage() for r in caplog.records)
    # Fixed: the next reload applies evil's files as they are now.
    (policy_dir / "tenants" / "evil" / "oops.cedar").unlink()
    result = store.reload(force=True)
    assert (result.ok, result.held_back) == (True, ())
    assert 'Action::"update"' in store.current().compiled.tenants["evil"].text


def test_a_held_back_tenant_gets_the_new_global_policies(policy_dir):
    store = PolicyStore.load(policy_dir)
    (policy_dir / "tenants" / "evil" / "oops.cedar").write_text(BROKEN)
    (policy_dir / "zz-global-freeze.cedar").write_text(
        '@id("global-freeze")\nforbid (principal, action == Action::"delete", resource);\n')
    result = store.reload(force=True)
    assert result.held_back == ("evil",)
    engine = store.current()
    assert "global-freeze" in engine.compiled.locations
    assert engine.compiled.version_for("evil") != engine.compiled.global_version  # its own files still count


def test_a_new_tenant_whose_files_are_invalid_is_left_out_as_before_it_existed(policy_dir):
    store = PolicyStore.load(policy_dir)
    (policy_dir / "tenants" / "newco").mkdir()
    (policy_dir / "tenants" / "newco" / "x.cedar").write_text(BROKEN)
    (policy_dir / "tenants" / "acme" / "lockdown.cedar").write_text(LOCKDOWN)
    result = store.reload(force=True)
    assert result.held_back == ("newco",)
    assert "newco" not in store.current().compiled.tenants and "acme-emergency-lockdown" in _ids(store, "acme")


@pytest.mark.parametrize("where", ["zz-broken.cedar", "schema.cedarschema", "tenants/x.cedar"])
def test_a_problem_outside_tenant_directories_refuses_the_whole_reload(policy_dir, where):
    store = PolicyStore.load(policy_dir)
    before = store.current().version
    (policy_dir / "tenants" / "acme" / "lockdown.cedar").write_text(LOCKDOWN)
    with (policy_dir / where).open("a") as f:
        f.write("\nthis is not cedar\n")
    result = store.reload(force=True)
    assert (result.ok, result.held_back, store.current().version) == (False, (), before)


def test_a_held_tenant_whose_last_valid_files_no_longer_compile_refuses_the_reload(policy_dir):
    # A new global policy takes the id of evil's last valid policy: evil has nothing valid left to be held on.
    store = PolicyStore.load(policy_dir)
    before = store.current().version
    (policy_dir / "tenants" / "evil" / "oops.cedar").write_text(BROKEN)
    (policy_dir / "tenants" / "evil" / "own.cedar").write_text("")
    (policy_dir / "zz-id.cedar").write_text('@id("evil-own")\npermit (principal, action, resource) '
                                            'when { principal.tenant == "platform" };\n')
    result = store.reload(force=True)
    assert (result.ok, result.held_back, store.current().version) == (False, (), before)
    assert "tenants/evil/oops.cedar" in result.message and "evil-own" in result.message


def test_a_tenant_served_without_known_files_is_never_held_back(policy_dir):
    # A store made from a compiled set alone does not know evil's files: holding evil back would drop its policies.
    store = PolicyStore(load_policies(policy_dir), policy_dir=policy_dir)
    (policy_dir / "tenants" / "evil" / "oops.cedar").write_text(BROKEN)
    result = store.reload(force=True)
    assert (result.ok, result.held_back) == (False, ())
    assert "evil-own" in _ids(store, "evil")


def test_validate_stays_strict(policy_dir):
    (policy_dir / "tenants" / "evil" / "oops.cedar").write_text(BROKEN)
    with pytest.raises(PolicyError):
        load_policies(policy_dir)


def test_held_back_entity_data_is_the_last_valid_file(policy_dir):
    entities = policy_dir / "tenants" / "evil" / "entities.json"
    entities.write_text('[{"uid": {"type": "User", "id": "eve"}, "attrs": {"roles": ["viewer"]}}]')
    used: dict[str, TenantFiles] = {}
    load_policies(policy_dir, used=used)
    entities.write_text("[not json")
    loaded = load_holding_back(policy_dir, None, {}, DEFAULT_TENANT_LIMITS, used, {"evil", "acme"})
    assert loaded.tenants == ("evil",)
    assert loaded.compiled.entities.view("evil").record(("User", "eve")) is not None


def test_status_words_for_a_held_back_reload_name_no_tenant():
    assert "tenant" in HELD_BACK and "evil" not in HELD_BACK
