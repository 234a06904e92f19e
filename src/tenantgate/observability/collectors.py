"""Metrics read at scrape time from the parts that own the numbers (audit sink, grant store).

Under ``serve --workers N`` nothing is read at scrape time (the supervisor scrapes files, not the workers):
``MultiprocessMirror`` copies the same numbers into prometheus-client multiprocess metrics instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("tenantgate.metrics")

# (metric name, AuditStats field, help): the audit sink's counters, exported with a _total suffix.
AUDIT_COUNTERS = (
    ("tenantgate_audit_records", "records", "Audit records written (decisions, grant events, checkpoints)."),
    ("tenantgate_audit_write_failures", "failures",
     "Audit writes that failed (decisions, grant events, health probes; a decision not recorded is denied)."),
    ("tenantgate_audit_fsyncs", "fsyncs", "fsync calls (durability=fsync shares one per batch)."),
    ("tenantgate_audit_checkpoints", "checkpoints", "Signed audit checkpoints written."),
    ("tenantgate_audit_rotations", "rotations", "Audit log rotations."),
    ("tenantgate_audit_recoveries", "recoveries",
     "Torn or cut audit log ends recovered (at start, or found before a write)."),
)
GRANTS_ACTIVE = ("tenantgate_break_glass_grants_active", "Break-glass grants active now.")


class AuditCollector(Collector):
    """``tenantgate_audit_*`` from the sink's own counters (records written, fsyncs, rotations, ...)."""

    def __init__(self, stats: Callable[[], Any]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        try:
            s = self._stats()
        except Exception:  # a scrape must not fail because a counter could not be read
            log.exception("audit stats unavailable")
            return
        for name, field, text in AUDIT_COUNTERS:
            yield CounterMetricFamily(name, text, value=getattr(s, field))


class GrantCollector(Collector):
    """``tenantgate_break_glass_grants_active``: active grants now (absent while the store is unreachable)."""

    def __init__(self, count_active: Callable[[], int]) -> None:
        self._count_active = count_active

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            value = self._count_active()
        except Exception as err:  # noqa: BLE001 - store down: leave the series out rather than lie
            log.warning("active grants not counted: %s", err)
            return
        yield GaugeMetricFamily(*GRANTS_ACTIVE, value=value)


class MultiprocessMirror:
    """The two collectors' numbers as multiprocess metrics of one worker, brought up to date by ``sync()``.

    Audit counters grow by what the worker's own chain wrote since the last sync, so the supervisor's sum over
    the workers (dead ones included) is the total. Active grants come from the store all workers share: the
    gauge is the largest count any live worker read last (while the store is down: the last count read).
    """

    def __init__(self, registry: CollectorRegistry, stats: Callable[[], Any],
                 count_active: Callable[[], int]) -> None:
        self._stats = stats
        self._count_active = count_active
        self._counters = [(field, Counter(name, text, registry=registry)) for name, field, text in AUDIT_COUNTERS]
        self._seen = dict.fromkeys((field for _n, field, _t in AUDIT_COUNTERS), 0)
        self._grants = Gauge(*GRANTS_ACTIVE, registry=registry, multiprocess_mode="livemax")

    def sync(self) -> None:
        """Copy both; never raises (a number that cannot be read now is read at the next sync)."""
        self.sync_audit()
        try:
            self._grants.set(self._count_active())
        except Exception as err:  # noqa: BLE001 - store down: keep the last count rather than fail the worker
            log.warning("active grants not counted: %s", err)

    def sync_audit(self) -> None:
        """Advance the audit counters to the sink's own (after the sink is closed, too)."""
        try:
            s = self._stats()
        except Exception:
            log.exception("audit stats unavailable")
            return
        for field, counter in self._counters:
            value = getattr(s, field)
            if value > self._seen[field]:
                counter.inc(value - self._seen[field])
                self._seen[field] = value


def register(registry: CollectorRegistry, *collectors: Collector) -> None:
    for collector in collectors:
        registry.register(collector)
