"""Scenario 3: in-process peers on one tenant-isolation workload.

Same principals (a viewer, an editor and an admin in each tenant), tenants, resources (invoices owned by a
tenant) and actions (read, update, delete); a quarter of the requests cross tenants. Expected: allowed iff
the resource is in the principal's tenant and the role grants the action (viewer: read; editor: + update;
admin: + delete). Each engine's answers are checked against that before it is timed.

- TenantGate: the full ``DecisionPoint.decide`` (cached token, tenancy, Cedar on the bundled policies,
  audit record written; the workload's requests repeat, so Cedar's outcomes come from the decision memo), the
  same with the memo off, and raw ``cedarpy.is_authorized`` with pre-parsed handles.
- pycasbin (PyPI ``pycasbin``, imported as ``casbin``): RBAC with domains, one domain per tenant.
- Rego via regorus (PyPI ``celine-regorus``): a tenant check plus a role -> actions table in data.
Peers are optional (the ``bench`` extra); a missing one gets a row saying so.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cedarpy

from tenantgate import app as application
from tenantgate import config
from tenantgate.core.engine import Engine as PolicyEngine
from tenantgate.core.model import CheckInput, ClaimNames, Decision, Principal, Resource
from tenantgate.core.tenancy import principal_from_claims

from .context import RunContext
from .core import cedar_inputs
from .fixture import BenchIssuer, write_config
from .results import Chart, Section
from .stats import rate, summarize, us
from .timing import each

GOALS: list[tuple[str, str]] = []
ROLES = {"viewer": ("read",), "editor": ("read", "update"), "admin": ("read", "update", "delete")}
ACTIONS = ("read", "update", "delete")
CROSS_TENANT_SHARE = 0.25

CASBIN_MODEL = """
[request_definition]
r = sub, dom, obj, act

[policy_definition]
p = sub, dom, obj, act

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub, r.dom) && r.dom == p.dom && keyMatch(r.obj, p.obj) && r.act == p.act
"""

REGO_POLICY = """
package tenantgate

import rego.v1

default allow := false

allow if {
    input.principal.tenant == input.resource.tenant
    some role in input.principal.roles
    input.action in data.role_actions[role]
}
"""


@dataclass(frozen=True, slots=True)
class Ask:
    tenant: str          # the principal's tenant
    role: str
    resource_tenant: str
    invoice: str
    action: str

    @property
    def user(self) -> str:
        return f"{self.role}-user"  # entity ids are unique only within a tenant (as in TenantGate)

    @property
    def expected(self) -> bool:
        return self.tenant == self.resource_tenant and self.action in ROLES[self.role]


def workload(tenants: int, count: int, seed: int = 7) -> tuple[list[str], list[Ask]]:
    names = [f"tenant-{i:03d}" for i in range(tenants)]
    rng = random.Random(seed)
    asks = []
    for _ in range(count):
        tenant, role = rng.choice(names), rng.choice(list(ROLES))
        other = [n for n in names if n != tenant]
        resource_tenant = rng.choice(other) if other and rng.random() < CROSS_TENANT_SHARE else tenant
        asks.append(Ask(tenant, role, resource_tenant, f"inv-{rng.randrange(1000)}", rng.choice(ACTIONS)))
    return names, asks


Engine = Callable[[int], bool]  # decides asks[i]; True = allow


def tenantgate_engines(ctx: RunContext, names: list[str], asks: list[Ask]
                       ) -> tuple[dict[str, Engine], Callable[[], None]]:
    directory = ctx.tmp / "peers"
    directory.mkdir()
    issuer = BenchIssuer(directory, "ES256")
    built = application.build(config.load(write_config(directory, issuer), env={}))
    tokens = {(t, role): issuer.mint(t, f"{role}-user", (role,)) for t in names for role in ROLES}
    checks = [CheckInput(token=tokens[(a.tenant, a.role)], action=a.action,
                         resource=Resource("Invoice", a.invoice, a.resource_tenant, {"status": "sent"}),
                         context={"mfa": True}, api="check") for a in asks]
    engine = built.policies.current()
    schema = engine.compiled.schema
    raw_inputs = []
    for a, check in zip(asks, checks, strict=True):
        principal = principal_from_claims(built.verifier.verify(check.token), ClaimNames())
        assert isinstance(principal, Principal)
        request, entities = cedar_inputs(check, principal)
        raw_inputs.append((request, engine.policy_set_for(a.resource_tenant), entities))

    def decide(i: int) -> bool:
        return built.pdp.decide(checks[i]).decision is Decision.ALLOW

    no_memo = PolicyEngine(engine.compiled, decision_cache_size=0)

    def decide_no_memo(i: int) -> bool:
        return built.pdp.decide(checks[i], no_memo).decision is Decision.ALLOW

    def raw(i: int) -> bool:
        request, policy_set, entities = raw_inputs[i]
        return cedarpy.is_authorized(request, policy_set, entities, schema=schema).decision.value == "Allow"

    return ({"TenantGate decide() (full, audited)": decide,
             "TenantGate decide(), decision memo off": decide_no_memo,
             "raw cedarpy (pre-parsed policies)": raw}, lambda: application.close(built))


def casbin_engine(directory: Path, names: list[str], asks: list[Ask]) -> Engine:
    import casbin

    model = directory / "rbac_with_domains.conf"
    model.write_text(CASBIN_MODEL)
    enforcer = casbin.Enforcer(str(model))
    for tenant in names:
        for role, actions in ROLES.items():
            for action in actions:
                enforcer.add_policy(role, tenant, "invoice/*", action)
            enforcer.add_grouping_policy(f"{role}-user@{tenant}", role, tenant)
    args = [(f"{a.user}@{a.tenant}", a.resource_tenant, f"invoice/{a.invoice}", a.action) for a in asks]
    return lambda i: bool(enforcer.enforce(*args[i]))


def regorus_engine(asks: list[Ask]) -> Engine:
    import regorus

    engine = regorus.Engine()
    engine.add_policy("tenantgate.rego", REGO_POLICY)
    engine.add_data({"role_actions": {role: list(actions) for role, actions in ROLES.items()}})
    inputs = [{"principal": {"tenant": a.tenant, "roles": [a.role], "id": a.user},
               "resource": {"type": "Invoice", "id": a.invoice, "tenant": a.resource_tenant},
               "action": a.action} for a in asks]

    def decide(i: int) -> bool:
        engine.set_input(inputs[i])
        return bool(engine.eval_rule("data.tenantgate.allow"))

    return decide


def run(ctx: RunContext) -> Section:
    budget = ctx.budget
    section = Section("peers", "3. Peers in-process: same tenant-isolation workload",
                      ["engine", "decisions/s (1 thread)", "p50", "p99", "answers as expected", "note"])
    names, asks = workload(budget.peer_tenants, min(budget.peer_samples, 2000))
    engines, close = tenantgate_engines(ctx, names, asks)
    missing: dict[str, str] = {}
    try:
        loaders: dict[str, Callable[[], Engine]] = {
            "pycasbin (RBAC with domains)": lambda: casbin_engine(ctx.tmp / "peers", names, asks),
            "Rego via regorus": lambda: regorus_engine(asks),
        }
        for name, load in loaders.items():
            try:
                engines[name] = load()
            except ImportError as err:
                missing[name] = f"not installed (no module {err.name!r}): pip install -e '.[bench]'"
            except Exception as err:  # noqa: BLE001 - a broken peer is a row, not a failed run
                missing[name] = f"failed to load: {type(err).__name__}: {err}"[:200]
        order = list(range(len(asks)))
        results: dict[str, dict[str, Any]] = {}
        for name, decide in engines.items():
            for i in order[:50]:
                decide(i)  # warm-up: token cache, partitions, interpreter caches
            wrong = sum(decide(i) != asks[i].expected for i in order)
            samples = []
            while len(samples) < budget.peer_samples:
                samples += each(decide, order[: budget.peer_samples - len(samples)])  # type: ignore[arg-type]
            s = summarize(samples)
            results[name] = {"summary": s.to_dict(), "wrong": wrong, "per_s": len(samples) / math.fsum(samples)}
            section.add(name, rate(results[name]["per_s"]), us(s.p50), us(s.p99),
                        "yes" if not wrong else f"NO: {wrong} of {len(asks)} differ", "")
        for name, why in missing.items():
            section.add(name, "–", "–", "–", "–", why)
    finally:
        close()
    section.data.update(results=results, missing=missing, tenants=len(names), asks=len(asks),
                        cross_tenant_share=CROSS_TENANT_SHARE)
    section.notes.append(f"{len(names)} tenants x 3 roles, {len(asks):,} distinct requests "
                         f"({CROSS_TENANT_SHARE:.0%} cross-tenant), {budget.peer_samples:,} timed decisions per "
                         "engine. "
                         "TenantGate denies cross-tenant requests in code before Cedar; the others evaluate them.")
    section.charts.append(Chart("Peers: decisions/s in-process (one thread)", "decisions/s",
                                list(results), [r["per_s"] for r in results.values()], log=True))
    return section
