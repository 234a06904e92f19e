"""One tenant's invalid files hold back only that tenant, on its last valid files; every other change applies.

Review finding (MEDIUM): with `tenants/evil/oops.cedar` missing a `;`, acme's emergency forbid added next to it
never applied (the whole reload was refused), and a restart would not start at all.
"""

import logging
import shutil
from pathlib import Path

import pytest

from support.policies import bundled_with_tenant
from tenantgate.core.compiler import DEFAULT_TENANT_LIMITS, TenantLimits
from tenantgate.core.engine import Engine
from tenantgate.core.model import Decision, Principal, Resource
from tenantgate.errors import PolicyError
from tenantgate.policy import PolicyStore, load_policies
from tenantgate.policy.holdback import load_holding_back
from tenantgate.policy.loader import TenantFiles
from tenantgate.rpc.admin import HELD_BACK

BUNDLED = Path(__file__).resolve().parents[3] / "policies"
LOCKDOWN = '@id("acme-emergency-lockdown")\nforbid (principal, action, resource is Invoice);\n'
EVIL_OWN = '@id("evil-own")\npermit (principal, action == Action::"read", resource);\n'
BROKEN = '@id("oops")\npermit (principal, action, resource)\n'  # no `;`


@pytest.fixture()
def policy_dir(tmp_path):
    return bundled_with_tenant(tmp_path, "evil", {"own.cedar": EVIL_OWN})


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


def test_a_new_tenant_whose_files_are_invalid_is_quarantined(policy_dir):
    # It had no files before, but its first files say it means to have rules of its own, which the global set
    # alone would lack (and a worker started now would quarantine it: both agree).
    store = PolicyStore.load(policy_dir)
    (policy_dir / "tenants" / "newco").mkdir()
    (policy_dir / "tenants" / "newco" / "x.cedar").write_text(BROKEN)
    (policy_dir / "tenants" / "acme" / "lockdown.cedar").write_text(LOCKDOWN)
    result = store.reload(force=True)
    assert (result.held_back, result.quarantined) == (("newco",), ("newco",))
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


def _linked_tenants(tmp_path, acme_dir, evil_dir):
    """The bundled set with ``tenants/acme`` and ``tenants/evil`` linked to ``<tmp>/repos/<acme_dir>`` and
    ``<evil_dir>``; returns the policy directory and the repos directory."""
    root, repos = tmp_path / "policies", tmp_path / "repos"
    shutil.copytree(BUNDLED, root)
    shutil.move(root / "tenants" / "acme", repos / acme_dir)
    (repos / evil_dir).mkdir()
    (repos / evil_dir / "own.cedar").write_text(EVIL_OWN)
    (root / "tenants" / "acme").symlink_to(repos / acme_dir)
    (root / "tenants" / "evil").symlink_to(repos / evil_dir)
    return root, repos


def test_a_tenant_that_relinks_onto_another_tenants_directory_holds_back_only_itself(tmp_path):
    # Review finding (HIGH): with linked tenant directories (tenants/acme -> ../src/acme), evil re-linking its
    # directory onto acme's got both held back: acme's lockdown never applied while evil kept the link.
    root, repos = _linked_tenants(tmp_path, "acme", "evil")
    store = PolicyStore.load(root)
    (repos / "acme" / "lockdown.cedar").write_text(LOCKDOWN)
    (root / "tenants" / "evil").unlink()
    (root / "tenants" / "evil").symlink_to(repos / "acme")
    result = store.reload()
    assert result.held_back == ("evil",)
    assert "acme-emergency-lockdown" in _ids(store, "acme") and _ids(store, "evil") == {"evil-own"}


def test_another_tenants_link_into_a_tenants_subdirectory_does_not_take_the_blame_for_its_stray(policy_dir):
    # Review finding (MEDIUM): zzz moved its forbid into tenants/zzz/guards/ by mistake; evil's link to that
    # directory was walked first and blamed, so zzz went on without its forbid.
    zzz = policy_dir / "tenants" / "zzz"
    zzz.mkdir()
    (zzz / "own.cedar").write_text('@id("zzz-no-delete")\nforbid (principal, action == Action::"delete", resource);\n'
                                   '@id("zzz-all")\npermit (principal, action, resource);\n')
    store = PolicyStore.load(policy_dir)
    (zzz / "guards").mkdir()
    (zzz / "guards" / "g.cedar").write_text('@id("zzz-no-delete")\nforbid (principal, action == Action::"delete", '
                                            'resource);\n')
    (zzz / "own.cedar").write_text('@id("zzz-all")\npermit (principal, action, resource);\n')
    (policy_dir / "tenants" / "evil" / "l").symlink_to("../zzz/guards")
    result = store.reload(force=True)
    assert set(result.held_back) == {"evil", "zzz"}
    assert _ids(store, "zzz") == {"zzz-no-delete", "zzz-all"}  # its last valid files, forbid included


def test_a_tenant_named_like_a_policy_file_is_held_back_like_any_other(policy_dir):
    # Review finding (LOW): held_tenant took tenants/big.cedar for a stray file directly in tenants/.
    big = policy_dir / "tenants" / "big.cedar"
    big.mkdir()
    (big / "own.cedar").write_text(EVIL_OWN.replace("evil-own", "big-own"))
    store = PolicyStore.load(policy_dir, limits=TenantLimits(max_policies=2))
    (big / "more.cedar").write_text("".join(f'@id("b{n}")\npermit (principal, action, resource);\n' for n in range(3)))
    (policy_dir / "tenants" / "acme" / "lockdown.cedar").write_text(LOCKDOWN)
    result = store.reload(force=True)
    assert result.held_back == ("big.cedar",) and "acme-emergency-lockdown" in _ids(store, "acme")


def test_a_stray_in_a_tenant_subdirectory_of_a_configmap_snapshot_holds_back_that_tenant(tmp_path):
    # Review finding (MEDIUM): with a ..data layout the walk beside the snapshot found evil's stray again after
    # evil was held, and the whole reload was refused.
    mount = tmp_path / "mount"
    version = mount / "..2026_01"
    shutil.copytree(BUNDLED, version)
    (version / "tenants" / "evil").mkdir()
    (version / "tenants" / "evil" / "own.cedar").write_text(EVIL_OWN)
    (mount / "..data").symlink_to(version.name)
    for entry in sorted(version.iterdir()):
        (mount / entry.name).symlink_to(f"..data/{entry.name}")
    store = PolicyStore.load(mount)
    (version / "tenants" / "acme" / "lockdown.cedar").write_text(LOCKDOWN)
    (version / "tenants" / "evil" / "sub").mkdir()
    (version / "tenants" / "evil" / "sub" / "x.cedar").write_text(EVIL_OWN)
    result = store.reload(force=True)
    assert result.held_back == ("evil",) and "acme-emergency-lockdown" in _ids(store, "acme")


def test_a_tenant_that_links_over_another_tenants_releases_stays_the_one_held_back(tmp_path):
    # Review finding (HIGH): acme deploys by swapping its link to a new release directory, so it "moved" at each
    # release; evil, linked to the directory of all releases, got acme held back with it and the lockdown in
    # acme's new release never applied.
    root, releases = _linked_tenants(tmp_path, "acme-1", "evil-1")
    store = PolicyStore.load(root)
    (root / "tenants" / "evil").unlink()
    (root / "tenants" / "evil").symlink_to(releases)
    assert store.reload().held_back == ("evil",)
    shutil.copytree(releases / "acme-1", releases / "acme-2")
    (releases / "acme-2" / "lockdown.cedar").write_text(LOCKDOWN)
    (root / "tenants" / "acme").unlink()
    (root / "tenants" / "acme").symlink_to(releases / "acme-2")
    assert store.reload().held_back == ("evil",)
    assert "acme-emergency-lockdown" in _ids(store, "acme") and _ids(store, "evil") == {"evil-own"}


def test_a_tenant_policy_as_deep_as_allowed_that_reads_its_tenant_does_not_refuse_every_tenants_reload(policy_dir):
    # Review finding: `principal.tenant == "evil" && true && ...` (250 `&&`, within the depth limit) made the
    # tenant-boundary check recurse past Python's limit; RecursionError escaped the compiler, so the whole reload
    # was refused ("unexpected error") and acme's emergency forbid never applied (`validate` crashed too).
    store = PolicyStore.load(policy_dir)
    deep = 'permit (principal, action, resource) when { principal.tenant == "evil"' + " && true" * 250 + " };\n"
    (policy_dir / "tenants" / "evil" / "deep.cedar").write_text('@id("evil-deep")\n' + deep)
    (policy_dir / "tenants" / "acme" / "lockdown.cedar").write_text(LOCKDOWN)
    result = store.reload(force=True)
    assert (result.ok, result.held_back) == (True, ())
    assert "acme-emergency-lockdown" in _ids(store, "acme") and "evil-deep" in _ids(store, "evil")
    alice = Principal("User", "alice", "alice", "evil", (), None, "iss", "t")
    out = Engine(load_policies(policy_dir)).evaluate(alice, "approve", Resource("Invoice", "i", "evil"),
                                                     {"tenant": "evil"}, {"intent": ""})
    assert (out.decision, out.policy_ids) == (Decision.ALLOW, ("evil-deep",))
