"""Percentiles from sorted samples, and the few number formats the tables use."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of already sorted samples; NaN when empty.

    Nearest rank never interpolates: the value returned is one that was measured.
    """
    if not sorted_samples:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_samples)))
    return sorted_samples[min(rank, len(sorted_samples)) - 1]


@dataclass(frozen=True, slots=True)
class Summary:
    """Order statistics of one series of samples (seconds for latencies)."""

    n: int
    p50: float
    p95: float
    p99: float
    mean: float
    min: float
    max: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(samples: Sequence[float]) -> Summary:
    """Summary of ``samples`` (any order). All fields are NaN when there are none."""
    ordered = sorted(samples)
    if not ordered:
        nan = math.nan
        return Summary(0, nan, nan, nan, nan, nan, nan)
    return Summary(
        n=len(ordered),
        p50=percentile(ordered, 50),
        p95=percentile(ordered, 95),
        p99=percentile(ordered, 99),
        mean=math.fsum(ordered) / len(ordered),
        min=ordered[0],
        max=ordered[-1],
    )


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when either is missing or the denominator is not positive."""
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator <= 0:
        return math.nan
    return numerator / denominator


def us(seconds: float) -> str:
    """Seconds as microseconds for a table cell (a dash when not measured)."""
    if not math.isfinite(seconds):
        return "–"
    value = seconds * 1e6
    return f"{value:,.0f} µs" if value >= 100 else f"{value:.1f} µs"


def ms(seconds: float) -> str:
    """Seconds as milliseconds for a table cell."""
    if not math.isfinite(seconds):
        return "–"
    value = seconds * 1e3
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.2f} ms"


def rate(per_second: float) -> str:
    """A rate ("12,345/s")."""
    return "–" if not math.isfinite(per_second) else f"{per_second:,.0f}/s"


def times(value: float) -> str:
    """A ratio ("1.23x")."""
    return "–" if not math.isfinite(value) else f"{value:.2f}x"


def mib(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:,.0f} MiB"
