"""Run in a fresh process by scenario 4: ``python -m bench.scale_probe DIR TENANTS SAMPLE [BASELINE_DIR]`` -> JSON.

Loads the tree with ``PolicyStore.load``, times decisions (``Engine.evaluate``, the tenant-dependent part of a
decision) cold (a fresh Engine per measurement, so the tenant's partition is built) and warm (partitions
cached), then reloads after touching one tenant file, after editing it, and forced; last, times a full garbage
collection (``gc.collect``) as it stops a serving process, before and after ``settle_heap``. Peak RSS is this
process's VmHWM (with a baseline, its few MiB included); not ru_maxrss, which fork and exec carry over from the
bench's own process. The decision memo is off: every timed decision asks Cedar with its tenant's partition,
which is what the number of tenants can change (with the memo, a repeated request skips Cedar whatever the
number of tenants).

With ``BASELINE_DIR`` (the 1-tenant tree) the baseline's warm decisions are timed in this same process, in
rounds interleaved with this tree's warm rounds, so both see the same machine at the same moments: the
scale ratio is then not at the mercy of what the shared machine did between two processes.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path

from tenantgate.background import settle_heap
from tenantgate.core.engine import Engine
from tenantgate.core.model import Decision, Principal, Resource
from tenantgate.policy import PolicyStore

from .fixture import tenant_name
from .procstat import peak_rss_mib, rss_mib
from .stats import summarize

PER_TENANT = 10


def _asks(tenants: int, sample_size: int) -> list[tuple[Principal, Resource, dict[str, str]]]:
    step = max(1, tenants // sample_size)
    asks = []
    for i in list(range(0, tenants, step))[:sample_size]:
        tenant, j = tenant_name(i), i % PER_TENANT
        principal = Principal("User", "u", "u", tenant, (f"approver-{j}",), None, "https://bench", "tok")
        asks.append((principal, Resource("Invoice", "inv-1", tenant), {"tenant": tenant, "status": f"level-{j}"}))
    return asks


def main(argv: list[str]) -> int:
    root, tenants, sample_size = Path(argv[0]), int(argv[1]), int(argv[2])
    started = time.perf_counter()
    store = PolicyStore.load(root, decision_cache_size=0)
    load_s = time.perf_counter() - started
    rss_loaded = rss_mib()
    compiled = store.current().compiled
    asks = _asks(tenants, sample_size)
    wrong = 0
    clock = time.perf_counter

    def timed(engine: Engine, k: int, asked: list[tuple[Principal, Resource, dict[str, str]]] = asks) -> float:
        nonlocal wrong
        principal, resource, attrs = asked[k % len(asked)]
        t = clock()
        outcome = engine.evaluate(principal, "approve", resource, dict(attrs), {"intent": ""})
        elapsed = clock() - t
        wrong += outcome.decision is not Decision.ALLOW
        return elapsed

    cold_n = max(sample_size, 20)
    cold = [timed(Engine(compiled, decision_cache_size=0), k) for k in range(cold_n)]
    engine = store.current()
    for k in range(len(asks)):
        timed(engine, k)  # warm-up: every sampled tenant's partition is now cached
    warm_n = max(5 * len(asks), 2000)
    baseline = PolicyStore.load(Path(argv[3]), decision_cache_size=0).current() if len(argv) > 3 else None
    base_asks = _asks(1, 1)
    if baseline is not None:
        timed(baseline, 0, base_asks)  # its partition built: warm from here on
    warm: list[float] = []
    base_warm: list[float] = []
    rounds = 10
    for r in range(rounds):  # interleaved with the baseline's rounds, when there is one
        warm += [timed(engine, k) for k in range(r * warm_n // rounds, (r + 1) * warm_n // rounds)]
        if baseline is not None:
            base_warm += [timed(baseline, k, base_asks) for k in range(warm_n // rounds)]
    one_hot = [timed(engine, 0) for _ in range(2000)]  # a single tenant, over and over: best-case locality
    edited = root / "tenants" / tenant_name(0) / "policies.cedar"
    stat = edited.stat()
    os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touch: same content
    t = clock()
    touched_only = store.reload()
    reload_touch_s = clock() - t
    edited.write_text(edited.read_text() + "\n// edited by the benchmark\n")
    t = clock()
    touched = store.reload()
    reload_one_s = clock() - t
    t = clock()
    forced = store.reload(force=True)
    reload_forced_s = clock() - t
    gc.collect()  # what the loads and reloads left behind
    tracked = len(gc.get_objects())
    t = clock()
    gc.collect()
    gc_full_s = clock() - t  # a full collection in a serving process, nothing frozen
    settle_heap()  # as ``serve`` does after a load or reload
    t = clock()
    gc.collect()
    gc_settled_s = clock() - t
    gc.unfreeze()
    print(json.dumps({
        "tenants": tenants, "policies": compiled.total_policies, "load_s": load_s,
        "rss_after_load_mib": rss_loaded, "max_rss_mib": peak_rss_mib(),
        "cold": summarize(cold).to_dict(), "warm": summarize(warm).to_dict(), "one_hot": summarize(one_hot).to_dict(),
        "baseline_warm": summarize(base_warm).to_dict() if base_warm else None,
        "sampled_tenants": len(asks),
        "wrong": wrong, "reload_touch_s": reload_touch_s, "reload_touch_ok": touched_only.ok,
        "reload_one_s": reload_one_s, "reload_one_ok": touched.ok and touched.changed,
        "reload_forced_s": reload_forced_s, "reload_forced_ok": forced.ok,
        "cached_partitions": engine.cached_partitions(),
        "gc_tracked": tracked, "gc_full_s": gc_full_s, "gc_settled_s": gc_settled_s,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
