"""The grant sweep logs one summary line per sweep, not one per grant (review finding: when 11,328 flooded requests
expired, the sweep wrote 11,328 log lines from the event loop; every expiry is still a grant.expired record)."""

import asyncio
import logging
from types import SimpleNamespace

from support.grants import make_world
from tenantgate import background
from tenantgate.config import GrantSettings, Settings
from tenantgate.core.grants import SWEEP_MARGIN_SECONDS, GrantState


async def _sweep_until(app, done):
    sweeper = asyncio.create_task(background.sweep_grants(app))
    try:
        for _ in range(500):
            await asyncio.sleep(0.01)
            if done():
                break
        await asyncio.sleep(0.1)  # a few more sweeps that expire nothing, and log nothing
    finally:
        sweeper.cancel()


def test_a_grant_sweep_logs_one_line_with_the_count_and_a_few_ids(tmp_path, caplog):
    world = make_world(tmp_path, max_pending_per_operator=25, pending_ttl_seconds=60)
    grants = [world.request() for _ in range(25)]
    world.clock.advance(60 + SWEEP_MARGIN_SECONDS)
    app = SimpleNamespace(settings=Settings(grants=GrantSettings(sweep_interval_seconds=0.01)),
                          breakglass=world.service)

    def all_expired():
        return not world.service.store.list(None, GrantState.PENDING, 0.0)

    with caplog.at_level(logging.INFO, logger="tenantgate.app"):
        asyncio.run(_sweep_until(app, all_expired))
    assert all_expired()
    lines = [r.getMessage() for r in caplog.records if r.name == "tenantgate.app"]
    assert len(lines) == 1, lines
    assert lines[0].startswith("grant sweep: 25 grant(s) expired: ")
    assert lines[0].endswith(" and 22 more (grant.expired in the audit log)")
    assert sum(g.id in lines[0] for g in grants) == 3
    assert len([r for r in world.records() if r.get("event") == "grant.expired"]) == 25


def test_an_outage_that_fails_every_sweep_is_logged_once_then_counted(caplog):
    # Review finding (MEDIUM): with the store down, every sweep (5 s by default) logged a warning, about 720
    # lines an hour, where the README promises one line, then one a minute.
    outcomes = {"sweeps": 0}

    def sweep():
        outcomes["sweeps"] += 1
        if outcomes["sweeps"] <= 20:  # down for 20 sweeps, then back
            raise RuntimeError("grant store unavailable: connection refused")
        return []

    app = SimpleNamespace(settings=Settings(grants=GrantSettings(sweep_interval_seconds=0.01)),
                          breakglass=SimpleNamespace(sweep=sweep, settle_abandoned=lambda: 0))

    def failed_a_while():
        return outcomes["sweeps"] >= 25

    with caplog.at_level(logging.INFO, logger="tenantgate.app"):
        asyncio.run(_sweep_until(app, failed_a_while))
    lines = [r.getMessage() for r in caplog.records if r.name == "tenantgate.app"]
    assert outcomes["sweeps"] >= 25
    assert len(lines) == 2, lines
    assert lines[0].startswith("grant sweep failed (retried every sweep interval): grant store unavailable")
    assert "grant sweeps succeed again" in lines[1] and "19 more" in lines[1], lines


def test_changes_left_by_an_ended_process_are_settled_at_start_before_the_first_sweep():
    calls = []
    app = SimpleNamespace(settings=Settings(grants=GrantSettings(sweep_interval_seconds=0.01)),
                          breakglass=SimpleNamespace(sweep=lambda: calls.append("sweep") or [],
                                                     settle_abandoned=lambda: calls.append("settle") or 0))
    asyncio.run(_sweep_until(app, lambda: calls.count("sweep") >= 2))
    assert calls[:4] == ["settle", "sweep", "settle", "sweep"]
