import json
import os
import threading

import pytest

from tenantgate.audit import JsonlAuditSink
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
    assert json.loads(lines[0])["resource_id"] == "inv\n1\u2028"
    assert oct((tmp_path / "a" / "audit.jsonl").stat().st_mode & 0o777) == "0o600"


def test_concurrent_writers_never_interleave_within_a_line(tmp_path):
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


def test_unwritable_location_raises_audit_unavailable_and_recovers(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    sink = JsonlAuditSink(blocker / "audit.jsonl")
    with pytest.raises(AuditUnavailable):
        sink.write(_event())
    blocker.unlink()
    assert sink.healthy()
    sink.write(_event())
    assert (blocker / "audit.jsonl").exists()


def test_disk_full_is_audit_unavailable():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    sink = JsonlAuditSink("/dev/full")
    with pytest.raises(AuditUnavailable, match="No space"):
        sink.write(_event())
