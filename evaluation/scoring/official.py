"""The official policy: the challenge's published scorer (``evaluate.py`` of the FM_UIA repository),
quirks included, so organizers can diff our results file against theirs.

What the official scorer does, and how we reproduce it:

- Masks (labels and predictions) are read with ``cv2.imread(path, cv2.IMREAD_GRAYSCALE)``, which
  :func:`fmuia.dataset.masks.read_mask_like_opencv` emulates. A prediction mask of another size is
  resized to the label's size with ``INTER_NEAREST`` (:func:`fmuia.resize.resize_nearest_opencv`).
- Per image and class (background included): Dice (1 when both empty), Hausdorff over all pixels
  (0 when both empty, the diagonal when one is). Per task: class means over the images that were
  scored; task DSC / HD = mean over classes 1..C-1. Rows whose label or prediction is missing or
  unreadable are skipped.
- JSON kinds: entries indexed by ``(task_id, image_path)``, the **last** entry wins; label rows
  without a prediction are skipped. Classification metrics are what the official code's
  scikit-learn calls return, per-class F1 read by position and scikit-learn's AUC refusals
  included; they are computed without importing scikit-learn (0.9 s of a 2.4 s run), and the tests
  compare them with scikit-learn itself. Landmarks missing from the label count as (0, 0).
- A task with no scored sample gets 0 for every metric; a missing prediction JSON gives ``{}``.

Where the official script would crash (an entry without ``task_id`` or ``predicted_class``, a
``bbox_pixels`` that is not four numbers, ragged probability lists, ...) we do not: such an entry
is ignored as if absent (before the last-wins rule), non-finite numbers likewise, and probability
lists that cannot be stacked make that task's AUC 0. Each such decision is logged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from evaluation import metrics as M
from evaluation.schema import CaseRow
from evaluation.scoring.policy import Entries, Policy
from evaluation.scoring.rows import ClsScore, DetScore, RegScore, RowScore, SegScore
from fmuia.dataset.masks import read_mask_like_opencv
from fmuia.dataset.schema import DataRoot, Sample
from fmuia.errors import FmuiaError
from fmuia.predfolder import MAX_MASK_BYTES, PredictionFolder
from fmuia.resize import resize_nearest_opencv
from fmuia.tasks import TaskKind, TaskSpec

log = logging.getLogger("evaluation")

_SKIP_MISSING = "prediction missing"


# ---- what the official scorer reads of one entry ------------------------------------------------

def _finite_numbers(v: Any) -> list[float] | None:
    if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        return None
    try:
        vals = [float(x) for x in v]
    except OverflowError:  # an integer beyond the float range
        return None
    return vals if all(math.isfinite(x) for x in vals) else None


def _view_classification(entry: dict, spec: TaskSpec) -> tuple[int, list[float] | None, bool]:
    c = entry.get("predicted_class")
    if isinstance(c, bool) or not isinstance(c, (int, float)):
        raise ValueError("predicted_class is not an integer")
    try:
        if not math.isfinite(c) or c != int(c):
            raise ValueError("predicted_class is not an integer")
    except OverflowError:
        raise ValueError("predicted_class is beyond the float range") from None
    probs = entry.get("predicted_probs")
    if probs is None:
        return int(c), None, False
    vals = _finite_numbers(probs)
    return int(c), vals, vals is None


def _view_detection(entry: dict, spec: TaskSpec) -> list[float]:
    box = _finite_numbers(entry.get("bbox_pixels"))
    if box is None or len(box) != 4:
        raise ValueError("bbox_pixels is not four finite numbers")
    return box


def _view_regression(entry: dict, spec: TaskSpec) -> list[float]:
    pts = _finite_numbers(entry.get("predicted_points_pixels"))
    if pts is None or len(pts) not in (2, 2 * spec.num_classes):
        raise ValueError(f"predicted_points_pixels is not {2 * spec.num_classes} finite numbers")
    return pts


_VIEWS: dict[TaskKind, Callable[[dict, TaskSpec], Any]] = {
    TaskKind.CLASSIFICATION: _view_classification,
    TaskKind.DETECTION: _view_detection,
    TaskKind.REGRESSION: _view_regression,
}


def index_entries(kind: TaskKind, entries: list, root: DataRoot) -> Entries:
    """``(task_id, image_path) -> official view`` of each usable entry; the last one wins."""
    out = Entries()
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
            out.valid[(task_id, image_path)] = _VIEWS[kind](entry, spec)
        except ValueError:
            dropped += 1
    if dropped:
        log.warning("%s: %d entr%s the official scorer could not read ignored",
                    kind.value, dropped, "y" if dropped == 1 else "ies")
    return out


# ---- per-row scores, by kind --------------------------------------------------------------------

def _cls_row(s: Sample, view: Any) -> ClsScore:
    c, probs, unusable = view
    return ClsScore(s.class_index, c, tuple(probs) if probs is not None else None, unusable)


def _det_row(s: Sample, view: Any) -> DetScore:
    return DetScore(M.iou_xyxy(view, s.box), tuple(view))


def _reg_row(s: Sample, view: Any) -> RegScore:
    # the official scorer takes a landmark missing from the label as (0, 0)
    gt = [v for p in s.points for v in (p if p is not None else (0.0, 0.0))]
    return RegScore(M.mean_radial_error(np.asarray(view, dtype=np.float64), np.asarray(gt, dtype=np.float64)))


_ROWS: dict[TaskKind, Callable[[Sample, Any], RowScore]] = {
    TaskKind.CLASSIFICATION: _cls_row,
    TaskKind.DETECTION: _det_row,
    TaskKind.REGRESSION: _reg_row,
}
_SKIPPED: dict[TaskKind, Callable[[Sample], RowScore]] = {
    TaskKind.CLASSIFICATION: lambda s: ClsScore(s.class_index, reason=_SKIP_MISSING, skipped=True),
    TaskKind.DETECTION: lambda s: DetScore(reason=_SKIP_MISSING, skipped=True),
    TaskKind.REGRESSION: lambda s: RegScore(reason=_SKIP_MISSING, skipped=True),
}


# ---- per-task blocks, by kind ---------------------------------------------------------------------

def _seg_block(spec: TaskSpec, scores: list[SegScore]) -> dict:
    c = spec.num_classes
    scored = [r for r in scores if not r.skipped]
    if not scored:
        return {"DSC": 0.0, "HD": 0.0, "num_samples": 0, "per_class": {}}
    dice = np.array([r.dice for r in scored], dtype=np.float64).reshape(len(scored), c)
    hd = np.array([r.hd for r in scored], dtype=np.float64).reshape(len(scored), c)
    per_class = {}
    for k in range(c):
        per_class[f"class_{k}"] = {
            "DSC": float(np.mean(np.ascontiguousarray(dice[:, k]))),
            "HD": float(np.mean(np.ascontiguousarray(hd[:, k]))),
        }
    return {
        "DSC": M.foreground_mean([per_class[f"class_{k}"]["DSC"] for k in range(c)]),
        "HD": M.foreground_mean([per_class[f"class_{k}"]["HD"] for k in range(c)]),
        "num_samples": len(scored),
        "per_class": per_class,
    }


def _cls_block(spec: TaskSpec, scores: list[ClsScore]) -> dict:
    return _cls_metrics(spec, [r for r in scores if not r.skipped])


def _sklearn_auc(yt: np.ndarray, probs: np.ndarray, num_classes: int) -> float:
    """What the official ``roc_auc_score`` call returns, an exception or nan counting 0:
    ``roc_auc_score(yt, probs[:, 1])`` for two classes, ``roc_auc_score(yt, probs, average="macro",
    multi_class="ovr")`` for more — scikit-learn's own branches and refusals, reproduced."""
    k = probs.shape[1]
    classes = np.unique(yt)
    if num_classes < 2 or k == 0:
        return 0.0  # no AUC call; a zero-column score is refused
    if num_classes == 2:
        if k < 2 or len(classes) != 2:
            return 0.0  # probs[:, 1] out of range; one class: undefined
        return M.auc_binary(yt == classes[1], probs[:, 1])
    if len(classes) > 2 or k > 2:  # its multi-class branch: rows must sum to 1, one column per class in y
        if not np.allclose(1, probs.sum(axis=1)) or len(classes) != k:
            return 0.0
        return float(np.mean([M.auc_binary(yt == cl, probs[:, i]) for i, cl in enumerate(classes)]))
    # its binary branch with a 2-D score: one column is the score, two are refused
    if len(classes) != 2 or k != 1:
        return 0.0
    return M.auc_binary(yt == classes[1], probs[:, 0])


def _cls_metrics(spec: TaskSpec, rows: list[ClsScore]) -> dict:
    """The official classification block, as its scikit-learn calls compute it: ``f1_score`` and
    ``matthews_corrcoef`` over scikit-learn's label set (the sorted union of labels and
    predictions, out-of-range predictions included), per-class F1 read by position in that set,
    ``zero_division=0``. Computed with the confusion-matrix core of :mod:`evaluation.metrics`
    (tests compare it with scikit-learn itself)."""
    if not rows:
        return {"AUC": 0.0, "Accuracy": 0.0, "F1_macro": 0.0, "F1_weighted": 0.0, "MCC": 0.0,
                "num_samples": 0, "per_class": {}}
    yt = np.array([r.label for r in rows])
    yp = np.array([r.predicted for r in rows])
    labels, code = np.unique(np.concatenate([yt, yp]), return_inverse=True)
    n = len(yt)
    cm = M.confusion_matrix(code[:n], code[n:], len(labels))  # every prediction is in the label set
    per = M.f1_per_class(cm)
    auc = 0.0
    if all(r.probs is not None for r in rows) and len({len(r.probs) for r in rows if r.probs is not None}) == 1:
        auc = _sklearn_auc(yt, np.array([r.probs for r in rows], dtype=np.float64), spec.num_classes)
        if not math.isfinite(auc):
            auc = 0.0
    per_class = {f"class_{c}": {"F1": float(per[c]) if c < len(per) else 0.0} for c in range(spec.num_classes)}
    return {"AUC": float(auc), "Accuracy": float(np.mean(yt == yp)), "F1_macro": float(M.f1_macro(cm)),
            "F1_weighted": float(M.f1_weighted(cm)), "MCC": float(M.mcc(cm)), "num_samples": n,
            "per_class": per_class}


def _det_block(spec: TaskSpec, scores: list[DetScore]) -> dict:
    ious = [r.iou for r in scores if not r.skipped]
    if not ious:
        return {"IoU": 0.0, "num_samples": 0}
    return {"IoU": float(np.mean(ious)), "num_samples": len(ious)}


def _reg_block(spec: TaskSpec, scores: list[RegScore]) -> dict:
    mres = [r.mre for r in scores if not r.skipped]
    if not mres:
        return {"MRE": 0.0, "num_samples": 0}
    return {"MRE": float(np.mean(mres)), "num_samples": len(mres)}


_BLOCKS: dict[TaskKind, Callable[[TaskSpec, list], dict]] = {
    TaskKind.SEGMENTATION: _seg_block,
    TaskKind.CLASSIFICATION: _cls_block,
    TaskKind.DETECTION: _det_block,
    TaskKind.REGRESSION: _reg_block,
}


class OfficialPolicy(Policy):
    """Reproduce the published scorer: skip what it skips, compute what it computes."""

    name = "official"

    def score_mask(self, folder: PredictionFolder, gt_file: str, pred_rel: str, num_classes: int) -> SegScore:
        try:
            with open(gt_file, "rb") as fh:
                gt = read_mask_like_opencv(fh.read())
        except OSError:
            gt = None
        if gt is None:
            return SegScore(reason="label mask unreadable", skipped=True)
        try:  # the files as the platform's unzip leaves them (the last duplicate wins), through the shared reader
            data = folder.as_extracted().read_bytes(pred_rel, MAX_MASK_BYTES)
        except FileNotFoundError:
            return SegScore(reason=_SKIP_MISSING, skipped=True)
        except Exception as exc:  # noqa: BLE001 - a folder, a refused link, ...: imread would fail too
            return SegScore(reason=f"prediction unreadable: {exc}", skipped=True)
        pred = read_mask_like_opencv(data)
        if pred is None:
            return SegScore(reason="prediction unreadable", skipped=True)
        if pred.shape != gt.shape:
            pred = resize_nearest_opencv(pred, gt.shape[0], gt.shape[1])
        m = M.per_class_metrics(pred, gt, num_classes)
        return SegScore(m.dice, m.hd)

    def read_entries(self, kind: TaskKind, folder: PredictionFolder, root: DataRoot) -> Entries | None:
        try:  # the shared JSON reader, as json.load reads: no nesting limit but json's own, last duplicate key wins
            loaded = folder.as_extracted().read_json_file(kind, nesting_limit=False, duplicate_keys=False)
        except Exception as exc:  # noqa: BLE001 - FmuiaError: what json.load cannot read; anything else too
            log.warning("%s: %s; treated as missing", kind.value, exc.message if isinstance(exc, FmuiaError) else exc)
            return None
        if loaded is None:
            return None
        return index_entries(kind, loaded.entries, root)

    def score_row(self, sample: Sample, entries: Entries) -> RowScore:
        view = entries.valid.get(sample.key)
        if view is None:
            return _SKIPPED[sample.kind](sample)
        return _ROWS[sample.kind](sample, view)

    def fallback(self, sample: Sample, reason: str) -> RowScore:
        if sample.kind is TaskKind.SEGMENTATION:
            return SegScore(reason=reason, skipped=True)
        return _SKIPPED[sample.kind](sample)

    def task_block(self, spec: TaskSpec, samples: list[Sample], scores: list[Any]) -> tuple[dict, list[CaseRow]]:
        return _BLOCKS[spec.kind](spec, scores), []
