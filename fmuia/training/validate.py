"""Validation with the challenge metrics (:mod:`evaluation.metrics`) and the model-selection composite.

Predictions are made exactly as at inference (the shared preprocessing, argmax masks resized back to
the original size with nearest neighbour, normalized boxes/points scaled by the original ``W, H``),
then scored per case against the original labels and averaged per task.

The composite that picks ``best.pt`` covers **all four kinds**: the mean over the kinds present of
a score in [0, 1] per kind (see :data:`KIND_SCORES`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fmuia.dataset.images import read_image
from fmuia.dataset.masks import read_mask
from fmuia.dataset.schema import Sample
from fmuia.resize import resize_nearest_centres
from fmuia.tasks import TaskKind
from fmuia.transforms import IMAGENET_MEAN, IMAGENET_STD, preprocess

REG_SCALE = 10.0  # regression score exp(-REG_SCALE * MRE / image diagonal): 1 % of the diagonal → 0.90


class _Items(torch.utils.data.Dataset):
    def __init__(self, samples: Sequence[Sample], img_size: int, mean, std):
        self.samples, self.img_size, self.mean, self.std = list(samples), img_size, mean, std

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        rgb = read_image(self.samples[i].image_file)
        return i, torch.from_numpy(preprocess(rgb, self.img_size, self.mean, self.std)), torch.tensor(rgb.shape[:2])


# ---- per-case scoring per kind: (sample, normalized outputs of one image, (H, W)) -> case dict


def _seg_case(s: Sample, out: dict, hw) -> dict:
    from evaluation.metrics import per_class_metrics

    # the same argmax -> uint8 -> pixel-centre resize that `fmuia predict` writes
    pred = resize_nearest_centres(out["probs"].argmax(0).numpy().astype(np.uint8), int(hw[0]), int(hw[1]))
    m = per_class_metrics(pred, read_mask(s.label), s.task.num_classes)
    fg = slice(1, None) if s.task.num_classes > 1 else slice(None)
    return {"DSC": float(m.dice[fg].mean()), "HD": float(m.hd[fg].mean())}


def _cls_case(s: Sample, out: dict, hw) -> dict:
    probs = out["probs"].numpy().astype(np.float64)
    return {"y": int(s.label), "pred": int(probs.argmax()), "probs": probs}


def _det_case(s: Sample, out: dict, hw) -> dict:
    from evaluation.metrics import iou_xyxy

    h, w = float(hw[0]), float(hw[1])
    x0, y0, x1, y1 = (float(v) for v in out["box"])
    return {"IoU": iou_xyxy((x0 * w, y0 * h, x1 * w, y1 * h), s.label), "score": float(out["score"])}


def _reg_case(s: Sample, out: dict, hw) -> dict:
    from evaluation.metrics import diagonal, mean_radial_error

    h, w = float(hw[0]), float(hw[1])
    pts = out["points"].numpy().astype(np.float64) * np.array([w, h])
    keep = [i for i, p in enumerate(s.label) if p is not None]
    gt = np.array([s.label[i] for i in keep], dtype=np.float64).reshape(-1, 2)
    mre = mean_radial_error(pts[keep], gt)
    return {"MRE": mre, "MRE_rel": mre / diagonal((h, w))}


# ---- per-task summary per kind: list of case dicts -> metric dict


def _mean(cases: list[dict], key: str) -> float:
    vals = [c[key] for c in cases if not math.isnan(c[key])]
    return float(np.mean(vals)) if vals else math.nan


def _seg_task(cases: list[dict], num_classes: int) -> dict:
    return {"DSC": _mean(cases, "DSC"), "HD": _mean(cases, "HD")}


def _cls_task(cases: list[dict], num_classes: int) -> dict:
    from evaluation.metrics import accuracy, auc_ovr_macro, confusion_matrix, f1_macro, f1_weighted, mcc

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
    case: Callable
    task: Callable
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


@torch.no_grad()
def validate(
    net,
    samples: Sequence[Sample],
    img_size: int,
    device: torch.device,
    *,
    batch_size: int = 16,
    workers: int = 0,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> dict:
    """Score ``net`` on labelled ``samples``.

    Returns ``{"tasks": {task_id: metrics}, "aggregates": {seg_DSC, ..., reg_MRE}, "composite": float|None}``.
    """
    from tqdm import tqdm

    from evaluation.aggregates import compute_aggregates

    net.eval()
    by_task: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_task.setdefault(s.task_id, []).append(i)
    per_task: dict[str, dict] = {}
    kinds: dict[str, TaskKind] = {}
    bar = tqdm(total=len(samples), desc="validate", leave=False, disable=not progress or None)
    for tid, idx in by_task.items():
        task_samples = [samples[i] for i in idx]
        spec = task_samples[0].task
        kv = KIND_VALIDATION[spec.kind]
        loader = torch.utils.data.DataLoader(
            _Items(task_samples, img_size, mean, std), batch_size=batch_size,
            num_workers=workers if len(task_samples) > batch_size else 0,  # no process start-up for one batch
            generator=torch.Generator().manual_seed(0),
        )
        cases = []
        for j, images, hws in loader:
            images = images.to(device)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                raw = net(images, tid)
            outs = net.postprocess(tid, raw)
            outs = {k: v.float().cpu() for k, v in outs.items()}
            for b in range(images.shape[0]):
                cases.append(kv.case(task_samples[int(j[b])], {k: v[b] for k, v in outs.items()}, hws[b].tolist()))
            bar.update(images.shape[0])
        per_task[tid] = kv.task(cases, spec.num_classes)
        kinds[tid] = spec.kind
    bar.close()
    results = {k.value: {t: m for t, m in per_task.items() if kinds[t] is k} for k in TaskKind}
    return {"tasks": per_task, "aggregates": compute_aggregates(results), "composite": composite(per_task, kinds)}
