"""A served process settles, at start, the grant changes a killed process left between their event and their
commit (``tenantgate.grants.journal``), and leaves no journal behind when it stops cleanly."""

import dataclasses
import json
import time
from pathlib import Path

import grpc

from support.issuers import TestIssuer
from support.server import running_server, write_config
from support.waiting import eventually
from tenantgate import config
from tenantgate.core.grants import Grant, GrantState, PendingChange
from tenantgate.grants import open_store
from tenantgate.grants.journal import FileChangeJournal, journal_prefix
from tenantgate.v1 import breakglass_pb2 as bg
from tenantgate.v1 import breakglass_pb2_grpc as bg_grpc


def journals(audit_path: Path) -> list[str]:
    return sorted(p.name for p in audit_path.parent.iterdir() if ".grant-journal-" in p.name)


def test_a_served_process_settles_a_dead_one_s_revocation_at_start_and_leaves_no_journal(tmp_path):
    issuer = TestIssuer(tmp_path)
    settings = config.load(write_config(tmp_path, issuer.settings), env={})
    audit_path = Path(settings.audit.path)
    audit_path.parent.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.grants.store)
    now = time.time()
    try:
        requested = store.create(Grant(
            id="g-1", operator="oscar", operator_tenant="platform", target_tenant="acme", actions=("read",),
            reason="INC-1", ticket="INC-1", duration_seconds=900, state=GrantState.PENDING,
            requested_at=now, pending_until=now + 3600), lambda grant: None)
        # What a process killed between grant.revoked and its commit leaves: its journal, its lock gone.
        dead = FileChangeJournal(journal_prefix(audit_path))
        revocation = PendingChange("revoke", dataclasses.replace(requested, state=GrantState.REVOKED, revoked_by="ada",
                                                                 revoked_at=requested.requested_at + 5,
                                                                 revoke_reason="done"), "e-dead")
        dead.begin([revocation])
        dead.written([revocation])
        dead.close()
    finally:
        store.close()
    (left,) = journals(audit_path)

    with running_server(settings) as (address, _app), grpc.insecure_channel(address) as channel:
        eventually(lambda: left not in journals(audit_path), "the dead process's journal settled", attempts=600)
        records = [json.loads(line) for line in audit_path.read_text().splitlines()]
        (failed,) = [r for r in records if r.get("event") == "grant.failed"]
        assert failed["grant_id"] == "g-1" and failed["state"] == "PENDING"
        assert "(e-dead) ended before its commit; the grant stands PENDING" in failed["detail"]
        oscar = issuer.mint(tenant="platform", sub="oscar", roles=["breakglass-operator"])
        bg_grpc.BreakGlassStub(channel).RequestGrant(
            bg.RequestGrantRequest(target_tenant="acme", actions=["read"], reason="INC-2", ticket="INC-2",
                                   duration_seconds=900), metadata=[("authorization", f"Bearer {oscar}")])
        assert len(journals(audit_path)) == 1  # the server's own (made at start), emptied once its change settled
        assert (audit_path.parent / journals(audit_path)[0]).stat().st_size == 0
    assert journals(audit_path) == []  # a clean stop deletes it
