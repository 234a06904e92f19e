"""Hostile edits of the audit log: verify must catch each one and say where (file, line, record id).

Also pins down the documented blind spots (prefix removal without --from-genesis, tail truncation when the
head file is removed too, a full rewrite when no public key is given), so they cannot widen unnoticed.
"""

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tenantgate.audit import JsonlAuditSink, encode_event, verify_log
from tenantgate.audit.chain import GENESIS_HASH, parse, seal
from tenantgate.audit.files import head_path
from tenantgate.core.model import AuditEvent

RECORDS = 12


def _event(i):
    return AuditEvent(decision_id=f"dec-{i:03d}", time="2026-01-01T00:00:00.000Z", decision="DENY",
                      reason="cross_tenant", message="denied", api="check", subject="mallory", actor="",
                      principal_type="User", principal_tenant="acme", resource_type="Invoice", resource_id=f"i{i}",
                      resource_tenant="globex", action="read", intent="", policy_ids=(), grant_id="",
                      policy_version="v1", issuer="iss", token_id="jti")


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    for i in range(1, RECORDS + 1):
        sink.write(_event(i))
    sink.close()
    return path


def _lines(path):
    return path.read_bytes().splitlines(keepends=True)


def _first_problem(path, **kwargs):
    report = verify_log(path, **kwargs)
    problems = [f for f in report.findings if f.tampered]
    assert problems, f"tampering not detected: {report.findings}"
    return problems[0]


def _reseal(lines, start_seq=1, prev=GENESIS_HASH):
    """What an attacker who knows the format does: recompute every seq, prev_hash and hash (and move each
    checkpoint's count/chain_head to its new place; only its signature cannot be redone)."""
    out = []
    for number, line in enumerate(lines, start_seq):
        fields = parse(line).fields
        for name in ("seq", "prev_hash"):
            fields.pop(name)
        if fields.get("record_type") == "checkpoint":
            fields.update(count=number - 1, chain_head=prev)
        sealed = seal(fields, number, prev)
        out.append(sealed.line)
        prev = sealed.hash
    return out


def test_an_untouched_log_verifies_including_across_rotation(tmp_path):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, rotate_bytes=2500, keep_files=0)
    for i in range(40):
        sink.write(_event(i))
    report = verify_log(path, from_genesis=True)
    assert len(report.files) > 3 and report.intact and report.records == 40
    assert [f.kind for f in report.findings] == []


def test_flipping_any_single_byte_of_a_record_is_detected_at_its_line(log):
    lines = _lines(log)
    target = lines[4]
    for position in range(len(target)):
        flipped = bytearray(target)
        flipped[position] ^= 0x01
        log.write_bytes(b"".join([*lines[:4], bytes(flipped), *lines[5:]]))
        problem = _first_problem(log)
        assert (problem.file, problem.line) == (str(log), 5), (position, problem)


def test_a_modified_field_is_reported_with_the_decision_id(log):
    lines = _lines(log)
    lines[4] = lines[4].replace(b'"decision":"DENY"', b'"decision":"ALLO"')
    log.write_bytes(b"".join(lines))
    problem = _first_problem(log)
    assert (problem.line, problem.record_id, problem.seq, problem.kind) == (5, "dec-005", 5, "modified")


def test_a_deleted_record_is_detected_where_it_was(log):
    lines = _lines(log)
    log.write_bytes(b"".join(lines[:4] + lines[5:]))
    problem = _first_problem(log)
    assert (problem.kind, problem.line, problem.record_id) == ("missing", 5, "dec-006")
    assert "seq 5..5" in problem.message


def test_swapped_records_are_detected_at_the_first_of_them(log):
    lines = _lines(log)
    lines[4], lines[5] = lines[5], lines[4]
    log.write_bytes(b"".join(lines))
    problem = _first_problem(log)
    assert (problem.line, problem.record_id) == (5, "dec-006")


def test_an_inserted_unchained_record_is_detected_at_its_line(log):
    lines = _lines(log)
    log.write_bytes(b"".join([*lines[:4], encode_event(_event(999)), *lines[4:]]))
    problem = _first_problem(log)
    assert (problem.kind, problem.line, problem.record_id) == ("malformed", 5, "dec-999")


def test_an_inserted_record_with_forged_chain_fields_breaks_the_next_link(log):
    lines = _lines(log)
    before = parse(lines[3])
    forged = seal(_event(999).to_dict(), before.seq + 1, before.claimed_hash).line
    log.write_bytes(b"".join([*lines[:4], forged, *lines[4:]]))
    problem = _first_problem(log)
    assert (problem.kind, problem.line, problem.record_id) == ("out_of_order", 6, "dec-005")
    assert "line 5" in problem.message


def test_a_replayed_copy_of_a_record_is_detected(log):
    lines = _lines(log)
    log.write_bytes(b"".join([*lines[:8], lines[2], *lines[8:]]))
    problem = _first_problem(log)
    assert (problem.kind, problem.line, problem.record_id) == ("out_of_order", 9, "dec-003")


def test_truncating_whole_records_is_detected_against_the_head_file(log):
    log.write_bytes(b"".join(_lines(log)[:9]))
    problem = _first_problem(log)
    assert (problem.kind, problem.line, problem.record_id) == ("truncated", 9, "dec-009")
    assert "3 record(s) cut off" in problem.message


def test_truncating_mid_record_is_detected(log):
    lines = _lines(log)
    log.write_bytes(b"".join(lines[:9]) + lines[9][:50])
    kinds = [(f.kind, f.line) for f in verify_log(log).findings if f.tampered]
    assert kinds == [("torn", 10), ("truncated", 9)]


def test_a_rewritten_end_is_detected_against_the_head_file(log):
    lines = _lines(log)
    tail = _reseal([lines[-1].replace(b'"DENY"', b'"ALOW"')], RECORDS, parse(lines[-2]).claimed_hash)
    log.write_bytes(b"".join(lines[:-1] + tail))
    problem = _first_problem(log)
    assert (problem.kind, problem.line, problem.record_id) == ("head_mismatch", RECORDS, f"dec-{RECORDS:03d}")


def test_a_damaged_head_file_is_reported(log):
    head_path(log).write_text("{}")
    assert _first_problem(log).kind == "head_malformed"


def test_a_record_with_a_duplicate_key_is_rejected(log):
    lines = _lines(log)
    lines[2] = lines[2].replace(b'{"action"', b'{"decision":"ALLOW","action"', 1)
    log.write_bytes(b"".join(lines))
    problem = _first_problem(log)
    assert (problem.kind, problem.line) == ("malformed", 3) and "duplicate key" in problem.message


def test_a_missing_rotated_file_is_detected_at_the_first_line_after_the_gap(tmp_path):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, rotate_bytes=2500, keep_files=0)
    for i in range(40):
        sink.write(_event(i))
    middle = path.with_name("audit.jsonl.2")
    first_after_gap = json.loads(_lines(path.with_name("audit.jsonl.1"))[0])
    middle.unlink()
    problem = _first_problem(path)
    assert (problem.kind, problem.file, problem.line) == ("missing", str(path) + ".1", 1)
    assert problem.record_id == first_after_gap["decision_id"]


def test_removing_the_first_records_needs_from_genesis_to_be_caught(log):
    log.write_bytes(b"".join(_lines(log)[2:]))
    report = verify_log(log)
    assert report.intact and report.findings[0].kind == "start"  # indistinguishable from rotation
    assert _first_problem(log, from_genesis=True).kind == "missing"


def test_truncation_is_undetectable_when_the_head_file_is_removed_too(log):
    log.write_bytes(b"".join(_lines(log)[:6]))
    head_path(log).unlink()
    report = verify_log(log)
    assert report.intact and [f.kind for f in report.findings] == ["no_head"]


def _signed_log(tmp_path, key):
    path = tmp_path / "signed.jsonl"
    sink = JsonlAuditSink(path, checkpoint_key=key, checkpoint_every=4)
    for i in range(1, 11):
        sink.write(_event(i))
    sink.close()
    return path


def test_a_recomputed_chain_is_caught_by_the_checkpoint_signatures(tmp_path):
    key = Ed25519PrivateKey.generate()
    path = _signed_log(tmp_path, key)
    lines = _lines(path)
    lines[1] = lines[1].replace(b'"DENY"', b'"ALOW"')
    path.write_bytes(b"".join(_reseal(lines)))
    head_path(path).unlink()
    assert verify_log(path).intact  # without the public key a full rewrite is consistent
    problem = _first_problem(path, public_key=key.public_key())
    assert (problem.kind, problem.line) == ("bad_checkpoint", 5)


def test_stripping_all_checkpoints_is_caught_with_the_public_key(tmp_path):
    key = Ed25519PrivateKey.generate()
    path = _signed_log(tmp_path, key)
    plain = [line for line in _lines(path) if parse(line).record_type != "checkpoint"]
    path.write_bytes(b"".join(_reseal(plain)))
    head_path(path).unlink()
    assert _first_problem(path, public_key=key.public_key()).kind == "unsigned"


def test_removing_one_checkpoint_is_caught_by_max_unsigned(tmp_path):
    key = Ed25519PrivateKey.generate()
    path = _signed_log(tmp_path, key)
    lines = _lines(path)
    (first_checkpoint,) = [i for i, line in enumerate(lines) if parse(line).record_type == "checkpoint"][:1]
    kept = lines[:first_checkpoint] + lines[first_checkpoint + 1:]
    path.write_bytes(b"".join(_reseal(kept)))
    head_path(path).unlink()
    problem = _first_problem(path, max_unsigned=4)  # even without the key: the gap is too long
    assert (problem.kind, problem.line) == ("unsigned", 9)  # the next checkpoint follows 8 records


def test_signed_checkpoints_do_not_anchor_the_end_a_cut_through_them_with_the_head_file_verifies(tmp_path):
    """Hostile review: the README said to "sign checkpoints" to anchor the log's end, and docs/audit.md that the
    end could be cut off "back to the last checkpoint". A cut at any record boundary, through any number of
    signed checkpoints, with the head file removed (or rewritten), verifies with the key and --max-unsigned:
    a signed prefix is a valid log. Pinned so the documented blind spot stays what the docs now say."""
    key = Ed25519PrivateKey.generate()
    path = _signed_log(tmp_path, key)
    lines = _lines(path)
    checkpoints = [i for i, line in enumerate(lines) if parse(line).record_type == "checkpoint"]
    assert len(checkpoints) >= 3
    path.write_bytes(b"".join(lines[:checkpoints[0] + 2]))  # every checkpoint but the first one cut off
    head_path(path).unlink()
    report = verify_log(path, public_key=key.public_key(), max_unsigned=4)
    assert report.intact and report.signatures_verified == 1


def test_a_chain_replaced_by_another_workers_signed_chain_is_caught_with_the_public_key(tmp_path):
    """Hostile review: worker 0's whole chain (head file included) replaced by a copy of worker 1's verified OK with
    --public-key, --max-unsigned, --from-genesis and --all-workers: worker 0's decisions were gone without a trace,
    although the docs say signed checkpoints stop a consistent rewrite."""
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "audit.jsonl"
    for worker in (0, 1):
        sink = JsonlAuditSink(path, checkpoint_key=key, checkpoint_every=4, worker=worker)
        for i in range(1, 9):
            sink.write(_event(100 * worker + i))
        sink.close()
    other = tmp_path / "audit-w1.jsonl"
    path.write_bytes(other.read_bytes())
    head_path(path).write_bytes(head_path(other).read_bytes())
    assert not verify_log(path, public_key=key.public_key(), from_genesis=True, max_unsigned=4).intact


def _append_forged(path, **fields):
    last = parse(_lines(path)[-1])
    forged = {**_event(666).to_dict(), "decision": "ALLOW", "reason": "allow", **fields}
    with path.open("ab") as stream:
        stream.write(seal(forged, last.seq + 1, last.claimed_hash).line)


def test_a_record_appended_past_the_head_file_is_named_in_a_notice(log):
    """Found in review: a forged record appended with correct chain fields passed without a word. It cannot
    be called tampering (a crash between an append and the head update leaves the same picture), but verify
    must say that the log runs past its head, and where."""
    _append_forged(log)
    report = verify_log(log)
    (notice,) = [f for f in report.findings if f.kind == "past_head"]
    assert report.intact and not notice.tampered
    assert (notice.line, notice.record_id, notice.seq) == (RECORDS + 1, "dec-666", RECORDS + 1)
    assert f"1 record(s) after the head file's last recorded seq {RECORDS}" in notice.message
    assert "appended by someone else" in notice.message


def test_an_untouched_log_has_no_past_head_notice(log):
    assert "past_head" not in [f.kind for f in verify_log(log).findings]


def test_appending_past_the_head_and_updating_the_head_file_too_is_not_detected(log):
    _append_forged(log)
    last = parse(_lines(log)[-1])
    head_path(log).write_text(json.dumps({"hash": last.claimed_hash, "seq": last.seq}))
    report = verify_log(log)
    assert report.intact and report.findings == ()  # a documented blind spot: only checkpoints/shipping bound it


def test_deleting_every_log_file_but_the_head_is_reported_as_missing_records(log):
    log.unlink()
    report = verify_log(log)
    assert not report.intact and report.records == 0
    (problem,) = [f for f in report.findings if f.tampered]
    assert problem.kind == "missing" and problem.seq == RECORDS and "deleted or moved" in problem.message
