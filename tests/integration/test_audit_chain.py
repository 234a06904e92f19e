"""A writer process killed with SIGKILL mid-stream loses no acknowledged record, and the chain survives it.

The child constructs the sink and writes as fast as it can from several threads, printing each record's id
only after ``write`` returned. The parent kills it after ~0.5 s; every id it read must be in the log, the
chain must verify after the next open (which recovers a torn tail, if any), and a new sink continues it.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tenantgate.audit import JsonlAuditSink, verify_log
from tenantgate.audit.files import chain_files
from tenantgate.core.model import AuditEvent

WRITER = r"""
import sys, threading
from tenantgate.audit import JsonlAuditSink
from tenantgate.core.model import AuditEvent

path, durability, threads, rotate_bytes, prefix = sys.argv[1:6]
sink = JsonlAuditSink(path, durability=durability, rotate_bytes=int(rotate_bytes), keep_files=0)
out = threading.Lock()

def event(ident):
    return AuditEvent(decision_id=ident, time="2026-01-01T00:00:00.000Z", decision="ALLOW", reason="allow",
                      message="x" * 300, api="check", subject="s", actor="", principal_type="User",
                      principal_tenant="acme", resource_type="Invoice", resource_id="i", resource_tenant="acme",
                      action="read", intent="", policy_ids=(), grant_id="", policy_version="v", issuer="iss",
                      token_id="t")

def work(n):
    i = 0
    while True:
        ident = f"{prefix}{n}-{i}"
        sink.write(event(ident))
        with out:
            sys.stdout.write(ident + "\n")
            sys.stdout.flush()
        i += 1

for n in range(int(threads)):
    threading.Thread(target=work, args=(n,), daemon=True).start()
threading.Event().wait()
"""


def _spawn(path, durability, *, threads=4, rotate_bytes=0, prefix="w"):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), durability, str(threads), str(rotate_bytes),
                             prefix], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _collect(proc, ids):
    for raw in proc.stdout:
        if raw.endswith(b"\n"):
            ids.append(raw.decode().strip())


def _kill_after(proc, seconds, ids, minimum=20):
    reader = threading.Thread(target=_collect, args=(proc, ids), daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    time.sleep(seconds)
    while len(ids) < minimum and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)  # a slow start (imports) must not make the test vacuous
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    reader.join(10)
    assert len(ids) >= minimum, proc.stderr.read().decode()


def _logged_ids(path):
    ids = []
    for file in chain_files(path):
        for line in file.read_bytes().splitlines(keepends=True):
            if line.endswith(b"\n"):
                ids.append(json.loads(line).get("decision_id"))
    return ids


def _event(ident):
    return AuditEvent(decision_id=ident, time="2026-01-01T00:00:00.000Z", decision="DENY", reason="no_permit",
                      message="after restart", api="check", subject="s", actor="", principal_type="User",
                      principal_tenant="acme", resource_type="Invoice", resource_id="i", resource_tenant="acme",
                      action="read", intent="", policy_ids=(), grant_id="", policy_version="v", issuer="iss",
                      token_id="t")


@pytest.mark.parametrize(("durability", "rotate_bytes"), [("flush", 0), ("flush", 64 * 1024), ("fsync", 0)])
def test_sigkill_mid_stream_loses_no_acknowledged_record_and_the_chain_continues(tmp_path, durability,
                                                                                 rotate_bytes):
    path = tmp_path / "audit.jsonl"
    acknowledged = []
    _kill_after(_spawn(path, durability, rotate_bytes=rotate_bytes), 0.5, acknowledged)

    assert set(acknowledged) <= set(_logged_ids(path))
    restarted = JsonlAuditSink(path, durability=durability, rotate_bytes=rotate_bytes, keep_files=0)
    restarted.open()  # recovers a torn tail, if the kill left one
    report = verify_log(path, from_genesis=True)
    assert report.intact, [str(f) for f in report.findings]
    before = report.last_seq
    for i in range(5):
        restarted.write(_event(f"after-{i}"))
    after = verify_log(path, from_genesis=True)
    assert after.intact and after.last_seq == before + 5
    assert set(acknowledged) <= set(_logged_ids(path))
    if rotate_bytes:
        assert len(after.files) > 1


def test_two_processes_appending_to_one_file_keep_one_valid_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)  # e.g. the server, while `tenantgate check` writes to the same log
    child_ids = []
    proc = _spawn(path, "flush", threads=2, prefix="child")
    reader = threading.Thread(target=_collect, args=(proc, child_ids), daemon=True)
    reader.start()
    deadline = time.monotonic() + 0.6
    written = 0
    while time.monotonic() < deadline or (not child_ids and time.monotonic() < deadline + 10):
        sink.write(_event(f"parent-{written}"))
        written += 1
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    reader.join(10)
    sink.write(_event("parent-last"))
    report = verify_log(path, from_genesis=True)
    assert report.intact, [str(f) for f in report.findings]
    logged = set(_logged_ids(path))
    assert child_ids and set(child_ids) <= logged and {f"parent-{i}" for i in range(written)} <= logged
    assert os.path.getsize(path) > 0


KILLED_MID_ROTATION = r"""
import os, signal, sys
import tenantgate.audit.fileio as fileio
from tenantgate.audit import JsonlAuditSink
from tenantgate.core.model import AuditEvent

real_rename = os.rename

def rename(src, dst, *args, **kwargs):
    if ".rotating-" in os.fspath(src):
        os.kill(os.getpid(), signal.SIGKILL)  # after os.link(live, .1), before the new file is renamed in
    return real_rename(src, dst, *args, **kwargs)

fileio.os.rename = rename
JsonlAuditSink(sys.argv[1], rotate_bytes=100).write(AuditEvent(
    decision_id="cli", time="2026-01-01T00:00:00.000Z", decision="DENY", reason="no_permit", message="m",
    api="check", subject="s", actor="", principal_type="User", principal_tenant="acme", resource_type="Invoice",
    resource_id="i", resource_tenant="acme", action="read", intent="", policy_ids=(), grant_id="",
    policy_version="v", issuer="iss", token_id="t"))
"""


def test_a_writer_killed_mid_rotation_leaves_no_record_read_twice(tmp_path):
    """Found in review: the dead writer's ``.1`` stayed a second name of the live file while the server
    appended on its fast path, so verify reported the untouched log as tampered (and query printed twice)."""
    path = tmp_path / "audit.jsonl"
    server = JsonlAuditSink(path, rotate_bytes=1_000_000)
    server.write(_event("s-0"))
    server.write(_event("s-1"))
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_ROTATION, str(path)], capture_output=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert os.path.samefile(path, tmp_path / "audit.jsonl.1")  # the half rotation it left behind
    report = verify_log(path, from_genesis=True)
    assert report.intact and report.records == 2, [str(f) for f in report.findings]  # before any repair
    server.write(_event("s-2"))
    server.write(_event("s-3"))
    assert not (tmp_path / "audit.jsonl.1").exists()
    assert _logged_ids(path) == ["s-0", "s-1", "s-2", "s-3"]
    assert verify_log(path, from_genesis=True).intact
