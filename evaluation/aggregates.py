"""The nine leaderboard aggregates (also the Codabench ``scores.json`` keys).

``AGGREGATES[key] = (kind, metric, direction)``: the aggregate ``key`` is the mean of the
per-task ``metric`` over all tasks of ``kind``; ``direction`` is ``"higher"`` when larger is
better, ``"lower"`` when smaller is better.
"""

from __future__ import annotations

from fmuia.tasks import TaskKind

HIGHER = "higher"
LOWER = "lower"

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


def compute_aggregates(results: dict) -> dict[str, float | None]:
    """The nine aggregates of a results object: per key, the mean of the metric over the tasks of
    its kind. Like the official summary, tasks with ``num_samples == 0`` are left out, and so are
    ``None`` values (an AUC that is undefined in strict mode). ``None`` when nothing is left."""
    out: dict[str, float | None] = {}
    for key, (kind, metric, _direction) in AGGREGATES.items():
        tasks = results.get(kind.value) or {}
        vals = [
            float(t[metric])
            for t in tasks.values()
            if isinstance(t, dict) and t.get(metric) is not None and t.get("num_samples", 1) > 0
        ]
        out[key] = sum(vals) / len(vals) if vals else None
    return out
