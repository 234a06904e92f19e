"""The sink keeps one hash chain: across restarts, rotation, worker files, the head file and signed checkpoints.

Torn and corrupt tails are in test_sink_chain_recovery.py; fsync batches, concurrent writers and failed writes in
test_sink_chain_writes.py."""

import itertools
import os
import shutil

import pytest

from support.audit import _kinds, _records
from tenantgate.audit import JsonlAuditSink, verify_log
from tenantgate.audit.chain import GENESIS_HASH
from tenantgate.audit.files import ChainHead, head_path, read_head, worker_path


class FakeClock:
    def __init__(self, start=1_700_000_000.0):
        self.value = start

    def now(self):
        return self.value


def test_a_restarted_sink_continues_the_chain(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    first = JsonlAuditSink(path)
    for i in range(3):
        first.write(event(i))
    first.close()
    second = JsonlAuditSink(path)
    second.write(event(3))
    records = _records(path)
    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    assert records[0]["prev_hash"] == GENESIS_HASH and records[3]["prev_hash"] == records[2]["hash"]
    assert verify_log(path).intact


def test_grant_events_are_chained_like_decisions(tmp_path, event, grant_event):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    sink.write(grant_event(1))
    sink.write(event(2))
    assert [r["record_type"] for r in _records(path)] == ["grant_event", "decision"]
    assert verify_log(path).intact


def test_size_rotation_continues_the_chain_into_the_next_file(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, rotate_bytes=2000, keep_files=0)
    for i in range(20):
        sink.write(event(i))
    files = [*sorted(tmp_path.glob("audit.jsonl.[0-9]*"), key=lambda p: -int(p.suffix[1:])), path]
    assert len(files) > 3 and all(f.stat().st_size <= 2000 for f in files)
    for older, newer in itertools.pairwise(files):
        assert _records(newer)[0]["prev_hash"] == _records(older)[-1]["hash"]
    report = verify_log(path, from_genesis=True)
    assert report.intact and report.records == 20 and sink.stats().rotations == len(files) - 1


def test_rotation_keeps_only_keep_files_and_verify_notes_where_the_chain_starts(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, rotate_bytes=1500, keep_files=2)
    for i in range(20):
        sink.write(event(i))
    assert sorted(p.name for p in tmp_path.glob("audit.jsonl.[0-9]*")) == ["audit.jsonl.1", "audit.jsonl.2"]
    report = verify_log(path)
    assert report.intact and _kinds(report)[0] == "start" and report.last_seq == 20
    assert not verify_log(path, from_genesis=True).intact


def test_copytruncate_rotation_continues_the_chain_from_the_head_file(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    for i in range(3):
        sink.write(event(i))
    shutil.copy(path, tmp_path / "audit.jsonl.1")
    os.truncate(path, 0)
    JsonlAuditSink(path).write(event(3))  # another process, nothing in memory
    sink.write(event(4))
    assert [r["seq"] for r in _records(path)] == [4, 5]
    assert verify_log(path, from_genesis=True).intact


def test_each_worker_writes_its_own_chain_file(tmp_path, event):
    base = tmp_path / "audit.jsonl"
    assert worker_path(base, 0) == base and worker_path(base, 3) == tmp_path / "audit-w3.jsonl"
    sinks = [JsonlAuditSink(base, worker=w) for w in range(3)]
    for w, sink in enumerate(sinks):
        sink.write(event(w))
    for w in range(3):
        (record,) = _records(worker_path(base, w))
        assert (record["seq"], record["decision_id"]) == (1, f"id-{w}")


def test_head_file_names_the_last_record(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    sink.write(event(1))
    sink.write(event(2))
    last = _records(path)[-1]
    assert read_head(head_path(path)) == ChainHead(2, last["hash"])
    assert oct(head_path(path).stat().st_mode & 0o777) == "0o600"


def test_checkpoints_are_signed_every_n_records_and_at_close(tmp_path, event, signing_key):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, checkpoint_key=signing_key, checkpoint_every=4)
    for i in range(10):
        sink.write(event(i))
    sink.close()
    checkpoints = [r for r in _records(path) if r["record_type"] == "checkpoint"]
    assert [(c["count"], c["seq"]) for c in checkpoints] == [(4, 5), (9, 10), (12, 13)]
    report = verify_log(path, public_key=signing_key.public_key(), max_unsigned=4)
    assert report.intact and report.signatures_verified == 3 and report.unsigned_tail == 0
    other = verify_log(path, public_key=Ed25519PrivateKey.generate().public_key())
    assert not other.intact and {f.kind for f in other.findings} >= {"bad_checkpoint"}


def test_checkpoint_key_from_a_pem_file_and_a_bad_file_is_a_config_error(tmp_path, signing_key):
    from cryptography.hazmat.primitives import serialization

    from tenantgate.errors import ConfigError

    pem = tmp_path / "audit-signing.pem"
    pem.write_bytes(signing_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    JsonlAuditSink(tmp_path / "audit.jsonl", checkpoint_key=pem)
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ConfigError, match=r"bad\.pem"):
        JsonlAuditSink(tmp_path / "audit.jsonl", checkpoint_key=tmp_path / "bad.pem")


def test_a_timed_checkpoint_follows_the_first_write_after_the_interval(tmp_path, event, signing_key):
    clock = FakeClock()
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, checkpoint_key=signing_key, checkpoint_every=1000, checkpoint_seconds=60,
                          clock=clock, monotonic=clock.now)
    sink.write(event(1))
    clock.value += 61
    sink.write(event(2))
    sink.write(event(3))
    clock.value += 61
    sink.checkpoint_if_due()  # e.g. from a timer while no decision arrives
    assert [r["record_type"] for r in _records(path)] == ["decision", "decision", "checkpoint", "decision",
                                                         "checkpoint"]


def test_a_reopened_sink_with_a_key_first_signs_the_tail_it_inherited(tmp_path, event, signing_key):
    path = tmp_path / "audit.jsonl"
    crashed = JsonlAuditSink(path)
    for i in range(3):
        crashed.write(event(i))
    JsonlAuditSink(path, checkpoint_key=signing_key).open()
    last = _records(path)[-1]
    assert (last["record_type"], last["count"]) == ("checkpoint", 3)
