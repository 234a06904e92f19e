"""Policy files that are not regular files, and ConfigMap layouts, as the reloading store and `tenantgate
validate` meet them (review findings: a FIFO at the schema path wedged reloads for good while the status said
last_reload_ok; validate hung on it, and died with a MemoryError traceback on a schema linked to /dev/zero;
validate and the server reported different policy versions for one ConfigMap mount)."""

import os
import resource
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from support.issuers import TestIssuer
from support.policies import FORBID_READ, single_policy_dir, write_atomically
from support.server import BUNDLED_POLICIES, write_config
from tenantgate import config
from tenantgate.policy import PolicyStore, ReloadResult

TENANTGATE = [sys.executable, "-m", "tenantgate.cli.main"]
BOUND_SECONDS = 10


def _unblock(fifo: Path) -> None:
    try:  # a reader blocked in open() of the FIFO returns once a writer opens it
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def _reload_bounded(store: PolicyStore, fifo: Path) -> ReloadResult:
    results: list[ReloadResult] = []
    worker = threading.Thread(target=lambda: results.append(store.reload()), daemon=True)
    worker.start()
    worker.join(BOUND_SECONDS)
    if worker.is_alive():
        _unblock(fifo)
        worker.join(BOUND_SECONDS)
        pytest.fail(f"reload blocked on the FIFO {fifo.name} for {BOUND_SECONDS} s (holding the reload lock)")
    return results[0]


def test_a_fifo_at_the_schema_path_is_refused_and_later_changes_still_reload(tmp_path):
    root = single_policy_dir(tmp_path)
    store = PolicyStore.load(root)
    before = store.current().version
    schema = root / "schema.cedarschema"
    saved = schema.read_bytes()
    schema.unlink()
    os.mkfifo(schema)
    refused = _reload_bounded(store, schema)
    assert not refused.ok and store.last_result == refused and "not a regular file" in refused.message
    assert "schema.cedarschema" in refused.message and store.current().version == before

    schema.unlink()
    schema.write_bytes(saved)
    write_atomically(root / "p.cedar", FORBID_READ)
    applied = _reload_bounded(store, schema)
    assert applied.ok and applied.changed and store.current().version != before


def _validate(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    def limit_memory() -> None:  # without the fix /dev/zero is read until memory runs out: keep that small
        resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))

    base = {k: v for k, v in os.environ.items() if not k.startswith("TENANTGATE_")}
    return subprocess.run([*TENANTGATE, "validate", "--policies", str(root), *extra], env=base, text=True,
                          capture_output=True, timeout=30, preexec_fn=limit_memory)


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_validate_refuses_a_schema_that_is_not_a_regular_file_by_name(tmp_path, kind):
    root = tmp_path / "policies"
    shutil.copytree(BUNDLED_POLICIES, root)
    schema = root / "schema.cedarschema"
    schema.unlink()
    if kind == "fifo":
        os.mkfifo(schema)
    else:
        schema.symlink_to(kind)
    try:
        out = _validate(root)
    except subprocess.TimeoutExpired:
        pytest.fail("validate blocked on the schema")
    assert out.returncode == 3, out.stdout + out.stderr
    assert f"{schema}:1: not a regular file" in out.stdout and "Traceback" not in out.stderr


def test_validate_and_the_server_report_the_same_version_for_a_configmap_mount(tmp_path):
    mount = tmp_path / "mount"
    version = mount / "..2025_01_01_00_00_00.1"
    version.mkdir(parents=True)
    for name in ("schema.cedarschema", "roles.cedar"):
        shutil.copy(BUNDLED_POLICIES / name, version)
    (mount / "..data").symlink_to(version.name)
    for name in ("schema.cedarschema", "roles.cedar"):
        (mount / name).symlink_to(f"..data/{name}")
    settings = config.load(write_config(tmp_path, TestIssuer(tmp_path).settings, policies=mount), env={})
    served = PolicyStore.load(settings.policies.dir, settings.policies.schema_file).current().version  # as app.py
    out = _validate(mount)
    assert out.returncode == 0 and f"(version {served})" in out.stdout, (served, out.stdout + out.stderr)
