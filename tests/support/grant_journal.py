"""The grant change journal's tests: a child process killed in a grant change, and a fresh process settling
what it left (``tenantgate.grants.journal``)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tenantgate.audit import JsonlAuditSink
from tenantgate.core.grantevents import GrantEvents
from tenantgate.core.grants import Grant, GrantState, PendingChange
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

    class DyingSink:  # killed while writing the event: after its journal line, before the event is in the log
        def write(self, entry):
            os.kill(os.getpid(), signal.SIGKILL)

    sink = DyingSink() if when == "event" else JsonlAuditSink(audit_path)
    events = GrantEvents(sink, Clock(), max_grant_id=64, max_why=1024,
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


def killed_in(tmp_path: Path, store_url: str, step: str, when: str = "before") -> None:
    """Run ``step`` of grant g-1 in a child process killed at its commit (``before`` or ``after`` it), or while
    writing its event (``event``)."""
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


def change(event_id="e-1", step="revoke", grant_id="g-1"):
    return PendingChange(step, pending_grant(grant_id), event_id)
