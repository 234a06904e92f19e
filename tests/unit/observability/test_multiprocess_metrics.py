"""What `serve --workers N` changes in a worker's metrics, checked on a plain registry in this process."""

import json
import logging
from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from tenantgate.observability.collectors import MultiprocessMirror
from tenantgate.observability.logging import JsonFormatter
from tenantgate.observability.metrics import DecisionMetrics
from tenantgate.policy import ReloadResult


def _stats(records=0, failures=0):
    return SimpleNamespace(records=records, failures=failures, fsyncs=0, checkpoints=0, rotations=0, recoveries=0)


def test_the_mirror_advances_audit_counters_by_what_the_sink_wrote_since_the_last_sync():
    registry = CollectorRegistry()
    stats = [_stats(records=3)]
    mirror = MultiprocessMirror(registry, lambda: stats[0], lambda: 2)
    mirror.sync()
    stats[0] = _stats(records=5, failures=1)
    mirror.sync()
    mirror.sync()
    assert registry.get_sample_value("tenantgate_audit_records_total") == 5
    assert registry.get_sample_value("tenantgate_audit_write_failures_total") == 1
    assert registry.get_sample_value("tenantgate_break_glass_grants_active") == 2


def test_the_mirror_keeps_the_last_grant_count_while_the_store_is_down():
    registry = CollectorRegistry()
    counts = iter([4])

    def count_active():
        return next(counts)  # StopIteration afterwards: the store is down

    mirror = MultiprocessMirror(registry, _stats, count_active)
    mirror.sync()
    mirror.sync()
    assert registry.get_sample_value("tenantgate_break_glass_grants_active") == 4


def test_a_worker_sets_an_old_policy_version_to_0_instead_of_removing_it():
    registry = CollectorRegistry()
    metrics = DecisionMetrics(registry, multiprocess=True)
    metrics.policy_loaded("v1")
    metrics.observe_reload(ReloadResult(True, True, "v2", "reloaded"))
    assert registry.get_sample_value("tenantgate_policy_info", {"version": "v1"}) == 0
    assert registry.get_sample_value("tenantgate_policy_info", {"version": "v2"}) == 1


def test_the_last_reload_is_ok_from_the_start_until_one_is_refused():
    registry = CollectorRegistry()
    metrics = DecisionMetrics(registry)
    assert registry.get_sample_value("tenantgate_policy_last_reload_ok") == 1
    metrics.observe_reload(ReloadResult(False, True, "v1", "refused"))
    assert registry.get_sample_value("tenantgate_policy_last_reload_ok") == 0


def test_a_worker_log_line_carries_its_index():
    record = logging.LogRecord("tenantgate.app", logging.INFO, __file__, 1, "stopped", None, None)
    assert json.loads(JsonFormatter(worker=3).format(record))["worker"] == 3
    assert "worker" not in json.loads(JsonFormatter().format(record))


def test_debug_logging_leaves_out_grpcs_per_call_chatter():
    from tenantgate.observability.logging import configure

    root, cygrpc = logging.getLogger(), logging.getLogger("grpc._cython.cygrpc")
    saved = root.handlers[:], root.level, cygrpc.level
    try:
        configure("debug")
        assert root.isEnabledFor(logging.DEBUG) and not cygrpc.isEnabledFor(logging.DEBUG)
        assert cygrpc.isEnabledFor(logging.INFO)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        cygrpc.setLevel(saved[2])
