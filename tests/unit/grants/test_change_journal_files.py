"""The grant change journal's own file under faults: compaction, directory syncs, transient errors, cut lines
and files left half-made. Each test is a finding of the second review of 2026-12-04."""

import dataclasses
import logging
import os
import stat
import time

import pytest

from support.grant_journal import Clock, change, grant_events, ignore, journals, pending_grant, settle
from tenantgate.audit import JsonlAuditSink
from tenantgate.core.grantevents import GrantEvents
from tenantgate.core.grants import GrantState, PendingChange
from tenantgate.errors import AuditUnavailable
from tenantgate.grants import journal as journal_module
from tenantgate.grants.journal import MAX_JOURNAL_BYTES, FileChangeJournal, journal_prefix


def test_a_directory_sync_failing_after_a_compaction_keeps_the_live_journal_locked(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "COMPACT_BYTES", 1)
    prefix = journal_prefix(tmp_path / "audit.jsonl")
    owner = FileChangeJournal(prefix, sync=True)
    owner.begin([change("e-0")])
    owner.begin([change("e-1")])
    fsync = os.fsync

    def directory_sync_fails(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(5, "Input/output error")
        fsync(fd)

    monkeypatch.setattr(journal_module.os, "fsync", directory_sync_fails)
    owner.end([change("e-0")])  # compacts: the new file takes the name, then the directory sync fails
    monkeypatch.setattr(journal_module.os, "fsync", fsync)
    assert list(FileChangeJournal(prefix).abandoned()) == []  # e-1 is in flight in a live process
    owner.begin([change("e-2")])
    owner.close()
    (taken,) = FileChangeJournal(prefix).abandoned()
    assert [c.event_id for c in taken.changes] == ["e-1", "e-2"]  # the owner kept writing to its named journal


def test_a_compaction_that_keeps_failing_still_ends_changes_and_says_so_rarely(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(journal_module, "COMPACT_BYTES", 64 << 10)
    prefix = journal_prefix(tmp_path / "audit.jsonl")
    owner = FileChangeJournal(prefix, sync=False)
    owner.start()
    real_open = os.open

    def no_new_files(path, flags, *args):  # the file system's inodes used up: appends still work
        if flags & os.O_CREAT:
            raise OSError(28, "No space left on device")
        return real_open(path, flags, *args)

    monkeypatch.setattr(journal_module.os, "open", no_new_files)
    big = dataclasses.replace(pending_grant(), reason="r" * 1024, ticket="t" * 256)
    owner.begin([PendingChange("revoke", big, "e-0")])
    with caplog.at_level(logging.WARNING, logger="tenantgate.grants"):
        for i in range(1, 600):  # each change ends after the next has begun
            owner.begin([PendingChange("revoke", big, f"e-{i}")])
            owner.end([PendingChange("revoke", big, f"e-{i - 1}")])
    monkeypatch.setattr(journal_module.os, "open", real_open)
    owner.close()  # ended with e-599 in flight
    assert sum("not compacted" in r.getMessage() for r in caplog.records) == 1  # then counted, once a minute
    (name,) = journals(tmp_path)
    assert (tmp_path / name).stat().st_size < MAX_JOURNAL_BYTES
    (taken,) = FileChangeJournal(prefix).abandoned()
    assert [c.event_id for c in taken.changes] == ["e-599"]  # every other change was ended all the same


def test_a_journal_that_could_not_be_opened_for_a_moment_is_settled_at_a_later_sweep(tmp_path, monkeypatch):
    prefix = journal_prefix(tmp_path / "audit.jsonl")
    dead = FileChangeJournal(prefix)
    dead.begin([change("e-1")])
    dead.close()
    reconciler = FileChangeJournal(prefix)
    real_open = os.open

    def no_descriptors(path, flags, *args):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(journal_module.os, "open", no_descriptors)
    assert list(reconciler.abandoned()) == []
    monkeypatch.setattr(journal_module.os, "open", real_open)
    assert [[c.event_id for c in j.changes] for j in reconciler.abandoned()] == [["e-1"]]


def test_the_reconciler_s_marks_survive_a_journal_ending_in_a_cut_line(tmp_path, store):
    class SecondWriteFails:
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def write(self, entry):
            self.calls += 1
            if self.calls == 2:
                raise AuditUnavailable("disk full (simulated, once)")
            self.inner.write(entry)

    for grant_id in ("g-1", "g-2"):
        store.create(pending_grant(grant_id), ignore)
    prefix = journal_prefix(tmp_path / "audit.jsonl")
    dead = FileChangeJournal(prefix)
    for grant_id in ("g-1", "g-2"):
        expiry = PendingChange("expire", dataclasses.replace(pending_grant(grant_id), state=GrantState.EXPIRED),
                               f"e-{grant_id}")
        dead.begin([expiry])
        dead.written([expiry])
    dead.close()
    (name,) = journals(tmp_path)
    with open(tmp_path / name, "ab") as cut:  # killed part-way through its next line
        cut.write(b'{"begin":[{"step":"expire","event_id":"e-3","grant":{"id":"g-3","oper')
    sink = JsonlAuditSink(tmp_path / "audit.jsonl")
    journal = FileChangeJournal(prefix)
    with pytest.raises(AuditUnavailable):
        GrantEvents(SecondWriteFails(sink), Clock(), max_grant_id=64, max_why=1024,
                    journal=journal).reconcile(store.read_back)
    sink.close()
    journal.close()
    settle(tmp_path, store)
    assert sorted(e["grant_id"] for e in grant_events(tmp_path) if e["event"] == "grant.failed") == ["g-1", "g-2"]


def test_a_file_a_dead_process_was_making_is_deleted_once_stale(tmp_path):
    prefix = journal_prefix(tmp_path / "audit.jsonl")
    stale = tmp_path / ".audit.jsonl.grant-journal-aaaa.1234.new"
    fresh = tmp_path / ".audit.jsonl.grant-journal-bbbb.5678.new"
    for made in (stale, fresh):
        made.write_bytes(b"")
    old = time.time() - 2 * journal_module.STALE_NEW_SECONDS
    os.utime(stale, (old, old))
    assert list(FileChangeJournal(prefix).abandoned()) == []
    assert not stale.exists() and fresh.exists()  # a fresh one may be a live process's, being made
