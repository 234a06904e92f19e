"""src type-checks with mypy, which is also what keeps the records ``core.model.hot_record`` builds immutable:
they are frozen to mypy only (plain slot stores at run time, for speed), so an assignment to a field anywhere
in src must fail this test."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _mypy(*targets: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--config-file",
                           str(ROOT / "pyproject.toml"), *targets], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_src_type_checks():
    checked = _mypy("src")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_assignment_to_a_hot_record_field_is_a_type_error(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from tenantgate.core.model import AuditEvent, Resource\n\n\n"
                     "def tamper(resource: Resource, event: AuditEvent) -> None:\n"
                     '    resource.tenant = "globex"\n'
                     '    event.decision = "ALLOW"\n')
    checked = _mypy(str(probe))
    assert checked.returncode == 1, checked.stdout
    assert checked.stdout.count("is read-only") == 2, checked.stdout
