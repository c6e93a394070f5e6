"""The leaderboard: :class:`Leaderboard` and :func:`build_leaderboard` (rankings (a), (b) and (c))."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import rankdata

from evaluation.leaderboard import render
from evaluation.leaderboard.bootstrap import Stability, case_bootstrap, class_counts
from evaluation.leaderboard.load import ResultsInput, as_results_mapping
from evaluation.leaderboard.ranking import DEFAULT_DIAGONAL, RANKED_METRICS, composite, rank_then_aggregate
from evaluation.schema import AGGREGATES, COUNT_KEYS, KIND_ORDER, CaseRow, read_cases, task_blocks
from fmuia.dataset import load_root
from fmuia.dataset.images import image_size
from fmuia.errors import FmuiaError
from fmuia.tasks import TaskKind

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DIAGONAL_KEYS", "Leaderboard", "build_leaderboard", "label_diagonals"]

DIAGONAL_KEYS = ("mean_diagonal", "diagonal", "image_diagonal")  # task keys recording the mean image diagonal
_DISTANCE_KINDS = (TaskKind.SEGMENTATION, TaskKind.REGRESSION)  # kinds whose HD/MRE need a diagonal


@dataclass
class Leaderboard:
    """Submissions in ranked order (rank-then-aggregate, ties broken by composite then name)."""

    names: list[str]
    aggregates: dict[str, dict[str, float | None]]  # name -> aggregate key -> value
    metric_columns: list[str]  # "task_id/metric" for every per-task metric seen
    task_metrics: dict[str, dict[str, float | None]]  # name -> column -> value
    ranked_pairs: list[tuple[str, str]]  # (task_id, metric) pairs used by ranking (a)
    mean_rank: np.ndarray  # [S]
    rank: np.ndarray  # [S] rank-then-aggregate rank
    composite: np.ndarray  # [S] in [0, 100]
    composite_parts: dict[str, dict[str, float | None]]  # name -> aggregate key -> normalised mean in [0, 1]
    diagonals: dict[str, float]  # task_id -> diagonal used for HD/MRE normalisation
    stability: Stability | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def composite_rank(self) -> np.ndarray:
        """[S]: the rank by composite score (higher is better, ties share the lowest rank)."""
        return rankdata(-np.round(self.composite, 9), method="min").astype(int)

    def table(self, per_task: bool = True) -> pd.DataFrame:
        """The leaderboard as a pandas DataFrame, one row per submission, in ranked order."""
        return render.table(self, per_task=per_task)

    def to_dict(self) -> dict:
        """JSON-ready: rows, column descriptions, rankings, stability (with the bootstrap rank samples)."""
        return render.to_dict(self)

    def format_table(self) -> str:
        """A plain-text ranked table (rank, name, composite, mean rank, rank interval, nine aggregates)."""
        return render.format_table(self)


def _num(v: Any) -> float | None:
    """A finite number as float; ``None`` for anything else (bools included)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _nan(v: float | None) -> float:
    return np.nan if v is None else v


def label_diagonals(labels_root: str | os.PathLike) -> dict[str, float]:
    """``task_id -> mean image diagonal`` (pixels) of a data root's images (read from file headers)."""
    sums: dict[str, list[float]] = {}
    for s in load_root(labels_root).samples:
        w, h = image_size(s.image_file)
        sums.setdefault(s.task_id, []).append(math.hypot(w, h))
    return {t: float(np.mean(v)) for t, v in sums.items()}


def _diagonals(tasks: list[str], per_sub_tasks: dict, names: list[str]) -> dict[str, float]:
    """task -> the first positive diagonal recorded (:data:`DIAGONAL_KEYS`) by a submission, in order."""
    out: dict[str, float] = {}
    for t in tasks:
        for n in names:
            _, m = per_sub_tasks[n].get(t, (None, {}))
            for key in DIAGONAL_KEYS:
                d = _num(m.get(key))
                if d is not None and d > 0:
                    out[t] = d
                    break
            if t in out:
                break
    return out


def _aggregates_from(metrics: dict[str, float | None], tasks: list[str],
                     task_kind: dict) -> dict[str, float | None]:
    """Like :func:`evaluation.aggregates.compute_aggregates`, skipping missing values."""
    out: dict[str, float | None] = {}
    for key, (kind, metric, _d) in AGGREGATES.items():
        vals = [metrics.get(f"{t}/{metric}") for t in tasks if task_kind[t] is kind]
        vals = [v for v in vals if v is not None]
        out[key] = float(np.mean(vals)) if vals else None
    return out


def _case_rows(names: list[str], subs: Mapping[str, Mapping], n_classes: Mapping[str, int],
               notes: list[str]) -> dict[str, list[CaseRow]]:
    """Each submission's parsed per-case rows; rows that do not parse are left out, counted in ``notes``."""
    out: dict[str, list[CaseRow]] = {}
    for n in names:
        rows, problems = read_cases(subs[n], max_labels=n_classes)
        if problems:
            notes.append(f"ranking stability: {len(problems)} per-case row(s) of {n!r} skipped as invalid "
                         f"(first: {problems[0]})")
        out[n] = rows
    return out


def build_leaderboard(
    results: ResultsInput,
    n_bootstrap: int = 1000,
    seed: int = 0,
    *,
    labels: str | os.PathLike | None = None,
) -> Leaderboard:
    """Build the leaderboard (rankings (a), (b) and, with per-case rows, (c)); see
    :mod:`evaluation.leaderboard`.

    ``labels``: optional data root whose images give each task's mean diagonal for the HD/MRE
    normalisation of the composite (used where the results record none).
    """
    subs = as_results_mapping(results)
    if not subs:
        raise FmuiaError("no submissions to rank")
    names0 = list(subs)
    notes: list[str] = []
    per_sub_tasks = {n: {t: (k, block) for k, t, block in task_blocks(r)} for n, r in subs.items()}

    # Union of tasks (kind from the first submission that has it), in kind order.
    task_kind: dict[str, TaskKind] = {}
    for n in names0:
        for t, (k, _) in per_sub_tasks[n].items():
            if task_kind.setdefault(t, k) is not k:
                raise FmuiaError(
                    f"task {t!r} is {task_kind[t].value} in one results file and {k.value} in {n!r}"
                )
    tasks = sorted(task_kind, key=lambda t: (KIND_ORDER.index(task_kind[t]), t))

    # Per-task metric columns: every finite scalar metric (counts and diagonals excluded).
    metric_columns: list[str] = []
    task_metrics: dict[str, dict[str, float | None]] = {n: {} for n in names0}
    for t in tasks:
        seen: list[str] = []
        for n in names0:
            _, m = per_sub_tasks[n].get(t, (None, {}))
            for key, v in m.items():
                if key in COUNT_KEYS or key in DIAGONAL_KEYS or _num(v) is None:
                    continue
                if key not in seen:
                    seen.append(key)
        ranked = list(RANKED_METRICS.get(task_kind[t], {}))
        ordered = ranked + [k for k in seen if k not in ranked]
        for key in ordered:
            col = f"{t}/{key}"
            metric_columns.append(col)
            for n in names0:
                _, m = per_sub_tasks[n].get(t, (None, {}))
                task_metrics[n][col] = _num(m.get(key))

    # Aggregates: as written by strict mode, else computed from the per-task metrics.
    aggregates: dict[str, dict[str, float | None]] = {}
    for n in names0:
        given = subs[n].get("aggregates")
        agg = _aggregates_from(task_metrics[n], tasks, task_kind)
        if isinstance(given, Mapping):
            agg.update({k: _num(given.get(k)) for k in AGGREGATES if k in given})
        aggregates[n] = {k: _num(agg.get(k)) for k in AGGREGATES}

    # (a) rank then aggregate.
    pairs = [(t, m) for t in tasks for m in RANKED_METRICS.get(task_kind[t], {})]
    values = np.array([[_nan(task_metrics[n].get(f"{t}/{m}")) for t, m in pairs] for n in names0],
                      dtype=float)
    values = values.reshape(len(names0), len(pairs))
    directions = [RANKED_METRICS[task_kind[t]][m] for t, m in pairs]
    mean_rank, rank = rank_then_aggregate(values, directions)

    # (b) composite.
    diagonals = _diagonals(tasks, per_sub_tasks, names0)
    if labels is not None:
        diagonals = {**{t: d for t, d in label_diagonals(labels).items() if t in task_kind}, **diagonals}
    undiag = [t for t in tasks if task_kind[t] in _DISTANCE_KINDS and t not in diagonals]
    if undiag:
        notes.append(
            f"no image diagonal for {len(undiag)} task(s) (none in the results; pass the labels root): "
            f"their HD and MRE are normalised with {DEFAULT_DIAGONAL:g} px"
        )
    scores, parts = composite(names0, tasks, task_kind, task_metrics, diagonals)

    # Order: rank, then composite (desc), then name.
    order = sorted(range(len(names0)), key=lambda i: (rank[i], -scores[i], names0[i]))
    names = [names0[i] for i in order]

    lb = Leaderboard(
        names=names,
        aggregates={n: aggregates[n] for n in names},
        metric_columns=metric_columns,
        task_metrics={n: task_metrics[n] for n in names},
        ranked_pairs=pairs,
        mean_rank=mean_rank[order],
        rank=rank[order],
        composite=scores[order],
        composite_parts={n: parts[n] for n in names},
        diagonals={t: diagonals.get(t, DEFAULT_DIAGONAL) for t in tasks if task_kind[t] in _DISTANCE_KINDS},
        notes=notes,
    )

    # (c) stability.
    if n_bootstrap <= 0:
        notes.append("ranking stability skipped (--bootstrap 0)")
    elif len(names) < 2:
        notes.append("ranking stability skipped: fewer than two submissions")
    else:
        lacking = [n for n in names
                   if not isinstance(subs[n].get("per_case"), list) or not subs[n]["per_case"]]
        if lacking:
            notes.append(
                "ranking stability skipped: no per-case results (strict mode 'per_case') for "
                + ", ".join(repr(n) for n in lacking)
            )
        else:
            n_classes = class_counts(per_sub_tasks.values())
            per_case = _case_rows(names, subs, n_classes, notes)
            lb.stability = case_bootstrap(names, per_case, task_kind, n_bootstrap, seed, notes, n_classes)
    return lb
