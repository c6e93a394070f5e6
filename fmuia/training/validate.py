"""Validation with the challenge metrics (:mod:`evaluation.metrics`) and the model-selection composite.

The model is scored on exactly what ``fmuia predict`` would write: :func:`validate` runs
:func:`fmuia.inference.predict_samples`, the function that feeds predict's writer (same image
decoding and preprocessing, same batches of one task, same per-kind decoders: the argmax mask
resized to the original size with the pixel-centre nearest rule, the clipped box and points in
original pixels, the renormalized class probabilities). Each record of :mod:`fmuia.formats` is then
scored against the sample's label with :mod:`evaluation.metrics` and averaged per task.

The composite that picks ``best.pt`` covers **all four kinds**: the mean over the kinds present of
a score in [0, 1] per kind (see :data:`KIND_SCORES`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from evaluation.aggregates import compute_aggregates
from evaluation.metrics import (
    accuracy,
    auc_ovr_macro,
    confusion_matrix,
    diagonal,
    f1_macro,
    f1_weighted,
    foreground_mean,
    iou_xyxy,
    mcc,
    mean_radial_error,
    per_class_metrics,
)
from fmuia.dataset.masks import read_mask
from fmuia.dataset.schema import Sample
from fmuia.errors import FmuiaError
from fmuia.formats import (
    ClassificationPrediction,
    DetectionPrediction,
    Prediction,
    RegressionPrediction,
    SegmentationPrediction,
)
from fmuia.inference import predict_samples
from fmuia.tasks import TaskKind
from fmuia.transforms import IMAGENET_MEAN, IMAGENET_STD

REG_SCALE = 10.0  # regression score exp(-REG_SCALE * MRE / image diagonal): 1 % of the diagonal → 0.90


# ---- per-case scoring per kind: (sample, its prediction record, original (W, H)) -> case dict


def _seg_case(s: Sample, rec: SegmentationPrediction, size: tuple[int, int]) -> dict:
    m = per_class_metrics(rec.mask, read_mask(s.label_mask), s.task.num_classes)
    return {"DSC": foreground_mean(m.dice), "HD": foreground_mean(m.hd)}


def _cls_case(s: Sample, rec: ClassificationPrediction, size: tuple[int, int]) -> dict:
    probs = np.asarray(rec.predicted_probs, dtype=np.float64)
    return {"y": s.class_index, "pred": int(rec.predicted_class), "probs": probs}


def _det_case(s: Sample, rec: DetectionPrediction, size: tuple[int, int]) -> dict:
    return {"IoU": iou_xyxy(rec.bbox_pixels, s.box), "score": rec.score}


def _reg_case(s: Sample, rec: RegressionPrediction, size: tuple[int, int]) -> dict:
    w, h = size
    pts = np.asarray(rec.points_pixels, dtype=np.float64).reshape(-1, 2)
    keep = [i for i, p in enumerate(s.points) if p is not None]
    gt = np.array([s.points[i] for i in keep], dtype=np.float64).reshape(-1, 2)
    mre = mean_radial_error(pts[keep], gt)
    return {"MRE": mre, "MRE_rel": mre / diagonal((h, w))}


# ---- per-task summary per kind: list of case dicts -> metric dict


def _mean(cases: list[dict], key: str) -> float:
    vals = [c[key] for c in cases if not math.isnan(c[key])]
    return float(np.mean(vals)) if vals else math.nan


def _seg_task(cases: list[dict], num_classes: int) -> dict:
    return {"DSC": _mean(cases, "DSC"), "HD": _mean(cases, "HD")}


def _cls_task(cases: list[dict], num_classes: int) -> dict:
    y = np.array([c["y"] for c in cases])
    cm = confusion_matrix(y, np.array([c["pred"] for c in cases]), num_classes)
    auc = auc_ovr_macro(y, np.stack([c["probs"] for c in cases]), num_classes)
    return {"Accuracy": accuracy(cm), "AUC": auc, "F1_macro": f1_macro(cm), "F1_weighted": f1_weighted(cm), "MCC": mcc(cm)}


def _det_task(cases: list[dict], num_classes: int) -> dict:
    return {"IoU": _mean(cases, "IoU")}


def _reg_task(cases: list[dict], num_classes: int) -> dict:
    return {"MRE": _mean(cases, "MRE"), "MRE_rel": _mean(cases, "MRE_rel")}


# ---- composite: per-task score in [0, 1], per kind


def _reg_score(m: dict) -> float:
    return float(math.exp(-REG_SCALE * m["MRE_rel"]))


@dataclass(frozen=True)
class KindValidation:
    """How one kind is validated: per-case scores of a record, per-task summary, [0, 1] score."""

    case: Callable[[Sample, Any, tuple[int, int]], dict]  # (sample, record, (W, H)) -> case dict
    task: Callable[[list[dict], int], dict]  # (cases, num_classes) -> per-task metrics
    score: Callable[[dict], float]  # per-task metrics -> [0, 1], higher is better


KIND_VALIDATION: dict[TaskKind, KindValidation] = {
    TaskKind.SEGMENTATION: KindValidation(_seg_case, _seg_task, lambda m: m["DSC"]),
    TaskKind.CLASSIFICATION: KindValidation(_cls_case, _cls_task, lambda m: (m["Accuracy"] + m["F1_macro"]) / 2),
    TaskKind.DETECTION: KindValidation(_det_case, _det_task, lambda m: m["IoU"]),
    TaskKind.REGRESSION: KindValidation(_reg_case, _reg_task, _reg_score),
}
KIND_SCORES = {k: v.score for k, v in KIND_VALIDATION.items()}


def composite(per_task: dict[str, dict], kinds: dict[str, TaskKind]) -> float | None:
    """Mean over kinds of the mean per-task score of that kind (``None`` with no task)."""
    by_kind: dict[TaskKind, list[float]] = {}
    for tid, m in per_task.items():
        v = KIND_SCORES[kinds[tid]](m)
        if not math.isnan(v):
            by_kind.setdefault(kinds[tid], []).append(v)
    if not by_kind:
        return None
    return float(np.mean([np.mean(v) for v in by_kind.values()]))


def validate(
    net: torch.nn.Module,
    samples: Sequence[Sample],
    img_size: int,
    device: str | torch.device,
    *,
    batch_size: int = 16,
    workers: int = 0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    tta: bool = False,
    progress: bool | str = False,
) -> dict[str, Any]:
    """Score ``net`` on labelled ``samples`` through the prediction path of ``fmuia predict``.

    Returns ``{"tasks": {task_id: metrics}, "aggregates": {seg_DSC, ..., reg_MRE}, "composite": float|None}``.
    Leaves ``net`` in eval mode and channels_last (as :func:`fmuia.inference.predict_samples` does);
    an unreadable image is an :class:`FmuiaError`. ``progress``: ``False``/``"none"`` (default), ``True``
    (a bar on a terminal, lines without one), or ``"bars"``/``"lines"``; lines come every 30 s only.
    """
    cases: dict[str, list[dict]] = {}

    def score(s: Sample, record: Prediction, size: tuple[int, int]) -> None:
        cases.setdefault(s.task_id, []).append(KIND_VALIDATION[s.kind].case(s, record, size))

    unreadable, _ = predict_samples(
        net, samples, img_size, score, device=device, batch_size=batch_size, tta=tta, workers=workers,
        mean=mean, std=std, progress=progress, desc="validate", leave=False, log_every=None,
    )
    if unreadable:
        raise FmuiaError(f"validation: {len(unreadable)} image(s) could not be read", unreadable)
    specs = {s.task_id: s.task for s in samples}
    per_task = {tid: KIND_VALIDATION[specs[tid].kind].task(c, specs[tid].num_classes) for tid, c in cases.items()}
    kinds = {tid: specs[tid].kind for tid in per_task}
    results = {k.value: {t: m for t, m in per_task.items() if kinds[t] is k} for k in TaskKind}
    return {"tasks": per_task, "aggregates": compute_aggregates(results), "composite": composite(per_task, kinds)}
