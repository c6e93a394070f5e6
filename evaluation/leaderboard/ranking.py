"""Ranking maths: per-metric ranks, rank then aggregate (ranking (a)), Kendall's τ_b, and the composite
score (ranking (b)) with its per-metric normalisers."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy.stats import rankdata

from evaluation.schema import AGGREGATES, HIGHER
from fmuia.tasks import TaskKind

__all__ = [
    "DEFAULT_DIAGONAL",
    "RANKED_METRICS",
    "NORMALIZERS",
    "rank_min",
    "rank_then_aggregate",
    "kendall_tau_b",
    "composite",
]

DEFAULT_DIAGONAL = 1000.0  # px: an 800×600 frame, for HD/MRE when no diagonal is known

# kind -> {metric: direction} for the metrics that are ranked (those behind the nine aggregates).
RANKED_METRICS: dict[TaskKind, dict[str, str]] = {}
for _kind, _metric, _direction in AGGREGATES.values():
    RANKED_METRICS.setdefault(_kind, {})[_metric] = _direction
del _kind, _metric, _direction


def rank_min(values: np.ndarray, direction: str, axis: int = 0) -> np.ndarray:
    """Rank along ``axis`` (1 = best), ties share the lowest rank, NaN (missing) = worst."""
    v = np.asarray(values, dtype=float)
    loss = -v if direction == HIGHER else v.copy()
    loss[np.isnan(loss)] = np.inf
    return rankdata(loss, method="min", axis=axis)


def rank_then_aggregate(values: np.ndarray, directions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``values[S, P]`` (NaN = missing), one direction per column -> (mean rank [S], final rank [S])."""
    values = np.asarray(values, dtype=float)
    s = values.shape[0]
    if values.shape[1] == 0:
        return np.ones(s), np.ones(s, dtype=int)
    ranks = np.stack([rank_min(values[:, j], d) for j, d in enumerate(directions)], axis=1)
    mean = ranks.mean(axis=1)
    return mean, rankdata(np.round(mean, 9), method="min").astype(int)


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's τ_b between ``x[S]`` and each row of ``y[..., S]`` (NaN when either is constant)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    iu, ju = np.triu_indices(x.shape[-1], k=1)
    sx = np.sign(x[iu] - x[ju])
    sy = np.sign(y[..., iu] - y[..., ju])
    num = (sx * sy).sum(axis=-1)
    den = np.sqrt(np.abs(sx).sum() * np.abs(sy).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


# ---- composite ---------------------------------------------------------------------------------------

def _unit(v: float, diagonal: float) -> float:
    return min(max(v, 0.0), 1.0)


def _mcc(v: float, diagonal: float) -> float:
    return min(max((v + 1.0) / 2.0, 0.0), 1.0)


def _distance(v: float, diagonal: float) -> float:
    return min(max(1.0 - v / diagonal, 0.0), 1.0)


# metric -> f(value, diagonal) in [0, 1], higher is better (composite score).
NORMALIZERS: dict[str, Callable[[float, float], float]] = {
    "DSC": _unit,
    "IoU": _unit,
    "Accuracy": _unit,
    "AUC": _unit,
    "F1_macro": _unit,
    "F1_weighted": _unit,
    "MCC": _mcc,
    "HD": _distance,
    "MRE": _distance,
}


def composite(
    names: Sequence[str],
    tasks: Sequence[str],
    task_kind: Mapping[str, TaskKind],
    task_metrics: Mapping[str, Mapping[str, float | None]],
    diagonals: Mapping[str, float],
) -> tuple[np.ndarray, dict[str, dict[str, float | None]]]:
    """Composite scores ``[S]`` in [0, 100] and, per submission, each aggregate's normalised mean.

    ``task_metrics[name]["task/metric"]`` are the per-task values (``None`` = missing, counts 0);
    a task/metric nobody has a value for is left out; an aggregate with no task is ``None``.
    """
    parts: dict[str, dict[str, float | None]] = {}
    scores = []
    for n in names:
        p: dict[str, float | None] = {}
        for key, (kind, metric, _d) in AGGREGATES.items():
            # Tasks where nobody has a value (metric undefined on these labels) are left out.
            ts = [t for t in tasks if task_kind[t] is kind
                  and any(task_metrics[m].get(f"{t}/{metric}") is not None for m in names)]
            if not ts:
                p[key] = None
                continue
            vals = []
            for t in ts:
                v = task_metrics[n].get(f"{t}/{metric}")
                vals.append(0.0 if v is None else NORMALIZERS[metric](v, diagonals.get(t, DEFAULT_DIAGONAL)))
            p[key] = float(np.mean(vals))
        used = [v for v in p.values() if v is not None]
        scores.append(100.0 * float(np.mean(used)) if used else 0.0)
        parts[n] = p
    return np.array(scores, dtype=float), parts
