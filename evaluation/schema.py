"""The results schema: the one place the fields of a results object are named.

A results object (what :func:`evaluation.scoring.evaluate` returns and ``results.json`` holds) is::

    {"segmentation": {task_id: TaskBlock, ...}, "classification": {...}, "detection": {...},
     "regression": {...},                                  # a kind appears when the labels have it
     "aggregates": {key: float | None},                    # strict mode: the nine AGGREGATES
     "per_case": [CaseRow.to_dict(), ...],                 # strict mode
     "notes": [str, ...], "mode": "strict"}                # strict mode

A task block holds the kind's :data:`TASK_METRICS` (floats; ``None`` where undefined), the counts
``num_samples`` / ``num_failed``, ``per_class`` and, in strict mode, ``ci95`` (metric → ``[lo, hi]``)
and ``mean_diagonal``. Per-case rows are :class:`CaseRow`: the writer, the leaderboard, the plots,
the report and the Codabench program read them through :func:`read_cases`, which also checks what
a results file from elsewhere holds (wrong types and absurd values are refused per row, with the
reason, instead of being trusted).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from fmuia.tasks import TaskKind

__all__ = [
    "KIND_ORDER",
    "TASK_METRICS",
    "COUNT_KEYS",
    "DIRECTIONS",
    "HIGHER",
    "LOWER",
    "AGGREGATES",
    "CaseRow",
    "CASE_COLUMNS",
    "CASE_METRICS",
    "read_cases",
    "task_blocks",
    "check_results",
    "METRIC_RANGES",
]

KIND_ORDER = (TaskKind.SEGMENTATION, TaskKind.CLASSIFICATION, TaskKind.DETECTION, TaskKind.REGRESSION)

# The headline metrics of a task block, per kind (summary tables show them in this order).
TASK_METRICS: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.SEGMENTATION: ("DSC", "HD", "HD95"),
    TaskKind.CLASSIFICATION: ("Accuracy", "AUC", "F1_macro", "F1_weighted", "MCC"),
    TaskKind.DETECTION: ("IoU", "AP"),
    TaskKind.REGRESSION: ("MRE",),
}
COUNT_KEYS = ("num_samples", "num_failed")  # per-task counts, not metrics

HIGHER = "higher"
LOWER = "lower"
# Which way is better, for every metric a task block may hold.
DIRECTIONS: dict[str, str] = {
    **{m: HIGHER for ms in TASK_METRICS.values() for m in ms},
    "HD": LOWER, "HD95": LOWER, "MRE": LOWER, "AP50": HIGHER, "AP75": HIGHER,
}

# The nine leaderboard aggregates (also the Codabench ``scores.json`` keys):
# ``key -> (kind, metric, direction)``; the aggregate is the mean of ``metric`` over the kind's tasks.
AGGREGATES: dict[str, tuple[TaskKind, str, str]] = {
    "seg_DSC": (TaskKind.SEGMENTATION, "DSC", HIGHER),
    "seg_HD": (TaskKind.SEGMENTATION, "HD", LOWER),
    "cls_Accuracy": (TaskKind.CLASSIFICATION, "Accuracy", HIGHER),
    "cls_AUC": (TaskKind.CLASSIFICATION, "AUC", HIGHER),
    "cls_F1_macro": (TaskKind.CLASSIFICATION, "F1_macro", HIGHER),
    "cls_F1_weighted": (TaskKind.CLASSIFICATION, "F1_weighted", HIGHER),
    "cls_MCC": (TaskKind.CLASSIFICATION, "MCC", HIGHER),
    "det_IoU": (TaskKind.DETECTION, "IoU", HIGHER),
    "reg_MRE": (TaskKind.REGRESSION, "MRE", LOWER),
}


@dataclass(frozen=True)
class CaseRow:
    """One scored label row (strict mode). Metric fields that do not apply to the kind are ``None``.

    ``reason`` is ``None`` when the prediction was valid, else why the row scored the worst.
    Segmentation: ``DSC``, ``HD``, ``HD95`` (means over foreground classes). Classification:
    ``label``, ``predicted`` (``None`` for an invalid prediction), ``correct``, ``prob_true``.
    Detection: ``IoU``. Regression: ``MRE`` (pixels).
    """

    task_id: str
    kind: TaskKind
    image_path: str
    DSC: float | None = None  # noqa: N815 - the metric's name, as in results.json
    HD: float | None = None  # noqa: N815
    HD95: float | None = None  # noqa: N815
    label: int | None = None
    predicted: int | None = None
    correct: bool | None = None
    prob_true: float | None = None
    IoU: float | None = None  # noqa: N815
    MRE: float | None = None  # noqa: N815
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON row: identity, the kind's own columns (:data:`CASE_METRICS`) and ``reason``."""
        out: dict[str, Any] = {"task_id": self.task_id, "kind": self.kind.value, "image_path": self.image_path}
        for name in CASE_METRICS[self.kind]:
            out[name] = getattr(self, name)
        out["reason"] = self.reason
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, max_label: int | None = None) -> CaseRow:
        """Parse a row of a results file; raises ``ValueError`` saying what is wrong.

        Numbers must be finite (``None`` allowed); class indices non-negative integers below
        ``max_label`` when given (so a hostile row cannot make a caller allocate by its value).
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"expected an object, got {type(d).__name__}")
        task_id, image_path, kind_name = d.get("task_id"), d.get("image_path"), d.get("kind")
        if not isinstance(task_id, str) or not isinstance(image_path, str):
            raise ValueError("task_id and image_path must be strings")
        try:
            kind = TaskKind(kind_name) if isinstance(kind_name, str) else None
        except ValueError:
            kind = None
        if kind is None:
            raise ValueError(f"kind {kind_name!r} is not one of {', '.join(k.value for k in TaskKind)}")
        values: dict[str, Any] = {}
        for name in CASE_METRICS[kind]:
            v = _plain(d.get(name))
            if name in ("label", "predicted"):
                values[name] = _class_index(name, v, max_label)
            elif name == "correct":
                if v is not None and not isinstance(v, bool):
                    raise ValueError(f"correct must be true, false or null, got {v!r}")
                values[name] = v
            else:
                values[name] = _finite(name, v)
        reason = d.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ValueError(f"reason must be a string or null, got {type(reason).__name__}")
        return cls(task_id, kind, image_path, reason=reason, **values)


CASE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(CaseRow))
CASE_METRICS: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.SEGMENTATION: ("DSC", "HD", "HD95"),
    TaskKind.CLASSIFICATION: ("label", "predicted", "correct", "prob_true"),
    TaskKind.DETECTION: ("IoU",),
    TaskKind.REGRESSION: ("MRE",),
}


def _plain(v: Any) -> Any:
    """numpy scalars (results built in memory) as the Python values JSON would give."""
    return v.item() if type(v).__module__ == "numpy" and hasattr(v, "item") else v


def _finite(name: str, v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{name} must be a number or null, got {type(v).__name__}")
    try:
        f = float(v)
    except OverflowError:
        raise ValueError(f"{name} is beyond the float range") from None
    if not math.isfinite(f):
        raise ValueError(f"{name} must be finite, got {f}")
    return f


def _class_index(name: str, v: Any, max_label: int | None) -> int | None:
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{name} must be a non-negative integer class index or null, got {v!r}")
    if max_label is not None and v >= max_label:
        raise ValueError(f"{name} {v} is not below the task's {max_label} classes")
    return v


def read_cases(results: Mapping[str, Any], *, max_labels: Mapping[str, int] | None = None
               ) -> tuple[list[CaseRow], list[str]]:
    """The per-case rows of a results object, parsed: ``(rows, problems)``.

    A row that does not parse is left out and described in ``problems`` (``"per_case[i]: ..."``).
    ``max_labels`` (task id → number of classes) bounds class indices per task.
    """
    raw = results.get("per_case")
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        return [], [f"per_case: expected a list, got {type(raw).__name__}"]
    rows: list[CaseRow] = []
    problems: list[str] = []
    for i, d in enumerate(raw):
        try:
            limit = None
            if max_labels is not None and isinstance(d, Mapping) and isinstance(d.get("task_id"), str):
                limit = max_labels.get(d["task_id"])
            rows.append(CaseRow.from_dict(d, max_label=limit))
        except ValueError as exc:
            problems.append(f"per_case[{i}]: {exc}")
    return rows, problems


def task_blocks(results: Mapping[str, Any]) -> Iterator[tuple[TaskKind, str, Mapping[str, Any]]]:
    """``(kind, task_id, block)`` for every task block of a results object, in :data:`KIND_ORDER`;
    entries that are not objects are skipped."""
    for kind in KIND_ORDER:
        tasks = results.get(kind.value)
        if not isinstance(tasks, Mapping):
            continue
        for task_id, block in tasks.items():
            if isinstance(block, Mapping):
                yield kind, str(task_id), block


# The values a task-block metric can take; anything else in a results file is refused.
_UNIT = (0.0, 1.0)
_DISTANCE = (0.0, 1e7)  # pixels: no ultrasound image is ten million pixels across
METRIC_RANGES: dict[str, tuple[float, float]] = {
    "DSC": _UNIT, "Accuracy": _UNIT, "AUC": _UNIT, "F1_macro": _UNIT, "F1_weighted": _UNIT, "IoU": _UNIT,
    "AP": _UNIT, "AP50": _UNIT, "AP75": _UNIT, "MCC": (-1.0, 1.0),
    "HD": _DISTANCE, "HD95": _DISTANCE, "MRE": _DISTANCE, "mean_diagonal": _DISTANCE,
}
_TOL = 1e-9


def _check_number(where: str, name: str, v: Any, lo: float, hi: float) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"{where}: {name} must be a number or null, got {type(v).__name__}"
    try:
        f = float(v)
    except OverflowError:
        return f"{where}: {name} is beyond the float range"
    if not math.isfinite(f) or not lo - _TOL <= f <= hi + _TOL:
        return f"{where}: {name} = {f!r} is outside {lo:g}..{hi:g}"
    return None


def check_results(results: Any) -> list[str]:
    """What is wrong with a results object read from a file (empty when it can be trusted).

    Checked: the top level is an object holding at least one kind; each kind is an object of task
    blocks (objects); every metric of :data:`METRIC_RANGES` is a finite number in its range or
    null; ``num_samples`` / ``num_failed`` are non-negative integers; ``per_case``, ``notes`` are
    lists and ``aggregates`` an object of numbers when present.
    """
    if not isinstance(results, Mapping):
        return [f"expected a JSON object (a results.json from `fmuia evaluate`), got {type(results).__name__}"]
    problems: list[str] = []
    if not any(k.value in results for k in TaskKind):
        problems.append("no 'segmentation', 'classification', 'detection' or 'regression' key; not a results.json")
    for kind in KIND_ORDER:
        tasks = results.get(kind.value)
        if tasks is None:
            continue
        if not isinstance(tasks, Mapping):
            problems.append(f"{kind.value}: expected an object of task blocks, got {type(tasks).__name__}")
            continue
        for task_id, block in tasks.items():
            where = f"{kind.value}.{task_id}"
            if not isinstance(block, Mapping):
                problems.append(f"{where}: expected an object of metrics, got {type(block).__name__}")
                continue
            for name, (lo, hi) in METRIC_RANGES.items():
                msg = _check_number(where, name, block.get(name), lo, hi)
                if msg:
                    problems.append(msg)
            for name in COUNT_KEYS:
                v = block.get(name)
                if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                    problems.append(f"{where}: {name} must be a non-negative integer, got {v!r}")
            for name in ("per_class", "ci95"):
                if block.get(name) is not None and not isinstance(block.get(name), Mapping):
                    problems.append(f"{where}: {name} must be an object, got {type(block.get(name)).__name__}")
    for name, typ, label in (("per_case", list, "a list"), ("notes", list, "a list"), ("aggregates", Mapping, "an object")):
        v = results.get(name)
        if v is not None and not isinstance(v, typ):
            problems.append(f"{name}: expected {label}, got {type(v).__name__}")
    agg = results.get("aggregates")
    if isinstance(agg, Mapping):
        for key, (_kind, metric, _d) in AGGREGATES.items():
            lo, hi = METRIC_RANGES[metric]
            msg = _check_number("aggregates", key, agg.get(key), lo, hi)
            if msg:
                problems.append(msg)
    return problems
