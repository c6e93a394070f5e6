"""Rank many submissions from their ``results.json`` files: tables, rankings and their stability.

Input: one results object per submission (what :func:`evaluation.scoring.evaluate` returns), given
as a mapping ``name -> results``, as paths to ``results.json`` files (a submission is named after
the file's parent folder; a folder stands for ``folder/results.json``), or as a CSV manifest with
columns ``name,results`` (paths relative to the manifest).

Three rankings are reported:

(a) **Rank then aggregate** (challengeR style). For every task and every *ranked metric* of its
    kind (the metrics behind the nine aggregates: segmentation DSC↑ HD↓; classification Accuracy↑
    AUC↑ F1_macro↑ F1_weighted↑ MCC↑; detection IoU↑; regression MRE↓) the submissions are ranked
    with ties sharing the lowest (best) rank (``min`` method); a submission without a value for
    that task/metric gets the worst value (it ties with the other missing ones, after every
    submission that has a value). A submission's score is the mean of its ranks; the final rank
    ranks these means the same way (lower mean is better).

(b) **Composite score** in [0, 100]. Each per-task value is mapped to [0, 1], higher is better:
    DSC, IoU, Accuracy, AUC, F1_macro, F1_weighted are clipped to [0, 1]; MCC becomes
    ``(MCC + 1) / 2``; a distance d (HD, MRE, in pixels) becomes ``clip(1 - d / diagonal, 0, 1)``,
    where ``diagonal`` is the task's mean image diagonal: recorded in a results file (task key
    ``mean_diagonal``, ``diagonal`` or ``image_diagonal``; strict mode records ``mean_diagonal``), else measured on the ``labels`` root
    when one is given, else :data:`DEFAULT_DIAGONAL` (1000 px, an 800×600 frame). A missing value
    counts 0. Each of the nine aggregate columns is the mean over the tasks of its kind of these
    normalised values (a task/metric no submission has a value for, e.g. an AUC undefined on
    these labels, is left out); the composite is 100 × the mean of the aggregate columns that
    have at least one task.

(c) **Ranking stability** (needs the strict mode's ``per_case`` rows for every submission). For
    ``n_bootstrap`` rounds the cases of each task are resampled with replacement (one seeded draw
    per task and round, shared by all submissions: a paired bootstrap); per-task metrics are
    recomputed from the per-case values and ranking (a) is redone. Recomputed are the metrics that
    are means of per-case values (:data:`PER_CASE_METRICS`: DSC, HD, Accuracy from the ``correct``
    column, IoU, MRE) and, when every submission's classification rows carry ``label`` and
    ``predicted`` (strict mode writes them), F1_macro, F1_weighted and MCC from the resampled
    confusion matrix (:data:`CONFUSION_METRICS`, same definitions as strict mode: an invalid
    prediction is wrong and a false positive for no class). AUC is **not** bootstrapped: the
    per-case rows keep only the probability of the true class, not the full vector. The
    reference ranking for Kendall's τ is ranking (a) with the recomputed metrics on all cases. Reported: Kendall's τ_b of every bootstrap ranking to the reference
    (mean, median, 2.5 % and 97.5 % quantiles), each submission's 95 % rank interval, and the
    raw bootstrap rank samples (for blob plots).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from scipy.stats import rankdata

from evaluation.aggregates import AGGREGATES, HIGHER, LOWER
from fmuia._atomic import write_json, write_text
from fmuia.errors import FmuiaError, Problem
from fmuia.tasks import TaskKind

DEFAULT_DIAGONAL = 1000.0
DIAGONAL_KEYS = ("mean_diagonal", "diagonal", "image_diagonal")
ARROWS = {HIGHER: "↑", LOWER: "↓"}
NOT_METRICS = ("num_samples", "num_failed")  # per-task counts, not metrics

# kind -> {metric: direction} for the metrics that are ranked (those behind the nine aggregates).
RANKED_METRICS: dict[TaskKind, dict[str, str]] = {}
for _key, (_kind, _metric, _direction) in AGGREGATES.items():
    RANKED_METRICS.setdefault(_kind, {})[_metric] = _direction
del _key, _kind, _metric, _direction

# kind -> {metric: per-case column whose mean is the task's metric} (bootstrap recomputation).
PER_CASE_METRICS: dict[TaskKind, dict[str, str]] = {
    TaskKind.SEGMENTATION: {"DSC": "DSC", "HD": "HD"},
    TaskKind.CLASSIFICATION: {"Accuracy": "correct"},
    TaskKind.DETECTION: {"IoU": "IoU"},
    TaskKind.REGRESSION: {"MRE": "MRE"},
}


def _confusion_counts(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``cm[..., c, c+1]`` (last column: invalid predictions) -> tp, fp, fn, support per class."""
    c = cm.shape[-2]
    tp = np.diagonal(cm[..., :c], axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    fp = cm[..., :c].sum(axis=-2) - tp
    return tp, fp, support - tp, support


def _f1_classes(cm: np.ndarray) -> np.ndarray:
    tp, fp, fn, _ = _confusion_counts(cm)
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros(den.shape), where=den > 0)


def batch_f1_macro(cm: np.ndarray) -> np.ndarray:
    """Macro F1 of each confusion matrix in ``cm[..., c, c+1]``: mean over the classes present in
    the labels or the valid predictions (sklearn's label set, zero_division 0); none -> 0."""
    c = cm.shape[-2]
    present = (cm.sum(axis=-1) > 0) | (cm[..., :c].sum(axis=-2) > 0)
    n = present.sum(axis=-1)
    total = np.where(present, _f1_classes(cm), 0.0).sum(axis=-1)
    return np.divide(total, n, out=np.zeros(total.shape), where=n > 0)


def batch_f1_weighted(cm: np.ndarray) -> np.ndarray:
    """Support-weighted F1 of each confusion matrix in ``cm[..., c, c+1]``; no samples -> 0."""
    support = cm.sum(axis=-1)
    total = support.sum(axis=-1)
    num = (_f1_classes(cm) * support).sum(axis=-1)
    return np.divide(num, total, out=np.zeros(num.shape), where=total > 0)


def batch_mcc(cm: np.ndarray) -> np.ndarray:
    """Multi-class MCC of each ``cm[..., c, c+1]`` (the invalid column is a class never true); 0/0 -> 0."""
    cm = np.asarray(cm, dtype=float)
    c = cm.shape[-2]
    t = cm.sum(axis=-1)
    pred = cm[..., :c].sum(axis=-2)
    n = cm.sum(axis=(-2, -1))
    correct = np.trace(cm[..., :c], axis1=-2, axis2=-1)
    extra = cm[..., c].sum(axis=-1)
    cov_tp = correct * n - (t * pred).sum(axis=-1)
    cov_pp = n * n - (pred * pred).sum(axis=-1) - extra * extra
    cov_tt = n * n - (t * t).sum(axis=-1)
    den = cov_tt * cov_pp
    return np.divide(cov_tp, np.sqrt(np.where(den > 0, den, 1.0)), out=np.zeros(cov_tp.shape), where=den > 0)


# classification metric -> f(confusion matrices [..., c, c+1]) (bootstrap recomputation).
CONFUSION_METRICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "F1_macro": batch_f1_macro,
    "F1_weighted": batch_f1_weighted,
    "MCC": batch_mcc,
}


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

# name -> results dict (or path); a list of results.json paths/folders; a manifest CSV path.
ResultsInput = Union[Mapping[str, Union[Mapping, str, os.PathLike]], Sequence[Union[str, os.PathLike]], str, os.PathLike]  # noqa: UP007


# ---- loading ---------------------------------------------------------------------------------------

def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
    except FileNotFoundError:
        raise FmuiaError(f"{path}: results file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FmuiaError(f"{path}: not valid UTF-8 JSON ({exc})") from None
    if not isinstance(value, dict):
        raise FmuiaError(f"{path}: expected a JSON object (a results.json from `fmuia evaluate`), got {type(value).__name__}")
    if not any(k.value in value for k in TaskKind):
        raise FmuiaError(f"{path}: no 'segmentation', 'classification', 'detection' or 'regression' key; not a results.json")
    return value


def read_manifest(path: str | os.PathLike) -> dict[str, Path]:
    """``name -> results path`` from a CSV with columns ``name,results`` (paths relative to the CSV)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = {"name", "results"} - set(reader.fieldnames or [])
            if missing:
                raise FmuiaError(f"{path}: manifest needs the columns name,results; missing {sorted(missing)}")
            out: dict[str, Path] = {}
            problems = []
            for row, rec in enumerate(reader, start=2):
                name, res = (rec.get("name") or "").strip(), (rec.get("results") or "").strip()
                if not name or not res:
                    problems.append(Problem(str(path), str(row), "empty name or results"))
                elif name in out:
                    problems.append(Problem(str(path), str(row), f"duplicate name {name!r}"))
                else:
                    p = Path(res)
                    out[name] = p if p.is_absolute() else path.parent / p
    except FileNotFoundError:
        raise FmuiaError(f"{path}: manifest not found") from None
    if problems:
        raise FmuiaError(f"{path}: {len(problems)} problem(s) in the manifest", problems)
    return out


def _results_file(p: Path) -> Path:
    return p / "results.json" if p.is_dir() else p


def load_results(paths: Sequence[str | os.PathLike] = (), manifest: str | os.PathLike | None = None) -> dict[str, dict]:
    """Load results files: each named by its parent folder (a ``.csv`` in ``paths`` is a manifest)."""
    named: dict[str, Path] = {}
    sources: list[tuple[str, Path]] = []
    if manifest is not None:
        sources += list(read_manifest(manifest).items())
    for raw in paths:
        p = Path(raw)
        if p.suffix.lower() == ".csv":
            sources += list(read_manifest(p).items())
            continue
        f = _results_file(p)
        sources.append((f.resolve().parent.name or str(f), f))
    for name, f in sources:
        if name in named:
            raise FmuiaError(
                f"two submissions are both named {name!r} ({named[name]} and {f}); "
                "name them with a manifest CSV (columns name,results)"
            )
        named[name] = f
    if not named:
        raise FmuiaError("no results given: pass results.json files (or their folders) or --manifest CSV")
    return {name: _read_json(f) for name, f in named.items()}


# ---- the leaderboard -------------------------------------------------------------------------------

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
        t = self.tau[~np.isnan(self.tau)]
        if t.size == 0:
            return {"mean": None, "median": None, "q025": None, "q975": None}
        q = np.quantile(t, [0.025, 0.5, 0.975])
        return {"mean": float(t.mean()), "median": float(q[1]), "q025": float(q[0]), "q975": float(q[2])}

    def rank_intervals(self) -> np.ndarray:
        """[S, 2]: the 2.5 % and 97.5 % quantiles of each submission's bootstrap ranks (observed values)."""
        return np.quantile(self.rank_samples, [0.025, 0.975], axis=0, method="inverted_cdf").T


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
        return rankdata(-np.round(self.composite, 9), method="min").astype(int)

    def table(self, per_task: bool = True):
        """The leaderboard as a pandas DataFrame, one row per submission, in ranked order."""
        import pandas as pd

        rows = []
        intervals = self.stability.rank_intervals() if self.stability is not None else None
        for i, name in enumerate(self.names):
            row: dict[str, Any] = {"rank": int(self.rank[i]), "name": name, "mean_rank": float(self.mean_rank[i])}
            row["composite"] = float(self.composite[i])
            row["composite_rank"] = int(self.composite_rank[i])
            if intervals is not None:
                row["rank_ci_low"], row["rank_ci_high"] = int(intervals[i, 0]), int(intervals[i, 1])
            for key in AGGREGATES:
                row[key] = self.aggregates[name].get(key)
            if per_task:
                for col in self.metric_columns:
                    row[col] = self.task_metrics[name].get(col)
            rows.append(row)
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        """JSON-ready: rows, column descriptions, rankings, stability (with the bootstrap rank samples)."""
        df = self.table()
        rows = [{k: _clean(v) for k, v in rec.items()} for rec in df.to_dict(orient="records")]
        out: dict[str, Any] = {
            "submissions": list(self.names),
            "rows": rows,
            "aggregates": {k: {"kind": kind.value, "metric": m, "direction": d} for k, (kind, m, d) in AGGREGATES.items()},
            "metric_columns": list(self.metric_columns),
            "ranking": {
                "method": "rank-then-aggregate: per task and ranked metric, rank with ties sharing the lowest rank "
                "(missing = worst), mean rank per submission, rank again",
                "pairs": [f"{t}/{m}" for t, m in self.ranked_pairs],
            },
            "composite": {
                "normalization": "DSC, IoU, Accuracy, AUC, F1 clipped to [0,1]; MCC -> (MCC+1)/2; HD, MRE -> "
                "clip(1 - d/diagonal, 0, 1); missing -> 0; mean over tasks per aggregate, mean over aggregates, x100",
                "diagonals": self.diagonals,
                "default_diagonal": DEFAULT_DIAGONAL,
                "parts": {n: {k: _clean(v) for k, v in p.items()} for n, p in self.composite_parts.items()},
            },
            "stability": None,
            "notes": list(self.notes),
        }
        st = self.stability
        if st is not None:
            iv = st.rank_intervals()
            out["stability"] = {
                "n_bootstrap": st.n_bootstrap,
                "seed": st.seed,
                "metrics": st.metrics,
                "reference_rank": {n: int(r) for n, r in zip(self.names, st.reference_rank, strict=True)},
                "kendall_tau": {k: _clean(v) for k, v in st.tau_summary().items()},
                "rank_interval_95": {n: [int(iv[i, 0]), int(iv[i, 1])] for i, n in enumerate(self.names)},
                "rank_samples": {n: st.rank_samples[:, i].astype(int).tolist() for i, n in enumerate(self.names)},
                "tau_samples": [_clean(float(t)) for t in st.tau],
            }
        return out

    def format_table(self) -> str:
        """A plain-text ranked table (rank, name, composite, mean rank, rank interval, nine aggregates)."""
        headers, body = _main_rows(self, plain=True)
        widths = [max(len(h), *(len(r[j]) for r in body)) if body else len(h) for j, h in enumerate(headers)]
        lines = ["  ".join(h.ljust(w) if j == 1 else h.rjust(w) for j, (h, w) in enumerate(zip(headers, widths, strict=True)))]
        for r in body:
            lines.append("  ".join(c.ljust(w) if j == 1 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True))))
        if self.notes:
            lines += ["", *(f"note: {n}" for n in self.notes)]
        return "\n".join(lines)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _clean(v: Any) -> Any:
    """JSON-safe scalar: numpy -> python, NaN/inf -> None."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


# ---- rankings --------------------------------------------------------------------------------------

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


# ---- building --------------------------------------------------------------------------------------

def _tasks_of(results: Mapping) -> dict[str, tuple[TaskKind, Mapping]]:
    out: dict[str, tuple[TaskKind, Mapping]] = {}
    for kind in TaskKind:
        for task_id, metrics in (results.get(kind.value) or {}).items():
            if isinstance(metrics, Mapping):
                out[task_id] = (kind, metrics)
    return out


def _as_results_mapping(results: ResultsInput) -> dict[str, dict]:
    if isinstance(results, Mapping):
        return {
            str(k): _read_json(_results_file(Path(v))) if isinstance(v, (str, os.PathLike)) else dict(v)
            for k, v in results.items()
        }
    if isinstance(results, (str, os.PathLike)):
        p = Path(results)
        return load_results(manifest=p) if p.suffix.lower() == ".csv" else load_results([p])
    return load_results(list(results))


def label_diagonals(labels_root: str | os.PathLike) -> dict[str, float]:
    """``task_id -> mean image diagonal`` (pixels) of a data root's images (read from file headers)."""
    from fmuia.dataset import load_root
    from fmuia.dataset.images import image_size

    sums: dict[str, list[float]] = {}
    for s in load_root(labels_root).samples:
        w, h = image_size(s.image_file)
        sums.setdefault(s.task_id, []).append(math.hypot(w, h))
    return {t: float(np.mean(v)) for t, v in sums.items()}


def build_leaderboard(
    results: ResultsInput,
    n_bootstrap: int = 1000,
    seed: int = 0,
    *,
    labels: str | os.PathLike | None = None,
) -> Leaderboard:
    """Build the leaderboard (rankings (a), (b) and, with per-case rows, (c)); see the module docstring.

    ``labels``: optional data root whose images give each task's mean diagonal for the HD/MRE
    normalisation of the composite (used where the results record none).
    """
    subs = _as_results_mapping(results)
    if not subs:
        raise FmuiaError("no submissions to rank")
    names0 = list(subs)
    notes: list[str] = []
    per_sub_tasks = {n: _tasks_of(r) for n, r in subs.items()}

    # Union of tasks (kind from the first submission that has it), in registry-kind order.
    task_kind: dict[str, TaskKind] = {}
    for n in names0:
        for t, (k, _) in per_sub_tasks[n].items():
            if task_kind.setdefault(t, k) is not k:
                raise FmuiaError(f"task {t!r} is {task_kind[t].value} in one results file and {k.value} in {n!r}")
    tasks = sorted(task_kind, key=lambda t: (list(TaskKind).index(task_kind[t]), t))

    # Per-task metric columns: every finite scalar metric (num_samples and diagonals excluded).
    metric_columns: list[str] = []
    task_metrics: dict[str, dict[str, float | None]] = {n: {} for n in names0}
    for t in tasks:
        seen: list[str] = []
        for n in names0:
            _, m = per_sub_tasks[n].get(t, (None, {}))
            for key, v in m.items():
                if key in NOT_METRICS or key in DIAGONAL_KEYS or _num(v) is None:
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
    values = np.array([[_nan(task_metrics[n].get(f"{t}/{m}")) for t, m in pairs] for n in names0], dtype=float)
    values = values.reshape(len(names0), len(pairs))
    directions = [RANKED_METRICS[task_kind[t]][m] for t, m in pairs]
    mean_rank, rank = rank_then_aggregate(values, directions)

    # (b) composite.
    diagonals = _diagonals(tasks, per_sub_tasks, names0)
    if labels is not None:
        diagonals = {**{t: d for t, d in label_diagonals(labels).items() if t in task_kind}, **diagonals}
    undiag = [t for t in tasks if task_kind[t] in (TaskKind.SEGMENTATION, TaskKind.REGRESSION) and t not in diagonals]
    if undiag:
        notes.append(
            f"no image diagonal for {len(undiag)} task(s) (none in the results; pass the labels root): "
            f"their HD and MRE are normalised with {DEFAULT_DIAGONAL:g} px"
        )
    composite, parts = _composite(names0, tasks, task_kind, task_metrics, diagonals)

    # Order: rank, then composite (desc), then name.
    order = sorted(range(len(names0)), key=lambda i: (rank[i], -composite[i], names0[i]))
    names = [names0[i] for i in order]

    lb = Leaderboard(
        names=names,
        aggregates={n: aggregates[n] for n in names},
        metric_columns=metric_columns,
        task_metrics={n: task_metrics[n] for n in names},
        ranked_pairs=pairs,
        mean_rank=mean_rank[order],
        rank=rank[order],
        composite=composite[order],
        composite_parts={n: parts[n] for n in names},
        diagonals={t: diagonals.get(t, DEFAULT_DIAGONAL) for t in tasks if task_kind[t] in (TaskKind.SEGMENTATION, TaskKind.REGRESSION)},
        notes=notes,
    )

    # (c) stability.
    if n_bootstrap <= 0:
        notes.append("ranking stability skipped (--bootstrap 0)")
    elif len(names) < 2:
        notes.append("ranking stability skipped: fewer than two submissions")
    else:
        lacking = [n for n in names if not isinstance(subs[n].get("per_case"), list) or not subs[n]["per_case"]]
        if lacking:
            notes.append(
                "ranking stability skipped: no per-case results (strict mode 'per_case') for "
                + ", ".join(repr(n) for n in lacking)
            )
        else:
            with _one_blas_thread():  # many small products: threads only contend
                lb.stability = _bootstrap(names, {n: subs[n]["per_case"] for n in names}, task_kind, n_bootstrap, seed, notes,
                                          _class_counts(per_sub_tasks))
    return lb


def _aggregates_from(metrics: dict[str, float | None], tasks: list[str], task_kind: dict) -> dict[str, float | None]:
    """Like :func:`evaluation.aggregates.compute_aggregates`, skipping missing values."""
    out: dict[str, float | None] = {}
    for key, (kind, metric, _d) in AGGREGATES.items():
        vals = [metrics.get(f"{t}/{metric}") for t in tasks if task_kind[t] is kind]
        vals = [v for v in vals if v is not None]
        out[key] = float(np.mean(vals)) if vals else None
    return out


def _case_value(v: Any) -> float:
    """A per-case value as float (bools count 0/1, e.g. ``correct``); NaN when absent or not a number."""
    if type(v) is float:
        return v if math.isfinite(v) else np.nan
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, (bool, int, float)):
        v = float(v)
        return v if math.isfinite(v) else np.nan
    return np.nan


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - comes with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1)


def _nan(v: float | None) -> float:
    return np.nan if v is None else v


def _diagonals(tasks: list[str], per_sub_tasks: dict, names: list[str]) -> dict[str, float]:
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


def _composite(names, tasks, task_kind, task_metrics, diagonals) -> tuple[np.ndarray, dict]:
    parts: dict[str, dict[str, float | None]] = {}
    scores = []
    for n in names:
        p: dict[str, float | None] = {}
        for key, (kind, metric, _d) in AGGREGATES.items():
            # Tasks where nobody has a value (metric undefined on these labels) are left out.
            ts = [t for t in tasks if task_kind[t] is kind and any(task_metrics[m].get(f"{t}/{metric}") is not None for m in names)]
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


def _class_counts(per_sub_tasks: dict) -> dict[str, int]:
    """task_id -> number of classes, from the ``per_class`` blocks of classification results."""
    out: dict[str, int] = {}
    for tasks in per_sub_tasks.values():
        for t, (kind, m) in tasks.items():
            per_class = m.get("per_class")
            if kind is TaskKind.CLASSIFICATION and isinstance(per_class, Mapping):
                out[t] = max(out.get(t, 0), len(per_class))
    return out


def _class_index(v: Any) -> int | None:
    """A per-case ``label``/``predicted`` as a class index; ``None`` when absent or not an integer."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return v if isinstance(v, int) else None


def _confusion_columns(names, rows_by_task: dict, cases: list[str], counts: np.ndarray,
                       n_classes: int) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Classification metrics recomputed from per-case ``label``/``predicted``: metric -> (boot [S, B],
    ref [S]); ``None`` when some submission's rows lack them."""
    codes = []
    for n in names:
        per = rows_by_task.get(n, {})
        y, p, ok = [], [], []
        for c in cases:
            r = per.get(c)
            if r is None:
                y.append(0)
                p.append(0)
                ok.append(False)
                continue
            label = _class_index(r.get("label"))
            if "predicted" not in r or label is None or label < 0:
                return None
            pred = _class_index(r.get("predicted"))
            y.append(label)
            p.append(-1 if pred is None else pred)
            ok.append(True)
        codes.append((np.array(y, dtype=np.intp), np.array(p, dtype=np.intp), np.array(ok, dtype=bool)))
    c = max([n_classes, *(int(y[ok].max()) + 1 for y, _, ok in codes if ok.any())])
    k = c * (c + 1)
    boot: dict[str, list[np.ndarray]] = {m: [] for m in CONFUSION_METRICS}
    ref: dict[str, list[float]] = {m: [] for m in CONFUSION_METRICS}
    for y, p, ok in codes:
        p = np.where((p < 0) | (p >= c), c, p)
        onehot = np.zeros((len(cases), k))
        idx = np.flatnonzero(ok)
        onehot[idx, y[idx] * (c + 1) + p[idx]] = 1.0
        cm_boot = (counts @ onehot).reshape(-1, c, c + 1)  # [B, c, c+1]
        cm_ref = onehot.sum(axis=0).reshape(c, c + 1)
        for m, fn in CONFUSION_METRICS.items():
            boot[m].append(fn(cm_boot))
            ref[m].append(float(fn(cm_ref)))
    return {m: (np.stack(boot[m]), np.array(ref[m])) for m in CONFUSION_METRICS}


def _bootstrap(names, per_case, task_kind, n_bootstrap, seed, notes, n_classes=None) -> Stability | None:
    """Paired case bootstrap of ranking (a) restricted to the metrics per-case rows give."""
    rng = np.random.default_rng(seed)
    s = len(names)
    # Collect per task: case keys and a value matrix per metric.
    rows_by: dict[str, dict[str, dict[str, Mapping]]] = {}  # task -> name -> image_path -> row
    for n in names:
        for r in per_case[n]:
            if not isinstance(r, Mapping) or "task_id" not in r:
                continue
            rows_by.setdefault(str(r["task_id"]), {}).setdefault(n, {})[str(r.get("image_path"))] = r
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

    for t in sorted(rows_by, key=lambda t: (list(TaskKind).index(task_kind[t]) if t in task_kind else 9, t)):
        kind = task_kind.get(t)
        if kind is None:
            continue
        cases = sorted({c for per in rows_by[t].values() for c in per})
        n_cases = len(cases)
        if n_cases == 0:
            continue
        idx = rng.integers(0, n_cases, size=(n_bootstrap, n_cases))
        flat = (np.arange(n_bootstrap)[:, None] * n_cases + idx).ravel()
        counts = np.bincount(flat, minlength=n_bootstrap * n_cases).reshape(n_bootstrap, n_cases).astype(float)
        for metric, column in PER_CASE_METRICS[kind].items():
            v = np.full((s, n_cases), np.nan)
            for i, n in enumerate(names):
                per = rows_by[t].get(n, {})
                for j, c in enumerate(cases):
                    if c in per:
                        v[i, j] = _case_value(per[c].get(column))
            if np.isnan(v).all():
                continue
            ok = ~np.isnan(v)
            filled = np.where(ok, v, 0.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                boot = (filled @ counts.T) / (ok.astype(float) @ counts.T)  # [S, B]; NaN when no valid case drawn
                ref = filled.sum(axis=1) / ok.sum(axis=1)
            add(kind, metric, boot, ref)
        if kind is TaskKind.CLASSIFICATION:
            conf = _confusion_columns(names, rows_by[t], cases, counts, (n_classes or {}).get(t, 0))
            for metric, (boot, ref) in (conf or {}).items():
                add(kind, metric, boot, ref)
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


# ---- writing ---------------------------------------------------------------------------------------

REPORT_DIR = "report"


def write_leaderboard(lb: Leaderboard, out_dir: str | os.PathLike, *, report: bool = False) -> dict[str, Path]:
    """Write ``leaderboard.{csv,json,md,html}`` into ``out_dir`` (each atomically); returns their paths.

    ``report=True`` also writes the picture report (aggregates per submission and the rank-stability
    blob plot, :func:`evaluation.report.write_leaderboard_report`) to ``out_dir/report/index.html``
    (key ``"report"``) and links it from ``leaderboard.html``. It needs matplotlib.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"leaderboard.{ext}" for ext in ("csv", "json", "md", "html")}
    write_text(paths["csv"], lb.table().to_csv(index=False, lineterminator="\n"))
    write_json(paths["json"], lb.to_dict())
    write_text(paths["md"], to_markdown(lb))
    link = None
    if report:
        from evaluation.report import write_leaderboard_report

        paths["report"] = write_leaderboard_report(lb, out / REPORT_DIR)
        link = paths["report"].relative_to(out).as_posix()
    write_text(paths["html"], to_html(lb, report_link=link))
    return paths


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _main_rows(lb: Leaderboard, *, plain: bool = False) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the ranked table; ``plain`` for the terminal, else for Markdown/HTML."""
    headers = ["rank", "name", "composite", "mean_rank"] if plain else ["Rank", "Submission", "Composite ↑", "Mean rank ↓"]
    iv = lb.stability.rank_intervals() if lb.stability is not None else None
    if iv is not None:
        headers.append("rank 95%" if plain else "Rank 95% CI")
    headers += [f"{k}{ARROWS[d]}" if plain else f"{k} {ARROWS[d]}" for k, (_, _, d) in AGGREGATES.items()]
    dash = "-" if plain else "–"
    rows = []
    for i, n in enumerate(lb.names):
        r = [str(int(lb.rank[i])), n, f"{lb.composite[i]:.2f}", f"{lb.mean_rank[i]:.3f}"]
        if iv is not None:
            r.append(f"{int(iv[i, 0])}{dash}{int(iv[i, 1])}")
        r += [_fmt(lb.aggregates[n].get(k)) for k in AGGREGATES]
        rows.append(r)
    return headers, rows


def _direction_of(col: str) -> str:
    metric = col.rsplit("/", 1)[-1]
    for dirs in RANKED_METRICS.values():
        if metric in dirs:
            return ARROWS[dirs[metric]]
    return ARROWS[LOWER] if metric.startswith("HD") else ""


def _stability_lines(lb: Leaderboard) -> list[str]:
    st = lb.stability
    if st is None:
        return []
    ts = st.tau_summary()
    return [
        f"Bootstrap: {st.n_bootstrap} rounds (seed {st.seed}), cases resampled per task, metrics: {', '.join(st.metrics)}.",
        "Kendall's tau_b to the all-cases ranking: mean {}, median {}, 95% interval [{}, {}].".format(
            _fmt(ts["mean"], 3), _fmt(ts["median"], 3), _fmt(ts["q025"], 3), _fmt(ts["q975"], 3)
        ),
    ]


METHOD_TEXT = [
    "Rank then aggregate: for every task and ranked metric (DSC, HD; Accuracy, AUC, F1_macro, F1_weighted, MCC; "
    "IoU; MRE) the submissions are ranked (ties share the best rank, missing = worst); the mean of a "
    "submission's ranks is ranked again. Ties in the final rank are listed by composite score.",
    "Composite (0-100): DSC, IoU, Accuracy, AUC, F1 in [0,1]; MCC as (MCC+1)/2; HD and MRE as "
    "1 - d/diagonal (the task's mean image diagonal) clipped to [0,1]; missing = 0; mean over tasks per "
    "aggregate (tasks where no submission has the metric left out), mean of the aggregates, x100.",
    "Rank 95% CI: the cases of every task are bootstrapped (paired across submissions) and the ranking redone "
    "on the metrics that per-case rows give (DSC, HD, Accuracy, F1_macro, F1_weighted, MCC, IoU, MRE; not AUC, "
    "whose per-case probabilities are not kept); 2.5% and 97.5% quantiles of each submission's rank.",
]


def to_markdown(lb: Leaderboard) -> str:
    """The leaderboard as Markdown: ranked table, method, stability, per-task metrics."""
    headers, rows = _main_rows(lb)
    parts = ["# Leaderboard", "", _md_table(headers, rows), "", "## Method", ""]
    parts += [f"- {t}" for t in METHOD_TEXT]
    if lb.stability is not None:
        parts += ["", "## Ranking stability", ""] + [f"- {t}" for t in _stability_lines(lb)]
    if lb.notes:
        parts += ["", "## Notes", ""] + [f"- {n}" for n in lb.notes]
    parts += ["", "## Per-task metrics", ""]
    ph = ["Task / metric", *lb.names]
    pr = [[f"{c} {_direction_of(c)}".strip(), *(_fmt(lb.task_metrics[n].get(c)) for n in lb.names)] for c in lb.metric_columns]
    parts += [_md_table(ph, pr), ""]
    return "\n".join(parts)


def to_html(lb: Leaderboard, report_link: str | None = None) -> str:
    """The leaderboard as one self-contained HTML page (inline CSS, no scripts, no external resources);
    ``report_link``: relative path of the picture report to link to."""
    from evaluation import html as H

    headers, rows = _main_rows(lb)
    # Bold the best value of each aggregate column.
    hl = [[False] * len(headers) for _ in rows]
    first_agg = len(headers) - len(AGGREGATES)
    for j, (key, (_, _, d)) in enumerate(AGGREGATES.items()):
        vals = [lb.aggregates[n].get(key) for n in lb.names]
        finite = [v for v in vals if v is not None]
        if finite:
            best = max(finite) if d == HIGHER else min(finite)
            for i, v in enumerate(vals):
                hl[i][first_agg + j] = v is not None and v == best
    body = [H.table(headers, rows, left=2, highlight=hl)]
    if report_link is not None:
        from urllib.parse import quote

        body.append(f'<p>Plots (aggregates per submission, rank stability): <a href="{H.esc(quote(report_link))}">'
                    f"{H.esc(report_link)}</a></p>")
    body += ["<h2>Method</h2>", H.bullet_list(METHOD_TEXT)]
    if lb.stability is not None:
        body += ["<h2>Ranking stability</h2>", H.bullet_list(_stability_lines(lb))]
    if lb.notes:
        body += ["<h2>Notes</h2>", H.bullet_list(lb.notes)]
    body.append("<h2>Per-task metrics</h2>")
    pr = [[f"{c} {_direction_of(c)}".strip(), *(lb.task_metrics[n].get(c) for n in lb.names)] for c in lb.metric_columns]
    body.append(H.table(["Task / metric", *lb.names], pr, left=1))
    return H.page("Leaderboard", body)
