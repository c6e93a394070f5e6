"""The strict policy: every label row is scored, nothing is skipped or silently repaired.

Each row's ``reason`` says which rule applied (``None`` when the prediction was fine):

- Segmentation: the prediction must pass the rules ``fmuia check`` applies
  (:func:`fmuia.dataset.masks.prediction_mask_problems`): a PNG that both Pillow and the official
  scorer's OpenCV read, 8-bit mode L, or mode P whose palette OpenCV's greyscale read maps back to
  the indices, the label's size, values ``0..C-1``, no EXIF orientation. Anything else — missing,
  unreadable, refused, 1-bit, 16-bit, RGB, JPEG, colour palette, wrong size, out-of-range values —
  scores the worst (Dice 0, HD = HD95 = the image diagonal for every class), with check's message
  as the reason. Valid masks: per-class Dice, HD and HD95 as in :mod:`evaluation.metrics`.
- Classification: a valid entry has ``predicted_class`` in ``0..C-1``; otherwise the row counts
  as wrong. ``predicted_probs`` must be C finite non-negative numbers; if not, the class still
  counts and only AUC takes the worst case. The worst cases, each chosen so that deleting a row or
  breaking any of its fields can never raise the metric:
  accuracy — the row is wrong; F1 (per class, macro, weighted) — the row is a false negative for
  its class and a false positive for every other class (argument in
  :mod:`evaluation.metrics.classification`); MCC — the lowest MCC over every wrong class the
  invalid rows could be given (:func:`~evaluation.metrics.classification.mcc_worst_case`); AUC —
  the row ranks as the most confidently wrong case of every class (below every negative of its
  own class, above every positive of the others), so each of its pairwise comparisons is lost
  whatever it was before. AUC is one-vs-rest macro over the classes for which it is defined
  (``null`` when none is: that depends on the labels only).
- Detection: ``bbox_pixels`` must have ``x_min < x_max`` and ``y_min < y_max``; otherwise IoU 0.
  COCO AP (pycocotools) when every valid prediction carries ``score`` (``null`` otherwise: not
  scored); a missing or invalid row then counts as the most confident false positive of the task
  (a box that misses its image, ranked first), which can only lower precision at every recall.
  ``null`` with an ``AP_note`` (and a note in the results) when pycocotools cannot be imported.
- Regression: ``predicted_points_pixels`` and ``predicted_points_normalized`` must each hold 2K finite numbers
  (as ``fmuia check`` asks); otherwise, or when missing,
  the row's MRE is the image diagonal, and a valid row's MRE is capped at the diagonal (a landmark
  at 1e308 is no worse than a missing one). Missing label landmarks are left out (not (0, 0)).
- Duplicated entries for one row make that row invalid (which one was meant is unknowable).
- 95% bootstrap intervals per task metric (resampling rows, seeded).
- Segmentation, detection and regression tasks record ``mean_diagonal``, the mean image diagonal
  in pixels over the task's rows (the leaderboard normalises HD and MRE by it). Classification
  per-case rows carry ``label`` and ``predicted`` (``None`` for an invalid row) so the leaderboard
  can recompute F1 and MCC on bootstrap resamples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from evaluation import metrics as M
from evaluation.aggregates import compute_aggregates
from evaluation.schema import CaseRow
from evaluation.scoring.bootstrap import mean_intervals, statistic_intervals, task_rng
from evaluation.scoring.policy import Entries, Policy
from evaluation.scoring.rows import ClsScore, DetScore, RegScore, RowScore, SegScore
from fmuia.console import quiet_stdout
from fmuia.dataset.images import image_size
from fmuia.dataset.masks import decode_mask, prediction_mask_problems
from fmuia.dataset.schema import DataRoot, Sample
from fmuia.errors import FmuiaError, FormatError, UnsafeInputError
from fmuia.formats import parse_entry
from fmuia.predfolder import PredictionFolder
from fmuia.tasks import PREDICTION_FILES, TaskKind, TaskSpec

_MISSING = "prediction missing"


def _diagonal_of(sample: Sample) -> float | None:
    """The image diagonal of a label row (pixels), from the image header; ``None`` if unreadable."""
    try:
        w, h = image_size(sample.image_file)
    except Exception:  # noqa: BLE001 - reported by the caller as a label-side problem
        return None
    return math.sqrt(w * w + h * h)


def _mean_diagonal(diagonals: list[float | None]) -> float | None:
    """Mean image diagonal (pixels) of a task's rows: the leaderboard normalises HD and MRE by it."""
    vals = [float(d) for d in diagonals if d is not None and d > 0]
    return float(np.mean(vals)) if vals else None


# ---- segmentation -------------------------------------------------------------------------------

def _worst_seg(num_classes: int, shape: tuple[int, int], reason: str) -> SegScore:
    diag = M.diagonal(shape)
    return SegScore(np.zeros(num_classes), np.full(num_classes, diag), np.full(num_classes, diag), diag, reason)


def _seg_block(spec: TaskSpec, samples: list[Sample], rows: list[SegScore], n_bootstrap: int,
               seed: int) -> tuple[dict, list[CaseRow]]:
    c = spec.num_classes
    dice = np.array([r.dice for r in rows], dtype=np.float64).reshape(len(rows), c)
    hd = np.array([r.hd for r in rows], dtype=np.float64).reshape(len(rows), c)
    hd95 = np.array([r.hd95 for r in rows], dtype=np.float64).reshape(len(rows), c)
    per_class = {f"class_{k}": {"DSC": float(dice[:, k].mean()), "HD": float(hd[:, k].mean()),
                                "HD95": float(hd95[:, k].mean())} for k in range(c)}
    case = {"DSC": M.foreground_mean(dice), "HD": M.foreground_mean(hd), "HD95": M.foreground_mean(hd95)}

    def fg_mean(metric: str) -> float:
        return M.foreground_mean([per_class[f"class_{k}"][metric] for k in range(c)])

    block: dict[str, Any] = {
        "DSC": fg_mean("DSC"), "HD": fg_mean("HD"), "HD95": fg_mean("HD95"),
        "num_samples": len(rows),
        "num_failed": sum(1 for r in rows if r.reason is not None),
        "mean_diagonal": _mean_diagonal([r.diagonal for r in rows]),
        "per_class": per_class,
        "ci95": mean_intervals(case, n_bootstrap, task_rng(seed, spec.task_id)),
    }
    cases = [CaseRow(s.task_id, s.kind, s.image_path, DSC=float(case["DSC"][i]), HD=float(case["HD"][i]),
                     HD95=float(case["HD95"][i]), reason=rows[i].reason) for i, s in enumerate(samples)]
    return block, cases


# ---- JSON kinds: rows ---------------------------------------------------------------------------

def index_entries(kind: TaskKind, entries: list, root: DataRoot) -> Entries:
    """Parse every entry into a record of :mod:`fmuia.formats`. A key seen twice is a problem for
    that row (duplicate), whatever the entries hold; an entry that does not parse is a problem
    for its row when its key is readable, else a note."""
    out = Entries()
    seen: set[tuple[str, str]] = set()
    for i, entry in enumerate(entries):
        key = None
        if isinstance(entry, dict) and isinstance(entry.get("task_id"), str) and isinstance(entry.get("image_path"), str):
            key = (entry["task_id"], entry["image_path"])
        if key is not None and key in seen:
            out.problems[key] = "duplicate entries for this row"
            out.valid.pop(key, None)
            continue
        try:
            rec = parse_entry(kind, entry)
        except Exception as exc:  # noqa: BLE001 - FormatError, or anything else one entry provokes
            why = exc.message if isinstance(exc, FormatError) else f"unreadable ({type(exc).__name__})"
            if key is None:
                out.notes.append(f"entry {i}: {why} (matches no row)")
            else:
                seen.add(key)
                out.problems[key] = f"malformed entry {i}: {why}"
            continue
        key = (rec.task_id, rec.image_path)
        seen.add(key)
        out.valid[key] = rec
    known = {s.key for s in root.samples if s.kind is kind}
    unknown = sum(1 for k in seen if k not in known)
    if unknown:
        out.notes.append(f"{unknown} entr{'y' if unknown == 1 else 'ies'} match no label row (ignored)")
    return out


def _cls_row(s: Sample, rec: Any, problem: str | None) -> ClsScore:
    c = s.task.num_classes
    label = s.class_index
    if rec is None:
        return ClsScore(label, reason=problem or _MISSING)
    if not 0 <= rec.predicted_class < c:
        return ClsScore(label, reason=f"predicted_class {rec.predicted_class} out of range 0..{c - 1}")
    p = rec.predicted_probs
    if p is None or len(p) != c or any(v < 0 for v in p):
        return ClsScore(label, rec.predicted_class,
                        reason=f"predicted_probs missing or not {c} non-negative numbers: uniform used for AUC")
    return ClsScore(label, rec.predicted_class, tuple(float(v) for v in p))


def _det_row(s: Sample, rec: Any, problem: str | None) -> DetScore:
    if rec is None:
        return DetScore(reason=problem or _MISSING)
    x0, y0, x1, y1 = rec.bbox_pixels
    if not (x0 < x1 and y0 < y1):
        return DetScore(reason=f"bbox_pixels {list(rec.bbox_pixels)}: expected x_min < x_max and y_min < y_max")
    return DetScore(M.iou_xyxy(rec.bbox_pixels, s.box), tuple(rec.bbox_pixels), rec.score)


def _reg_row(s: Sample, rec: Any, problem: str | None) -> RegScore:
    diag = _diagonal_of(s)
    if diag is None:
        return RegScore(reason="label image unreadable", label_error=f"{s.image_file}: image unreadable")
    k = s.task.num_classes
    if rec is None:
        return RegScore(diag, diag, problem or _MISSING)
    pts = rec.points_pixels
    if len(pts) != 2 * k:
        return RegScore(diag, diag, f"predicted_points_pixels has {len(pts)} numbers, expected {2 * k}")
    if len(rec.points_normalized) != 2 * k:  # as fmuia check: both lists hold 2K numbers
        return RegScore(diag, diag, f"predicted_points_normalized has {len(rec.points_normalized)} numbers, expected {2 * k}")
    keep = [j for j, p in enumerate(s.points) if p is not None]
    g = np.array([s.points[j] for j in keep], dtype=np.float64).reshape(-1, 2)
    p = np.asarray(pts, dtype=np.float64).reshape(k, 2)[keep]
    # min(mean error, diagonal), without overflow for absurd points: an error beyond k diagonals
    # already makes the mean at least one diagonal, so clipping there changes nothing
    errors = np.minimum(M.radial_errors(p, g), len(keep) * diag)
    return RegScore(min(float(errors.mean()) if errors.size else 0.0, diag), diag)


_ROWS: dict[TaskKind, Callable[[Sample, Any, str | None], RowScore]] = {
    TaskKind.CLASSIFICATION: _cls_row,
    TaskKind.DETECTION: _det_row,
    TaskKind.REGRESSION: _reg_row,
}


# ---- JSON kinds: task blocks --------------------------------------------------------------------

def _cls_metrics(y: np.ndarray, pred: np.ndarray, scores: np.ndarray, c: int,
                 weights: np.ndarray | None = None, mcc_budget: int = M.MCC_WORST_CASE_BUDGET) -> dict[str, float]:
    cm = M.confusion_matrix(y, pred, c, weights)
    auc = M.auc_binary(y == 1, scores[:, 1], weights) if c == 2 else M.auc_ovr_macro(y, scores, c, weights)
    return {"Accuracy": M.accuracy(cm), "AUC": auc, "F1_macro": M.f1_macro(cm, invalid="every_class"),
            "F1_weighted": M.f1_weighted(cm, invalid="every_class"), "MCC": M.mcc_worst_case(cm, budget=mcc_budget)}


# bootstrap resamples give integer counts too, but are many: a smaller enumeration budget for them
_BOOTSTRAP_MCC_BUDGET = 5_000


def _cls_block(spec: TaskSpec, samples: list[Sample], rows: list[ClsScore], n_bootstrap: int,
               seed: int) -> tuple[dict, list[CaseRow]]:
    c = spec.num_classes
    n = len(samples)
    y = np.array([r.label for r in rows], dtype=np.intp)
    pred = np.array([-1 if r.predicted is None else r.predicted for r in rows], dtype=np.intp)
    # AUC scores: a row without valid probabilities is the most confidently wrong case of every class
    scores = np.full((n, c), np.inf)
    for i, r in enumerate(rows):
        if r.probs is not None:
            scores[i] = r.probs
        else:
            scores[i, r.label] = -np.inf
    m = _cls_metrics(y, pred, scores, c)
    cm = M.confusion_matrix(y, pred, c)
    block: dict[str, Any] = {
        "AUC": None if math.isnan(m["AUC"]) else m["AUC"],
        "Accuracy": m["Accuracy"], "F1_macro": m["F1_macro"], "F1_weighted": m["F1_weighted"],
        "MCC": m["MCC"], "num_samples": n, "num_failed": sum(r.reason is not None for r in rows),
        "per_class": {f"class_{k}": {"F1": float(v)} for k, v in enumerate(M.f1_per_class(cm, invalid="every_class"))},
        "ci95": statistic_intervals(n, n_bootstrap, task_rng(seed, spec.task_id),
                                    lambda w: _cls_metrics(y, pred, scores, c, w, _BOOTSTRAP_MCC_BUDGET)),
    }
    cases = [CaseRow(s.task_id, s.kind, s.image_path, label=int(y[i]),
                     predicted=int(pred[i]) if pred[i] >= 0 else None, correct=bool(pred[i] == y[i]),
                     prob_true=float(scores[i, y[i]]) if rows[i].probs is not None else None,
                     reason=rows[i].reason) for i, s in enumerate(samples)]
    return block, cases


def _import_pycocotools() -> tuple[Any, Any] | None:
    """``(COCO, COCOeval)``, or ``None`` when pycocotools cannot be imported (AP is then null)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except Exception:  # noqa: BLE001 - ImportError, or a binary built for another numpy
        return None
    return COCO, COCOeval


# an invalid row's stand-in for AP: off every image (IoU 0 with any label box), ranked first
_CONFIDENT_MISS = ((-3.0, -3.0, -2.0, -2.0), 1e18)


def coco_ap(samples: list[Sample], boxes: dict[int, tuple[tuple[float, ...], float]]) -> dict[str, float] | None:
    """COCO AP@[.5:.95], AP50, AP75 with one label box per image and at most one prediction
    (``boxes``: row index -> (box, score)); ``None`` when pycocotools is not installed."""
    coco = _import_pycocotools()
    if coco is None:
        return None
    COCO, COCOeval = coco  # noqa: N806

    images, anns, dets = [], [], []
    for i, s in enumerate(samples):
        x0, y0, x1, y1 = s.box
        images.append({"id": i + 1})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                     "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
        if i in boxes:
            (px0, py0, px1, py1), score = boxes[i]
            dets.append({"image_id": i + 1, "category_id": 1, "bbox": [px0, py0, px1 - px0, py1 - py0], "score": score})
    with quiet_stdout():  # COCOeval prints; only this thread is silenced
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}
        gt.createIndex()
        if not dets:
            return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        # "all" areas really all: COCOeval ignores an unmatched detection whose area is outside the
        # range (0..1e10 px²), so an absurdly large box would otherwise escape being a false positive
        ev.params.areaRng[0] = [0.0, float("inf")]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [max(0.0, float(v)) for v in ev.stats[:3]]  # -1 means "no ground truth": not the case here
    return {"AP": stats[0], "AP50": stats[1], "AP75": stats[2]}


def _det_block(spec: TaskSpec, samples: list[Sample], rows: list[DetScore], n_bootstrap: int,
               seed: int) -> tuple[dict, list[CaseRow]]:
    valid = [i for i, r in enumerate(rows) if r.reason is None]
    all_scored = all(rows[i].score is not None for i in valid)
    boxes = {i: (rows[i].box, rows[i].score) if rows[i].reason is None else _CONFIDENT_MISS
             for i in range(len(rows)) if rows[i].reason is not None or rows[i].score is not None}
    ious = np.array([r.iou for r in rows], dtype=np.float64)
    block: dict[str, Any] = {"IoU": float(ious.mean()), "num_samples": len(samples),
                             "num_failed": len(rows) - len(valid),
                             "mean_diagonal": _mean_diagonal([_diagonal_of(s) for s in samples])}
    ap = coco_ap(samples, boxes) if all_scored else None  # type: ignore[arg-type]
    block.update(ap if ap is not None else {"AP": None, "AP50": None, "AP75": None})
    if all_scored and ap is None:
        block["AP_note"] = "pycocotools is not installed: COCO AP not computed"
    block["ci95"] = mean_intervals({"IoU": ious}, n_bootstrap, task_rng(seed, spec.task_id))
    cases = [CaseRow(s.task_id, s.kind, s.image_path, IoU=float(rows[i].iou), reason=rows[i].reason)
             for i, s in enumerate(samples)]
    return block, cases


def _reg_block(spec: TaskSpec, samples: list[Sample], rows: list[RegScore], n_bootstrap: int,
               seed: int) -> tuple[dict, list[CaseRow]]:
    mres = np.array([r.mre for r in rows], dtype=np.float64)
    block: dict[str, Any] = {"MRE": float(mres.mean()), "num_samples": len(samples),
                             "num_failed": sum(r.reason is not None for r in rows),
                             "mean_diagonal": _mean_diagonal([r.diagonal for r in rows]),
                             "ci95": mean_intervals({"MRE": mres}, n_bootstrap, task_rng(seed, spec.task_id))}
    cases = [CaseRow(s.task_id, s.kind, s.image_path, MRE=float(rows[i].mre), reason=rows[i].reason)
             for i, s in enumerate(samples)]
    return block, cases


_BLOCKS: dict[TaskKind, Callable[..., tuple[dict, list[CaseRow]]]] = {
    TaskKind.SEGMENTATION: _seg_block,
    TaskKind.CLASSIFICATION: _cls_block,
    TaskKind.DETECTION: _det_block,
    TaskKind.REGRESSION: _reg_block,
}


class StrictPolicy(Policy):
    """Score every row; a broken prediction scores the worst, with its reason."""

    name = "strict"

    def score_mask(self, folder: PredictionFolder, gt_file: str, pred_rel: str, num_classes: int) -> SegScore:
        try:
            gt = decode_mask(gt_file).array
        except Exception as exc:  # noqa: BLE001 - reported to the organizer as a label problem
            return SegScore(label_error=f"{gt_file}: label mask unreadable ({exc})")
        try:
            dm = folder.read_prediction_mask(pred_rel)  # the reader and rules `fmuia check` applies
        except FileNotFoundError:
            return _worst_seg(num_classes, gt.shape, "prediction mask missing")
        except UnsafeInputError as exc:
            return _worst_seg(num_classes, gt.shape, f"prediction mask refused: {exc.message}")
        except FmuiaError as exc:
            return _worst_seg(num_classes, gt.shape, f"prediction mask unreadable: {exc.message}")
        except Exception as exc:  # noqa: BLE001
            return _worst_seg(num_classes, gt.shape, f"prediction mask unreadable: {type(exc).__name__}")
        problems = prediction_mask_problems(dm, (gt.shape[1], gt.shape[0]), num_classes)
        if problems:
            return _worst_seg(num_classes, gt.shape, "; ".join(problems))
        m = M.per_class_metrics(dm.array, gt, num_classes, with_hd95=True)
        return SegScore(m.dice, m.hd, m.hd95, M.diagonal(gt.shape))

    def read_entries(self, kind: TaskKind, folder: PredictionFolder, root: DataRoot) -> Entries:
        name = PREDICTION_FILES[kind]
        try:
            loaded = folder.read_json_file(kind)  # the reader `fmuia check` uses
        except Exception as exc:  # noqa: BLE001 - FmuiaError: unreadable, refused, over the cap; anything else too
            why = exc.message if isinstance(exc, FmuiaError) else f"{name}: {type(exc).__name__}: {exc}"
            out = Entries(notes=[f"{why}; every row counts as invalid"])
            for s in root.samples:
                if s.kind is kind:
                    out.problems[s.key] = f"prediction file unreadable: {why}"
            return out
        if loaded is None:
            return Entries(notes=[f"{name}: absent; every row counts as missing"])
        out = index_entries(kind, loaded.entries, root)
        out.notes += [f"{where}: {msg}" if where else msg for where, msg in loaded.warnings[:5]]
        if len(loaded.warnings) > 5:
            out.notes.append(f"... and {len(loaded.warnings) - 5} more repeated keys")
        return out

    def score_row(self, sample: Sample, entries: Entries) -> RowScore:
        return _ROWS[sample.kind](sample, entries.valid.get(sample.key), entries.problems.get(sample.key))

    def fallback(self, sample: Sample, reason: str) -> RowScore:
        if sample.kind is TaskKind.SEGMENTATION:
            try:
                w, h = image_size(sample.mask_file)
            except Exception as exc:  # noqa: BLE001 - the label side: an organizer problem
                return SegScore(label_error=f"{sample.mask_file}: label mask unreadable ({exc})")
            return _worst_seg(sample.task.num_classes, (h, w), reason)
        return _ROWS[sample.kind](sample, None, reason)

    def task_block(self, spec: TaskSpec, samples: list[Sample], scores: list[Any]) -> tuple[dict, list[CaseRow]]:
        return _BLOCKS[spec.kind](spec, samples, scores, self.params.n_bootstrap, self.params.seed)

    def kind_notes(self, kind: TaskKind, entries: Entries, blocks: dict[str, dict]) -> list[str]:
        name = PREDICTION_FILES[kind]
        notes = list(entries.notes) + sorted({b["AP_note"] for b in blocks.values() if b.get("AP_note")})
        return [n if n.startswith(name) else f"{name}: {n}" for n in notes]

    def finish(self, results: dict, cases: list[CaseRow], notes: list[str], folder: PredictionFolder) -> dict:
        notes = notes + [f"{name}: {why}" for name, why in folder.refused()]
        results["aggregates"] = compute_aggregates(results)
        results["per_case"] = [c.to_dict() for c in cases]
        results["notes"] = notes
        results["mode"] = "strict"
        return results
