"""A process killed between a grant change's audit event and its commit: the change journal lets the next start
(or another process's sweep) put the outcome on record.

Review finding (left open until 2026-12-04): SIGKILL or OOM between writing ``grant.revoked`` and its commit left
that event with nothing after it, though the grant stayed ACTIVE and kept opening cross-tenant Checks. The log
said it was revoked. These tests kill a real process at that moment.
"""

import os

import pytest

from support.grant_journal import T0, Clock, change, grant_events, ignore, journals, killed_in, pending_grant, settle
from tenantgate.audit import JsonlAuditSink, verify_log
from tenantgate.core.grantevents import GrantEvents
from tenantgate.core.grants import GrantState
from tenantgate.errors import AuditUnavailable, GrantStoreUnavailable
from tenantgate.grants.journal import FileChangeJournal, journal_prefix


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
    assert "1 line(s) skipped" in caplog.text


def test_a_journal_that_cannot_be_written_holds_back_an_approval_never_a_revocation(tmp_path, store):
    # Review finding: holding back every change made a revocation fail where the audit directory could not take
    # the journal, leaving cross-tenant access open; only changes that grant access are held back now.
    store.create(pending_grant("g-1"), ignore)
    store.create(pending_grant("g-2"), ignore)
    store.activate("g-2", "ada", T0 + 10, ignore)
    sink = JsonlAuditSink(tmp_path / "audit.jsonl")
    journal = FileChangeJournal(journal_prefix(tmp_path / "missing" / "audit.jsonl"))
    events = GrantEvents(sink, Clock(), max_grant_id=64, max_why=1024, journal=journal)
    with pytest.raises(AuditUnavailable, match="grant change journal not writable"):
        events.change("approve", None, lambda record: store.activate("g-1", "ada", T0 + 20, record))
    assert store.get("g-1").state is GrantState.PENDING
    assert grant_events(tmp_path) == [] if (tmp_path / "audit.jsonl").exists() else True
    events.change("revoke", None, lambda record: store.revoke("g-2", "ada", "done", T0 + 20, record))
    sink.close()
    assert store.get("g-2").state is GrantState.REVOKED
    assert [e["event"] for e in grant_events(tmp_path)] == ["grant.revoked"]


def test_what_is_not_a_journal_is_left_alone_and_said_once(tmp_path, caplog):
    prefix = journal_prefix(tmp_path / "audit.jsonl")
    os.mkfifo(f"{prefix}fifo")  # opened without waiting for a writer, never read
    (tmp_path / "audit.jsonl.grant-journal-huge").write_bytes(b"")
    os.truncate(tmp_path / "audit.jsonl.grant-journal-huge", 17 << 20)
    reconciler = FileChangeJournal(prefix)
    assert list(reconciler.abandoned()) == [] and list(reconciler.abandoned()) == []
    said = [r.getMessage() for r in caplog.records if "left alone" in r.getMessage()]
    assert sorted(said) == ["grant change journal audit.jsonl.grant-journal-fifo left alone: not a regular file",
                            "grant change journal audit.jsonl.grant-journal-huge left alone: 17825792 bytes, more "
                            "than any process leaves"]

