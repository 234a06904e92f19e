"""decide(): the step order, fail-closed behaviour and the audit promise, with real parts on temp files."""

import hashlib
import itertools
import json
import shutil
from pathlib import Path

import pytest

from support.issuers import FixedClock, TestIssuer, verifier_for
from tenantgate.audit import JsonlAuditSink
from tenantgate.core.model import CheckInput, Decision, Reason, Resource
from tenantgate.core.pdp import DecisionPoint
from tenantgate.policy import PolicyStore, load_policies

BUNDLED = Path(__file__).resolve().parents[3] / "policies"
NOW = 1_700_000_000


@pytest.fixture()
def parts(tmp_path):
    clock = FixedClock(NOW)
    issuer = TestIssuer(tmp_path, clock=clock)
    store = PolicyStore(load_policies(BUNDLED))
    sink = JsonlAuditSink(tmp_path / "audit.jsonl")
    pdp = DecisionPoint(verifier=verifier_for(issuer, clock=clock), engine=store.current, audit=sink, clock=clock)
    return pdp, issuer, sink, clock


def _check(token, tenant="acme", action="read", intent="", **kw):
    return CheckInput(token=token, action=action, resource=Resource("Invoice", "inv-1", tenant), intent=intent, **kw)


def _records(sink):
    return [{k: v for k, v in json.loads(line).items() if k not in ("seq", "prev_hash", "hash")}
            for line in Path(sink.path).read_text().splitlines()]


def test_allow_is_written_to_the_audit_log_before_it_is_returned(parts):
    pdp, issuer, sink, _ = parts
    result = pdp.decide(_check(issuer.mint(roles=["viewer"])))
    assert result.decision is Decision.ALLOW and result.reason is Reason.ALLOW
    (record,) = _records(sink)
    assert record == result.audit.to_dict() and record["record_type"] == "decision"
    assert record["time"] == "2023-11-14T22:13:20.000Z"
    assert record["principal_tenant"] == "acme" and record["policy_version"].startswith("sha256:")


def test_first_failing_step_gives_the_reason(parts):
    pdp, issuer, _sink, _ = parts
    bound = issuer.mint(roles=["viewer"], intents=["x"])
    # token beats everything else
    assert pdp.decide(_check("garbage", tenant="globex", action="")).reason is Reason.TOKEN_INVALID
    # request shape before the tenant invariant
    assert pdp.decide(_check(bound, tenant="globex", action="")).reason is Reason.INVALID_REQUEST
    # tenant invariant before intent
    assert pdp.decide(_check(bound, tenant="globex")).reason is Reason.CROSS_TENANT
    # intent before Cedar
    assert pdp.decide(_check(bound, action="delete")).reason is Reason.INTENT_MISSING
    assert pdp.decide(_check(bound, action="delete", intent="x")).reason is Reason.POLICY_FORBID


def test_expiry_is_judged_by_the_injected_clock(parts):
    pdp, issuer, _sink, clock = parts
    token = issuer.mint(roles=["viewer"])  # exp = NOW + 300
    assert pdp.decide(_check(token)).allowed
    clock.advance(300 + 30)  # past exp plus the default 30 s leeway
    assert pdp.decide(_check(token)).reason is Reason.TOKEN_EXPIRED


def test_audit_failure_turns_an_allow_into_audit_unavailable(tmp_path):
    clock = FixedClock(NOW)
    issuer = TestIssuer(tmp_path, clock=clock)
    full = JsonlAuditSink("/dev/full")  # a device, not a regular file: every write is refused
    pdp = DecisionPoint(verifier=verifier_for(issuer, clock=clock), engine=PolicyStore(load_policies(BUNDLED)).current,
                        audit=full, clock=clock)
    result = pdp.decide(_check(issuer.mint(roles=["viewer"])))
    assert (result.decision, result.reason) == (Decision.DENY, Reason.AUDIT_UNAVAILABLE)
    assert result.audit.decision == "DENY" and result.decision_id


def test_unexpected_exceptions_anywhere_fail_closed(parts, monkeypatch):
    pdp, issuer, sink, _ = parts
    token = issuer.mint(roles=["viewer"])

    def boom(*_a, **_k):
        raise RuntimeError("boom")

    monkeypatch.setattr(pdp, "_verifier", type("V", (), {"verify": staticmethod(boom)})())
    result = pdp.decide(_check(token))
    assert (result.decision, result.reason) == (Decision.DENY, Reason.INTERNAL_ERROR)
    assert _records(sink)[-1]["reason"] == "internal_error"


def test_engine_failure_fails_closed(parts, monkeypatch):
    pdp, issuer, _sink, _ = parts

    def no_engine():
        raise RuntimeError("no engine")

    monkeypatch.setattr(pdp, "_engine", no_engine)
    result = pdp.decide(_check(issuer.mint(roles=["viewer"])))
    assert (result.decision, result.reason) == (Decision.DENY, Reason.INTERNAL_ERROR)


def test_adapter_reported_problems_are_audited_denials(parts):
    pdp, issuer, sink, _ = parts
    token = issuer.mint(roles=["viewer"])
    r1 = pdp.decide(_check(token, token_problem="two authorization headers"))
    r2 = pdp.decide(_check(token, request_problem="context too deep"))
    assert (r1.reason, r2.reason) == (Reason.TOKEN_INVALID, Reason.INVALID_REQUEST)
    assert [r["decision_id"] for r in _records(sink)] == [r1.decision_id, r2.decision_id]


def test_audit_never_holds_the_raw_token_and_clips_request_strings(parts):
    pdp, issuer, sink, _ = parts
    token = issuer.mint(roles=["viewer"], jti=None)
    pdp.decide(_check(token, action="x" * 5000))
    pdp.decide(_check("not-a-token-but-secret-looking"))
    text = Path(sink.path).read_text()
    assert token not in text and "not-a-token-but-secret-looking" not in text
    first, second = _records(sink)
    assert len(first["action"]) <= 260
    assert second["token_id"].startswith("sha256:")


def test_decide_many_decides_each_item_as_decide_would_and_audits_them_in_one_batch(parts):
    pdp, issuer, sink, _ = parts
    viewer, bound = issuer.mint(roles=["viewer"]), issuer.mint(roles=["viewer"], intents=["x"])
    checks = [_check(viewer), _check(viewer, tenant="globex"), _check("garbage"), _check(bound, action="delete"),
              _check(viewer, action="")]
    singles = [pdp.decide(c) for c in checks]
    before = sink.stats()
    batch = pdp.decide_many(checks)
    assert [(r.decision, r.reason) for r in batch] == [(r.decision, r.reason) for r in singles]
    assert [r.reason for r in batch] == [Reason.ALLOW, Reason.CROSS_TENANT, Reason.TOKEN_INVALID,
                                         Reason.INTENT_MISSING, Reason.INVALID_REQUEST]
    after = sink.stats()
    assert (after.records - before.records, after.batches - before.batches) == (5, 1)
    written = _records(sink)[-5:]
    assert [r["decision_id"] for r in written] == [r.decision_id for r in batch]
    assert written == [r.audit.to_dict() for r in batch]
    assert pdp.decide_many([]) == []


def test_a_token_refused_once_in_a_decide_many_is_not_verified_again_for_each_item(parts, monkeypatch):
    # Review finding: a BatchCheck of 1,000 items sharing one forged token verified it 1,000 times (about 100 ms
    # of signature checks for a request of a few hundred bytes).
    pdp, issuer, _sink, _ = parts
    forged = issuer.mint(roles=["viewer"])[:-8] + "AAAAAAAA"
    calls = []
    real = pdp._verifier

    class Counting:
        def verify(self, token):
            calls.append(1)
            return real.verify(token)

    monkeypatch.setattr(pdp, "_verifier", Counting())
    batch = pdp.decide_many([_check(forged) for _ in range(50)])
    assert [r.reason for r in batch] == [Reason.TOKEN_INVALID] * 50 and len(calls) == 1
    assert len({r.decision_id for r in batch}) == 50  # each item still decided and audited on its own
    viewer = issuer.mint(roles=["viewer"])
    mixed = pdp.decide_many([_check(forged), _check(viewer), _check(forged)])
    assert [r.reason for r in mixed] == [Reason.TOKEN_INVALID, Reason.ALLOW, Reason.TOKEN_INVALID]


def test_the_items_of_one_decide_many_share_one_policy_version_while_reloads_swap_the_set(tmp_path):
    # Review finding: decide_many read the current set per item, so items of one BatchCheck were decided on two
    # versions during reloads. Here every read of the set gets the other version.
    clock = FixedClock(NOW)
    issuer = TestIssuer(tmp_path, clock=clock)
    other = tmp_path / "policies"
    shutil.copytree(BUNDLED, other)
    (other / "schema.cedarschema").write_text((other / "schema.cedarschema").read_text() + "\n// v2\n")
    engines = itertools.cycle([PolicyStore(load_policies(BUNDLED)).current(),
                               PolicyStore(load_policies(other)).current()])
    pdp = DecisionPoint(verifier=verifier_for(issuer, clock=clock), engine=lambda: next(engines),
                        audit=JsonlAuditSink(tmp_path / "audit.jsonl"), clock=clock)
    token = issuer.mint(roles=["viewer"])
    for _ in range(3):
        assert len({r.audit.policy_version for r in pdp.decide_many([_check(token)] * 5)}) == 1
    pinned = pdp.current_engine()
    assert {pdp.decide(_check(token), pinned).audit.policy_version for _ in range(4)} == {pinned.version}
    assert len({pdp.decide(_check(token)).audit.policy_version for _ in range(4)}) == 2


def test_decide_many_denies_exactly_the_items_whose_record_was_not_written(tmp_path):
    clock = FixedClock(NOW)
    issuer = TestIssuer(tmp_path, clock=clock)

    class Flaky:  # the second record of every batch is refused
        def __init__(self):
            self.written = []

        def write(self, event):
            self.written.append(event)

        def write_many(self, events):
            errors = [None if i != 1 else OSError("refused") for i in range(len(events))]
            self.written += [e for e, err in zip(events, errors, strict=True) if err is None]
            return errors

        def healthy(self):
            return True

    flaky = Flaky()
    pdp = DecisionPoint(verifier=verifier_for(issuer, clock=clock), engine=PolicyStore(load_policies(BUNDLED)).current,
                        audit=flaky, clock=clock)
    token = issuer.mint(roles=["viewer"])
    results = pdp.decide_many([_check(token), _check(token), _check(token)])
    assert [r.reason for r in results] == [Reason.ALLOW, Reason.AUDIT_UNAVAILABLE, Reason.ALLOW]
    assert [e.decision_id for e in flaky.written] == [results[0].decision_id, results[2].decision_id]

    class Broken(Flaky):
        def write_many(self, events):
            raise RuntimeError("sink bug")

    pdp = DecisionPoint(verifier=verifier_for(issuer, clock=clock), engine=PolicyStore(load_policies(BUNDLED)).current,
                        audit=Broken(), clock=clock)
    assert {r.reason for r in pdp.decide_many([_check(token), _check(token)])} == {Reason.AUDIT_UNAVAILABLE}


def test_each_token_decides_with_its_own_principal_even_past_the_principal_cache_bound(parts, monkeypatch):
    from tenantgate.core import pdp as pdp_module

    monkeypatch.setattr(pdp_module, "_PRINCIPALS", 8)
    pdp, issuer, _sink, _ = parts
    tokens = [(issuer.mint(sub=f"user-{n}", tenant=tenant, roles=roles), tenant, roles)
              for n in range(20) for tenant, roles in (("acme", ["viewer"]), ("globex", []))]
    for _round in range(2):  # the second round is served from the cache where it still holds the token
        for token, tenant, roles in tokens:
            result = pdp.decide(_check(token, tenant="acme"))
            assert result.audit.principal_tenant == tenant
            assert result.allowed is (tenant == "acme" and roles == ["viewer"])
    assert len(pdp._principals) <= 8


def test_the_principal_cache_keeps_no_token_claims_alive(parts):
    import gc
    import weakref

    pdp, issuer, _sink, _ = parts
    verified = pdp._verifier.verify(issuer.mint(roles=["viewer"]))
    principal = pdp._principal_of(verified)
    assert pdp._principal_of(verified) is principal  # kept while the claims object lives
    alive = weakref.ref(verified)
    pdp._verifier._cache.clear()  # the verifier's cache lets go of it
    del verified
    gc.collect()
    assert alive() is None  # only a weak reference was held


def test_the_policy_ids_of_a_decision_come_in_one_sorted_order(parts):
    # Review finding: Cedar lists the policies that decided in no fixed order, so the same request gave
    # ('paid-invoices-are-immutable', 'delete-requires-mfa') 109 times and the reverse 91 times in 200.
    pdp, issuer, _sink, _ = parts
    token = issuer.mint(roles=["admin"])
    check = CheckInput(token=token, action="delete", resource=Resource("Invoice", "inv-1", "acme", {"status": "paid"}))
    answers = {(r.policy_ids, r.audit.policy_ids) for r in (pdp.decide(check) for _ in range(100))}
    assert answers == {(("delete-requires-mfa", "paid-invoices-are-immutable"),) * 2}


def test_a_token_is_named_by_its_signed_part_in_every_record_when_its_jti_is_not_trusted(parts):
    # Review finding: the README names an unverified token by sha256 of header.payload; records used the whole
    # token, so an expired token's records and a re-signed copy's could not be matched with a verified one's.
    pdp, issuer, _sink, clock = parts
    unnamed = issuer.mint(roles=["viewer"], jti=None)  # verified: named by its signed part
    expiring = issuer.mint(roles=["viewer"], jti="the-jti")
    signed_part = expiring.rpartition(".")[0]
    expected = "sha256:" + hashlib.sha256(signed_part.encode()).hexdigest()[:16]
    assert pdp.decide(_check(expiring)).audit.token_id == "the-jti"
    forged = signed_part + ".AAAA"  # another signature: not verified
    assert pdp.decide(_check(forged)).audit.token_id == expected
    clock.advance(300 + 31)
    expired = pdp.decide(_check(expiring))
    assert expired.reason is Reason.TOKEN_EXPIRED and expired.audit.token_id == expected
    named = pdp.decide(_check(unnamed)).audit.token_id
    assert named == "sha256:" + hashlib.sha256(unnamed.rpartition(".")[0].encode()).hexdigest()[:16]
    assert pdp.decide(_check("no-dots-at-all")).audit.token_id == (
        "sha256:" + hashlib.sha256(b"no-dots-at-all").hexdigest()[:16])


def test_a_request_answered_from_the_decision_memo_is_still_checked_and_audited(parts):
    pdp, issuer, sink, clock = parts
    token = issuer.mint(roles=["viewer"])
    results = [pdp.decide(_check(token)) for _ in range(3)]
    assert [r.decision for r in results] == [Decision.ALLOW] * 3
    assert len({r.decision_id for r in results}) == 3 and len(_records(sink)) == 3  # one record per decision
    # The memo holds Cedar's outcome only: the steps before Cedar run for every request.
    assert pdp.decide(_check(token, tenant="globex")).reason is Reason.CROSS_TENANT
    assert pdp.decide(_check(issuer.mint(roles=["viewer"], intents=["x"]))).reason is Reason.INTENT_MISSING
    clock.advance(300 + 30)
    assert pdp.decide(_check(token)).reason is Reason.TOKEN_EXPIRED
    assert len(_records(sink)) == 6
