"""Closing a tee whose stdout copy is blocked (a pipe nobody reads): the primary is closed, the copy abandoned.

Review finding: ``TeeAuditSink.close()`` waited for ``StreamAuditSink.close()``, which waited for the lock its
blocked ``write`` held, so SIGTERM never stopped a server with ``audit.stdout`` and a stalled reader, and the
primary's closing checkpoint was never written. Every wait here is bounded: a regression fails, not hangs.
"""

import contextlib
import fcntl
import json
import logging
import os
import threading
import time

import pytest

from tenantgate.audit import JsonlAuditSink, StreamAuditSink, TeeAuditSink
from tenantgate.errors import AuditUnavailable


@pytest.fixture
def stalled_pipe():
    """A pipe whose read end is held open and never read, already full: the next write to it blocks.

    At teardown the read end is closed, so a write still blocked (a regression) ends in a broken pipe."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETFL, fcntl.fcntl(write_end, fcntl.F_GETFL) | os.O_NONBLOCK)
    try:
        while True:
            os.write(write_end, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)
    stream = os.fdopen(write_end, "w")
    yield stream
    os.close(read_end)


def _returns_within(call, seconds):
    """Run ``call`` on a daemon thread; True when it returned within ``seconds``."""
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def _wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return condition()


def test_close_with_a_blocked_stdout_copy_returns_and_writes_the_primarys_closing_checkpoint(
        tmp_path, event, signing_key, stalled_pipe, caplog):
    path = tmp_path / "audit.jsonl"
    secondary = StreamAuditSink(stalled_pipe)
    tee = TeeAuditSink(JsonlAuditSink(path, checkpoint_key=signing_key), secondary)
    for i in range(3):
        tee.write(event(i))  # decisions are not delayed: the copy's thread blocks, not the write
    assert _wait_for(lambda: tee._queue.qsize() == 2)  # one record in the blocked write, two waiting
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tenantgate.audit"):
        assert _returns_within(lambda: tee.close(timeout=0.5), 10), "close() blocked on the stalled stdout copy"
    assert time.monotonic() - started < 5
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["record_type"] for r in records] == ["decision"] * 3 + ["checkpoint"]
    assert "abandoned; it did not get 3 record(s)" in caplog.text


def test_the_primary_is_closed_before_the_copy_is_waited_for(tmp_path, event, signing_key, stalled_pipe):
    path = tmp_path / "audit.jsonl"
    tee = TeeAuditSink(JsonlAuditSink(path, checkpoint_key=signing_key), StreamAuditSink(stalled_pipe))
    tee.write(event(1))
    closing = threading.Thread(target=lambda: tee.close(timeout=3.0), daemon=True)
    closing.start()
    # Well within the copy's 3 s: the closing checkpoint does not wait for the copy to give up.
    assert _wait_for(lambda: '"checkpoint"' in path.read_text().splitlines()[-1], timeout=1.5)
    closing.join(10)
    assert not closing.is_alive()


def test_stream_sink_close_waits_a_bounded_time_for_a_blocked_write(event, stalled_pipe, caplog):
    sink = StreamAuditSink(stalled_pipe)

    def write():
        with contextlib.suppress(AuditUnavailable):  # the broken pipe at teardown
            sink.write(event(1))

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    assert _wait_for(lambda: sink._lock.locked())
    with caplog.at_level(logging.WARNING, logger="tenantgate.audit"):
        assert _returns_within(lambda: sink.close(timeout=0.2), 5), "close() waited for the blocked write"
    assert "closed without flushing" in caplog.text


def test_close_of_an_idle_tee_still_closes_both_sinks(tmp_path, event):
    closed = []

    class Recording:
        def write(self, event):
            pass

        def healthy(self):
            return True

        def close(self):
            closed.append("secondary")

    primary = JsonlAuditSink(tmp_path / "audit.jsonl")
    tee = TeeAuditSink(primary, Recording())
    tee.write(event(1))
    tee.close()
    assert closed == ["secondary"] and primary._writer._fd is None
