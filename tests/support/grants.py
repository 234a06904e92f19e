"""A break-glass setup for tests: issuer, clock, audit sink, SQLite or PostgreSQL store, rules, DecisionPoint."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from support.issuers import FixedClock, TestIssuer, verifier_for
from tenantgate.audit import JsonlAuditSink
from tenantgate.core.breakglass import BreakGlass, GrantRequest, GrantRules
from tenantgate.core.grants import Grant
from tenantgate.core.pdp import DecisionPoint
from tenantgate.errors import GrantConflict
from tenantgate.grants import open_store
from tenantgate.policy import PolicyStore, load_policies

BUNDLED = Path(__file__).resolve().parents[2] / "policies"
NOW = 1_700_000_000.0


@dataclass
class BreakGlassWorld:
    clock: FixedClock
    issuer: TestIssuer
    sink: JsonlAuditSink
    service: BreakGlass
    pdp: DecisionPoint

    def token(self, tenant: str, sub: str, *roles: str) -> str:
        return self.issuer.mint(tenant=tenant, sub=sub, roles=list(roles), exp=int(self.clock.now()) + 86_000)

    def caller(self, tenant: str, sub: str, *roles: str):
        return self.service.caller(self.token(tenant, sub, *roles))

    def operator(self, sub: str = "oscar"):
        return self.caller("platform", sub, "breakglass-operator")

    def approver(self, sub: str = "ada"):
        return self.caller("platform", sub, "breakglass-approver")

    def request(self, target="acme", actions=("read",), duration=900, sub="oscar", **kw):
        req = GrantRequest(target_tenant=target, actions=tuple(actions), reason=kw.get("reason", "INC-1 outage"),
                           ticket=kw.get("ticket", "INC-1"), duration_seconds=duration)
        return self.service.request(self.operator(sub), req)

    def active_grant(self, **kw):
        grant = self.request(**kw)
        return self.service.approve(self.approver(), grant.id)

    def records(self) -> list[dict]:
        return [json.loads(line) for line in Path(self.sink.path).read_text().splitlines()]

    def events(self, name: str) -> list[dict]:
        return [r for r in self.records() if r.get("event") == name]


def make_world(tmp_path: Path, store_url: str | None = None, **rules) -> BreakGlassWorld:
    clock = FixedClock(NOW)
    issuer = TestIssuer(tmp_path, clock=clock)
    sink = JsonlAuditSink(tmp_path / "audit.jsonl")
    verifier = verifier_for(issuer, clock=clock, max_lifetime_seconds=90_000)
    store = open_store(store_url or f"sqlite:///{tmp_path / 'grants.db'}")
    service = BreakGlass(store=store, audit=sink, clock=clock, rules=GrantRules(**rules), verifier=verifier)
    pdp = DecisionPoint(verifier=verifier, engine=PolicyStore(load_policies(BUNDLED)).current, audit=sink,
                        clock=clock, grants=service)
    return BreakGlassWorld(clock, issuer, sink, service, pdp)


def race_creates(store_url: str, grants: list[Grant], **limits: int) -> list[str]:
    """Create ``grants`` at once, each on a connection of its own, every create holding its transaction open (its
    audit write) for 0.1 s after counting: without a lock between the count and the insert, every racer counts the
    same few and inserts (PostgreSQL, READ COMMITTED). ``limits``: ``create``'s. Returns the sorted outcomes
    ("created" / "refused")."""
    stores = [open_store(store_url) for _ in grants]
    start = threading.Barrier(len(grants))
    outcomes: list[str] = []

    def slow_audit(_grant: Grant) -> None:
        time.sleep(0.1)

    def race(index: int) -> None:
        start.wait()
        try:
            stores[index].create(grants[index], slow_audit, **limits)
            outcomes.append("created")
        except GrantConflict:
            outcomes.append("refused")

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(grants))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for opened in stores:
            opened.close()
    return sorted(outcomes)
