"""Ranking stability (ranking (c)): the paired case bootstrap of rank-then-aggregate.

For ``n_bootstrap`` rounds the cases of each task are resampled with replacement (one seeded draw
per task and round, shared by all submissions); the per-task metrics that per-case rows give are
recomputed and ranking (a) is redone. Recomputed are the means of per-case columns
(:data:`PER_CASE_METRICS`) and, from the resampled confusion matrices, F1_macro, F1_weighted and MCC
(:data:`CONFUSION_METRICS`, :mod:`evaluation.metrics.classification`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from evaluation.leaderboard.ranking import RANKED_METRICS, kendall_tau_b, rank_min, rank_then_aggregate
from evaluation.metrics.classification import confusion_matrix, f1_macro, f1_weighted, mcc
from evaluation.schema import KIND_ORDER, CaseRow
from fmuia.tasks import TaskKind, get_task, has_task

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - comes with scikit-learn
    threadpool_limits = None

__all__ = [
    "PER_CASE_METRICS",
    "CONFUSION_METRICS",
    "Stability",
    "class_counts",
    "confusion_columns",
    "case_bootstrap",
]

# kind -> {metric: CaseRow field whose mean is the task's metric}.
PER_CASE_METRICS: dict[TaskKind, dict[str, str]] = {
    TaskKind.SEGMENTATION: {"DSC": "DSC", "HD": "HD"},
    TaskKind.CLASSIFICATION: {"Accuracy": "correct"},
    TaskKind.DETECTION: {"IoU": "IoU"},
    TaskKind.REGRESSION: {"MRE": "MRE"},
}

# classification metric -> f(confusion matrices [..., C, C+1]) (an invalid prediction: the last column).
CONFUSION_METRICS: dict[str, Callable[[np.ndarray], float | np.ndarray]] = {
    "F1_macro": f1_macro,
    "F1_weighted": f1_weighted,
    "MCC": mcc,
}


@dataclass
class Stability:
    """Bootstrap ranking stability (ranking (c)); arrays are indexed like ``Leaderboard.names``."""

    n_bootstrap: int
    seed: int
    metrics: list[str]  # "kind/metric" recomputed from per-case rows
    reference_rank: np.ndarray  # [S] rank on all cases with those metrics
    rank_samples: np.ndarray  # [B, S] rank of each submission in each bootstrap round
    tau: np.ndarray  # [B] Kendall's tau_b of each round's ranking to the reference

    def tau_summary(self) -> dict[str, float | None]:
        """Mean, median, 2.5 % and 97.5 % quantiles of the defined τ_b values (``None`` when none is)."""
        t = self.tau[~np.isnan(self.tau)]
        if t.size == 0:
            return {"mean": None, "median": None, "q025": None, "q975": None}
        q = np.quantile(t, [0.025, 0.5, 0.975])
        return {"mean": float(t.mean()), "median": float(q[1]), "q025": float(q[0]), "q975": float(q[2])}

    def rank_intervals(self) -> np.ndarray:
        """[S, 2]: the 2.5 % and 97.5 % quantiles of each submission's bootstrap ranks (observed values)."""
        return np.quantile(self.rank_samples, [0.025, 0.975], axis=0, method="inverted_cdf").T


def class_counts(blocks: Iterable[Mapping[str, tuple[TaskKind, Mapping[str, Any]]]]) -> dict[str, int]:
    """task_id -> number of classes of each classification task (the bound of its per-case labels):
    the registry's for a registered classification task, else the largest ``per_class`` block."""
    out: dict[str, int] = {}
    for tasks in blocks:
        for t, (kind, block) in tasks.items():
            if kind is not TaskKind.CLASSIFICATION:
                continue
            if has_task(t) and get_task(t).kind is TaskKind.CLASSIFICATION:
                out[t] = get_task(t).num_classes
                continue
            per_class = block.get("per_class")
            if isinstance(per_class, Mapping) and per_class:
                out[t] = max(out.get(t, 0), len(per_class))
    return out


def confusion_columns(
    names: Sequence[str],
    rows: Mapping[str, Mapping[str, CaseRow]],
    cases: Sequence[str],
    counts: np.ndarray,
    n_classes: int,
) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """F1_macro, F1_weighted and MCC of one classification task, bootstrapped.

    ``rows[name][case]``: the task's per-case rows (labels below ``n_classes``); ``counts[B, N]``: how
    often each of ``cases`` is drawn in each round. Returns metric -> (per round ``[S, B]``, on all
    cases ``[S]``); ``None`` when some submission's rows carry no ``label``. A missing row counts for
    nothing, a row whose ``predicted`` is null (an invalid prediction) is wrong and a false positive for
    no class.
    """
    c = int(n_classes)
    k = c * (c + 1)
    boot: dict[str, list[np.ndarray]] = {m: [] for m in CONFUSION_METRICS}
    ref: dict[str, list[float]] = {m: [] for m in CONFUSION_METRICS}
    codes = []
    for n in names:
        per = rows.get(n, {})
        y = np.zeros(len(cases), dtype=np.intp)
        p = np.full(len(cases), -1, dtype=np.intp)
        ok = np.zeros(len(cases), dtype=bool)
        for j, case in enumerate(cases):
            r = per.get(case)
            if r is None:
                continue
            if r.label is None:
                return None
            y[j], ok[j] = r.label, True
            if r.predicted is not None:
                p[j] = r.predicted
        codes.append((y[ok], p[ok], ok))
    for y, p, ok in codes:
        cm_ref = confusion_matrix(y, p, c)  # [C, C+1]; a prediction outside 0..C-1 is the last column
        onehot = np.zeros((y.size, k))
        onehot[np.arange(y.size), y * (c + 1) + np.where((p < 0) | (p >= c), c, p)] = 1.0
        cm_boot = (counts[:, ok] @ onehot).reshape(-1, c, c + 1)  # [B, C, C+1]
        for m, fn in CONFUSION_METRICS.items():
            boot[m].append(np.asarray(fn(cm_boot)))
            ref[m].append(float(fn(cm_ref)))
    return {m: (np.stack(boot[m]), np.array(ref[m])) for m in CONFUSION_METRICS}


def _one_blas_thread() -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if threadpool_limits is None else threadpool_limits(1)


def case_bootstrap(
    names: Sequence[str],
    per_case: Mapping[str, Sequence[CaseRow]],
    task_kind: Mapping[str, TaskKind],
    n_bootstrap: int,
    seed: int,
    notes: list[str],
    n_classes: Mapping[str, int] | None = None,
) -> Stability | None:
    """Paired case bootstrap of ranking (a) restricted to the metrics per-case rows give.

    ``per_case[name]``: that submission's parsed rows; ``task_kind``: the kind of every task of the
    results (rows of other tasks are ignored); ``n_classes``: task -> class count (classification
    tasks without one get no F1/MCC). ``None`` (and a line in ``notes``) when no metric can be
    recomputed.
    """
    with _one_blas_thread():  # many small products: threads only contend
        return _bootstrap(names, per_case, task_kind, n_bootstrap, seed, notes, n_classes or {})


def _bootstrap(names, per_case, task_kind, n_bootstrap, seed, notes, n_classes) -> Stability | None:
    rng = np.random.default_rng(seed)
    s = len(names)
    rows_by: dict[str, dict[str, dict[str, CaseRow]]] = {}  # task -> name -> image_path -> row
    for n in names:
        for r in per_case[n]:
            rows_by.setdefault(r.task_id, {}).setdefault(n, {})[r.image_path] = r
    boot_cols: list[np.ndarray] = []  # each [S, B]
    ref_cols: list[np.ndarray] = []  # each [S]
    directions: list[str] = []
    used: list[str] = []

    def add(kind: TaskKind, metric: str, boot: np.ndarray, ref: np.ndarray) -> None:
        boot_cols.append(boot)
        ref_cols.append(ref)
        directions.append(RANKED_METRICS[kind][metric])
        label = f"{kind.value}/{metric}"
        if label not in used:
            used.append(label)

    unbounded: list[str] = []
    for t in sorted(rows_by, key=lambda t: (KIND_ORDER.index(task_kind[t]) if t in task_kind else 9, t)):
        kind = task_kind.get(t)
        if kind is None:
            continue
        cases = sorted({c for per in rows_by[t].values() for c in per})
        n_cases = len(cases)
        if n_cases == 0:
            continue
        idx = rng.integers(0, n_cases, size=(n_bootstrap, n_cases))
        flat = (np.arange(n_bootstrap)[:, None] * n_cases + idx).ravel()
        counts = np.bincount(flat, minlength=n_bootstrap * n_cases)
        counts = counts.reshape(n_bootstrap, n_cases).astype(float)
        for metric, column in PER_CASE_METRICS[kind].items():
            v = np.full((s, n_cases), np.nan)
            for i, n in enumerate(names):
                per = rows_by[t].get(n, {})
                for j, c in enumerate(cases):
                    x = getattr(per[c], column) if c in per else None
                    if x is not None:
                        v[i, j] = float(x)  # ``correct`` counts 0/1
            if np.isnan(v).all():
                continue
            ok = ~np.isnan(v)
            filled = np.where(ok, v, 0.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                # [S, B]; NaN when no valid case drawn
                boot = (filled @ counts.T) / (ok.astype(float) @ counts.T)
                ref = filled.sum(axis=1) / ok.sum(axis=1)
            add(kind, metric, boot, ref)
        if kind is TaskKind.CLASSIFICATION:
            if n_classes.get(t, 0) <= 0:  # labels unbounded: no confusion matrix sized by them
                if any(r.label is not None for per in rows_by[t].values() for r in per.values()):
                    unbounded.append(t)
                continue
            conf = confusion_columns(names, rows_by[t], cases, counts, n_classes[t])
            for metric, (boot, ref) in (conf or {}).items():
                add(kind, metric, boot, ref)
    if unbounded:
        notes.append(
            "ranking stability: F1 and MCC not bootstrapped for " + ", ".join(repr(t) for t in unbounded)
            + " (class count unknown: not in the task registry and no per_class block)"
        )
    if not boot_cols:
        notes.append("ranking stability skipped: the per-case rows carry none of the recomputable metrics")
        return None
    ref_vals = np.stack(ref_cols, axis=1)  # [S, P]
    _, ref_rank = rank_then_aggregate(ref_vals, directions)
    stacked = np.stack(boot_cols, axis=2)  # [S, B, P]
    ranks = np.stack([rank_min(stacked[:, :, j], d, axis=0) for j, d in enumerate(directions)], axis=2)
    mean = ranks.mean(axis=2)  # [S, B]
    rank_samples = rankdata(np.round(mean, 9), method="min", axis=0).T.astype(int)  # [B, S]
    tau = kendall_tau_b(ref_rank, rank_samples)
    return Stability(n_bootstrap, seed, used, ref_rank, rank_samples, tau)
