"""The report: sections (one table per scenario), goals (target, measured, met / not met), writers.

``write(report, out_dir)`` writes ``results.md`` (what ``python -m bench`` prints), ``results.json`` (every
raw number, for comparing runs) and, when matplotlib can be imported, ``results.png`` (one bar chart per
scenario that has one).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(slots=True)
class Goal:
    """One goal of issue #7. ``met`` is None when it could not be measured in this run."""

    name: str
    target: str
    measured: str
    met: bool | None
    scenario: str

    @property
    def verdict(self) -> str:
        return {True: "met", False: "**not met**", None: "not measured"}[self.met]


@dataclass(slots=True)
class Chart:
    """A bar chart: one bar per label. ``log`` for values spanning orders of magnitude."""

    title: str
    unit: str
    labels: list[str]
    values: list[float]
    log: bool = False


@dataclass(slots=True)
class Section:
    """One scenario's table. ``rows`` are already formatted cells; ``data`` keeps the raw numbers."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    charts: list[Chart] = field(default_factory=list)
    seconds: float = math.nan

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def failed(self, message: str) -> None:
        """Record that the scenario could not run (its table then says why, and its goals are unmeasured)."""
        self.notes.append(f"FAILED: {message}")
        self.data["error"] = message


@dataclass(slots=True)
class Report:
    meta: dict[str, Any]
    sections: list[Section] = field(default_factory=list)

    @property
    def goals(self) -> list[Goal]:
        return [goal for section in self.sections for goal in section.goals]


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = [line(columns), "|" + "|".join("---" for _ in columns) + "|"]
    out += [line(list(row) + [""] * (len(columns) - len(row))) for row in rows]
    return out


def render_markdown(report: Report) -> str:
    """The whole report as markdown: run facts, the goals table, then one table per scenario."""
    meta = report.meta
    lines = [f"# TenantGate benchmarks ({meta.get('mode', '?')} run, {meta.get('started', '')})", ""]
    lines += [f"- {name}: {value}" for name, value in meta.items() if name not in ("mode", "started")]
    lines += ["", "All figures come from this one run: medians and percentiles, ratios against a floor "
              "measured in the same run.", "", "## Goals", ""]
    lines += _table(["goal", "target", "measured", "verdict"],
                    [[g.name, g.target, g.measured, g.verdict] for g in report.goals])
    for section in report.sections:
        took = "" if not math.isfinite(section.seconds) else f" ({section.seconds:.0f} s)"
        lines += ["", f"## {section.title}{took}", ""]
        if section.rows:
            lines += _table(section.columns, section.rows)
        if section.notes:
            lines += [""] + [f"- {note}" for note in section.notes]
    return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def render_json(report: Report) -> str:
    return json.dumps(_jsonable({
        "meta": report.meta,
        "goals": [{"name": g.name, "target": g.target, "measured": g.measured, "met": g.met,
                   "scenario": g.scenario} for g in report.goals],
        "scenarios": {s.key: {"title": s.title, "seconds": s.seconds, "columns": s.columns, "rows": s.rows,
                              "notes": s.notes, "data": s.data} for s in report.sections},
    }), indent=2)


def render_png(report: Report, path: Path) -> str:
    """Draw every chart into one PNG. Returns "" on success, else why no chart was drawn."""
    charts = [c for s in report.sections for c in s.charts if c.values and any(math.isfinite(v) for v in c.values)]
    if not charts:
        return "no chartable results"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    cols = 2
    rows = math.ceil(len(charts) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(13, 3.6 * rows), squeeze=False)
    for ax, chart in zip(axes.flat, charts, strict=False):
        values = [v if math.isfinite(v) else 0.0 for v in chart.values]
        bars = ax.barh(range(len(values)), values, color="#4c72b0")
        ax.set_yticks(range(len(values)), chart.labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(chart.title, fontsize=10)
        ax.set_xlabel(chart.unit, fontsize=8)
        if chart.log and all(v > 0 for v in values):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.bar_label(bars, labels=[f"{v:,.0f}" if v >= 10 else f"{v:.3g}" for v in values], fontsize=7, padding=2)
        ax.tick_params(axis="x", labelsize=8)
    for ax in list(axes.flat)[len(charts):]:
        ax.axis("off")
    fig.suptitle(f"TenantGate benchmarks ({report.meta.get('mode', '')}, {report.meta.get('started', '')})",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ""


def write(report: Report, out_dir: Path) -> dict[str, Path | str]:
    """Write results.md, results.json and (if possible) results.png into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js, png = out_dir / "results.md", out_dir / "results.json", out_dir / "results.png"
    md.write_text(render_markdown(report), encoding="utf-8")
    js.write_text(render_json(report), encoding="utf-8")
    why = render_png(report, png)
    return {"markdown": md, "json": js, "png": why or png}
