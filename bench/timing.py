"""In-process timing: each call timed on its own, series interleaved in rounds to spread drift evenly."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping


def interleaved(series: Mapping[str, Callable[[], object]], samples: int, rounds: int,
                warmup: int = 50, before: Mapping[str, Callable[[], object]] | None = None,
                samples_of: Mapping[str, int] | None = None) -> dict[str, list[float]]:
    """``samples`` timings (seconds) per series, taken in ``rounds`` rounds of samples/rounds calls each.

    ``before[name]``, when given, runs untimed before each timed call of that series (e.g. to flush the
    CPU caches); ``samples_of[name]`` overrides ``samples`` for that series.

    Each series is called ``warmup`` times first. The garbage collector stays on (the server runs with it),
    but a full collection runs before each block so one series does not pay for another's garbage.
    """
    for fn in series.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {name: [] for name in series}
    clock = time.perf_counter
    before = before or {}
    samples_of = samples_of or {}
    for _ in range(max(1, rounds)):
        for name, fn in series.items():
            gc.collect()
            sink = out[name]
            prepare = before.get(name)
            for _ in range(max(1, samples_of.get(name, samples) // max(1, rounds))):
                if prepare is not None:
                    prepare()
                started = clock()
                fn()
                sink.append(clock() - started)
    return out


def each(fn: Callable[[object], object], items: list[object]) -> list[float]:
    """One timing per item: ``fn(item)`` for each item in order (e.g. distinct tokens, cold paths)."""
    clock = time.perf_counter
    out = []
    for item in items:
        started = clock()
        fn(item)
        out.append(clock() - started)
    return out
