"""While the audit log cannot be written, decisions and refused grant calls do not write a line each: the first
failure is an error line, one line a minute counts the rest, and the first write that succeeds says so. Review
finding: 1,000-2,000 error lines per 1,000 unauthenticated calls during the outage, onto a disk that is often
the full one."""

import logging
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from support.grants import make_world
from tenantgate.core.model import CheckInput, Reason, Resource


@pytest.fixture()
def world(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    return make_world(tmp_path)


@contextmanager
def audit_outage(sink):
    """The audit log's path holds a FIFO meanwhile: every append is refused, as on a full disk."""
    path = Path(sink.path)
    moved = path.with_name("audit.jsonl.away")
    path.rename(moved)
    os.mkfifo(path)
    try:
        yield
    finally:
        path.unlink()
        moved.rename(path)


def _lines(caplog, logger):
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == logger]


def _check(token="x.y.z"):
    return CheckInput(token=token, action="read", resource=Resource("Invoice", "inv-1", "acme"))


def test_decisions_without_their_audit_record_log_one_line_then_a_count_a_minute_then_the_recovery(world, caplog):
    world.pdp.decide(_check())  # the log exists
    with audit_outage(world.sink):
        results = [world.pdp.decide(_check()) for _ in range(150)]
        results += world.pdp.decide_many([_check() for _ in range(50)])
        assert {r.reason for r in results} == {Reason.AUDIT_UNAVAILABLE}  # every decision still denied
        (first,) = _lines(caplog, "tenantgate.decision")
        assert first[0] == "ERROR" and results[0].decision_id in first[1]
        assert "audit record not written" in first[1] and "one line every 60 s" in first[1]
        world.clock.advance(60)
        last = world.pdp.decide(_check())
        level, summary = _lines(caplog, "tenantgate.decision")[1]
        assert level == "ERROR" and summary.startswith(
            "audit records not written for 200 more decisions since the last line (latest: decision "
            f"{last.decision_id}: audit record not written: ")
    world.clock.advance(60)
    for _ in range(10):
        assert world.pdp.decide(_check()).reason is not Reason.AUDIT_UNAVAILABLE
    assert _lines(caplog, "tenantgate.decision")[2:] == [("WARNING", "audit records are written again")]


def test_refused_grant_calls_without_their_event_log_one_line_then_a_count(world, caplog):
    world.request()  # the log exists
    with audit_outage(world.sink):
        for _ in range(200):  # unauthenticated callers: refused, their grant.refused events not written
            world.service.refused("request", None, "", "token_missing: no bearer token in the call metadata")
        ((level, line),) = _lines(caplog, "tenantgate.grants")
        assert level == "ERROR" and "grant.refused event (request ) not written" in line
    world.clock.advance(60)
    world.request()
    ((level, ended),) = _lines(caplog, "tenantgate.grants")[1:]
    assert level == "WARNING" and ended.startswith(
        "grant events are written to the audit log again (199 more grant events not written since the last line; "
        "latest: grant.refused event")



def test_cross_tenant_checks_during_a_grant_store_outage_log_one_line_then_a_count_then_the_recovery(
        world, caplog, monkeypatch):
    # The same flood from the grant store: every cross-tenant Check during an outage logged a warning.
    from tenantgate.errors import GrantStoreUnavailable

    real_find = world.service.store.find_active

    def down(*_a, **_k):
        raise GrantStoreUnavailable("connection refused")

    world.active_grant()  # oscar (platform) may read acme's resources
    token = world.token("platform", "oscar", "breakglass-operator")
    cross = CheckInput(token=token, action="read", resource=Resource("Invoice", "inv-1", "acme"))
    monkeypatch.setattr(world.service.store, "find_active", down)
    results = [world.pdp.decide(cross) for _ in range(100)]
    assert {r.reason for r in results} == {Reason.GRANT_STORE_UNAVAILABLE}
    (first,) = _lines(caplog, "tenantgate.decision")
    assert first[0] == "WARNING" and "grant store unavailable: connection refused" in first[1]
    world.clock.advance(60)
    world.pdp.decide(cross)
    assert _lines(caplog, "tenantgate.decision")[1][1].startswith(
        "grant store unavailable for 100 more cross-tenant checks since the last line")
    monkeypatch.setattr(world.service.store, "find_active", real_find)
    world.clock.advance(60)
    assert world.pdp.decide(cross).reason is Reason.ALLOW_BREAK_GLASS
    assert _lines(caplog, "tenantgate.decision")[2] == ("WARNING", "the grant store answers again")
    assert len(_lines(caplog, "tenantgate.decision")) == 3
