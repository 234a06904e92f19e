"""The policy store's change detection over a hostile directory tree."""

import os
import shutil
import threading
from pathlib import Path

import pytest

from tenantgate.errors import PolicyError
from tenantgate.policy import PolicyStore, load_policies

BUNDLED = Path(__file__).resolve().parents[3] / "policies"


def tree_with_tenant(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    """The bundled policies plus tenant ``name`` with one policy file: (root, tenant directory, its file)."""
    root = tmp_path / "policies"
    shutil.copytree(BUNDLED, root)
    tenant = root / "tenants" / name
    tenant.mkdir(parents=True)
    policy = tenant / "p.cedar"
    policy.write_text(f'@id("{name}-read") permit (principal, action == Action::"read", resource);\n')
    return root, tenant, policy


def test_symlinks_back_up_the_tree_do_not_hang_loading_or_reloading(tmp_path):
    # Review finding: two links pointing back up (tenants/acme/up1 -> .., up2 -> ..) made the fingerprint's
    # walk exponential: `serve` never bound its port, and a running server's reload thread never returned.
    root = tmp_path / "policies"
    shutil.copytree(BUNDLED, root)
    acme = root / "tenants" / "acme"
    acme.mkdir(parents=True, exist_ok=True)
    os.symlink("..", acme / "up1")
    os.symlink("..", acme / "up2")
    os.symlink("../..", acme / "root")
    outcome: dict[str, object] = {}

    def load_and_reload() -> None:
        store = PolicyStore.load(root)
        outcome["files"] = len(store.fingerprint())
        outcome["reload"] = store.reload(force=True).ok

    worker = threading.Thread(target=load_and_reload, daemon=True)
    worker.start()
    worker.join(timeout=120)  # a liveness bound, not a speed measurement: it used to run for ever
    assert not worker.is_alive(), "fingerprinting a tree with symlink loops did not finish"
    cedar_files = len([p for p in root.rglob("*") if p.suffix in (".cedar", ".cedarschema", ".json")
                       and "tests" not in p.parts and not p.is_symlink()])
    tenant_dirs = len(list((root / "tenants").iterdir()))  # each tenant directory counts by its own name too
    assert outcome == {"files": cedar_files + tenant_dirs, "reload": True}


def test_a_tenant_named_tests_is_fingerprinted_like_any_other(tmp_path):
    # Review finding: every directory named `tests` was skipped, at any depth, though only the top-level
    # tests/ holds suites: an edit of tenants/tests/*.cedar read as "unchanged" at every poll.
    root, _tenant, policy = tree_with_tenant(tmp_path, "tests")
    store = PolicyStore.load(root)
    assert str(policy) in {path for path, *_ in store.fingerprint()}
    assert not any("/tests/" in path and "/tenants/" not in path for path, *_ in store.fingerprint())
    policy.write_text('@id("t-read2") permit (principal, action == Action::"read", resource);\n')
    assert store.reload().changed


def test_a_broken_set_is_reported_even_while_another_file_keeps_being_written(tmp_path, monkeypatch):
    # Review finding: a PolicyError was taken for "changed while being read" whenever any fingerprinted file
    # changed, so a heartbeat file touched all the time kept a broken set from ever being reported.
    from tenantgate.policy import loader

    root = tmp_path / "policies"
    shutil.copytree(BUNDLED, root)
    heartbeat = root / "entities.json"
    if not heartbeat.exists():
        heartbeat.write_text("[]")
    store = PolicyStore.load(root)
    (root / "zz_broken.cedar").write_text("permit (principal, action, resource) when { nonsense };\n")
    real_read = loader._read

    def read_and_touch(path, base):
        heartbeat.write_text(heartbeat.read_text())  # written in place: same inode, new mtime
        os.utime(heartbeat, ns=(0, os.stat(heartbeat).st_mtime_ns + 1_000_000))
        return real_read(path, base)

    monkeypatch.setattr(loader, "_read", read_and_touch)
    result = store.reload(force=True)
    assert (result.ok, result.changed) == (False, True) and "zz_broken.cedar" in result.message


def test_a_new_tenant_directory_linking_to_another_is_noticed(tmp_path):
    # Review finding (LOW): the walk visits each directory once, so `tenants/evil -> acme` added no entry: the
    # refusal it calls for waited for some unrelated change.
    root = tmp_path / "policies"
    shutil.copytree(BUNDLED, root)
    store = PolicyStore.load(root)
    (root / "tenants" / "evil").symlink_to("acme")
    result = store.reload()
    assert (result.ok, result.held_back) == (False, ("evil",))  # noticed, refused and held back (left out)


def test_a_chmod_or_chown_of_a_tenant_file_or_directory_is_a_change_to_poll(tmp_path):
    # Left open until 2026-12-04: a chmod or chown changes no mtime, so a tenant file made readable again (its tenant
    # held back or quarantined while it was not) stayed unnoticed until some unrelated edit or a SIGHUP.
    root, tenant, policy = tree_with_tenant(tmp_path, "zeta")
    store = PolicyStore.load(root)
    seen = [store.fingerprint()]
    for change in (lambda: policy.chmod(0o600), lambda: os.chown(policy, 12345, 12345),
                   lambda: tenant.chmod(0o700), lambda: os.chown(tenant, 12345, 12345)):
        change()
        seen.append(store.fingerprint())
        assert seen[-1] != seen[-2]


def test_a_tenants_directory_link_out_of_the_tree_is_not_walked(tmp_path):
    # Review finding: `tenants/evil/d -> /` made the fingerprint's walk (every poll) and the stray check's (every
    # reload) cover the host's whole file system: 9 s a poll here, and 11,000 files reported as evil's "strays".
    root = tmp_path / "policies"
    shutil.copytree(BUNDLED, root)
    evil = root / "tenants" / "evil"
    evil.mkdir(parents=True)
    (evil / "own.cedar").write_text('@id("evil-read") permit (principal, action == Action::"read", resource);\n')
    store = PolicyStore.load(root)
    elsewhere = tmp_path / "host"
    for n in range(3):
        (elsewhere / f"d{n}").mkdir(parents=True)
        (elsewhere / f"d{n}" / "x.cedar").write_text("// not a tenant's file\n")
        (elsewhere / f"d{n}" / "y.json").write_text("[]\n")
    os.symlink(elsewhere, evil / "d")
    assert not any(path.startswith(str(evil / "d")) for path, *_ in store.fingerprint())
    with pytest.raises(PolicyError) as info:
        load_policies(root)
    assert [d.path for d in info.value.diagnostics] == ["tenants/evil/d"]
    result = store.reload(force=True)
    assert result.held_back == ("evil",)
    # A link within the tree (another tenant's subdirectory, back up the tree) is walked as before.
    os.remove(evil / "d")
    os.symlink("../..", evil / "up")
    assert store.reload(force=True).ok
