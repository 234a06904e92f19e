"""Timed checkpoints follow elapsed time, not the wall clock: a wall clock stepped back by X seconds stopped them
for X seconds (review finding: after a 1 h step back, 30 minutes of records got no checkpoint)."""

import json

from tenantgate.audit import JsonlAuditSink
from tenantgate.core.model import rfc3339

START = 1_700_000_000.0
HOUR = 3600.0


class Clocks:
    """A wall clock and a monotonic clock, moved by hand: ``elapse`` moves both, ``step`` only the wall clock."""

    def __init__(self) -> None:
        self.wall = START
        self.ticks = 1_000.0

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.ticks

    def elapse(self, seconds: float) -> None:
        self.wall += seconds
        self.ticks += seconds

    def step(self, seconds: float) -> None:
        self.wall += seconds


def _sink(path, clocks, signing_key):
    return JsonlAuditSink(path, checkpoint_key=signing_key, checkpoint_every=1000, checkpoint_seconds=60,
                          clock=clocks, monotonic=clocks.monotonic, lock_timeout=1.0)


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _stepped_back_after_a_write(path, event, signing_key):
    """A sink that wrote one record; then the wall clock went back an hour while 61 s passed."""
    clocks = Clocks()
    sink = _sink(path, clocks, signing_key)
    sink.write(event(0))
    clocks.step(-HOUR)
    clocks.elapse(61)
    return sink


def test_a_wall_clock_stepped_back_does_not_hold_back_the_timed_checkpoint(tmp_path, event, signing_key):
    path = tmp_path / "audit.jsonl"
    sink = _stepped_back_after_a_write(path, event, signing_key)
    sink.write(event(1))  # the first write after the interval
    records = _records(path)
    assert [r["record_type"] for r in records] == ["decision", "decision", "checkpoint"]
    # The record's time is still the wall clock's, stepped back as it is.
    assert records[2]["time"] == rfc3339(START - HOUR + 61)
    sink.close()


def test_the_checkpoint_timer_signs_a_quiet_tail_after_a_step_back(tmp_path, event, signing_key):
    path = tmp_path / "audit.jsonl"
    sink = _stepped_back_after_a_write(path, event, signing_key)
    sink.checkpoint_if_due()  # the timer, while no decision arrives
    assert [r["record_type"] for r in _records(path)] == ["decision", "checkpoint"]
    sink.close()


def test_a_wall_clock_stepped_forward_does_not_hasten_the_timed_checkpoint(tmp_path, event, signing_key):
    clocks, path = Clocks(), tmp_path / "audit.jsonl"
    sink = _sink(path, clocks, signing_key)
    sink.write(event(0))
    clocks.step(HOUR)
    sink.write(event(1))
    sink.checkpoint_if_due()
    assert [r["record_type"] for r in _records(path)] == ["decision", "decision"]
    clocks.elapse(60)
    sink.checkpoint_if_due()
    assert [r["record_type"] for r in _records(path)] == ["decision", "decision", "checkpoint"]
    sink.close()
