"""The sink keeps one hash chain: across restarts, crashes (torn tails), rotation, checkpoints and fsync batches."""

import fcntl
import itertools
import json
import os
import shutil
import threading

import pytest

from tenantgate.audit import JsonlAuditSink, encode_event, verify_log
from tenantgate.audit.chain import GENESIS_HASH
from tenantgate.audit.files import ChainHead, head_path, read_head, worker_path
from tenantgate.errors import AuditUnavailable


class FakeClock:
    def __init__(self, start=1_700_000_000.0):
        self.value = start

    def now(self):
        return self.value


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _kinds(report):
    return [f.kind for f in report.findings]


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


def test_group_commit_shares_fsyncs_between_concurrent_writers(tmp_path, event, monkeypatch):
    import time

    real_fsync, calls = os.fsync, []

    def slow_fsync(fd):
        calls.append(fd)
        time.sleep(0.002)  # a disk: followers queue up meanwhile
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, durability="fsync")
    threads = [threading.Thread(target=lambda n=n: [sink.write(event(n * 100 + i)) for i in range(25)])
               for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = sink.stats()
    assert stats.records == 200 and stats.fsyncs == stats.batches
    assert stats.fsyncs <= 200 / 4, stats
    assert len(calls) == 2 * stats.batches  # the log and its head file, once per batch
    ids = {r["decision_id"] for r in _records(path)}
    assert ids == {f"id-{n * 100 + i}" for n in range(8) for i in range(25)}
    assert verify_log(path).intact


def test_a_failed_fsync_is_audit_unavailable_and_the_batch_is_cut_back(tmp_path, event, monkeypatch):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, durability="fsync")
    sink.write(event(1))
    real_fsync = os.fsync

    def failing(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(AuditUnavailable, match="Input/output error"):
        sink.write(event(2))
    assert not sink.healthy()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert sink.healthy()
    sink.write(event(3))
    assert [r.get("decision_id") for r in _records(path)] == ["id-1", None, "id-3"]  # None: the probe
    assert verify_log(path).intact


def test_an_unencodable_record_fails_alone(tmp_path, event):
    class Bad:
        def to_dict(self):
            return {"record_type": "decision", "x": float("nan")}

    class Clash:
        def to_dict(self):
            return {"record_type": "decision", "hash": "mine"}

    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    with pytest.raises(AuditUnavailable, match="cannot be encoded"):
        sink.write(Bad())
    with pytest.raises(ValueError, match="chain field"):
        sink.write(Clash())
    sink.write(event(1))
    assert sink.healthy() and [r["seq"] for r in _records(path)] == [1]


def test_a_writer_holding_the_lock_too_long_is_audit_unavailable_then_recovers(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, lock_timeout=0.2)
    sink.write(event(1))
    with open(path, "ab") as other:
        fcntl.flock(other, fcntl.LOCK_EX)  # a stopped process elsewhere
        with pytest.raises(AuditUnavailable, match="locked"):
            sink.write(event(2))
        assert not sink.healthy()
    assert sink.healthy()
    assert verify_log(path).intact


@pytest.mark.parametrize("kwargs", [{"durability": "sometimes"}, {"rotate_bytes": -1}, {"checkpoint_every": 0},
                                    {"worker": -1}])
def test_impossible_parameters_are_refused(tmp_path, kwargs):
    with pytest.raises(ValueError):
        JsonlAuditSink(tmp_path / "audit.jsonl", **kwargs)


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


def test_write_many_appends_a_batch_in_one_write_and_a_bad_record_fails_alone(tmp_path, event):
    class Bad:
        def to_dict(self):
            return {"record_type": "decision", "x": float("inf")}

    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, durability="fsync")
    sink.write(event(0))
    errors = sink.write_many([event(1), Bad(), event(2), event(3)])
    assert [e is None for e in errors] == [True, False, True, True]
    assert isinstance(errors[1], AuditUnavailable) and "cannot be encoded" in str(errors[1])
    assert [r["decision_id"] for r in _records(path)] == ["id-0", "id-1", "id-2", "id-3"]
    stats = sink.stats()
    assert (stats.records, stats.batches, stats.fsyncs) == (4, 2, 2)
    assert verify_log(path).intact and sink.write_many([]) == []


def test_write_many_on_an_unwritable_log_reports_every_record_and_writes_none():
    sink = JsonlAuditSink("/dev/full")
    errors = sink.write_many([_Named(1), _Named(2)])
    assert len(errors) == 2 and all(isinstance(e, AuditUnavailable) for e in errors)
    assert not sink.healthy()


class _Named:
    def __init__(self, n):
        self.n = n

    def to_dict(self):
        return {"record_type": "decision", "decision_id": f"id-{self.n}"}


def test_batches_and_single_writes_from_many_threads_keep_one_chain_in_submission_order(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)

    def writer(n):
        for i in range(10):
            if i % 2:
                assert sink.write_many([event(n * 1000 + i * 10 + k) for k in range(5)]) == [None] * 5
            else:
                sink.write(event(n * 1000 + i * 10))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [r["decision_id"] for r in _records(path)]
    assert len(ids) == len(set(ids)) == 6 * (5 + 5 * 5)
    for n in range(6):  # each writer's records appear in the order it wrote them, batches unbroken
        mine = [int(i[3:]) for i in ids if int(i[3:]) // 1000 == n]
        assert mine == sorted(mine)
    assert verify_log(path).intact


def test_an_interrupt_between_the_append_and_the_head_update_never_forks_the_chain(tmp_path, event, monkeypatch):
    """Found in review: interrupted after the append but before the new chain head was kept, the sink still
    believed the file unchanged and sealed the next record on the old head (two records with one seq)."""
    from tenantgate.audit import writer as writer_module

    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    sink.write(event(1))
    appended = {"now": False}
    real_append, real_head = writer_module.append_all, writer_module.ChainHead

    def append(*args, **kwargs):
        end = real_append(*args, **kwargs)
        appended["now"] = True  # the record is in the file...
        return end

    def head(*args, **kwargs):
        if appended["now"]:
            appended["now"] = False
            raise KeyboardInterrupt  # ...and a signal lands before the sink keeps its new head
        return real_head(*args, **kwargs)

    monkeypatch.setattr(writer_module, "append_all", append)
    monkeypatch.setattr(writer_module, "ChainHead", head)
    with pytest.raises(KeyboardInterrupt):
        sink.write(event(2))
    monkeypatch.setattr(writer_module, "append_all", real_append)
    monkeypatch.setattr(writer_module, "ChainHead", real_head)
    sink.write(event(3))
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["seq"], r["decision_id"]) for r in records] == [(1, "id-1"), (2, "id-2"), (3, "id-3")]
    assert verify_log(path).intact
