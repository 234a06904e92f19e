"""Where policy files may live: a *.cedar file the loader would not read is refused, never silently ignored
(review finding: `tenantgate fmt` formatted policies/sub/x.cedar while validate and serve left it out)."""

import shutil
from pathlib import Path

import pytest

from tenantgate.errors import PolicyError
from tenantgate.policy import load_policies
from tenantgate.policy.loader import STRAY_MESSAGE

BUNDLED = Path(__file__).resolve().parents[3] / "policies"
FORBID = '@id("no-reads")\nforbid (principal, action == Action::"read", resource);\n'
PERMIT = '@id("reads")\npermit (principal, action == Action::"read", resource);\n'


@pytest.fixture()
def policy_dir(tmp_path):
    root = tmp_path / "policies"
    shutil.copytree(BUNDLED, root)  # with tests/ (suites) and tenants/acme/
    return root


def _write(root, relative, text=FORBID):
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("relative", ["tenants/acme/guards/no-reads.cedar", "sub/x.cedar", "tenants/x.cedar",
                                      "sub/deeper/x.cedar", "tenants/.acme/x.cedar", ".drafts/x.cedar"])
def test_a_policy_file_where_the_loader_does_not_read_is_refused_by_name(policy_dir, relative):
    _write(policy_dir, relative)
    with pytest.raises(PolicyError) as err:
        load_policies(policy_dir)
    (diagnostic,) = err.value.diagnostics
    assert (diagnostic.path, diagnostic.line, diagnostic.message) == (relative, 1, STRAY_MESSAGE)
    assert "*.cedar directly in the policy directory" in str(err.value)
    assert "tenants/<tenant>/*.cedar" in str(err.value)


def test_stray_files_are_reported_with_the_other_problems_in_one_run(policy_dir):
    _write(policy_dir, "sub/x.cedar")
    _write(policy_dir, "broken.cedar", "permit (principal, action, resource")
    with pytest.raises(PolicyError) as err:
        load_policies(policy_dir)
    assert [d.path for d in err.value.diagnostics] == ["sub/x.cedar", "broken.cedar"]


def test_suites_other_files_and_kubernetes_dot_dot_directories_are_not_refused(policy_dir):
    _write(policy_dir, "tests/fixtures/sample.cedar", "not even cedar")
    _write(policy_dir, "sub/notes.md", "# notes")
    _write(policy_dir, "tenants/acme/archive/old.cedar.bak", "x")
    _write(policy_dir, "..2024_01_01_00_00_00.123/p.cedar")  # a ConfigMap's timestamped directory
    _write(policy_dir, "tenants/acme/..2024_01_01_00_00_00.1/extra.cedar")
    (policy_dir / "tenants" / "acme" / "..data").symlink_to("..2024_01_01_00_00_00.1")
    compiled = load_policies(policy_dir)
    assert "no-reads" not in compiled.locations and compiled.tenants["acme"].ids


def test_a_configmap_mount_loads_as_before(tmp_path):
    # <mount>/<file> -> ..data/<file>, ..data -> ..<timestamp>/, as kubelet lays a ConfigMap out; a tenant
    # directory may be a ConfigMap of its own (README: one ConfigMap per tenant directory).
    mount = tmp_path / "mount"
    version = mount / "..2024_05_01_10_00_00.42"
    version.mkdir(parents=True)
    shutil.copy(BUNDLED / "schema.cedarschema", version)
    (version / "p.cedar").write_text(PERMIT)
    (mount / "..data").symlink_to(version.name)
    for name in ("schema.cedarschema", "p.cedar"):
        (mount / name).symlink_to(f"..data/{name}")
    tenant = version / "tenants" / "acme"
    tenant_version = tenant / "..2024_05_01_10_00_00.7"
    tenant_version.mkdir(parents=True)
    (tenant_version / "own.cedar").write_text('@id("acme-own")\npermit (principal, action, resource);\n')
    (tenant / "..data").symlink_to(tenant_version.name)
    (tenant / "own.cedar").symlink_to("..data/own.cedar")
    compiled = load_policies(mount)
    assert "reads" in compiled.locations and compiled.tenants["acme"].ids == ("acme-own",)


def test_a_symlink_loop_is_walked_once(policy_dir):
    (policy_dir / "tenants" / "acme" / "up").symlink_to("../..")
    load_policies(policy_dir)


@pytest.mark.parametrize("source", ["src", "zsrc"])
def test_a_tenant_directory_linked_from_elsewhere_in_the_tree_is_read_not_refused(policy_dir, source):
    # Review finding: with `tenants/acme -> ../src/acme` the walk (each directory once) reached `src/acme` first
    # by its own name and refused its files as strays; the same layout named `zsrc/` loaded.
    shutil.move(policy_dir / "tenants" / "acme", policy_dir / source / "acme")
    (policy_dir / "tenants" / "acme").symlink_to(Path("..") / source / "acme")
    assert load_policies(policy_dir).total_policies == load_policies(BUNDLED).total_policies


@pytest.mark.parametrize("name", ["entities.json", "linked.cedar"])
def test_a_tenant_file_linked_to_another_tenants_file_is_refused_not_read(policy_dir, name):
    # Review finding: `tenants/evil/entities.json -> ../acme/entities.json` gave evil's decisions acme's users,
    # roles and groups; a linked *.cedar ran acme's policies in evil's partition.
    _write(policy_dir, "tenants/acme/entities.json", "[]")
    _write(policy_dir, "tenants/acme/linked.cedar", '@id("acme-secret")\npermit (principal, action, resource);\n')
    _write(policy_dir, "tenants/evil/own.cedar", '@id("evil-own")\npermit (principal, action, resource);\n')
    (policy_dir / "tenants" / "evil" / name).symlink_to(Path("..") / "acme" / name)
    with pytest.raises(PolicyError) as err:
        load_policies(policy_dir)
    (diagnostic,) = err.value.diagnostics
    assert diagnostic.path == f"tenants/evil/{name}"
    assert "outside its tenant's directory" in diagnostic.message


def test_a_tenant_file_linked_outside_the_tree_is_refused(policy_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere.cedar"
    elsewhere.write_text(PERMIT)
    (policy_dir / "tenants" / "acme" / "x.cedar").symlink_to(elsewhere)
    with pytest.raises(PolicyError) as err:
        load_policies(policy_dir)
    assert [d.path for d in err.value.diagnostics] == ["tenants/acme/x.cedar"]


@pytest.mark.parametrize("target", ["acme", "acme/sub"])
def test_a_tenant_directory_that_is_another_tenants_is_refused(policy_dir, target):
    (policy_dir / "tenants" / "acme" / "sub").mkdir()
    (policy_dir / "tenants" / "evil").symlink_to(target)
    with pytest.raises(PolicyError) as err:
        load_policies(policy_dir)
    (diagnostic,) = err.value.diagnostics  # the link, not the directory it points at
    assert diagnostic.path == "tenants/evil"
    assert "tenants/acme" in diagnostic.message and "its own" in diagnostic.message


def test_a_link_within_the_tenants_own_directory_is_read(policy_dir):
    _write(policy_dir, "tenants/acme/v2/current.txt", '@id("acme-v2")\npermit (principal, action, resource);\n')
    (policy_dir / "tenants" / "acme" / "current.cedar").symlink_to("v2/current.txt")
    assert "acme-v2" in load_policies(policy_dir).tenants["acme"].ids


def test_hidden_cedar_files_such_as_an_editors_lock_link_are_not_policies(policy_dir):
    # Review finding: emacs' dangling lock link `.#roles.cedar` made the whole set invalid.
    (policy_dir / "tenants" / "acme" / ".#support.cedar").symlink_to("root@host.1234:1700000000")
    _write(policy_dir, ".draft.cedar", "not cedar at all")
    assert load_policies(policy_dir).total_policies == load_policies(BUNDLED).total_policies
