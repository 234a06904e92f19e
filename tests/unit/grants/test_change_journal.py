"""A process killed between a grant change's audit event and its commit: the change journal lets the next start
(or another process's sweep) put the outcome on record.

Review finding (left open until 2026-12-04): SIGKILL or OOM between writing ``grant.revoked`` and its commit left
that event with nothing after it, though the grant stayed ACTIVE and kept opening cross-tenant Checks. The log
said it was revoked. These tests kill a real process at that moment.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tenantgate.audit import JsonlAuditSink, verify_log
from tenantgate.core.grantevents import GrantEvents
from tenantgate.core.grants import Grant, GrantState, PendingChange
from tenantgate.errors import AuditUnavailable, GrantStoreUnavailable
from tenantgate.grants.journal import FileChangeJournal, journal_prefix

T0 = 1_700_000_000.0

# The process that dies: one change through GrantEvents with its journal, its store's commit killing it.
CHILD = textwrap.dedent('''
    import os, signal, sys
    from pathlib import Path
    from tenantgate.audit import JsonlAuditSink
    from tenantgate.core.grantevents import GrantEvents
    from tenantgate.core.grants import Grant, GrantState
    from tenantgate.grants import open_store
    from tenantgate.grants.journal import FileChangeJournal, journal_prefix

    audit_path, store_url, step, when = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    T0 = %r

    class Clock:
        def now(self):
            return T0 + 20

    store = open_store(store_url)
    commit = store._commit

    def dying_commit():
        if when == "after":
            commit()
        os.kill(os.getpid(), signal.SIGKILL)

    store._commit = dying_commit
    events = GrantEvents(JsonlAuditSink(audit_path), Clock(), max_grant_id=64, max_why=1024,
                         journal=FileChangeJournal(journal_prefix(audit_path)))
    if step == "request":
        grant = Grant(id="g-new", operator="oscar", operator_tenant="platform", target_tenant="acme",
                      actions=("read",), reason="incident", ticket="INC-1", duration_seconds=600,
                      state=GrantState.PENDING, requested_at=T0 + 20, pending_until=T0 + 3600)
        events.change(step, None, lambda record: store.create(grant, record))
    elif step == "approve":
        events.change(step, None, lambda record: store.activate("g-1", "ada", T0 + 20, record))
    else:
        events.change(step, None, lambda record: store.revoke("g-1", "ada", "incident closed", T0 + 20, record))
    sys.exit("the process was not killed")
''') % T0


class Clock:
    def now(self):
        return T0 + 30


def pending_grant(grant_id="g-1"):
    return Grant(id=grant_id, operator="oscar", operator_tenant="platform", target_tenant="acme", actions=("read",),
                 reason="incident", ticket="INC-1", duration_seconds=600, state=GrantState.PENDING, requested_at=T0,
                 pending_until=T0 + 3600)


def ignore(grant):
    pass


def killed_in(tmp_path, store_url, step, when="before"):
    """Run ``step`` of grant g-1 in a child process killed at its commit (``before`` or ``after`` it)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "audit.jsonl"), store_url, step, when],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == -signal.SIGKILL, out.stderr


def settle(tmp_path, store):
    """What the next start does: a process of its own settles what the killed one left."""
    journal = FileChangeJournal(journal_prefix(tmp_path / "audit.jsonl"))
    sink = JsonlAuditSink(tmp_path / "audit.jsonl")
    try:
        return GrantEvents(sink, Clock(), max_grant_id=64, max_why=1024, journal=journal).reconcile(store.read_back)
    finally:
        sink.close()
        journal.close()


def grant_events(tmp_path):
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("record_type") == "grant_event"]


def journals(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if ".grant-journal-" in p.name)


def test_a_revocation_killed_before_its_commit_is_followed_by_grant_failed(tmp_path, store, store_url):
    store.create(pending_grant(), ignore)
    store.activate("g-1", "ada", T0 + 10, ignore)
    killed_in(tmp_path, store_url, "revoke")
    assert store.get("g-1").state is GrantState.ACTIVE  # the revocation never happened ...
    assert [e["event"] for e in grant_events(tmp_path)] == ["grant.revoked"]  # ... but the log said it did
    assert len(journals(tmp_path)) == 1

    assert settle(tmp_path, store) == 1
    revoked, failed = grant_events(tmp_path)
    assert failed["event"] == "grant.failed" and failed["grant_id"] == "g-1" and failed["state"] == "ACTIVE"
    assert failed["detail"] == (f"revoke not applied: the process that wrote its grant.revoked event "
                                f"({revoked['event_id']}) ended before its commit; the grant stands ACTIVE")
    assert journals(tmp_path) == []  # settled once: the next start finds nothing
    assert settle(tmp_path, store) == 0
    assert verify_log(tmp_path / "audit.jsonl").intact


def test_a_request_killed_before_its_commit_says_no_grant_was_stored(tmp_path, store, store_url):
    killed_in(tmp_path, store_url, "request")
    assert store.get("g-new") is None
    assert settle(tmp_path, store) == 1
    requested, failed = grant_events(tmp_path)
    assert (requested["event"], failed["event"], failed["state"]) == ("grant.requested", "grant.failed", "")
    assert failed["detail"].endswith("ended before its commit; no such grant was stored")


def test_a_change_killed_after_its_commit_took_effect_and_gets_no_grant_failed(tmp_path, store, store_url):
    store.create(pending_grant(), ignore)
    killed_in(tmp_path, store_url, "approve", when="after")
    assert store.get("g-1").state is GrantState.ACTIVE
    assert settle(tmp_path, store) == 0
    assert [e["event"] for e in grant_events(tmp_path)] == ["grant.approved"]
    assert journals(tmp_path) == []


def test_a_journal_whose_grants_cannot_be_read_is_kept_for_a_later_sweep(tmp_path, store, store_url):
    store.create(pending_grant(), ignore)
    killed_in(tmp_path, store_url, "approve")

    def unreadable(grants):
        return {}, "grant store unavailable: connection refused"

    journal = FileChangeJournal(journal_prefix(tmp_path / "audit.jsonl"))
    sink = JsonlAuditSink(tmp_path / "audit.jsonl")
    events = GrantEvents(sink, Clock(), max_grant_id=64, max_why=1024, journal=journal)
    with pytest.raises(GrantStoreUnavailable, match="could not be read back: grant store unavailable: connection"):
        events.reconcile(unreadable)
    sink.close()
    assert len(journals(tmp_path)) == 1
    assert settle(tmp_path, store) == 1  # the store is back


# --- the journal itself ----------------------------------------------------------------------------------------

def change(event_id="e-1", step="revoke"):
    return PendingChange(step, pending_grant(), event_id)


def test_a_live_process_journal_is_never_taken(tmp_path):
    prefix = journal_prefix(tmp_path / "audit.jsonl")
    owner = FileChangeJournal(prefix)
    owner.begin([change()])
    assert list(FileChangeJournal(prefix).abandoned()) == []  # its owner holds the lock
    owner.close()  # ended with a change in flight: the lock is gone, the journal stays
    (taken,) = FileChangeJournal(prefix).abandoned()
    assert taken.changes == (change(),)


def test_settled_changes_are_forgotten_and_a_clean_stop_leaves_no_file(tmp_path):
    prefix = journal_prefix(tmp_path / "audit.jsonl")
    owner = FileChangeJournal(prefix)
    owner.begin([change("e-1"), change("e-2")])
    owner.begin([change("e-3")])
    owner.end([change("e-1"), change("e-2")])
    (own,) = journals(tmp_path)
    owner.end([change("e-3")])
    assert (tmp_path / own).stat().st_size == 0  # nothing in flight: emptied, however many changes came
    owner.begin([change("e-4")])
    owner.end([change("e-4")])
    owner.close()
    assert journals(tmp_path) == []


def test_a_line_cut_short_by_the_death_is_skipped(tmp_path, caplog):
    prefix = journal_prefix(tmp_path / "audit.jsonl")
    owner = FileChangeJournal(prefix)
    owner.begin([change("e-1")])
    owner.close()
    (name,) = journals(tmp_path)
    with open(tmp_path / name, "ab") as torn:
        torn.write(b'{"begin":[{"step":"revoke","event_id":"e-2","gra')
    (taken,) = FileChangeJournal(prefix).abandoned()
    assert [c.event_id for c in taken.changes] == ["e-1"]
    assert "a line skipped" in caplog.text


def test_a_journal_that_cannot_be_written_stops_the_change_before_its_event(tmp_path, store):
    store.create(pending_grant(), ignore)
    sink = JsonlAuditSink(tmp_path / "audit.jsonl")
    journal = FileChangeJournal(journal_prefix(tmp_path / "missing" / "audit.jsonl"))
    events = GrantEvents(sink, Clock(), max_grant_id=64, max_why=1024, journal=journal)
    with pytest.raises(AuditUnavailable, match="grant change journal not writable"):
        events.change("revoke", None, lambda record: store.revoke("g-1", "ada", "done", T0 + 20, record))
    sink.close()
    assert store.get("g-1").state is GrantState.PENDING
    assert not Path(tmp_path / "audit.jsonl").exists() or grant_events(tmp_path) == []


def test_what_is_not_a_journal_is_left_alone_and_said_once(tmp_path, caplog):
    prefix = journal_prefix(tmp_path / "audit.jsonl")
    os.mkfifo(f"{prefix}fifo")  # opened without waiting for a writer, never read
    (tmp_path / "audit.jsonl.grant-journal-huge").write_bytes(b"")
    os.truncate(tmp_path / "audit.jsonl.grant-journal-huge", 5 << 20)
    reconciler = FileChangeJournal(prefix)
    assert list(reconciler.abandoned()) == [] and list(reconciler.abandoned()) == []
    said = [r.getMessage() for r in caplog.records if "left alone" in r.getMessage()]
    assert sorted(said) == ["grant change journal audit.jsonl.grant-journal-fifo left alone: not a regular file",
                            "grant change journal audit.jsonl.grant-journal-huge left alone: 5242880 bytes, more "
                            "than any process leaves"]


def test_a_line_the_disk_cut_short_is_cut_back_so_the_next_change_is_not_swallowed(tmp_path, monkeypatch):
    from tenantgate.grants import journal as journal_module

    prefix = journal_prefix(tmp_path / "audit.jsonl")
    owner = FileChangeJournal(prefix)
    owner.begin([change("e-1")])
    write = os.write

    def disk_full(fd, data):
        write(fd, bytes(data[:20]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal_module.os, "write", disk_full)
    with pytest.raises(AuditUnavailable, match="No space left"):
        owner.begin([change("e-2")])
    monkeypatch.setattr(journal_module.os, "write", write)
    owner.begin([change("e-3")])
    owner.close()
    (taken,) = FileChangeJournal(prefix).abandoned()
    assert [c.event_id for c in taken.changes] == ["e-1", "e-3"]
