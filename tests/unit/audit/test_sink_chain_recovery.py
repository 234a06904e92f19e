"""A restarted sink recovers the chain from what a crash left: torn or corrupt tails are set aside as evidence and
recorded in the chain, lost records and pre-chain logs are reported, and a tail it cannot read fails closed."""

import pytest

from support.audit import _kinds, _records
from tenantgate.audit import JsonlAuditSink, encode_event, verify_log
from tenantgate.audit.chain import GENESIS_HASH
from tenantgate.errors import AuditUnavailable


def test_a_torn_last_line_is_kept_as_evidence_cut_off_and_recorded_in_the_chain(tmp_path, event, caplog):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    for i in range(3):
        sink.write(event(i))
    torn = encode_event(event(99))[:40]
    with open(path, "ab") as f:
        f.write(torn)  # a crash in the middle of a record
    assert _kinds(verify_log(path)) == ["torn"]
    restarted = JsonlAuditSink(path)
    restarted.open()
    (evidence,) = tmp_path.glob("audit.jsonl.torn-*")
    assert evidence.read_bytes() == torn
    records = _records(path)
    assert len(records) == 4
    recovered = records[3]
    assert recovered["record_type"] == "audit_recovered" and recovered["reason"] == "torn_tail"
    assert (recovered["set_aside_bytes"], recovered["resumed_seq"], recovered["evidence"]) == (40, 3, evidence.name)
    assert "torn or corrupt bytes" in caplog.text
    restarted.write(event(4))
    report = verify_log(path)
    assert report.intact and report.last_seq == 5 and "recovered" in _kinds(report)


def test_complete_but_corrupt_lines_at_the_end_are_set_aside_too(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    JsonlAuditSink(path).write(event(1))
    with open(path, "ab") as f:
        f.write(b"\x00" * 30 + b"\n" + b"garbage\n")
    sink = JsonlAuditSink(path)
    sink.write(event(2))
    assert [r["record_type"] for r in _records(path)] == ["decision", "audit_recovered", "decision"]
    assert verify_log(path).intact


def test_recovery_that_finds_written_records_gone_is_reported_by_verify(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    for i in range(5):
        sink.write(event(i))
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:3]) + lines[3][:20])  # records 4 and 5 were acknowledged, now gone
    JsonlAuditSink(path).write(event(5))
    report = verify_log(path)
    assert not report.intact
    (lost,) = [f for f in report.findings if f.kind == "lost"]
    assert (lost.line, "4..5") == (4, "4..5") and "4..5" in lost.message


def test_a_log_from_before_the_chain_is_moved_aside_and_a_new_chain_starts(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    legacy = encode_event(event(1)) + encode_event(event(2))
    path.write_bytes(legacy)
    JsonlAuditSink(path).write(event(3))
    (moved,) = tmp_path.glob("audit.jsonl.unchained-*")
    assert moved.read_bytes() == legacy
    records = _records(path)
    assert records[0]["record_type"] == "audit_recovered" and records[0]["reason"] == "unchained_log_moved"
    assert records[0]["prev_hash"] == GENESIS_HASH and records[1]["decision_id"] == "id-3"
    assert verify_log(path, from_genesis=True).intact


def test_recovery_looks_past_a_large_corrupt_tail_but_not_forever(tmp_path, event):
    from tenantgate.audit.files import TAIL_WINDOW

    path = tmp_path / "audit.jsonl"
    JsonlAuditSink(path).write(event(1))
    with open(path, "ab") as f:
        f.write((b"x" * 1000 + b"\n") * 100)  # 100 KB of complete but corrupt lines
    JsonlAuditSink(path).write(event(2))
    assert [r["record_type"] for r in _records(path)] == ["decision", "audit_recovered", "decision"]
    with open(path, "ab") as f:
        f.write(b"y" * (TAIL_WINDOW + 10))
    stuck = JsonlAuditSink(path)
    with pytest.raises(AuditUnavailable, match="no intact record"):
        stuck.write(event(3))
    assert not stuck.healthy()  # fail closed until someone looks
