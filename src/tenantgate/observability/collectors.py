"""Metrics read at scrape time from the parts that own the numbers (audit sink, grant store)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("tenantgate.metrics")


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
        for name, value, text in (
            ("tenantgate_audit_records", s.records, "Audit records written (decisions, grant events, checkpoints)."),
            ("tenantgate_audit_write_failures", s.failures, "Audit writes that failed (the decision was denied)."),
            ("tenantgate_audit_fsyncs", s.fsyncs, "fsync calls (durability=fsync shares one per batch)."),
            ("tenantgate_audit_checkpoints", s.checkpoints, "Signed audit checkpoints written."),
            ("tenantgate_audit_rotations", s.rotations, "Audit log rotations."),
            ("tenantgate_audit_recoveries", s.recoveries, "Torn audit tails recovered at start."),
        ):
            yield CounterMetricFamily(name, text, value=value)


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
        yield GaugeMetricFamily("tenantgate_break_glass_grants_active", "Break-glass grants active now.",
                                value=value)


def register(registry: CollectorRegistry, *collectors: Collector) -> None:
    for collector in collectors:
        registry.register(collector)
