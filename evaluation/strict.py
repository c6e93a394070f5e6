"""Strict mode: every label row is scored, nothing is skipped or silently repaired.

Policies (each row's ``reason`` says which one applied; ``None`` when the prediction was fine):

- Segmentation: the prediction must be a lossless single-channel mask (PNG; mode L, P, 1 or
  16-bit grey) of exactly the label's size with values in ``0..C-1``. Anything else — missing,
  unreadable, refused, RGB, JPEG, wrong size, out-of-range values — scores the worst: Dice 0 and
  HD = HD95 = the image diagonal for every class. Valid masks: per-class Dice, HD and HD95 as in
  :mod:`evaluation.metrics`. A palette mask is read by index, not by colour.
- Classification: a valid entry has ``predicted_class`` in ``0..C-1``; otherwise the row counts
  as wrong (a prediction of "no class") with uniform probabilities. ``predicted_probs`` must be C
  finite non-negative numbers; if not, the class still counts and AUC uses uniform probabilities.
  Per-class F1 is aligned to the class index; AUC is one-vs-rest macro over the classes for which
  it is defined (``null`` when none is).
- Detection: ``bbox_pixels`` must have ``x_min < x_max`` and ``y_min < y_max``; otherwise IoU 0.
  COCO AP (pycocotools) when every valid prediction carries ``score``; ``null`` with an ``AP_note``
  (and a note in the results) when pycocotools cannot be imported.
- Regression: ``predicted_points_pixels`` must hold 2K finite numbers; otherwise, or when missing,
  the row's MRE is the image diagonal. Missing label landmarks are left out (not taken as (0, 0)).
- Duplicated entries for one row make that row invalid (which one was meant is unknowable).
- 95% bootstrap intervals per task metric (resampling rows, seeded).
- Segmentation, detection and regression tasks record ``mean_diagonal``, the mean image diagonal
  in pixels over the task's rows (the leaderboard normalises HD and MRE by it). Classification
  per-case rows carry ``label`` and ``predicted`` (``None`` for an invalid row) so the leaderboard
  can recompute F1 and MCC on bootstrap resamples.
"""

from __future__ import annotations

import contextlib
import io
import math
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from evaluation import metrics as M
from fmuia.dataset.images import image_size
from fmuia.dataset.masks import SINGLE_CHANNEL_MODES, decode_mask
from fmuia.dataset.schema import DataRoot, Sample
from fmuia.errors import FmuiaError, FormatError
from fmuia.formats import parse_entry
from fmuia.predfolder import PredictionFolder
from fmuia.tasks import TaskKind, TaskSpec

# ---- segmentation ---------------------------------------------------------------------------------

def _worst_seg(num_classes: int, shape: tuple[int, int] | None, reason: str) -> dict:
    diag = M.diagonal(shape) if shape is not None else 0.0
    return {"dice": [0.0] * num_classes, "hd": [diag] * num_classes, "hd95": [diag] * num_classes,
            "diag": diag, "reason": reason}


def seg_job(folder: PredictionFolder, gt_file: str, pred_rel: str, num_classes: int) -> dict:
    """Score one segmentation row strictly (worst values plus a reason on any problem)."""
    try:
        gt = decode_mask(gt_file).array
    except Exception as exc:  # noqa: BLE001 - reported to the organizer as a label problem
        return {"label_error": f"{gt_file}: label mask unreadable ({exc})"}
    try:
        dm = folder.read_mask(pred_rel)
    except FileNotFoundError:
        return _worst_seg(num_classes, gt.shape, "prediction mask missing")
    except FmuiaError as exc:
        return _worst_seg(num_classes, gt.shape, f"prediction mask refused: {exc.message}")
    except Exception as exc:  # noqa: BLE001
        return _worst_seg(num_classes, gt.shape, f"prediction mask unreadable: {type(exc).__name__}")
    if dm.format != "PNG":
        return _worst_seg(num_classes, gt.shape, f"prediction mask is {dm.format or 'unknown format'}, expected PNG")
    if dm.mode not in SINGLE_CHANNEL_MODES:
        return _worst_seg(num_classes, gt.shape, f"prediction mask has mode {dm.mode}, expected single-channel")
    pred = dm.array
    if pred.shape != gt.shape:
        return _worst_seg(num_classes, gt.shape,
                          f"prediction mask is {pred.shape[1]}x{pred.shape[0]}, expected {gt.shape[1]}x{gt.shape[0]}")
    if pred.size and int(pred.max()) >= num_classes:
        return _worst_seg(num_classes, gt.shape, f"prediction mask has value {int(pred.max())}, expected 0..{num_classes - 1}")
    m = M.per_class_metrics(pred, gt, num_classes, with_hd95=True)
    assert m.hd95 is not None
    return {"dice": m.dice.tolist(), "hd": m.hd.tolist(), "hd95": m.hd95.tolist(), "diag": M.diagonal(gt.shape),
            "reason": None}


def _mean_diagonal(diagonals: list[float | None]) -> float | None:
    """Mean image diagonal (pixels) of a task's rows: the leaderboard normalises HD and MRE by it."""
    vals = [float(d) for d in diagonals if d is not None and d > 0]
    return float(np.mean(vals)) if vals else None


def _image_diagonal(sample: Sample) -> float | None:
    try:
        w, h = image_size(sample.image_file)
    except Exception:  # noqa: BLE001 - a label-side image problem only costs the normalisation hint
        return None
    return math.sqrt(w * w + h * h)


def _rng(seed: int, task_id: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(task_id.encode("utf-8"))])


def _resample_means(values: dict[str, np.ndarray], n_bootstrap: int, rng: np.random.Generator) -> dict:
    """Percentile 95% intervals of the mean of each per-case column (paired resamples)."""
    n = len(next(iter(values.values())))
    if n_bootstrap <= 0 or n == 0:
        return {}
    out: dict[str, list[np.ndarray]] = {k: [] for k in values}
    chunk = max(1, min(n_bootstrap, 2_000_000 // max(n, 1)))
    done = 0
    while done < n_bootstrap:
        b = min(chunk, n_bootstrap - done)
        idx = rng.integers(0, n, size=(b, n))
        for k, v in values.items():
            out[k].append(v[idx].mean(axis=1))
        done += b
    return {k: _interval(np.concatenate(v)) for k, v in out.items()}


def _interval(samples: np.ndarray) -> list[float] | None:
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return None
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [float(lo), float(hi)]


def seg_task_result(spec: TaskSpec, samples: list[Sample], rows: list[dict], n_bootstrap: int,
                    seed: int) -> tuple[dict, list[dict]]:
    """Strict per-task block and per-case rows for one segmentation task."""
    c = spec.num_classes
    dice = np.array([r["dice"] for r in rows], dtype=np.float64).reshape(len(rows), c)
    hd = np.array([r["hd"] for r in rows], dtype=np.float64).reshape(len(rows), c)
    hd95 = np.array([r["hd95"] for r in rows], dtype=np.float64).reshape(len(rows), c)
    per_class = {f"class_{k}": {"DSC": float(dice[:, k].mean()), "HD": float(hd[:, k].mean()),
                                "HD95": float(hd95[:, k].mean())} for k in range(c)}
    fg = slice(1, c)
    case = {"DSC": dice[:, fg].mean(axis=1) if c > 1 else np.zeros(len(rows)),
            "HD": hd[:, fg].mean(axis=1) if c > 1 else np.zeros(len(rows)),
            "HD95": hd95[:, fg].mean(axis=1) if c > 1 else np.zeros(len(rows))}
    block: dict[str, Any] = {
        "DSC": float(np.mean([per_class[f"class_{k}"]["DSC"] for k in range(1, c)])) if c > 1 else 0.0,
        "HD": float(np.mean([per_class[f"class_{k}"]["HD"] for k in range(1, c)])) if c > 1 else 0.0,
        "HD95": float(np.mean([per_class[f"class_{k}"]["HD95"] for k in range(1, c)])) if c > 1 else 0.0,
        "num_samples": len(rows),
        "num_failed": sum(1 for r in rows if r["reason"] is not None),
        "mean_diagonal": _mean_diagonal([r.get("diag") for r in rows]),
        "per_class": per_class,
        "ci95": _resample_means(case, n_bootstrap, _rng(seed, spec.task_id)),
    }
    cases = [{"task_id": s.task_id, "kind": s.kind.value, "image_path": s.image_path,
              "DSC": float(case["DSC"][i]), "HD": float(case["HD"][i]), "HD95": float(case["HD95"][i]),
              "reason": rows[i]["reason"]} for i, s in enumerate(samples)]
    return block, cases


# ---- JSON kinds -------------------------------------------------------------------------------

def index_entries(kind: TaskKind, entries: list | None, root: DataRoot) -> tuple[dict, dict, list[str]]:
    """Parse every entry: ``(valid records by key, problem by key, notes)``.

    A key seen twice is a problem for that row (duplicate), whatever the entries hold.
    """
    valid: dict[tuple[str, str], Any] = {}
    problems: dict[tuple[str, str], str] = {}
    notes: list[str] = []
    seen: set[tuple[str, str]] = set()
    for i, entry in enumerate(entries or []):
        key = None
        if isinstance(entry, dict) and isinstance(entry.get("task_id"), str) and isinstance(entry.get("image_path"), str):
            key = (entry["task_id"], entry["image_path"])
        if key is not None and key in seen:
            problems[key] = "duplicate entries for this row"
            valid.pop(key, None)
            continue
        try:
            rec = parse_entry(kind, entry)
        except FormatError as exc:
            if key is None:
                notes.append(f"entry {i}: {exc.message} (matches no row)")
            else:
                seen.add(key)
                problems[key] = f"malformed entry {i}: {exc.message}"
            continue
        key = (rec.task_id, rec.image_path)
        seen.add(key)
        valid[key] = rec
    known = {s.key for s in root.samples if s.kind is kind}
    unknown = sum(1 for k in seen if k not in known)
    if unknown:
        notes.append(f"{unknown} entr{'y' if unknown == 1 else 'ies'} match no label row (ignored)")
    return valid, problems, notes


def _load(folder: PredictionFolder, kind: TaskKind, root: DataRoot) -> tuple[dict, dict, list[str]]:
    from fmuia.tasks import PREDICTION_FILES

    try:
        entries = folder.read_json(kind)
    except FmuiaError as exc:
        return {}, {}, [f"{exc.message}; every row counts as missing"]
    if entries is None:
        return {}, {}, [f"{PREDICTION_FILES[kind]}: absent; every row counts as missing"]
    return index_entries(kind, entries, root)


def _missing_reason(key: tuple[str, str], problems: dict) -> str:
    return problems.get(key, "prediction missing")


def _cls_metrics(y: np.ndarray, pred: np.ndarray, probs: np.ndarray, c: int,
                 weights: np.ndarray | None = None) -> dict[str, float]:
    cm = M.confusion_matrix(y, pred, c, weights)
    if c == 2:
        auc = M.auc_binary(y == 1, probs[:, 1], weights)
    else:
        auc = M.auc_ovr_macro(y, probs, c, weights)
    return {"Accuracy": M.accuracy(cm), "AUC": auc, "F1_macro": M.f1_macro(cm),
            "F1_weighted": M.f1_weighted(cm), "MCC": M.mcc(cm)}


def _weights_bootstrap(n: int, n_bootstrap: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64) for _ in range(n_bootstrap)]


def _classification_task(spec: TaskSpec, samples: list[Sample], parsed: tuple, ctx: dict) -> tuple[dict, list[dict]]:
    valid, problems, _ = parsed
    c = spec.num_classes
    n = len(samples)
    y = np.array([int(s.label) for s in samples], dtype=np.intp)
    pred = np.full(n, -1, dtype=np.intp)
    probs = np.full((n, c), 1.0 / c)
    reasons: list[str | None] = []
    for i, s in enumerate(samples):
        rec = valid.get(s.key)
        if rec is None:
            reasons.append(_missing_reason(s.key, problems))
            continue
        if not 0 <= rec.predicted_class < c:
            reasons.append(f"predicted_class {rec.predicted_class} out of range 0..{c - 1}")
            continue
        pred[i] = rec.predicted_class
        p = rec.predicted_probs
        if p is None or len(p) != c or any(v < 0 for v in p):
            reasons.append(f"predicted_probs missing or not {c} non-negative numbers: uniform used for AUC")
        else:
            probs[i] = p
            reasons.append(None)
    m = _cls_metrics(y, pred, probs, c)
    cm = M.confusion_matrix(y, pred, c)
    block: dict[str, Any] = {
        "AUC": None if math.isnan(m["AUC"]) else m["AUC"],
        "Accuracy": m["Accuracy"], "F1_macro": m["F1_macro"], "F1_weighted": m["F1_weighted"],
        "MCC": m["MCC"], "num_samples": n, "num_failed": sum(r is not None for r in reasons),
        "per_class": {f"class_{k}": {"F1": float(v)} for k, v in enumerate(M.f1_per_class(cm))},
    }
    ci: dict[str, Any] = {}
    if ctx["n_bootstrap"] > 0:
        rng = _rng(ctx["seed"], spec.task_id)
        boots = [_cls_metrics(y, pred, probs, c, w) for w in _weights_bootstrap(n, ctx["n_bootstrap"], rng)]
        ci = {k: _interval(np.array([b[k] for b in boots], dtype=np.float64)) for k in m}
    block["ci95"] = ci
    cases = [{"task_id": s.task_id, "kind": s.kind.value, "image_path": s.image_path,
              "label": int(y[i]), "predicted": int(pred[i]) if pred[i] >= 0 else None,
              "correct": bool(pred[i] == y[i]), "prob_true": float(probs[i, y[i]]), "reason": reasons[i]}
             for i, s in enumerate(samples)]
    return block, cases


def _import_pycocotools() -> tuple[Any, Any] | None:
    """``(COCO, COCOeval)``, or ``None`` when pycocotools cannot be imported (AP is then null)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except Exception:  # noqa: BLE001 - ImportError, or a binary built for another numpy
        return None
    return COCO, COCOeval


def _coco_ap(samples: list[Sample], boxes: dict[int, tuple[list[float], float]]) -> dict[str, float] | None:
    """COCO AP@[.5:.95], AP50, AP75 with one label box per image and at most one prediction;
    ``None`` when pycocotools is not installed."""
    coco = _import_pycocotools()
    if coco is None:
        return None
    COCO, COCOeval = coco  # noqa: N806

    images, anns, dets = [], [], []
    for i, s in enumerate(samples):
        x0, y0, x1, y1 = s.label
        images.append({"id": i + 1})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                     "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
        if i in boxes:
            (px0, py0, px1, py1), score = boxes[i]
            dets.append({"image_id": i + 1, "category_id": 1, "bbox": [px0, py0, px1 - px0, py1 - py0], "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}
        gt.createIndex()
        if not dets:
            return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [max(0.0, float(v)) for v in ev.stats[:3]]  # -1 means "no ground truth": not the case here
    return {"AP": stats[0], "AP50": stats[1], "AP75": stats[2]}


def _detection_task(spec: TaskSpec, samples: list[Sample], parsed: tuple, ctx: dict) -> tuple[dict, list[dict]]:
    valid, problems, _ = parsed
    ious, reasons = [], []
    boxes: dict[int, tuple[list[float], float]] = {}
    all_scored = True
    for i, s in enumerate(samples):
        rec = valid.get(s.key)
        if rec is None:
            ious.append(0.0)
            reasons.append(_missing_reason(s.key, problems))
            continue
        x0, y0, x1, y1 = rec.bbox_pixels
        if not (x0 < x1 and y0 < y1):
            ious.append(0.0)
            reasons.append(f"bbox_pixels {list(rec.bbox_pixels)}: expected x_min < x_max and y_min < y_max")
            continue
        ious.append(M.iou_xyxy(rec.bbox_pixels, s.label))
        reasons.append(None)
        if rec.score is None:
            all_scored = False
        else:
            boxes[i] = (list(rec.bbox_pixels), rec.score)
    arr = np.array(ious, dtype=np.float64)
    block: dict[str, Any] = {"IoU": float(arr.mean()), "num_samples": len(samples),
                             "num_failed": sum(r is not None for r in reasons),
                             "mean_diagonal": _mean_diagonal([_image_diagonal(s) for s in samples])}
    ap = _coco_ap(samples, boxes) if all_scored else None
    block.update(ap if ap is not None else {"AP": None, "AP50": None, "AP75": None})
    if all_scored and ap is None:
        block["AP_note"] = "pycocotools is not installed: COCO AP not computed"
    block["ci95"] = _resample_means({"IoU": arr}, ctx["n_bootstrap"], _rng(ctx["seed"], spec.task_id))
    cases = [{"task_id": s.task_id, "kind": s.kind.value, "image_path": s.image_path, "IoU": ious[i],
              "reason": reasons[i]} for i, s in enumerate(samples)]
    return block, cases


def _regression_task(spec: TaskSpec, samples: list[Sample], parsed: tuple, ctx: dict) -> tuple[dict, list[dict]]:
    valid, problems, _ = parsed
    k = spec.num_classes
    mres, reasons, diags = [], [], []
    for s in samples:
        w, h = image_size(s.image_file)
        diag = math.sqrt(w * w + h * h)
        diags.append(diag)
        rec = valid.get(s.key)
        if rec is None:
            mres.append(diag)
            reasons.append(_missing_reason(s.key, problems))
            continue
        pts = rec.points_pixels
        if len(pts) != 2 * k:
            mres.append(diag)
            reasons.append(f"predicted_points_pixels has {len(pts)} numbers, expected {2 * k}")
            continue
        keep = [j for j, p in enumerate(s.label) if p is not None]
        g = np.array([s.label[j] for j in keep], dtype=np.float64).reshape(-1, 2)
        p = np.asarray(pts, dtype=np.float64).reshape(k, 2)[keep]
        mres.append(M.mean_radial_error(p, g))
        reasons.append(None)
    arr = np.array(mres, dtype=np.float64)
    block: dict[str, Any] = {"MRE": float(arr.mean()), "num_samples": len(samples),
                             "num_failed": sum(r is not None for r in reasons),
                             "mean_diagonal": _mean_diagonal(diags),
                             "ci95": _resample_means({"MRE": arr}, ctx["n_bootstrap"], _rng(ctx["seed"], spec.task_id))}
    cases = [{"task_id": s.task_id, "kind": s.kind.value, "image_path": s.image_path, "MRE": mres[i],
              "reason": reasons[i]} for i, s in enumerate(samples)]
    return block, cases


JSON_TASK_SCORERS: dict[TaskKind, Callable[..., tuple[dict, list[dict]]]] = {
    TaskKind.CLASSIFICATION: _classification_task,
    TaskKind.DETECTION: _detection_task,
    TaskKind.REGRESSION: _regression_task,
}


def score_json_kind(kind: TaskKind, folder: PredictionFolder, root: DataRoot, by_task: dict[str, list[Sample]],
                    n_bootstrap: int, seed: int) -> tuple[dict, list[dict], list[str]]:
    """Strict results, per-case rows and notes of one JSON kind."""
    parsed = _load(folder, kind, root)
    ctx = {"n_bootstrap": n_bootstrap, "seed": seed}
    results, cases = {}, []
    for task_id, samples in by_task.items():
        block, rows = JSON_TASK_SCORERS[kind](samples[0].task, samples, parsed, ctx)
        results[task_id] = block
        cases += rows
    notes = list(parsed[2])
    ap_notes = {b["AP_note"] for b in results.values() if b.get("AP_note")}
    notes += sorted(ap_notes)
    return results, cases, notes


__all__ = ["seg_job", "seg_task_result", "score_json_kind"]
