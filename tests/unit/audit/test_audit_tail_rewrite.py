"""A cut or rewritten end of the log is recorded by the next write, never chained onto silently.

Found in review: with the head file left alone, verify reported a log cut from 607 to 100 records
(``truncated``) or its last record rewritten and re-hashed (``head_mismatch``), until the sink wrote one more
record: it resumed from the last record it found, rewrote the head file to match, and verify (even with the
public key and ``--max-unsigned``) said OK; at close the sink's checkpoint signed the forged record.
"""

import json
import os

from tenantgate.audit import JsonlAuditSink, verify_log
from tenantgate.audit.chain import parse, seal
from tenantgate.audit.files import ChainHead, encode_head, head_path, read_head


def _records(path):
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _tampered(report):
    return sorted(f.kind for f in report.findings if f.tampered)


def _cut_in_place(path, keep):
    """Keep the first ``keep`` lines, on a line boundary, in the same inode (the head file is left alone)."""
    lines = path.read_bytes().splitlines(keepends=True)
    with open(path, "r+b") as f:
        f.write(b"".join(lines[:keep]))
        f.truncate()


def _rehash_last(path, **changes):
    """Rewrite the last record with ``changes`` and a correct hash, in place (its size changes)."""
    lines = path.read_bytes().splitlines(keepends=True)
    last = parse(lines[-1])
    fields = {k: v for k, v in last.fields.items() if k not in ("seq", "prev_hash")}
    fields.update(changes)
    lines[-1] = seal(fields, last.seq, last.prev_hash).line
    with open(path, "r+b") as f:
        f.write(b"".join(lines))
        f.truncate()
    return lines[-1]


def test_records_cut_off_the_end_while_the_sink_runs_are_recorded_as_lost_by_its_next_write(tmp_path, event,
                                                                                            signing_key):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, checkpoint_key=signing_key, checkpoint_every=5)
    for i in range(30):
        sink.write(event(i, decision="ALLOW", reason="allow"))
    written = read_head(head_path(path))
    _cut_in_place(path, 10)
    assert _tampered(verify_log(path)) == ["truncated"]
    sink.write(event(30))
    recovered = [r for r in _records(path) if r["record_type"] == "audit_recovered"]
    assert len(recovered) == 1
    assert {k: recovered[0][k] for k in ("reason", "resumed_seq", "head_seq", "head_hash", "set_aside_bytes",
                                         "evidence")} == {"reason": "truncated", "resumed_seq": 10,
                                                          "head_seq": written.seq, "head_hash": written.hash,
                                                          "set_aside_bytes": 0, "evidence": ""}
    sink.close()
    report = verify_log(path, public_key=signing_key.public_key(), max_unsigned=5)
    assert "lost" in _tampered(report), report.findings
    (lost,) = [f for f in report.findings if f.kind == "lost"]
    assert f"11..{written.seq}" in lost.message


def test_records_cut_off_the_end_before_a_restart_are_recorded_as_lost_from_the_head_file(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    first = JsonlAuditSink(path)
    for i in range(50):
        first.write(event(i))
    first.close()
    _cut_in_place(path, 20)
    restarted = JsonlAuditSink(path)
    restarted.write(event(50))
    restarted.close()
    report = verify_log(path)
    assert _tampered(report) == ["lost"] and report.records == 22
    assert read_head(head_path(path)).seq == 22  # lowered only after the record that says why


def test_the_last_record_rewritten_and_rehashed_is_set_aside_and_recorded_as_lost(tmp_path, event, signing_key):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, checkpoint_key=signing_key, checkpoint_every=10)
    for i in range(5):
        sink.write(event(i))
    sink.write(event(5, decision="ALLOW", reason="allow"))  # the record someone wants gone: seq 6
    written = read_head(head_path(path))
    forged = _rehash_last(path, decision="DENY", reason="no_permit")
    assert _tampered(verify_log(path)) == ["head_mismatch"]
    sink.write(event(6))
    sink.close()  # its checkpoint must not sign the forged record
    (evidence,) = tmp_path.glob("audit.jsonl.torn-*")
    assert evidence.read_bytes() == forged
    records = _records(path)
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    recovered = next(r for r in records if r["record_type"] == "audit_recovered")
    assert (recovered["reason"], recovered["resumed_seq"], recovered["head_seq"], recovered["head_hash"]) == \
        ("head_mismatch", 5, 6, written.hash)
    assert not any(r.get("reason") == "no_permit" for r in records)
    report = verify_log(path, public_key=signing_key.public_key(), max_unsigned=10)
    assert _tampered(report) == ["lost"], report.findings


def test_the_last_record_rewritten_before_a_restart_is_caught_by_the_head_file(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    first = JsonlAuditSink(path)
    for i in range(4):
        first.write(event(i))
    first.close()
    _rehash_last(path, decision="ALLOW", reason="allow")
    JsonlAuditSink(path).write(event(4))
    records = _records(path)
    assert [(r["seq"], r["record_type"]) for r in records][-2:] == [(4, "audit_recovered"), (5, "decision")]
    assert _tampered(verify_log(path)) == ["lost"]


def test_a_rewritten_record_hidden_behind_appended_ones_is_caught_by_the_writer_that_wrote_it(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    for i in range(3):
        sink.write(event(i))
    ours = read_head(head_path(path))
    forged = _rehash_last(path, decision="ALLOW", reason="allow")
    appended = seal({"record_type": "decision", "decision_id": "appended"}, 4, parse(forged).claimed_hash)
    with open(path, "ab") as f:
        f.write(appended.line)
    head_path(path).write_bytes(encode_head(ChainHead(4, appended.hash)))  # the head file rewritten to match
    sink.write(event(3))
    records = _records(path)
    assert [r.get("decision_id") for r in records] == ["id-0", "id-1", None, "id-3"]
    assert (records[2]["reason"], records[2]["head_seq"], records[2]["head_hash"]) == ("head_mismatch", 3,
                                                                                       ours.hash)
    (evidence,) = tmp_path.glob("audit.jsonl.torn-*")
    assert evidence.read_bytes() == forged + appended.line
    assert _tampered(verify_log(path)) == ["lost"]


def test_records_another_writer_appended_are_chained_onto_without_a_recovery(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    server, cli = JsonlAuditSink(path), JsonlAuditSink(path)
    for i in range(6):
        (server if i % 2 else cli).write(event(i))
    assert all(r["record_type"] == "decision" for r in _records(path))
    assert verify_log(path, from_genesis=True).intact


def test_a_head_file_left_behind_by_a_crash_before_its_update_is_no_evidence(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    crashed = JsonlAuditSink(path)
    crashed.write(event(0))
    lagging = head_path(path).read_bytes()
    crashed.write(event(1))
    crashed.write(event(2))
    head_path(path).write_bytes(lagging)  # killed between its appends and the head updates
    JsonlAuditSink(path).write(event(3))
    assert [r["record_type"] for r in _records(path)] == ["decision"] * 4
    assert verify_log(path, from_genesis=True).intact


def test_a_torn_tail_over_records_cut_off_names_the_head_the_writer_remembers(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    for i in range(8):
        sink.write(event(i))
    os.unlink(head_path(path))  # the head file gone as well: the running writer still knows seq 8
    lines = path.read_bytes().splitlines(keepends=True)
    with open(path, "r+b") as f:
        f.write(b"".join(lines[:5]) + lines[5][:30])
        f.truncate()
    sink.write(event(8))
    recovered = next(r for r in _records(path) if r["record_type"] == "audit_recovered")
    assert (recovered["reason"], recovered["resumed_seq"], recovered["head_seq"]) == ("torn_tail", 5, 8)
    assert "lost" in _tampered(verify_log(path))
