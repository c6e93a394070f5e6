"""Official mode: the challenge's published scorer (``evaluate.py`` of the FM_UIA repository),
quirks included, so organizers can diff our results file against theirs.

What the official scorer does, and how we reproduce it:

- Masks (labels and predictions) are read with ``cv2.imread(path, cv2.IMREAD_GRAYSCALE)``.
  :func:`read_mask_like_opencv` emulates that with Pillow: 8-bit grey as is; 1/2/4-bit grey scaled
  to 0..255 (a 1-bit mask becomes 0/255); 16-bit grey → high byte; RGB(A) and palette PNGs → libpng's
  grey conversion ``(9797 R + 19234 G + 3737 B) >> 15`` (so a palette mask gives the *colour's*
  grey level, not the index); colour JPEG → its luma channel; other colour formats → OpenCV's
  ``cvtColor`` weights. Files that do not decode are "unreadable" (``imread`` returns ``None``).
- A prediction mask of another size is resized to the label's size with ``INTER_NEAREST``.
- Per image and class (background included): Dice (1 when both empty), Hausdorff over all pixels
  (0 when both empty, the diagonal when one is). Per task: class means over the images that were
  scored; task DSC / HD = mean over classes 1..C-1. Rows whose label or prediction is missing or
  unreadable are skipped.
- JSON kinds: entries indexed by ``(task_id, image_path)``, the **last** entry wins; label rows
  without a prediction are skipped. Classification metrics come from scikit-learn exactly as the
  official code calls it, including the per-class F1 read by position.
- A task with no scored sample gets 0 for every metric; a missing prediction JSON gives ``{}``.

Where the official script would crash (an entry without ``task_id`` or ``predicted_class``, a
``bbox_pixels`` that is not four numbers, ragged probability lists, ...) we do not: such an entry
is ignored as if absent (before the last-wins rule), non-finite numbers likewise, and probability
lists that cannot be stacked make that task's AUC 0. Each such decision is logged.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from evaluation import metrics as M
from fmuia.dataset.masks import read_mask_like_opencv
from fmuia.dataset.schema import DataRoot, Sample
from fmuia.errors import FmuiaError
from fmuia.predfolder import MAX_MASK_BYTES, PredictionFolder
from fmuia.resize import resize_nearest_opencv
from fmuia.tasks import TaskKind

log = logging.getLogger("evaluation")

# ---- segmentation ---------------------------------------------------------------------------------

def seg_job(folder: PredictionFolder, gt_file: str, pred_rel: str, num_classes: int) -> dict:
    """Score one segmentation row the official way; returns per-class lists or a skip reason."""
    try:
        with open(gt_file, "rb") as fh:
            gt = read_mask_like_opencv(fh.read())
    except OSError:
        gt = None
    if gt is None:
        return {"skip": "label mask unreadable"}
    try:
        data = folder.read_bytes(pred_rel, MAX_MASK_BYTES)
    except FileNotFoundError:
        return {"skip": "prediction missing"}
    except Exception as exc:  # noqa: BLE001 - a folder, a refused link, ...: imread would fail too
        return {"skip": f"prediction unreadable: {exc}"}
    pred = read_mask_like_opencv(data)
    if pred is None:
        return {"skip": "prediction unreadable"}
    if pred.shape != gt.shape:
        pred = resize_nearest_opencv(pred, gt.shape[0], gt.shape[1])
    m = M.per_class_metrics(pred, gt, num_classes)
    return {"dice": m.dice.tolist(), "hd": m.hd.tolist()}


def seg_task_result(num_classes: int, rows: list[dict]) -> dict:
    """The official per-task block from the per-image results of one task (in CSV order)."""
    scored = [r for r in rows if "skip" not in r]
    if not scored:
        return {"DSC": 0.0, "HD": 0.0, "num_samples": 0, "per_class": {}}
    dice = np.array([r["dice"] for r in scored], dtype=np.float64).reshape(len(scored), num_classes)
    hd = np.array([r["hd"] for r in scored], dtype=np.float64).reshape(len(scored), num_classes)
    per_class = {}
    for c in range(num_classes):
        per_class[f"class_{c}"] = {
            "DSC": float(np.mean(np.ascontiguousarray(dice[:, c]))),
            "HD": float(np.mean(np.ascontiguousarray(hd[:, c]))),
        }
    fg_d = [per_class[f"class_{c}"]["DSC"] for c in range(1, num_classes)]
    fg_h = [per_class[f"class_{c}"]["HD"] for c in range(1, num_classes)]
    return {
        "DSC": float(np.mean(fg_d)) if fg_d else 0.0,
        "HD": float(np.mean(fg_h)) if fg_h else 0.0,
        "num_samples": len(scored),
        "per_class": per_class,
    }


# ---- JSON kinds: the fields the official scorer reads -----------------------------------------

_UNUSABLE = object()  # predicted_probs present but not a list of finite numbers


def _finite_numbers(v: Any) -> list[float] | None:
    if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        return None
    vals = [float(x) for x in v]
    return vals if all(math.isfinite(x) for x in vals) else None


def _view_classification(entry: dict, spec: Any) -> Any:
    c = entry.get("predicted_class")
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c != int(c):
        raise ValueError("predicted_class is not an integer")
    probs = entry.get("predicted_probs")
    if probs is not None:
        probs = _finite_numbers(probs)
        if probs is None:
            probs = _UNUSABLE
    return int(c), probs


def _view_detection(entry: dict, spec: Any) -> Any:
    box = _finite_numbers(entry.get("bbox_pixels"))
    if box is None or len(box) != 4:
        raise ValueError("bbox_pixels is not four finite numbers")
    return box


def _view_regression(entry: dict, spec: Any) -> Any:
    pts = _finite_numbers(entry.get("predicted_points_pixels"))
    if pts is None or len(pts) not in (2, 2 * spec.num_classes):
        raise ValueError(f"predicted_points_pixels is not {2 * spec.num_classes} finite numbers")
    return pts


_VIEWS: dict[TaskKind, Callable[[dict, Any], Any]] = {
    TaskKind.CLASSIFICATION: _view_classification,
    TaskKind.DETECTION: _view_detection,
    TaskKind.REGRESSION: _view_regression,
}


def index_entries(kind: TaskKind, entries: list, root: DataRoot) -> dict[tuple[str, str], Any]:
    """``(task_id, image_path) -> official view`` of each usable entry; the last one wins."""
    out: dict[tuple[str, str], Any] = {}
    dropped = 0
    for entry in entries:
        if not isinstance(entry, dict):
            dropped += 1
            continue
        task_id, image_path = entry.get("task_id"), entry.get("image_path")
        if not isinstance(task_id, str) or not isinstance(image_path, str):
            dropped += 1
            continue
        spec = root.tasks.get(task_id)
        if spec is None:
            continue  # never matched anyway
        try:
            out[(task_id, image_path)] = _VIEWS[kind](entry, spec)
        except ValueError:
            dropped += 1
    if dropped:
        log.warning("%s: %d entr%s the official scorer could not read ignored",
                    kind.value, dropped, "y" if dropped == 1 else "ies")
    return out


def load_entries(folder: PredictionFolder, kind: TaskKind, root: DataRoot) -> dict | None:
    """The indexed entries of a kind's JSON, or ``None`` when the file is absent or unreadable."""
    try:
        entries = folder.read_json(kind)
    except FmuiaError as exc:
        log.warning("%s: %s; treated as missing", kind.value, exc.message)
        return None
    if entries is None:
        return None
    return index_entries(kind, entries, root)


def _classification_task(spec: Any, samples: list[Sample], preds: dict) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the official script silences every warning too
        return _classification_metrics(spec, samples, preds)


def _classification_metrics(spec: Any, samples: list[Sample], preds: dict) -> dict:
    from sklearn.metrics import f1_score, matthews_corrcoef, roc_auc_score

    y_true, y_pred, y_probs = [], [], []
    for s in samples:
        hit = preds.get(s.key)
        if hit is None:
            continue
        y_true.append(int(s.label))
        y_pred.append(hit[0])
        if hit[1] is not None:
            y_probs.append(hit[1])
    if not y_true:
        return {"AUC": 0.0, "Accuracy": 0.0, "F1_macro": 0.0, "F1_weighted": 0.0, "MCC": 0.0,
                "num_samples": 0, "per_class": {}}
    yt, yp = np.array(y_true), np.array(y_pred)
    accuracy = float(np.mean(yt == yp))
    f1_macro = f1_score(yt, yp, average="macro", zero_division=0)
    f1_weighted = f1_score(yt, yp, average="weighted", zero_division=0)
    mcc = matthews_corrcoef(yt, yp)
    auc = 0.0
    if len(y_probs) == len(y_true) and not any(p is _UNUSABLE for p in y_probs):
        if len({len(p) for p in y_probs}) == 1:
            probs = np.array(y_probs, dtype=np.float64)
            try:
                if spec.num_classes == 2:
                    auc = roc_auc_score(yt, probs[:, 1])
                elif spec.num_classes > 2:
                    auc = roc_auc_score(yt, probs, average="macro", multi_class="ovr")
            except Exception:  # noqa: BLE001 - the official fallback
                auc = 0.0
            if not math.isfinite(auc):  # recent scikit-learn returns nan (with a warning) where
                auc = 0.0  # older versions raised: "cannot be computed" -> 0 either way
    per = f1_score(yt, yp, average=None, zero_division=0)
    per_class = {f"class_{c}": {"F1": float(per[c]) if c < len(per) else 0.0} for c in range(spec.num_classes)}
    return {"AUC": float(auc), "Accuracy": accuracy, "F1_macro": float(f1_macro),
            "F1_weighted": float(f1_weighted), "MCC": float(mcc), "num_samples": len(y_true),
            "per_class": per_class}


def _detection_task(spec: Any, samples: list[Sample], preds: dict) -> dict:
    scores = [M.iou_xyxy(preds[s.key], s.label) for s in samples if s.label is not None and s.key in preds]
    if not scores:
        return {"IoU": 0.0, "num_samples": 0}
    return {"IoU": float(np.mean(scores)), "num_samples": len(scores)}


def _regression_task(spec: Any, samples: list[Sample], preds: dict) -> dict:
    scores = []
    for s in samples:
        if s.key not in preds:
            continue
        gt = [v for p in (s.label or [None] * spec.num_classes) for v in (p if p is not None else (0.0, 0.0))]
        p = np.asarray(preds[s.key], dtype=np.float64).reshape(-1, 2)
        g = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
        scores.append(float(np.mean(np.sqrt(np.sum((p - g) ** 2, axis=1)))))
    if not scores:
        return {"MRE": 0.0, "num_samples": 0}
    return {"MRE": float(np.mean(scores)), "num_samples": len(scores)}


JSON_TASK_SCORERS: dict[TaskKind, Callable[[Any, list[Sample], dict], dict]] = {
    TaskKind.CLASSIFICATION: _classification_task,
    TaskKind.DETECTION: _detection_task,
    TaskKind.REGRESSION: _regression_task,
}


def score_json_kind(kind: TaskKind, folder: PredictionFolder, root: DataRoot,
                    by_task: dict[str, list[Sample]]) -> dict:
    """Official results of one JSON kind: ``{}`` when its prediction file is absent."""
    preds = load_entries(folder, kind, root)
    if preds is None:
        return {}
    return {task_id: JSON_TASK_SCORERS[kind](samples[0].task, samples, preds) for task_id, samples in by_task.items()}
