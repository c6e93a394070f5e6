"""Figures for the evaluation and leaderboard reports, rendered to PNG bytes.

Matplotlib runs on its Agg canvas only (a :class:`~matplotlib.figure.Figure` with a
``FigureCanvasAgg``; pyplot is never imported, no display is touched), so these functions are
safe on headless scoring servers and in worker threads. Every function takes plain data (the
results JSON object or parts of it) and returns PNG bytes, or ``None`` when there is nothing
to draw.

- :func:`plot_metric_bars`: per task of one kind, each metric as a bar with its bootstrap 95% CI;
- :func:`plot_per_case`: per task of one kind, the distribution of a per-case metric (box + strip,
  failed rows marked);
- :func:`plot_aggregates`: the nine leaderboard aggregates of one results object;
- :func:`plot_aggregates_compare`: the nine aggregates side by side for many submissions;
- :func:`plot_rank_blobs`: rank stability ("blob" plot): for each submission, a circle at each rank
  it took over the bootstrap samples, area proportional to how often.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evaluation.schema import AGGREGATES, DIRECTIONS, HIGHER, LOWER, TASK_METRICS
from fmuia.tasks import TaskKind

__all__ = [
    "TASK_METRICS",
    "CASE_METRICS",
    "ci_of",
    "plot_metric_bars",
    "plot_per_case",
    "plot_aggregates",
    "plot_aggregates_compare",
    "plot_rank_blobs",
]

# Per-task metrics are drawn as bars: evaluation.schema.TASK_METRICS (a metric absent from every
# task is skipped). Per-case columns of the strict scorer drawn as box/strip plots, per kind.
CASE_METRICS: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.SEGMENTATION: ("DSC", "HD", "HD95"),
    TaskKind.CLASSIFICATION: ("prob_true",),
    TaskKind.DETECTION: ("IoU",),
    TaskKind.REGRESSION: ("MRE",),
}
_LOWER_BETTER = {m for m, d in DIRECTIONS.items() if d == LOWER}
_BAR, _CI, _FAIL = "#4c72b0", "#222222", "#c62828"


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _panel_width(n_tasks: int) -> float:
    return max(4.0, 0.42 * n_tasks + 1.8)


def _layout(n_panels: int, n_tasks: int) -> tuple[int, int]:
    """(columns, rows) of panels: side by side while the figure stays under ~16 inches wide."""
    cols = max(1, min(n_panels, int(16 // _panel_width(n_tasks))))
    return cols, math.ceil(n_panels / cols)


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def ci_of(task: Mapping, metric: str) -> tuple[float, float] | None:
    """The 95% interval of ``metric`` in one task's results, or ``None``.

    Accepted shapes: ``task["ci95"][metric]`` as ``[lo, hi]`` or a mapping with ``lo/hi``,
    ``low/high`` or ``lower/upper``; or ``task[f"{metric}_ci95"]`` as ``[lo, hi]``.
    """
    raw = None
    block = task.get("ci95")
    if isinstance(block, Mapping):
        raw = block.get(metric)
    if raw is None:
        raw = task.get(f"{metric}_ci95")
    if isinstance(raw, Mapping):
        for lo_key, hi_key in (("lo", "hi"), ("low", "high"), ("lower", "upper")):
            if lo_key in raw and hi_key in raw:
                raw = [raw[lo_key], raw[hi_key]]
                break
    if isinstance(raw, (list, tuple)) and len(raw) == 2:
        lo, hi = _finite(raw[0]), _finite(raw[1])
        if lo is not None and hi is not None:
            return (min(lo, hi), max(lo, hi))
    return None


def _arrow(metric: str) -> str:
    return "↓" if metric in _LOWER_BETTER else "↑"


def plot_metric_bars(results: Mapping, kind: TaskKind) -> bytes | None:
    """One panel per metric of :data:`TASK_METRICS`: a bar per task of ``kind``, CI whiskers."""
    tasks = results.get(TaskKind(kind).value) or {}
    tasks = {t: v for t, v in tasks.items() if isinstance(v, Mapping)}
    metrics = [m for m in TASK_METRICS[TaskKind(kind)] if any(_finite(v.get(m)) is not None for v in tasks.values())]
    if not tasks or not metrics:
        return None
    names = sorted(tasks)
    cols, rows = _layout(len(metrics), len(names))
    fig = _new_figure(_panel_width(len(names)) * cols, 3.0 * rows + 0.4)
    x = np.arange(len(names))
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, k + 1)
        vals = np.array([_finite(tasks[t].get(metric)) if _finite(tasks[t].get(metric)) is not None else np.nan
                         for t in names])
        ax.bar(x, np.nan_to_num(vals), color=_BAR, width=0.7)
        for i, t in enumerate(names):
            ci = ci_of(tasks[t], metric)
            if ci is not None and not np.isnan(vals[i]):
                ax.errorbar([i], [vals[i]], yerr=[[max(0.0, vals[i] - ci[0])], [max(0.0, ci[1] - vals[i])]],
                            color=_CI, capsize=3, lw=1.2)
            if np.isnan(vals[i]):
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7)
        ax.set_title(f"{metric} {_arrow(metric)}", fontsize=10)
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
        if metric not in _LOWER_BETTER and metric != "MCC" and np.nanmax(np.append(vals, 0)) <= 1.0:
            ax.set_ylim(0, 1.05)
    fig.suptitle(f"{TaskKind(kind).value}: per-task metrics (whiskers: bootstrap 95% CI)", fontsize=11)
    fig.tight_layout()
    return _png(fig)


def plot_per_case(per_case: Sequence[Mapping], kind: TaskKind) -> bytes | None:
    """Box + jittered strip per task for each per-case column of :data:`CASE_METRICS` of ``kind``.

    Rows with a non-null ``reason`` (missing or malformed prediction, scored at the worst value)
    are drawn as red crosses.
    """
    kind = TaskKind(kind)
    rows = [r for r in per_case if r.get("kind") == kind.value]
    if not rows:
        return None
    names = sorted({str(r.get("task_id")) for r in rows})
    metrics = [m for m in CASE_METRICS[kind] if any(_finite(r.get(m)) is not None for r in rows)]
    if not metrics and kind is TaskKind.CLASSIFICATION and any(_finite(r.get("correct")) is not None for r in rows):
        metrics = ["correct"]
    if not metrics:
        return None
    rng = np.random.default_rng(0)
    cols, nrows = _layout(len(metrics), len(names))
    fig = _new_figure(_panel_width(len(names)) * cols, 3.2 * nrows + 0.4)
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(nrows, cols, k + 1)
        data, ok_pts, bad_pts = [], ([], []), ([], [])
        for i, t in enumerate(names):
            vals = []
            for r in rows:
                if str(r.get("task_id")) != t:
                    continue
                v = _finite(r.get(metric))
                if v is None:
                    continue
                vals.append(v)
                target = bad_pts if r.get("reason") else ok_pts
                target[0].append(i + 1 + rng.uniform(-0.18, 0.18))
                target[1].append(v)
            data.append(vals if vals else [np.nan])
        ax.boxplot(data, positions=np.arange(1, len(names) + 1), widths=0.55, showfliers=False,
                   medianprops={"color": "#dd8452"})
        ax.scatter(ok_pts[0], ok_pts[1], s=9, color=_BAR, alpha=0.6, zorder=3)
        if bad_pts[0]:
            ax.scatter(bad_pts[0], bad_pts[1], s=22, color=_FAIL, marker="x", zorder=4, label="failed prediction")
            ax.legend(fontsize=7, loc="best")
        ax.set_xticks(np.arange(1, len(names) + 1))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(f"per-case {metric} {_arrow(metric)}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{kind.value}: per-case distributions (box: quartiles; dots: cases)", fontsize=11)
    fig.tight_layout()
    return _png(fig)


def _unit_interval(key: str) -> bool:
    return AGGREGATES[key][1] not in _LOWER_BETTER


def plot_aggregates(aggregates: Mapping[str, Any]) -> bytes:
    """The nine aggregates: the unit-interval ones as horizontal bars, HD and MRE in their own panels."""
    unit = [k for k in AGGREGATES if _unit_interval(k)]
    dist = [k for k in AGGREGATES if not _unit_interval(k)]
    fig = _new_figure(9.0, 3.8)
    grid = fig.add_gridspec(1, 1 + len(dist), width_ratios=[3] + [1] * len(dist))
    ax = fig.add_subplot(grid[0, 0])
    y = np.arange(len(unit))[::-1]
    for yi, key in zip(y, unit, strict=True):
        v = _finite(aggregates.get(key))
        ax.barh([yi], [v or 0.0], color=_BAR if v is not None else "#cccccc", height=0.65)
        ax.text((v or 0.0) + 0.01 if (v or 0.0) >= 0 else 0.01, yi, "n/a" if v is None else f"{v:.3f}",
                va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels([f"{k} {'↑' if AGGREGATES[k][2] == HIGHER else '↓'}" for k in unit], fontsize=8)
    lo = min([0.0] + [_finite(aggregates.get(k)) or 0.0 for k in unit])
    ax.set_xlim(min(lo, 0.0) - 0.02, 1.15)
    ax.axvline(0, color="black", lw=0.6)
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(axis="x", labelsize=7)
    for j, key in enumerate(dist):
        a2 = fig.add_subplot(grid[0, 1 + j])
        v = _finite(aggregates.get(key))
        a2.bar([0], [v or 0.0], color="#dd8452" if v is not None else "#cccccc", width=0.6)
        a2.text(0, v or 0.0, "n/a" if v is None else f"{v:.2f}", ha="center", va="bottom", fontsize=8)
        a2.set_xticks([0])
        a2.set_xticklabels([f"{key} ↓"], fontsize=8)
        a2.set_xlim(-0.8, 0.8)
        a2.set_ylim(0, max(1.0, (v or 0.0) * 1.2))
        a2.tick_params(axis="y", labelsize=7)
        a2.set_ylabel("pixels", fontsize=8)
    fig.suptitle("The nine leaderboard aggregates (↑ higher is better, ↓ lower is better)", fontsize=11)
    fig.tight_layout()
    return _png(fig)


def plot_aggregates_compare(rows: Mapping[str, Mapping[str, Any]]) -> bytes | None:
    """One panel per aggregate, one bar per submission (``rows[name][aggregate_key]``)."""
    if not rows:
        return None
    names = list(rows)
    keys = list(AGGREGATES)
    cols = 3
    fig = _new_figure(max(9.0, 0.45 * len(names) * cols + 3), 3.0 * math.ceil(len(keys) / cols))
    x = np.arange(len(names))
    colours = [f"C{i % 10}" for i in range(len(names))]
    for k, key in enumerate(keys):
        ax = fig.add_subplot(math.ceil(len(keys) / cols), cols, k + 1)
        vals = [_finite(rows[n].get(key)) for n in names]
        ax.bar(x, [v if v is not None else 0.0 for v in vals], color=colours, width=0.7)
        for i, v in enumerate(vals):
            if v is None:
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7)
        ax.set_title(f"{key} {'↑' if AGGREGATES[key][2] == HIGHER else '↓'}", fontsize=9)
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=40, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Aggregates per submission", fontsize=11)
    fig.tight_layout()
    return _png(fig)


def plot_rank_blobs(names: Sequence[str], rank_samples: Any, observed: Sequence[float] | None = None) -> bytes | None:
    """Rank-stability blob plot.

    ``rank_samples``: array-like ``[n_bootstrap, n_submissions]`` of ranks (1 = best), columns in
    the order of ``names``. For each submission and each rank r, a circle at (submission, r) whose
    area is proportional to the fraction of bootstrap samples in which it ranked r; a black bar
    spans the 2.5–97.5 percentile of its ranks, a cross marks ``observed`` (the full-data rank).
    Submissions are ordered by ``observed`` (or by median bootstrap rank).
    """
    samples = np.asarray(rank_samples, dtype=float)
    if samples.ndim != 2 or samples.shape[0] == 0 or samples.shape[1] != len(names) or not len(names):
        return None
    n = len(names)
    order_key = np.asarray(observed, dtype=float) if observed is not None else np.median(samples, axis=0)
    order = np.argsort(order_key, kind="stable")
    max_rank = int(max(n, np.nanmax(samples)))
    fig = _new_figure(max(6.5, 0.75 * n + 2.0), max(3.5, 0.45 * max_rank + 1.8))
    ax = fig.add_subplot(1, 1, 1)
    for pos, j in enumerate(order):
        col = samples[:, j]
        col = col[np.isfinite(col)]
        if col.size == 0:
            continue
        ranks, counts = np.unique(np.round(col).astype(int), return_counts=True)
        freq = counts / col.size
        ax.scatter(np.full(ranks.shape, pos), ranks, s=600.0 * freq, color=f"C{j % 10}", alpha=0.75,
                   edgecolors="black", linewidths=0.5, zorder=3)
        lo, hi = np.percentile(col, [2.5, 97.5])
        ax.plot([pos, pos], [lo, hi], color="black", lw=1.0, zorder=2)
        if observed is not None:
            ax.plot([pos], [observed[j]], marker="x", color="black", ms=7, mew=1.5, zorder=4)
    ax.set_xticks(np.arange(n))
    ax.set_xticklabels([names[j] for j in order], rotation=40, ha="right", fontsize=8)
    ax.set_yticks(np.arange(1, max_rank + 1))
    ax.set_ylim(max_rank + 0.7, 0.3)
    ax.set_xlim(-0.7, n - 0.3)
    ax.set_ylabel("rank (1 = best)", fontsize=9)
    ax.grid(alpha=0.25)
    ax.set_title(f"Rank stability over {samples.shape[0]} bootstrap samples\n"
                 "circle area ∝ frequency of each rank; bar: 95% interval; × full-data rank", fontsize=10)
    fig.tight_layout()
    return _png(fig)
