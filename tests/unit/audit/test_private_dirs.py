"""Directories created for state (audit log, dev issuer keys) are 0700, parents included.

Found in review: ``mkdir(parents=True, mode=0o700)`` applies the mode only to the last directory; the
default ``.tenantgate`` state directory above ``dev-issuer`` (and any parent of ``audit.path``) came out 0755.
The dev issuer test sits here because it shares the helper's contract with the audit sink.
"""

import os
import stat

import pytest

from tenantgate.audit import JsonlAuditSink
from tenantgate.config import DevIssuerSettings
from tenantgate.identity import DevIssuer


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    old = os.umask(0o022)  # the usual umask: what lets mkdir make 0755 directories
    yield
    os.umask(old)


def test_the_dev_issuer_creates_the_state_directory_and_its_key_directory_0700(tmp_path, open_umask):
    state = tmp_path / "work" / ".tenantgate"
    DevIssuer(DevIssuerSettings(enabled=True, key_dir=str(state / "dev-issuer"))).ensure_keys()
    assert (_mode(tmp_path / "work"), _mode(state), _mode(state / "dev-issuer")) == (0o700, 0o700, 0o700)


def test_the_dev_issuer_leaves_the_mode_of_existing_parents_alone(tmp_path, open_umask):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    DevIssuer(DevIssuerSettings(enabled=True, key_dir=str(shared / "dev-issuer"))).ensure_keys()
    assert (_mode(shared), _mode(shared / "dev-issuer")) == (0o755, 0o700)


def test_the_audit_sink_creates_every_missing_parent_of_its_log_0700(tmp_path, open_umask, event):
    path = tmp_path / "state" / "logs" / "audit.jsonl"
    JsonlAuditSink(path).write(event(1))
    assert (_mode(tmp_path / "state"), _mode(path.parent), _mode(path)) == (0o700, 0o700, 0o600)
