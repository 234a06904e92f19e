"""The policy store's change detection over a hostile directory tree."""

import os
import shutil
import threading
from pathlib import Path

from tenantgate.policy import PolicyStore

BUNDLED = Path(__file__).resolve().parents[3] / "policies"


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
    assert outcome == {"files": cedar_files, "reload": True}
