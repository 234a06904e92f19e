"""Writing to the sink: fsync batches shared by concurrent writers, batches of records, and failures (a failed
fsync, an unencodable record, a held lock, an interrupt) that never break or fork the chain."""

import fcntl
import json
import os
import threading

import pytest

from support.audit import _records
from tenantgate.audit import JsonlAuditSink, verify_log
from tenantgate.errors import AuditUnavailable


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
