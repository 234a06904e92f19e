"""A policy directory with a ``..data`` link (a Kubernetes ConfigMap layout) is read from the one snapshot it
resolves to, and nothing beside the snapshot is silently ignored (review finding: a new top-level forbid, a
stray sub/x.cedar and an editor's rename-save of a linked file were all ignored while validate said valid)."""

import os
import shutil
from pathlib import Path

import pytest

from tenantgate.errors import PolicyError
from tenantgate.policy import load_policies, loader
from tenantgate.policy.loader import OUTSIDE_SNAPSHOT_MESSAGE, STRAY_MESSAGE

BUNDLED = Path(__file__).resolve().parents[3] / "policies"
PERMIT = '@id("reads")\npermit (principal, action == Action::"read", resource);\n'
FORBID = '@id("lockdown")\nforbid (principal, action, resource);\n'


@pytest.fixture()
def mount(tmp_path):
    """``mount/<file> -> ..data/<file>``, ``..data -> ..v1/``, as kubelet lays a ConfigMap out."""
    root = tmp_path / "mount"
    version = root / "..v1"
    (version / "tenants" / "acme").mkdir(parents=True)
    shutil.copy(BUNDLED / "schema.cedarschema", version)
    (version / "p.cedar").write_text(PERMIT)
    (version / "tenants" / "acme" / "own.cedar").write_text('@id("acme-own")\npermit (principal, action, resource);\n')
    (root / "..data").symlink_to(version.name)
    for name in ("schema.cedarschema", "p.cedar", "tenants"):
        (root / name).symlink_to(f"..data/{name}")
    return root


def _problems(root, *args):
    with pytest.raises(PolicyError) as err:
        load_policies(root, *args)
    return [(d.path, d.message) for d in err.value.diagnostics]


def test_a_configmap_mount_with_linked_tenants_suites_and_other_files_loads(mount):
    (mount / "tests").mkdir()  # suites are read from the mount by `tenantgate test`
    (mount / "tests" / "suite.yaml").write_text("suites: []\n")
    (mount / "README.md").write_text("# notes\n")
    (mount / "..2024_01_01_00_00_00.1").mkdir()  # an old ConfigMap version kubelet has not removed yet
    (mount / "..2024_01_01_00_00_00.1" / "old.cedar").write_text(FORBID)
    compiled = load_policies(mount)
    assert "reads" in compiled.locations and compiled.tenants["acme"].ids == ("acme-own",)


def test_a_new_top_level_policy_beside_the_snapshot_is_refused_by_name(mount):
    (mount / "zz-lockdown.cedar").write_text(FORBID)
    assert _problems(mount) == [("zz-lockdown.cedar", OUTSIDE_SNAPSHOT_MESSAGE)]


def test_an_editor_rename_save_that_replaced_a_linked_policy_by_a_file_is_refused_by_name(mount):
    (mount / ".p.cedar.swp").write_text("")
    (mount / ".p.tmp").write_text(FORBID)
    (mount / ".p.tmp").replace(mount / "p.cedar")
    assert _problems(mount) == [("p.cedar", OUTSIDE_SNAPSHOT_MESSAGE)]


@pytest.mark.parametrize("name", ["schema.cedarschema", "entities.json"])
def test_a_schema_or_entity_file_beside_the_snapshot_is_refused_by_name(mount, name):
    if (mount / name).is_symlink():
        (mount / name).unlink()
    (mount / name).write_text((BUNDLED / "schema.cedarschema").read_text() if name.endswith("schema") else "[]")
    assert _problems(mount) == [(name, OUTSIDE_SNAPSHOT_MESSAGE)]


def test_a_stray_policy_in_a_directory_beside_the_snapshot_is_refused_by_name(mount):
    (mount / "sub").mkdir()
    (mount / "sub" / "stray.cedar").write_text(FORBID)
    assert _problems(mount) == [("sub", OUTSIDE_SNAPSHOT_MESSAGE), ("sub/stray.cedar", STRAY_MESSAGE)]


def test_a_stray_reached_through_a_link_into_the_snapshot_is_reported_once(mount):
    (mount / "..v1" / "sub").mkdir()
    (mount / "..v1" / "sub" / "stray.cedar").write_text(FORBID)
    (mount / "sub").symlink_to("..data/sub")
    assert _problems(mount) == [("sub/stray.cedar", STRAY_MESSAGE)]


def test_a_tenants_directory_beside_the_snapshot_is_refused_by_name(mount):
    (mount / "tenants").unlink()
    (mount / "tenants" / "globex").mkdir(parents=True)
    (mount / "tenants" / "globex" / "own.cedar").write_text(FORBID)
    assert _problems(mount) == [("tenants", OUTSIDE_SNAPSHOT_MESSAGE)]


def test_a_link_into_another_configmap_version_is_refused_by_name(mount):
    old = mount / "..v0"
    old.mkdir()
    (old / "lockdown.cedar").write_text(FORBID)
    (mount / "lockdown.cedar").symlink_to("..v0/lockdown.cedar")
    assert _problems(mount) == [("lockdown.cedar", OUTSIDE_SNAPSHOT_MESSAGE)]


def test_a_link_to_a_key_kubelet_is_still_adding_or_removing_is_not_refused(mount):
    # kubelet links a new key before it swaps ..data to the version holding it (and unlinks a removed key
    # after): for a moment the link dangles into ..data. The snapshot is what is read.
    (mount / "new.cedar").symlink_to("..data/new.cedar")
    assert "reads" in load_policies(mount).locations


def _swap(mount: Path, version: str) -> None:
    link = mount / "..data_tmp"
    link.symlink_to(version)
    link.replace(mount / "..data")


def test_the_schema_is_read_from_the_same_snapshot_as_the_policies(mount, monkeypatch):
    # kubelet swaps ..data to a new version right after the loader resolved it: what is read must still be one
    # version (the reloading store then notices the swap and reads again).
    shutil.copytree(mount / "..v1", mount / "..v2")
    (mount / "..v2" / "schema.cedarschema").write_text("this is not a schema")
    real_snapshot_dir = loader.snapshot_dir

    def resolve_then_swap(root):
        snapshot = real_snapshot_dir(root)
        _swap(mount, "..v2")
        return snapshot

    monkeypatch.setattr(loader, "snapshot_dir", resolve_then_swap)
    # As the server names it (config default: DIR/schema.cedarschema), not read through the top-level link.
    assert "reads" in load_policies(mount, mount / "schema.cedarschema").locations


def test_validate_and_the_server_report_the_same_version_for_a_configmap_mount(mount, monkeypatch):
    # `validate --policies DIR` passes no schema; the server passes DIR/schema.cedarschema (config default).
    version = load_policies(mount).version
    assert load_policies(mount, mount / "schema.cedarschema").version == version
    assert load_policies(mount, str(mount / "schema.cedarschema")).version == version
    monkeypatch.chdir(mount.parent)
    assert load_policies("mount", "mount/schema.cedarschema").version == version
    assert load_policies("mount", mount / "schema.cedarschema").version == version
    assert load_policies(mount / "..v1").version == version  # the same files, as a plain directory


def test_a_schema_outside_the_directory_is_still_shown_by_its_path(tmp_path, mount):
    schema = tmp_path / "elsewhere.cedarschema"
    shutil.copy(BUNDLED / "schema.cedarschema", schema)
    compiled = load_policies(mount, schema)
    assert compiled.version != load_policies(mount).version  # the schema's path is part of the version


def test_a_plain_directory_is_not_checked_for_a_snapshot(tmp_path):
    root = tmp_path / "plain"
    shutil.copytree(BUNDLED, root)
    (root / "notes").mkdir()
    assert loader.outside_snapshot(root, loader.snapshot_dir(root)) == []
    os.symlink("schema.cedarschema", root / "alias.cedarschema")
    load_policies(root)
