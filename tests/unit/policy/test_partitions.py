"""Per-tenant policy partitions: evaluated only for their tenant, validated to stay inside it."""

import shutil
from pathlib import Path

import pytest

from tenantgate.core.engine import Engine
from tenantgate.core.model import Decision, Principal, Reason, Resource
from tenantgate.errors import PolicyError
from tenantgate.policy import load_policies

BUNDLED = Path(__file__).resolve().parents[3] / "policies"


@pytest.fixture()
def policy_dir(tmp_path):
    root = tmp_path / "policies"
    root.mkdir()
    shutil.copy(BUNDLED / "schema.cedarschema", root)
    (root / "base.cedar").write_text('@id("viewer-can-read")\npermit (principal, action == Action::"read", '
                                     'resource) when { principal.roles.contains("viewer") };\n')
    return root


def _tenant_file(root, tenant, text, name="own.cedar"):
    d = root / "tenants" / tenant
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(text)


def _eval(engine, principal_tenant, resource_tenant, action="approve", roles=(), sub="alice"):
    p = Principal("User", sub, sub, principal_tenant, tuple(roles), None, "iss", "t")
    return engine.evaluate(p, action, Resource("Invoice", "inv-1", resource_tenant),
                           {"tenant": resource_tenant}, {"intent": ""})


def test_tenant_policies_apply_only_to_their_tenants_resources(policy_dir):
    _tenant_file(policy_dir, "acme", '@id("acme-alice-approves")\n'
                 'permit (principal == User::"alice", action == Action::"approve", resource is Invoice);\n')
    engine = Engine(load_policies(policy_dir))
    acme = _eval(engine, "acme", "acme")
    assert (acme.decision, acme.policy_ids) == (Decision.ALLOW, ("acme-alice-approves",))
    # globex's alice is the same Cedar entity, but acme's policy is not in globex's partition.
    assert _eval(engine, "globex", "globex").reason is Reason.NO_PERMIT


def test_a_tenant_policy_cannot_grant_access_to_another_tenants_resources(policy_dir):
    _tenant_file(policy_dir, "acme", "permit (principal, action, resource);\n")
    engine = Engine(load_policies(policy_dir))
    assert _eval(engine, "acme", "acme").decision is Decision.ALLOW
    # An acme principal on a globex resource: globex's partition has no such permit (and the guardrail).
    assert _eval(engine, "acme", "globex").decision is Decision.DENY
    # A globex principal on an acme resource meets acme's open permit, and the guardrail forbids it.
    out = _eval(engine, "globex", "acme")
    assert (out.decision, out.policy_ids) == (Decision.DENY, ("tenantgate::tenant-guardrail",))


@pytest.mark.parametrize("text,message", [
    ('permit (principal, action, resource) when { resource.tenant == "globex" };', "tenant attribute only"),
    ('permit (principal, action, resource) when { principal.tenant != "acme" };', "tenant attribute only"),
    ('permit (principal, action, resource) when { principal.tenant == resource.tenant };', "tenant attribute only"),
    ('permit (principal, action, resource) when { context has breakGlass };', "breakGlass"),
    ('@id("viewer-can-read") permit (principal, action, resource);', "duplicate policy id"),
    ('@id("tenantgate::x") permit (principal, action, resource);', "reserved"),
    ('@id("policy3") permit (principal, action, resource);', "reserved"),
    ("permit (principal == ?principal, action, resource);", "templates"),
])
def test_tenant_policies_that_reach_outside_their_tenant_are_refused(policy_dir, text, message):
    _tenant_file(policy_dir, "globex", '@id("g") permit (principal, action == Action::"read", resource);\n')
    _tenant_file(policy_dir, "acme", text + "\n")
    with pytest.raises(PolicyError, match=message) as info:
        load_policies(policy_dir)
    assert info.value.diagnostics[0].path.startswith("tenants/acme/")


def test_whether_a_tenant_policy_is_valid_does_not_depend_on_which_other_tenants_exist(policy_dir):
    # Review finding: any string in a tenant policy equal to another tenant's id (a role, an action, a user
    # id) refused the policy, so a policy author could enumerate tenant ids, and onboarding a tenant named
    # like a common string ("comment") made every later reload, and the next start, refuse the whole set.
    text = ('@id("acme-comments") permit (principal == User::"globex", action == Action::"read", resource) '
            'when { principal.roles.contains("comment") && principal.roles.contains("initech") };\n')
    _tenant_file(policy_dir, "acme", text)
    for other in ("globex", "comment", "initech"):
        (policy_dir / "tenants" / other).mkdir(parents=True, exist_ok=True)
    _tenant_file(policy_dir, "globex", '@id("g") permit (principal, action == Action::"read", resource);\n')
    engine = Engine(load_policies(policy_dir))
    # Naming them reaches nothing: acme's policies decide only on acme's resources, for acme's callers.
    roles = ("comment", "initech")
    assert _eval(engine, "acme", "acme", "read", roles, sub="globex").policy_ids == ("acme-comments",)
    out = _eval(engine, "globex", "acme", "read", roles, sub="globex")
    assert (out.decision, out.policy_ids) == (Decision.DENY, ("tenantgate::tenant-guardrail",))


def test_a_tenant_policy_may_pin_its_own_tenant(policy_dir):
    _tenant_file(policy_dir, "acme", 'permit (principal, action, resource) when { resource.tenant == "acme" };\n')
    engine = Engine(load_policies(policy_dir))
    assert _eval(engine, "acme", "acme").decision is Decision.ALLOW


def test_an_invalid_tenant_directory_name_is_refused(policy_dir):
    _tenant_file(policy_dir, "bad tenant", "permit (principal, action, resource);\n")
    with pytest.raises(PolicyError, match="not a valid tenant id"):
        load_policies(policy_dir)


def test_unannotated_tenant_policies_are_named_by_file_and_line(policy_dir):
    _tenant_file(policy_dir, "acme", "\n\npermit (principal, action == Action::\"approve\", resource);\n")
    engine = Engine(load_policies(policy_dir))
    assert _eval(engine, "acme", "acme").policy_ids == ("tenants/acme/own.cedar:3",)


def test_the_partition_cache_is_bounded_and_decisions_stay_right(policy_dir):
    for i in range(6):
        _tenant_file(policy_dir, f"t{i}", f'@id("t{i}-approve")\npermit (principal, action == Action::"approve", '
                     f'resource) when {{ principal.roles.contains("r{i}") }};\n')
    engine = Engine(load_policies(policy_dir), partition_cache_size=2)
    for _round in range(2):
        for i in range(6):
            out = _eval(engine, f"t{i}", f"t{i}", roles=(f"r{i}",))
            assert out.policy_ids == (f"t{i}-approve",)
            assert _eval(engine, f"t{i}", f"t{i}", roles=(f"r{(i + 1) % 6}",)).reason is Reason.NO_PERMIT
    assert engine.cached_partitions() == 2


def test_kept_outcomes_are_per_tenant_and_bounded(policy_dir, monkeypatch):
    # Each tenant's policy is Cedar's "policy0" in its partition: equal answer texts, different policy ids.
    from tenantgate.core import engine as engine_module

    monkeypatch.setattr(engine_module, "OUTCOMES", 3)
    for i in range(4):
        _tenant_file(policy_dir, f"t{i}", f'@id("t{i}-approve")\npermit (principal, action == Action::"approve", '
                     f'resource) when {{ principal.roles.contains("r{i}") }};\n')
    engine = Engine(load_policies(policy_dir), decision_cache_size=0)  # every request reaches Cedar
    for _round in range(3):
        for i in range(4):
            assert _eval(engine, f"t{i}", f"t{i}", roles=(f"r{i}",)).policy_ids == (f"t{i}-approve",)
            assert _eval(engine, f"t{i}", f"t{i}", roles=("none",)).reason is Reason.NO_PERMIT
            guarded = _eval(engine, f"t{(i + 1) % 4}", f"t{i}", roles=(f"r{i}",))
            assert (guarded.decision, guarded.policy_ids) == (Decision.DENY, ("tenantgate::tenant-guardrail",))
            assert len(engine._outcomes) <= 3


def test_a_reload_reparses_only_changed_tenant_files(policy_dir, monkeypatch):
    from tenantgate.core import tenant_compile
    from tenantgate.policy import PolicyStore

    for i in range(3):
        _tenant_file(policy_dir, f"t{i}", f'@id("t{i}-p") permit (principal, action, resource);\n')
    store = PolicyStore.load(policy_dir)
    parsed = []
    real = tenant_compile._compile_tenant_file
    monkeypatch.setattr(tenant_compile, "_compile_tenant_file",
                        lambda t, s, sch: parsed.append(s.path) or real(t, s, sch))
    _tenant_file(policy_dir, "t1", '@id("t1-p2") permit (principal, action == Action::"read", resource);\n')
    result = store.reload()
    assert result.ok and result.changed
    assert parsed == ["tenants/t1/own.cedar"]
    assert store.current().compiled.tenants["t1"].ids == ("t1-p2",)


def test_a_reload_with_an_empty_tenant_policy_id_is_refused_and_the_old_set_keeps_answering(policy_dir):
    from tenantgate.policy import PolicyStore

    _tenant_file(policy_dir, "acme", '@id("ok") permit (principal, action == Action::"approve", resource);\n')
    store = PolicyStore.load(policy_dir)
    _tenant_file(policy_dir, "acme", '@id("") permit (principal, action, resource);\n', name="extra.cedar")
    result = store.reload(force=True)
    assert not result.ok and "must not be empty" in result.message
    assert _eval(store.current(), "acme", "acme").policy_ids == ("ok",)


def _counting_cedar(monkeypatch):
    """Counts the calls that reach Cedar."""
    from tenantgate.core import engine as engine_module

    calls = []
    real = engine_module.answer_text
    monkeypatch.setattr(engine_module, "answer_text", lambda *args: calls.append(args) or real(*args))
    return calls


def test_a_repeated_request_is_answered_from_the_memo_with_the_same_outcome(policy_dir, monkeypatch):
    _tenant_file(policy_dir, "acme", '@id("acme-approve")\npermit (principal, action == Action::"approve", '
                 'resource) when { principal.roles.contains("approver") };\n')
    calls = _counting_cedar(monkeypatch)
    engine = Engine(load_policies(policy_dir))
    first = _eval(engine, "acme", "acme", roles=("approver",))
    assert [_eval(engine, "acme", "acme", roles=("approver",)) for _ in range(5)] == [first] * 5
    assert (first.decision, first.policy_ids, len(calls)) == (Decision.ALLOW, ("acme-approve",), 1)


@pytest.mark.parametrize("change", ["tenant", "roles", "subject", "action", "resource id", "context",
                                    "attributes"])
def test_any_difference_in_what_cedar_is_given_asks_cedar_again(policy_dir, monkeypatch, change):
    # Each change turns the first request's Allow into a denial: a memo hit on a near-miss key would show.
    _tenant_file(policy_dir, "acme", '@id("acme-approve")\npermit (principal == User::"alice", action == '
                 'Action::"approve", resource == Invoice::"inv-1") when { principal.roles.contains("approver") '
                 '&& context.intent == "" && resource.tenant == "acme" && !(resource has owner) };\n')
    _tenant_file(policy_dir, "globex", '@id("globex-nothing")\nforbid (principal, action, resource);\n')
    calls = _counting_cedar(monkeypatch)
    engine = Engine(load_policies(policy_dir))
    alice = Principal("User", "alice", "alice", "acme", ("approver",), None, "iss", "t")
    request = {"principal": alice, "action": "approve", "resource": Resource("Invoice", "inv-1", "acme"),
               "attrs": {"tenant": "acme"}, "context": {"intent": ""}}
    assert engine.evaluate(*request.values()).decision is Decision.ALLOW
    changed = {
        "tenant": {"principal": Principal("User", "alice", "alice", "globex", ("approver",), None, "iss", "t"),
                   "resource": Resource("Invoice", "inv-1", "globex"), "attrs": {"tenant": "globex"}},
        "roles": {"principal": Principal("User", "alice", "alice", "acme", ("viewer",), None, "iss", "t")},
        "subject": {"principal": Principal("User", "bob", "bob", "acme", ("approver",), None, "iss", "t")},
        "action": {"action": "read"},
        "resource id": {"resource": Resource("Invoice", "inv-2", "acme")},
        "context": {"context": {"intent": "export"}},
        "attributes": {"attrs": {"tenant": "acme", "owner": "bob"}},
    }[change]
    other = dict(request, **changed)
    for _ in range(2):
        assert engine.evaluate(*other.values()).decision is Decision.DENY
        assert engine.evaluate(*request.values()).decision is Decision.ALLOW
    assert len(calls) == 2  # once each; then both from the memo


def test_the_memo_is_bounded_and_can_be_turned_off(policy_dir, monkeypatch):
    calls = _counting_cedar(monkeypatch)
    small = Engine(load_policies(policy_dir), decision_cache_size=3)
    for _round in range(2):
        for n in range(5):
            assert _eval(small, "acme", "acme", action="read", roles=("viewer",), sub=f"u{n}").decision \
                is Decision.ALLOW
            assert len(small._decisions) <= 3
    calls.clear()  # the oldest entries went first: the last three callers are still answered from the memo
    for n in (2, 3, 4):
        _eval(small, "acme", "acme", action="read", roles=("viewer",), sub=f"u{n}")
    assert not calls
    off = Engine(load_policies(policy_dir), decision_cache_size=0)
    calls.clear()
    for _ in range(3):
        assert _eval(off, "acme", "acme", action="read", roles=("viewer",)).decision is Decision.ALLOW
    assert len(calls) == 3 and not off._decisions


def test_a_reload_answers_a_repeated_request_by_the_new_policies(policy_dir):
    from tenantgate.policy import PolicyStore

    store = PolicyStore.load(policy_dir)
    assert [_eval(store.current(), "acme", "acme", action="read", roles=("viewer",)).decision
            for _ in range(2)] == [Decision.ALLOW] * 2
    _tenant_file(policy_dir, "acme", '@id("acme-no-reads")\nforbid (principal, action == Action::"read", resource);\n')
    assert store.reload().changed
    out = _eval(store.current(), "acme", "acme", action="read", roles=("viewer",))
    assert (out.decision, out.policy_ids) == (Decision.DENY, ("acme-no-reads",))


def test_the_memo_keeps_only_entries_whose_size_it_counts(policy_dir, monkeypatch):
    # Review finding: only the entity text was counted, so 4,096 entries with an astral-character resource id
    # (4 bytes a character in Python) and Cedar's error quoting the whole entity list held 123 MiB.
    calls = _counting_cedar(monkeypatch)
    engine = Engine(load_policies(policy_dir))
    alice = Principal("User", "alice", "alice", "acme", ("viewer",), None, "iss", "t")
    asks = {
        "astral resource id": (Resource("Invoice", "\U0001F600" * 200, "acme"), {"tenant": "acme"}),
        "error quoting the entities": (Resource("Invoice", "inv-1", "acme"), {"tenant": "acme", "x": "o" * 900}),
        "ids and texts over the limit": (Resource("Invoice", "i" * 1000, "acme"),
                                         {"tenant": "acme", "owner": "o" * 3000}),
    }
    for resource, attrs in asks.values():
        outcomes = {engine.evaluate(alice, "read", resource, attrs, {"intent": ""}) for _ in range(2)}
        assert len(outcomes) == 1
    assert len(calls) == 2 * len(asks) and not engine._decisions
    engine.evaluate(alice, "read", Resource("Invoice", "inv-1", "acme"), {"tenant": "acme"}, {"intent": ""})
    assert len(engine._decisions) == 1  # an ordinary request is kept
