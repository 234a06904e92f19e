"""Rotation interrupted or raced by another writer: no record is read twice, none acknowledged is lost.

Found in review: a writer killed between linking the live file to ``.1`` and renaming the new file in left
``.1`` as a second name of the live file, which the server's fast path never noticed (every record read
twice by verify, query and tail); and on a filesystem without hard links the rename fallback replaced a
file that another writer had created, with an acknowledged record in it, during the rotation.
"""

import json
import os

import pytest

from tenantgate.audit import JsonlAuditSink, fileio, verify_log
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
