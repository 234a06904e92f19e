"""TeeAuditSink: the primary decides; a failing or stalled secondary is counted, never fails or delays."""

import io
import json
import threading
import time

import pytest

from tenantgate.audit import JsonlAuditSink, StreamAuditSink, TeeAuditSink
from tenantgate.errors import AuditUnavailable


class Broken:
    def __init__(self):
        self.calls = 0

    def write(self, event):
        self.calls += 1
        raise AuditUnavailable("secondary down")

    def healthy(self):
        return False


class Blocked:
    def __init__(self):
        self.release = threading.Event()

    def write(self, event):
        self.release.wait(5)

    def healthy(self):
        return True


def _wait_for(condition, timeout=2.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return condition()


def test_records_reach_primary_and_stdout_copy(tmp_path, event):
    stream = io.StringIO()
    tee = TeeAuditSink(JsonlAuditSink(tmp_path / "audit.jsonl"), StreamAuditSink(stream))
    tee.write(event(1))
    tee.close()
    assert json.loads(stream.getvalue())["decision_id"] == "id-1"
    assert json.loads((tmp_path / "audit.jsonl").read_text())["decision_id"] == "id-1"


def test_a_failing_secondary_is_counted_and_never_fails_the_decision(tmp_path, event, caplog):
    secondary = Broken()
    tee = TeeAuditSink(JsonlAuditSink(tmp_path / "audit.jsonl"), secondary)
    for i in range(3):
        tee.write(event(i))
    assert _wait_for(lambda: tee.secondary_failures == 3)
    assert tee.healthy() and "secondary audit sink failed" in caplog.text
    tee.close()


def test_a_stalled_secondary_neither_delays_nor_fails_decisions(tmp_path, event):
    secondary = Blocked()
    tee = TeeAuditSink(JsonlAuditSink(tmp_path / "audit.jsonl"), secondary, max_pending=5)
    started = time.monotonic()
    for i in range(20):
        tee.write(event(i))
    assert time.monotonic() - started < 1.0
    assert tee.secondary_dropped >= 14 and len((tmp_path / "audit.jsonl").read_text().splitlines()) == 20
    secondary.release.set()
    tee.close()


def test_a_primary_failure_fails_the_write_and_skips_the_secondary(event):
    stream = io.StringIO()
    tee = TeeAuditSink(JsonlAuditSink("/dev/full"), StreamAuditSink(stream))
    with pytest.raises(AuditUnavailable):
        tee.write(event(1))
    assert not tee.healthy()
    tee.close()
    assert stream.getvalue() == ""


def test_stream_sink_on_a_closed_stream_is_audit_unavailable(event):
    stream = io.StringIO()
    sink = StreamAuditSink(stream)
    stream.close()
    with pytest.raises(AuditUnavailable):
        sink.write(event(1))
    assert not sink.healthy()


def test_the_checkpoint_timer_hook_reaches_the_chained_primary(tmp_path, event, signing_key):
    class Clock:
        value = 1_700_000_000.0

        def now(self):
            return self.value

    clock = Clock()
    primary = JsonlAuditSink(tmp_path / "audit.jsonl", checkpoint_key=signing_key, checkpoint_seconds=10,
                             clock=clock, monotonic=clock.now)
    tee = TeeAuditSink(primary, StreamAuditSink(io.StringIO()))
    tee.write(event(1))
    clock.value += 11
    tee.checkpoint_if_due()
    last = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])
    assert last["record_type"] == "checkpoint"
    tee.close()


def test_write_many_copies_only_what_the_primary_wrote(tmp_path, event):
    class Bad:
        def to_dict(self):
            return {"record_type": "decision", "decision_id": "bad", "x": float("nan")}

    stream = io.StringIO()
    tee = TeeAuditSink(JsonlAuditSink(tmp_path / "audit.jsonl"), StreamAuditSink(stream))
    errors = tee.write_many([event(1), Bad(), event(2)])
    assert [e is None for e in errors] == [True, False, True]
    tee.close()
    assert [json.loads(line)["decision_id"] for line in stream.getvalue().splitlines()] == ["id-1", "id-2"]
    broken = StreamAuditSink(io.StringIO())
    broken.close()
    broken._stream.close()
    assert all(isinstance(e, AuditUnavailable) for e in broken.write_many([event(3), event(4)]))
