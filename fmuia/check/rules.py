"""The per-kind rules: one function per task kind, dispatched by :data:`RULES` (never by task id).

Each rule takes the parsed record (or, for segmentation, the mask's :class:`PredictionMask`), its CSV
row and the image ``(width, height)`` (``None`` for kinds not in :data:`NEEDS_SIZE`), and returns
its findings. The rules are pure: reading files, matching entries to rows and the generic rules
(missing, duplicate, unknown entries, refused files) live in :mod:`fmuia.check.checker`.

* classification: class an integer in ``0..C-1``; ``predicted_probs`` present, ``C`` finite,
  non-negative numbers summing to 1 (±1e-3); argmax disagreeing with the class → warning;
* detection: both boxes 4 finite numbers with min < max, inside the image (1 px / 1e-3
  tolerance, whichever is larger), ``bbox_normalized`` ≈ ``bbox_pixels`` / image size;
* regression: ``2K`` finite coordinates in both lists, normalized ≈ pixels / image size;
  points outside the image → warning;
* segmentation: :func:`fmuia.dataset.masks.prediction_mask_problems`, shared with strict scoring:
  decodable by both Pillow and the official scorer's OpenCV, a lossless PNG, 8-bit single channel
  (mode L, or P whose palette OpenCV's greyscale read maps to the indices), the image's size,
  values < C, and the official scorer's read equal to the stored indices (no EXIF rotation).

:data:`RULE_LIST` is the human-readable list of every rule, generic ones included: keep it in
step when a rule changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from fmuia.check.report import Finding, err, warn
from fmuia.dataset.masks import PredictionMask, prediction_mask_problems
from fmuia.dataset.schema import Sample
from fmuia.formats import ClassificationPrediction, DetectionPrediction, RegressionPrediction
from fmuia.tasks import TaskKind

__all__ = ["NEEDS_SIZE", "NORM_TOL", "PIX_TOL", "PNG_MODES", "PROB_SUM_TOL", "RULES", "RULE_LIST", "Rule"]

PROB_SUM_TOL = 1e-3  # |sum(probs) - 1|
PIX_TOL = 1.0  # pixels: how far a box/point may stick out, and pixel/normalized agreement
NORM_TOL = 1e-3  # normalized units: same, in [0, 1] coordinates
PNG_MODES = {"L", "P"}  # 8-bit single channel (grey or palette indices)

# Human-readable list of the rules (shown by the docs and the closing note).
RULE_LIST: tuple[str, ...] = (
    "every CSV row has exactly one prediction: missing entries/masks and duplicates are errors "
    "(a task with nothing at all is one line)",
    "no unknown task_id, no task of another kind in a kind's file, no image_path outside the task's CSV rows",
    "JSON files are what the official scorer's json.load reads (UTF-8 without a BOM, integers of at most 4,300 "
    "digits, nesting at most 512 deep, at most 32 MiB), lists of objects with the official field names and types "
    "(predicted_class an integer, not 1.0; numbers finite, not booleans); a key repeated in one object is a warning",
    "classification: predicted_class is an integer in 0..C-1",
    "classification: predicted_probs has C finite, non-negative numbers summing to 1 (±1e-3)",
    "classification: argmax(predicted_probs) disagreeing with predicted_class is a warning",
    "detection: bbox_normalized and bbox_pixels are 4 finite numbers with x_min < x_max, y_min < y_max",
    "detection: boxes lie inside the image (1 px / 1e-3 tolerance)",
    "detection: bbox_normalized ≈ bbox_pixels / image size (1 px / 1e-3 tolerance)",
    "regression: predicted_points_normalized and _pixels each have 2K finite coordinates",
    "regression: normalized ≈ pixels / image size; a point outside the image is a warning",
    "segmentation: a mask at PRED_DIR/<mask_path without '../'>, decodable by Pillow and by the official scorer's OpenCV "
    "(a truncated PNG, a missing IEND or a bad CRC in a critical chunk is an error)",
    "segmentation: lossless PNG (JPEG is an error), 8-bit single channel (mode L, or P with a grey identity palette: the official scorer reads masks as greyscale)",
    "segmentation: mask size equals the image size; values < num_classes",
    "safety: files or links resolving outside PRED_DIR, zip-slip names and links in archives are refused, never read",
    "safety: JSON over the size cap, images over the pixel cap, archives inflating past the cap are refused",
    "a zip must have its files at the archive root (not inside one top folder); every member must extract on the "
    "platform (no bad CRC, encryption, two members at one path, a path both file and folder); a backslash in a name "
    "is part of the file name, not a folder separator",
    "files not asked for by the CSVs are warnings",
)

# A rule: (parsed record or PredictionMask, CSV row, image (width, height) or None) -> findings.
Rule = Callable[[Any, Sample, tuple[int, int] | None], list[Finding]]


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _classification_rules(p: ClassificationPrediction, s: Sample, size: tuple[int, int] | None) -> list[Finding]:
    n = s.task.num_classes
    out: list[Finding] = []
    if not 0 <= p.predicted_class < n:
        out.append(err(f"predicted_class {p.predicted_class} out of range; expected an integer in 0..{n - 1}"))
    probs = p.predicted_probs
    if probs is None:
        out.append(err(f"predicted_probs missing; expected a list of {n} probabilities summing to 1"))
        return out
    if len(probs) != n:
        out.append(err(f"predicted_probs has {len(probs)} values; expected {n} (num_classes)"))
        return out
    neg = [i for i, v in enumerate(probs) if v < 0]
    if neg:
        out.append(err(f"predicted_probs[{neg[0]}] = {_fmt(probs[neg[0]])} is negative; expected probabilities >= 0"))
    total = math.fsum(probs)
    if abs(total - 1.0) > PROB_SUM_TOL:
        out.append(err(f"predicted_probs sum to {_fmt(total)}; expected 1 (±{PROB_SUM_TOL:g})"))
    if not out and 0 <= p.predicted_class < n and probs[p.predicted_class] < max(probs):
        best = max(range(n), key=probs.__getitem__)
        out.append(
            warn(
                f"predicted_class {p.predicted_class} is not the argmax of predicted_probs (class {best}, "
                f"p={_fmt(probs[best])}); expected them to agree"
            )
        )
    return out


def _consistency(name: str, norm: Sequence[float], pix: Sequence[float], w: int, h: int) -> Finding | None:
    """First coordinate where ``norm`` and ``pix / size`` disagree beyond tolerance (x at even indices)."""
    for i, (a, b) in enumerate(zip(norm, pix, strict=True)):
        dim = w if i % 2 == 0 else h
        if abs(a - b / dim) > max(NORM_TOL, PIX_TOL / dim):
            axis = "x" if i % 2 == 0 else "y"
            return err(
                f"{name}[{i}] = {_fmt(a)} but pixels / image {'width' if axis == 'x' else 'height'} = "
                f"{_fmt(b)} / {dim} = {_fmt(b / dim)}; expected normalized = pixels / image size"
            )
    return None


def _outside(values: Sequence[float], w: int, h: int, normalized: bool) -> int | None:
    """Index of the first coordinate outside the image (with tolerance), else ``None``."""
    for i, v in enumerate(values):
        dim = w if i % 2 == 0 else h
        hi = 1.0 if normalized else float(dim)
        tol = max(NORM_TOL, PIX_TOL / dim) if normalized else PIX_TOL  # the same slack in both units
        if v < -tol or v > hi + tol:
            return i
    return None


def _detection_rules(p: DetectionPrediction, s: Sample, size: tuple[int, int] | None) -> list[Finding]:
    assert size is not None
    w, h = size
    out: list[Finding] = []
    ordered = True
    for name, box in (("bbox_normalized", p.bbox_normalized), ("bbox_pixels", p.bbox_pixels)):
        if not (box[0] < box[2] and box[1] < box[3]):
            out.append(err(f"{name} {list(box)}: expected x_min < x_max and y_min < y_max"))
            ordered = False
    for name, box, normalized in (("bbox_normalized", p.bbox_normalized, True), ("bbox_pixels", p.bbox_pixels, False)):
        i = _outside(box, w, h, normalized)
        if i is not None:
            bound = "[0, 1]" if normalized else f"[0, {w}] x [0, {h}] (the image is {w}x{h})"
            out.append(err(f"{name} {list(box)} lies outside the image; expected coordinates within {bound}"))
    if ordered:
        bad = _consistency("bbox_normalized", p.bbox_normalized, p.bbox_pixels, w, h)
        if bad:
            out.append(bad)
    return out


def _regression_rules(p: RegressionPrediction, s: Sample, size: tuple[int, int] | None) -> list[Finding]:
    assert size is not None
    w, h = size
    k = s.task.num_classes
    out: list[Finding] = []
    for name, values in (("predicted_points_normalized", p.points_normalized), ("predicted_points_pixels", p.points_pixels)):
        if len(values) != 2 * k:
            out.append(err(f"{name} has {len(values)} numbers; expected {2 * k} ([x1, y1, ..., x{k}, y{k}] for {k} landmarks)"))
    if out:
        return out
    bad = _consistency("predicted_points_normalized", p.points_normalized, p.points_pixels, w, h)
    if bad:
        out.append(bad)
    i = _outside(p.points_pixels, w, h, normalized=False)
    if i is not None:
        out.append(
            warn(
                f"landmark {i // 2 + 1} at pixels ({_fmt(p.points_pixels[i - i % 2])}, {_fmt(p.points_pixels[i - i % 2 + 1])}) "
                f"lies outside the {w}x{h} image"
            )
        )
    return out


def _segmentation_rules(m: PredictionMask, s: Sample, size: tuple[int, int] | None) -> list[Finding]:
    """The shared mask rules (:func:`fmuia.dataset.masks.prediction_mask_problems`, which strict
    scoring applies too), each problem an error; ``size`` may be ``None`` for an undecodable mask."""
    if m.error is not None:
        return [err(p) for p in prediction_mask_problems(m, (0, 0), s.task.num_classes)]
    assert size is not None
    return [err(p) for p in prediction_mask_problems(m, size, s.task.num_classes)]


# The rule table: kind -> rule function over (parsed record, CSV row, image size or None).
RULES: dict[TaskKind, Rule] = {
    TaskKind.CLASSIFICATION: _classification_rules,
    TaskKind.DETECTION: _detection_rules,
    TaskKind.REGRESSION: _regression_rules,
    TaskKind.SEGMENTATION: _segmentation_rules,
}
# Kinds whose rules need the image size (read from the image header, cached).
NEEDS_SIZE = {TaskKind.DETECTION, TaskKind.REGRESSION, TaskKind.SEGMENTATION}
