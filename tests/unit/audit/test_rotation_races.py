"""Rotation interrupted or raced by another writer: no record is read twice, none acknowledged is lost.

Found in review: a writer killed between linking the live file to ``.1`` and renaming the new file in left
``.1`` as a second name of the live file, which the server's fast path never noticed (every record read
twice by verify, query and tail); and on a filesystem without hard links the rename fallback replaced a
file that another writer had created, with an acknowledged record in it, during the rotation.
"""

import json
import os
import threading

import pytest

from tenantgate.audit import JsonlAuditSink, fileio, livechain, verify_log
from tenantgate.audit.files import chain_files, rotated_path
from tenantgate.audit.query import RecordFilter, query


def _ids(path):
    return [json.loads(line).get("decision_id") for f in chain_files(path) for line in f.read_bytes().splitlines()]


def _half_rotation(path):
    """What a writer killed between ``os.link(live, .1)`` and ``os.rename(temp, live)`` leaves behind."""
    os.link(path, rotated_path(path, 1))
    (path.parent / f"{path.name}.rotating-1-1").touch()


def test_a_half_rotation_left_by_a_killed_writer_is_undone_by_the_next_write_on_the_fast_path(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    server = JsonlAuditSink(path, rotate_bytes=1_000_000)
    server.write(event(0))
    server.write(event(1))
    _half_rotation(path)  # the server's inode and size are unchanged: only the link count says so
    server.write(event(2))
    assert not rotated_path(path, 1).exists()
    assert _ids(path) == ["id-0", "id-1", "id-2"]
    report = verify_log(path, from_genesis=True)
    assert report.intact and report.records == 3, report.findings


def test_verify_and_query_skip_a_half_rotated_dot_1_before_any_writer_removes_it(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    for i in range(3):
        sink.write(event(i))
    sink.close()
    _half_rotation(path)
    report = verify_log(path, from_genesis=True)
    assert report.intact and report.records == 3 and report.files == (str(path),), report.findings
    assert [json.loads(r)["decision_id"] for r in query(chain_files(path), RecordFilter())] == ["id-0", "id-1",
                                                                                                 "id-2"]


def test_a_real_rotated_dot_1_is_still_read(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, rotate_bytes=2000)
    for i in range(6):
        sink.write(event(i))
    assert chain_files(path)[-2:] == [rotated_path(path, 1), path]
    assert verify_log(path, from_genesis=True).records == 6


@pytest.fixture
def no_hard_links(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)


def test_without_hard_links_a_record_written_while_the_path_is_empty_is_kept(tmp_path, event, monkeypatch,
                                                                               no_hard_links):
    path = tmp_path / "audit.jsonl"
    server = JsonlAuditSink(path, rotate_bytes=2000)
    for i in range(3):
        server.write(event(i))
    real_rename = os.rename
    cli = JsonlAuditSink(path)  # a `tenantgate check` arriving while the live file is renamed away

    def rename(src, dst, *args, **kwargs):
        real_rename(src, dst, *args, **kwargs)
        if os.fspath(src) == os.fspath(path) and not os.path.exists(path):
            monkeypatch.setattr(os, "rename", real_rename)
            cli.write(event(999, decision="ALLOW", reason="allow"))  # acknowledged: it must stay in the log

    monkeypatch.setattr(os, "rename", rename)
    server.write(event(3))  # rotates
    assert os.rename is real_rename, "the gap between the renames was not exercised"
    server.write(event(4))
    assert _ids(path) == ["id-0", "id-1", "id-2", "id-999", "id-3", "id-4"]
    report = verify_log(path, from_genesis=True)
    assert report.intact, report.findings
    assert server.stats().rotations == 1


def test_without_hard_links_a_writer_that_locks_the_new_file_first_is_followed(tmp_path, event, monkeypatch,
                                                                                no_hard_links):
    path = tmp_path / "audit.jsonl"
    server = JsonlAuditSink(path, rotate_bytes=2000, durability="fsync")
    for i in range(3):
        server.write(event(i))
    cli = JsonlAuditSink(path)
    real_lock = fileio.lock_exclusive

    def lock(fd, timeout, what):
        # The rotator created the new file but has not locked it yet: another writer gets in first.
        monkeypatch.setattr(fileio, "lock_exclusive", real_lock)
        cli.write(event(999))
        real_lock(fd, timeout, what)

    monkeypatch.setattr(fileio, "lock_exclusive", lock)
    server.write(event(3))
    assert fileio.lock_exclusive is real_lock, "the window between create and lock was not exercised"
    cli.write(event(1000))
    assert _ids(path) == ["id-0", "id-1", "id-2", "id-999", "id-3", "id-1000"]
    assert verify_log(path, from_genesis=True).intact


def _seqs(path):
    return [(f.name, r["seq"], r.get("decision_id")) for f in chain_files(path)
            for r in map(json.loads, f.read_bytes().splitlines())]


def test_without_hard_links_a_file_another_writer_filled_and_rotated_in_the_gap_is_chained_onto(
        tmp_path, event, monkeypatch, no_hard_links):
    """Found in review: the rotating writer then created the live file afresh, found it empty and took that for
    "the chain is where I left it", sealing its batch on the old head: two records with seq 4, verify said
    out_of_order on an untouched log."""
    path = tmp_path / "audit.jsonl"
    server = JsonlAuditSink(path, rotate_bytes=2000)
    for i in range(3):
        server.write(event(i))
    cli = JsonlAuditSink(path, rotate_bytes=1)  # rotates before every batch once its file is not empty
    real_claim = fileio._claim_path
    cli_claiming, server_claimed = threading.Event(), threading.Event()
    cli_errors: list[BaseException] = []

    def cli_rotates():
        try:
            cli.write(event(1000))
        except BaseException as err:  # reported by the assertion after the join
            cli_errors.append(err)

    cli_thread = threading.Thread(target=cli_rotates)

    def claim(live, timeout):
        if threading.current_thread() is cli_thread:
            # The cli's own rotation: it claims after the server created the newest file (and waits for its lock).
            cli_claiming.set()
            assert server_claimed.wait(5)
            return real_claim(live, timeout)
        # The server renamed its file to .1. In the gap the cli creates a file, writes seq 4 (acknowledged) and
        # rotates that file away itself, so the path is empty again when the server creates its new file.
        cli.write(event(999))
        cli_thread.start()
        assert cli_claiming.wait(5)
        fd = real_claim(live, timeout)
        server_claimed.set()
        return fd

    monkeypatch.setattr(fileio, "_claim_path", claim)
    server.write(event(3))
    cli_thread.join(5)
    assert server_claimed.is_set() and not cli_thread.is_alive() and not cli_errors, "the gap was not exercised"
    assert _seqs(path) == [("audit.jsonl.2", 1, "id-0"), ("audit.jsonl.2", 2, "id-1"), ("audit.jsonl.2", 3, "id-2"),
                           ("audit.jsonl.1", 4, "id-999"), ("audit.jsonl", 5, "id-3"), ("audit.jsonl", 6, "id-1000")]
    report = verify_log(path, from_genesis=True)
    assert report.intact, report.findings


def test_without_hard_links_a_writer_killed_after_renaming_its_filled_file_to_dot_1_is_chained_onto(
        tmp_path, event, monkeypatch, no_hard_links, signing_key):
    path = tmp_path / "audit.jsonl"
    server = JsonlAuditSink(path, rotate_bytes=2000, checkpoint_key=signing_key, checkpoint_every=100)
    for i in range(3):
        server.write(event(i))
    real_claim = fileio._claim_path

    def claim(live, timeout):
        monkeypatch.setattr(fileio, "_claim_path", real_claim)
        cli = JsonlAuditSink(path)  # arrives in the gap and writes seq 4 (acknowledged) ...
        cli.write(event(999))
        os.rename(rotated_path(path, 1), rotated_path(path, 2))  # ... then rotates and is killed before claiming
        os.rename(path, rotated_path(path, 1))
        return real_claim(live, timeout)

    monkeypatch.setattr(fileio, "_claim_path", claim)
    server.write(event(3))
    assert fileio._claim_path is real_claim, "the gap was not exercised"
    server.close()
    assert _seqs(path) == [
        ("audit.jsonl.2", 1, "id-0"), ("audit.jsonl.2", 2, "id-1"), ("audit.jsonl.2", 3, "id-2"),
        ("audit.jsonl.1", 4, "id-999"),
        ("audit.jsonl", 5, None), ("audit.jsonl", 6, "id-3"), ("audit.jsonl", 7, None)]  # cli's tail signed first
    report = verify_log(path, public_key=signing_key.public_key(), from_genesis=True, max_unsigned=100)
    assert report.intact, report.findings


def test_a_lasting_extra_hard_link_is_checked_once_and_a_half_rotation_on_top_of_it_is_still_undone(
        tmp_path, event, monkeypatch):
    """Found in review: with a second name that is not ``.1`` (a hard-link backup) every batch took the slow
    path and looked for a half rotation again, for as long as the backup existed (twice the time per write)."""
    path = tmp_path / "audit.jsonl"
    server = JsonlAuditSink(path)
    server.write(event(0))
    backup = tmp_path / "backup" / "audit.jsonl"
    backup.parent.mkdir()
    os.link(path, backup)
    checks = []
    real_forget = livechain.forget_half_rotation
    monkeypatch.setattr(livechain, "forget_half_rotation", lambda live: checks.append(live) or real_forget(live))
    for i in range(1, 6):
        server.write(event(i))
    assert len(checks) == 1  # the first batch after the link looked, the others took the fast path
    _half_rotation(path)  # a third name: not the count found harmless
    server.write(event(6))
    assert not rotated_path(path, 1).exists() and backup.exists()
    server.write(event(7))  # two names again: checked once more, then remembered
    server.write(event(8))
    assert len(checks) == 3
    backup.unlink()
    server.write(event(9))  # one name seen: what was remembered no longer holds
    _half_rotation(path)  # two names again, but now the second is .1
    server.write(event(10))
    assert not rotated_path(path, 1).exists()
    assert _ids(path) == [f"id-{i}" for i in range(11)]
    assert verify_log(path, from_genesis=True).intact
