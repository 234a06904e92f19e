"""The audit record's dict and time format: spelled out for speed, checked against the slow, obvious forms."""

import dataclasses
import random
from datetime import UTC, datetime

import pytest

from tenantgate.core.decision_record import Outcome
from tenantgate.core.model import AuditEvent, CheckInput, Decision, DecisionResult, Reason, Resource, rfc3339


def _reference(epoch):
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_to_dict_holds_every_field_in_declaration_order():
    names = [f.name for f in dataclasses.fields(AuditEvent)]
    event = AuditEvent(**{n: (("p1", "p2") if n == "policy_ids" else True if n == "dry_run" else f"v-{n}")
                          for n in names})
    out = event.to_dict()
    assert list(out) == ["record_type", *names]
    assert out["record_type"] == "decision" and out["policy_ids"] == ["p1", "p2"] and out["dry_run"] is True
    assert all(out[n] == f"v-{n}" for n in names if n not in ("policy_ids", "dry_run"))


@pytest.mark.parametrize("epoch", [0.0, 1_700_000_000.0, 1_700_000_000.9995, 1_700_000_000.9999996,
                                   1_700_000_059.999, 1_699_999_999.0005, 4_102_444_799.9999999, 99_999_999_999.5])
def test_rfc3339_matches_datetime_at_the_edges(epoch):
    assert rfc3339(epoch) == _reference(epoch)


def test_rfc3339_matches_datetime_on_random_times_and_out_of_range_values():
    rng = random.Random(7)
    for _ in range(20_000):
        epoch = rng.uniform(0, 4_102_444_800) if rng.random() < 0.5 else 1_700_000_000 + rng.random() * 5
        assert rfc3339(epoch) == _reference(epoch), epoch
    assert rfc3339(-1.5) == _reference(-1.5)
    with pytest.raises((ValueError, OverflowError)):
        rfc3339(float("nan"))


def test_hot_records_are_slotted_and_compare_and_hash_by_value_like_frozen_dataclasses():
    # ``hot_record`` trades the run-time assignment check for speed (mypy still refuses an assignment); the rest of
    # a frozen dataclass's behaviour is kept: no instance dict, equality and hash by value, ``replace`` copies.
    denied = Outcome(Decision.DENY, Reason.NO_PERMIT, "no permit", ("p1",))
    assert hash(denied) == hash(Outcome(Decision.DENY, Reason.NO_PERMIT, "no permit", ("p1",)))
    assert len({denied, dataclasses.replace(denied)}) == 1
    first, second = Resource("Invoice", "inv-1", "acme"), Resource("Invoice", "inv-1", "acme")
    assert first == second and first != dataclasses.replace(first, id="inv-2")
    assert not hasattr(first, "__dict__")
    moved = dataclasses.replace(first, tenant="globex")
    assert moved.tenant == "globex" and first.tenant == "acme"
    for record in (Resource, CheckInput, AuditEvent, DecisionResult, Outcome):
        assert "__slots__" in vars(record) and record.__hash__ is not None, record
