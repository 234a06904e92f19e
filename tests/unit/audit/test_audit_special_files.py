"""The files of a chain must be regular files: a FIFO, a device or a symlink in their place is refused, never
written to, written through or waited on.

Found in review: with a FIFO at the log path decisions were ALLOWed with their records in a pipe nobody
read, then the server hung once the pipe was full; a FIFO head file blocked the batch leader forever (in
``read_head``); a symlink to /dev/null swallowed every record with ``healthy()`` True; a head file symlinked
to a policy file had its first 160 bytes overwritten. Every write here runs on a thread with a deadline, so a
regression fails instead of hanging the suite.
"""

import contextlib
import os
import threading

import pytest

from tenantgate import config
from tenantgate.audit import JsonlAuditSink, verify_log
from tenantgate.audit.files import head_path, rotated_path
from tenantgate.errors import AuditUnavailable, ConfigError

DEADLINE = 5.0


def _within(action, seconds=DEADLINE):
    """``action()``'s result (or the exception it raised), failing the test if it is still running after
    ``seconds`` (it is left on a daemon thread)."""
    outcome = []

    def run():
        try:
            outcome.append(("returned", action()))
        except BaseException as err:  # handed to the test, raised there
            outcome.append(("raised", err))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still blocked after {seconds} s"
    kind, value = outcome[0]
    if kind == "raised":
        raise value
    return value


@contextlib.contextmanager
def _unblocking(fifo):
    """On the way out, open ``fifo`` both ways so that anything still waiting on it is released."""
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))


def test_a_fifo_at_the_log_path_is_refused_and_nothing_is_acknowledged(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    os.mkfifo(path, 0o600)
    sink = JsonlAuditSink(path)
    with _unblocking(path):
        with pytest.raises(AuditUnavailable, match="FIFO"):
            _within(lambda: sink.write(event(1, decision="ALLOW", reason="allow")))
        assert not _within(sink.healthy)
    assert not head_path(path).exists()


def test_a_fifo_put_in_place_of_the_live_log_makes_writes_fail_and_heals_when_it_is_gone(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    sink.write(event(1))
    path.rename(tmp_path / "moved.jsonl")
    os.mkfifo(path, 0o600)
    with _unblocking(path):
        for i in range(200):  # more than a pipe's 64 KiB buffer would hold
            with pytest.raises(AuditUnavailable, match="FIFO"):
                _within(lambda i=i: sink.write(event(i, decision="ALLOW", reason="allow")))
        assert not _within(sink.healthy)
    path.unlink()
    (tmp_path / "moved.jsonl").rename(path)
    assert _within(sink.healthy)
    sink.write(event(2))
    assert verify_log(path, from_genesis=True).intact


@pytest.mark.parametrize("target", ["/dev/null", "regular"])
def test_a_symlink_put_in_place_of_the_live_log_is_not_followed(tmp_path, event, target):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    sink.write(event(1))
    path.rename(tmp_path / "old.jsonl")
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_bytes(b"")
    os.symlink("/dev/null" if target == "/dev/null" else elsewhere, path)
    with pytest.raises(AuditUnavailable, match="symbolic link"):
        _within(lambda: sink.write(event(2, decision="ALLOW", reason="allow")))
    assert not _within(sink.healthy)
    assert elsewhere.read_bytes() == b""


def test_a_fifo_head_file_neither_blocks_nor_fails_a_write(tmp_path, event, caplog):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    sink.write(event(1))
    sink.write(event(2))
    path.unlink()
    head_path(path).unlink()
    os.mkfifo(head_path(path), 0o600)
    with _unblocking(head_path(path)):
        _within(lambda: sink.write(event(3)))  # the log is re-created: resuming reads the head file
        assert _within(sink.healthy)
    assert sink.stats().head_failures >= 1 and "FIFO" in caplog.text
    head_path(path).unlink()  # (verify's handling of a FIFO head file is verify's own test)
    report = verify_log(path)
    assert report.records == 1 and report.last_seq == 3  # the chain continued from what the writer remembered


def test_a_head_file_symlinked_elsewhere_is_not_written_through(tmp_path, event, caplog):
    path = tmp_path / "logs" / "audit.jsonl"
    victim = tmp_path / "policies" / "tenancy.cedar"
    victim.parent.mkdir()
    original = b"permit(principal, action, resource) when { principal.tenant == resource.tenant };\n" * 3
    victim.write_bytes(original)
    first = JsonlAuditSink(path)
    first.write(event(1))
    first.close()
    head_path(path).unlink()
    os.symlink(victim, head_path(path))
    restarted = JsonlAuditSink(path)
    _within(lambda: restarted.write(event(2)))
    restarted.close()
    assert victim.read_bytes() == original
    assert head_path(path).is_symlink() and restarted.stats().head_failures >= 1
    assert "symbolic link" in caplog.text
    assert [r for r in path.read_bytes().splitlines()][-1].count(b'"seq":2') == 1


def test_a_fifo_as_the_newest_rotated_file_is_refused_not_waited_on(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    sink.write(event(1))
    sink.close()
    path.write_bytes(b"")  # emptied (as copytruncate leaves it): the chain continues from .1 or the head file
    os.mkfifo(rotated_path(path, 1), 0o600)
    restarted = JsonlAuditSink(path)
    with _unblocking(rotated_path(path, 1)), pytest.raises(AuditUnavailable, match="FIFO"):
        _within(lambda: restarted.write(event(2)))


def test_without_hard_links_a_fifo_planted_in_the_rotation_gap_is_refused(tmp_path, event, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, rotate_bytes=2000)
    for i in range(3):
        sink.write(event(i))
    real_rename = os.rename

    def rename(src, dst, *args, **kwargs):
        real_rename(src, dst, *args, **kwargs)
        if os.fspath(src) == os.fspath(path) and not os.path.exists(path):
            monkeypatch.setattr(os, "rename", real_rename)
            os.mkfifo(path, 0o600)  # while the live name is empty

    monkeypatch.setattr(os, "rename", rename)
    with _unblocking(path), pytest.raises(AuditUnavailable, match="FIFO"):
        _within(lambda: sink.write(event(3, decision="ALLOW", reason="allow")))  # rotates
    assert os.rename is real_rename, "the gap between the renames was not exercised"


def _config_with_audit_path(tmp_path, audit_path):
    toml = tmp_path / "tenantgate.toml"
    toml.write_text(f'[dev_issuer]\nenabled = true\n\n[audit]\npath = "{audit_path}"\n')
    return toml


@pytest.mark.parametrize("kind", ["/dev/null", "fifo", "symlink", "directory"])
def test_an_audit_path_that_is_not_a_regular_file_is_refused_at_load(tmp_path, kind):
    target = tmp_path / "audit.jsonl"
    if kind == "/dev/null":
        target = "/dev/null"
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "symlink":
        (tmp_path / "real.jsonl").write_bytes(b"")
        target.symlink_to(tmp_path / "real.jsonl")
    else:
        target.mkdir()
    with pytest.raises(ConfigError, match=r"audit\.path"):
        config.load(_config_with_audit_path(tmp_path, target), env={})


def test_an_audit_path_that_is_a_regular_file_or_not_there_yet_is_accepted(tmp_path):
    assert config.load(_config_with_audit_path(tmp_path, tmp_path / "new" / "audit.jsonl"), env={})
    (tmp_path / "audit.jsonl").write_bytes(b"")
    assert config.load(_config_with_audit_path(tmp_path, tmp_path / "audit.jsonl"), env={})
