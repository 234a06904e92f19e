"""The JSONL sink's promises, now hash-chained: one line per record, no interleaving, recovery by itself."""

import json
import os
import threading

import pytest

from tenantgate.audit import JsonlAuditSink, verify_log
from tenantgate.core.model import AuditEvent
from tenantgate.errors import AuditUnavailable


def _event(i=0, **kw):
    base = dict(decision_id=f"id-{i}", time="2026-01-01T00:00:00.000Z", decision="DENY", reason="cross_tenant",
                message="m", api="check", subject="alice", actor="", principal_type="User", principal_tenant="acme",
                resource_type="Invoice", resource_id="inv\n1\u2028", resource_tenant="globex", action="read",
                intent="", policy_ids=("a",), grant_id="", policy_version="v", issuer="iss", token_id="jti")
    base.update(kw)
    return AuditEvent(**base)


def test_one_line_per_record_even_with_newlines_in_values(tmp_path):
    sink = JsonlAuditSink(tmp_path / "a" / "audit.jsonl")
    sink.write(_event(1))
    sink.write(_event(2))
    lines = (tmp_path / "a" / "audit.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3
    first = json.loads(lines[0])
    assert first["resource_id"] == "inv\n1\u2028" and first["record_type"] == "decision"
    assert (first["seq"], json.loads(lines[1])["prev_hash"]) == (1, first["hash"])
    assert oct((tmp_path / "a" / "audit.jsonl").stat().st_mode & 0o777) == "0o600"


def test_concurrent_writers_never_interleave_within_a_line_and_share_one_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    sinks = [JsonlAuditSink(path) for _ in range(2)]  # two handles, as a CLI check beside a server

    def work(sink, base):
        for i in range(300):
            sink.write(_event(base + i, message="x" * 3000))

    threads = [threading.Thread(target=work, args=(s, n * 1000)) for n, s in enumerate(sinks * 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 1200
    assert [r["seq"] for r in records] == list(range(1, 1201))
    assert verify_log(path).intact


def test_unwritable_location_raises_audit_unavailable_and_recovers(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    sink = JsonlAuditSink(blocker / "audit.jsonl")
    with pytest.raises(AuditUnavailable):
        sink.write(_event())
    assert not sink.healthy()
    blocker.unlink()
    assert sink.healthy()
    sink.write(_event())
    assert (blocker / "audit.jsonl").exists()
    assert verify_log(blocker / "audit.jsonl").intact


def test_disk_full_is_audit_unavailable_and_unhealthy(tmp_path, monkeypatch):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    sink.write(_event(1))
    real_write = os.write

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(AuditUnavailable, match="No space"):
        sink.write(_event(2))
    assert not sink.healthy()
    monkeypatch.setattr(os, "write", real_write)
    assert sink.healthy()
    assert [json.loads(x).get("decision_id") for x in path.read_text().splitlines()] == ["id-1", None]  # the probe


def test_a_device_at_the_log_path_is_refused_not_written_to():
    """/dev/full used to stand in for a full disk; a device is now refused before any write (as /dev/null is,
    which would swallow every record)."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    sink = JsonlAuditSink("/dev/full")
    with pytest.raises(AuditUnavailable, match="character device"):
        sink.write(_event())
    assert not sink.healthy()
    assert not os.path.exists("/dev/full.head")


def test_records_reach_the_configured_path_after_rotation_and_the_chain_continues(tmp_path):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    sink.write(_event(1))
    path.rename(tmp_path / "audit.jsonl.1")  # what logrotate does
    sink.write(_event(2))
    (record,) = [json.loads(x) for x in path.read_text().splitlines()]
    assert (record["decision_id"], record["seq"]) == ("id-2", 2)
    report = verify_log(path)
    assert report.intact and report.records == 2


def test_a_deleted_log_is_recreated_at_the_next_record(tmp_path):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    sink.write(_event(1))
    path.unlink()
    sink.write(_event(2))
    assert json.loads(path.read_text())["decision_id"] == "id-2"


def test_health_probes_the_log_itself_not_a_side_file(tmp_path):
    import resource
    import signal

    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    sink.write(_event(1))
    size = path.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 10, hard))
        with pytest.raises(AuditUnavailable):
            sink.write(_event(2))
        assert not sink.healthy()  # a fresh side file would still be writable; the log is not
        assert path.stat().st_size == size  # the torn record was cut back: the log stays line-aligned
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    assert sink.healthy()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[-1]["record_type"] == "audit_probe"
    assert verify_log(path).intact
