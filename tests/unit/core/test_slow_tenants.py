"""A tenant whose own policies take Cedar longer than ``policies.tenant_evaluation_budget_ms``, repeatedly, is
quarantined: its decisions are denied without asking Cedar, until its own policy text changes.

Review finding (MEDIUM): nothing bounded evaluation. Cedar holds the GIL, and a tenant's `like` patterns (13 s a
decision within the byte limit) or set comparisons (320 ms) held every other tenant's decisions meanwhile.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support.policies import SLOW_FORBID, bundled_with_tenant
from tenantgate.core.engine import TOO_SLOW, Engine
from tenantgate.core.model import Decision, Principal, Reason, Resource
from tenantgate.core.slowtenants import GLOBAL_SLOW_SECONDS, STRIKES, WINDOW_SECONDS, SlowTenants
from tenantgate.policy import PolicyStore, load_policies

LONG = "a" * 65_536
BUDGET = 0.005


def _read(engine: Engine, tenant: str, status: str = LONG, rid: str = "i"):
    viewer = Principal("User", "v", "v", tenant, ("viewer",), None, "https://issuer.test", "jti")
    return engine.evaluate(viewer, "read", Resource("Invoice", rid, tenant), {"tenant": tenant, "status": status},
                           {"intent": ""})


@pytest.fixture()
def policy_dir(tmp_path: Path) -> Path:
    return bundled_with_tenant(tmp_path, "evil", {"slow.cedar": SLOW_FORBID})


def _engine(policy_dir: Path, calls: list, budget: float = BUDGET) -> Engine:
    return Engine(load_policies(policy_dir), slow=SlowTenants(budget, lambda *a: calls.append(a)))


def test_a_tenant_slow_on_repeated_decisions_is_quarantined_and_others_are_not(policy_dir):
    calls: list = []
    engine = _engine(policy_dir, calls)
    for n in range(STRIKES):
        assert _read(engine, "evil", rid=f"r{n}").decision is Decision.ALLOW  # decided; each one a strike
    assert [(t, closed) for t, _s, closed in calls] == [("evil", False)] * (STRIKES - 1) + [("evil", True)]
    assert all(seconds > BUDGET for _t, seconds, _c in calls)
    denied = _read(engine, "evil", status="short")  # fast or not, memo or not: denied without Cedar
    assert denied is TOO_SLOW and denied.reason is Reason.TENANT_POLICIES_UNAVAILABLE
    assert _read(engine, "acme").decision is Decision.ALLOW  # the same long string, the global set only
    assert engine.closed_tenants == {"evil"} and len(calls) == STRIKES


def test_a_decision_answered_from_the_memo_before_is_denied_after(policy_dir):
    engine = _engine(policy_dir, [])
    assert _read(engine, "evil", status="short").decision is Decision.ALLOW  # fast: memoised
    for n in range(STRIKES):
        _read(engine, "evil", rid=f"r{n}")
    assert _read(engine, "evil", status="short") is TOO_SLOW


def test_slowness_of_the_global_policies_is_reported_but_quarantines_no_tenant(tmp_path):
    root = bundled_with_tenant(tmp_path, "evil", {"own.cedar": '@id("own")\nforbid (principal, action, resource) '
                                                                'when { false };\n'})
    (root / "zz-slow.cedar").write_text(SLOW_FORBID.replace('"slow"', '"global-slow"'))  # the operator's
    calls: list = []
    engine = _engine(root, calls)
    for n in range(STRIKES + 1):
        _read(engine, "evil", rid=f"r{n}")
        _read(engine, "acme", rid=f"r{n}")
    assert calls and {(t, closed) for t, _s, closed in calls} == {("", False)}
    assert engine.closed_tenants == frozenset()


def test_no_budget_no_timing(policy_dir):
    calls: list = []
    engine = _engine(policy_dir, calls, budget=0.0)
    for n in range(STRIKES + 1):
        assert _read(engine, "evil", rid=f"r{n}").decision is Decision.ALLOW
    assert calls == []


def test_strikes_older_than_the_window_do_not_count():
    now = [0.0]
    calls: list = []
    slow = SlowTenants(BUDGET, lambda *a: calls.append(a), clock=lambda: now[0])
    for _ in range(STRIKES - 1):
        assert not slow.slow("evil", 1.0, 0.0, "text")
    now[0] = WINDOW_SECONDS + 1
    assert not slow.slow("evil", 1.0, 0.0, "text")
    assert not slow.slow("evil", 1.0, 0.4, "text") and slow.slow("evil", 1.0, 0.4, "text")
    assert slow.closed == {"evil": "text"}
    assert not slow.global_was_slow()
    assert not slow.slow("evil", 1.0, 0.6, "text")  # the global set took over half the time: not a strike
    assert slow.global_was_slow()
    now[0] += GLOBAL_SLOW_SECONDS
    assert not slow.global_was_slow()


def test_a_reload_keeps_the_quarantine_while_the_tenants_text_is_unchanged(policy_dir):
    calls: list = []
    store = PolicyStore.load(policy_dir, evaluation_budget=BUDGET, on_slow=lambda *a: calls.append(a))
    for n in range(STRIKES):
        _read(store.current(), "evil", rid=f"r{n}")
    assert store.current().closed_tenants == {"evil"}
    (policy_dir / "zz-new.cedar").write_text('@id("new-global")\nforbid (principal, action == Action::"delete", '
                                             'resource);\n')
    result = store.reload(force=True)
    assert result.changed and result.quarantined == ("evil",)  # a new engine, the quarantine carried over
    assert _read(store.current(), "evil", status="short") is TOO_SLOW
    (policy_dir / "tenants" / "evil" / "slow.cedar").write_text(SLOW_FORBID.replace('like "*', 'like "'))
    result = store.reload(force=True)
    assert result.quarantined == () and _read(store.current(), "evil", status="short").decision is Decision.ALLOW
