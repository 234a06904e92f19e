"""A policy directory of one file beside the bundled schema, for tests that change policies under a running
server, and the two versions of that file they switch between."""

import shutil
from pathlib import Path

from support.server import BUNDLED_POLICIES

ALLOW_READ = '@id("read-v1")\npermit (principal, action == Action::"read", resource);\n'
# A tenant forbid whose `like` takes Cedar about 15 ms against a 64 KiB `status` (within the default limit).
SLOW_FORBID = ('@id("slow")\nforbid (principal, action, resource is Invoice) when '
               f'{{ resource has status && resource.status like "*{"a" * 250}b" }};\n')
FORBID_READ = ('@id("read-v2")\npermit (principal, action == Action::"read", resource);\n'
               '@id("no-read-v2")\nforbid (principal, action == Action::"read", resource);\n')


def single_policy_dir(tmp_path: Path) -> Path:
    """``tmp_path/policies`` with the bundled schema and ``p.cedar`` = ``ALLOW_READ``."""
    root = tmp_path / "policies"
    root.mkdir()
    (root / "schema.cedarschema").write_bytes((BUNDLED_POLICIES / "schema.cedarschema").read_bytes())
    (root / "p.cedar").write_text(ALLOW_READ)
    return root


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one rename, so a reload never reads half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def with_poll(config_path: Path, policy_dir: Path, poll: object) -> Path:
    """Set ``policies.poll_interval_seconds`` in a config written by ``support.server.write_config``."""
    config_path.write_text(config_path.read_text().replace(
        f'dir = "{policy_dir}"', f'dir = "{policy_dir}"\npoll_interval_seconds = {poll}'))
    return config_path


def bundled_with_tenant(tmp_path: Path, tenant: str, files: dict[str, str]) -> Path:
    """``tmp_path/policies``: a copy of the bundled policies with ``tenants/<tenant>/<name>`` = text for each
    of ``files``."""
    root = tmp_path / "policies"
    shutil.copytree(BUNDLED_POLICIES, root)
    (root / "tenants" / tenant).mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / "tenants" / tenant / name).write_text(text)
    return root
