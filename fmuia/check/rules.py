"""The per-kind rules: one function per task kind, dispatched by :data:`RULES` (never by task id).

Each rule takes the parsed record (or, for segmentation, the mask's :class:`MaskInfo`), its CSV
row and the image ``(width, height)`` (``None`` for kinds not in :data:`NEEDS_SIZE`), and returns
its findings. The rules are pure: reading files, matching entries to rows and the generic rules
(missing, duplicate, unknown entries, refused files) live in :mod:`fmuia.check.checker`.

* classification: class an integer in ``0..C-1``; ``predicted_probs`` present, ``C`` finite,
  non-negative numbers summing to 1 (±1e-3); argmax disagreeing with the class → warning;
* detection: both boxes 4 finite numbers with min < max, inside the image (1 px / 1e-3
  tolerance, whichever is larger), ``bbox_normalized`` ≈ ``bbox_pixels`` / image size;
* regression: ``2K`` finite coordinates in both lists, normalized ≈ pixels / image size;
  points outside the image → warning;
* segmentation: a decodable lossless PNG, 8-bit single channel (mode L or P), the image's
  size, values < C.

:data:`RULE_LIST` is the human-readable list of every rule, generic ones included: keep it in
step when a rule changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from fmuia.check.report import Finding, err, warn
from fmuia.dataset.masks import MaskInfo
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
    "JSON files are UTF-8 JSON lists of objects with the official field names and types",
    "classification: predicted_class is an integer in 0..C-1",
    "classification: predicted_probs has C finite, non-negative numbers summing to 1 (±1e-3)",
    "classification: argmax(predicted_probs) disagreeing with predicted_class is a warning",
    "detection: bbox_normalized and bbox_pixels are 4 finite numbers with x_min < x_max, y_min < y_max",
    "detection: boxes lie inside the image (1 px / 1e-3 tolerance)",
    "detection: bbox_normalized ≈ bbox_pixels / image size (1 px / 1e-3 tolerance)",
    "regression: predicted_points_normalized and _pixels each have 2K finite coordinates",
    "regression: normalized ≈ pixels / image size; a point outside the image is a warning",
    "segmentation: a mask at PRED_DIR/<mask_path without '../'>, decodable",
    "segmentation: lossless PNG (JPEG is an error), 8-bit single channel (mode L, or P with a grey identity palette: the official scorer reads masks as greyscale)",
    "segmentation: mask size equals the image size; values < num_classes",
    "safety: files or links resolving outside PRED_DIR, zip-slip names and links in archives are refused, never read",
    "safety: JSON over the size cap, images over the pixel cap, archives inflating past the cap are refused",
    "a zip must have its files at the archive root (not inside one top folder)",
    "files not asked for by the CSVs are warnings",
)

# A rule: (parsed record or MaskInfo, CSV row, image (width, height) or None) -> findings.
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


def _segmentation_rules(m: MaskInfo, s: Sample, size: tuple[int, int] | None) -> list[Finding]:
    assert size is not None
    n = s.task.num_classes
    out: list[Finding] = []
    if m.format != "PNG":
        out.append(err(f"mask is {m.format or 'an unknown format'}; expected a lossless PNG (JPEG compression alters class indices)"))
    if m.mode not in PNG_MODES:
        out.append(err(f"mask has mode {m.mode}; expected an 8-bit single-channel image (mode L or P) of class indices"))
    if m.mode == "P" and not m.palette_grey:
        out.append(err("palette PNG whose colours are not the grey levels of its indices; the official scorer reads "
                       "masks as greyscale, so it would see the colours, not the classes: save as mode L"))
    if m.size != tuple(size):
        out.append(err(f"mask is {m.size[0]}x{m.size[1]}; expected the image size {size[0]}x{size[1]} (width x height)"))
    if m.max_value is not None and m.max_value >= n:
        out.append(err(f"mask value {m.max_value} out of range; expected class indices 0..{n - 1}"))
    return out


# The rule table: kind -> rule function over (parsed record, CSV row, image size or None).
RULES: dict[TaskKind, Rule] = {
    TaskKind.CLASSIFICATION: _classification_rules,
    TaskKind.DETECTION: _detection_rules,
    TaskKind.REGRESSION: _regression_rules,
    TaskKind.SEGMENTATION: _segmentation_rules,
}
# Kinds whose rules need the image size (read from the image header, cached).
NEEDS_SIZE = {TaskKind.DETECTION, TaskKind.REGRESSION, TaskKind.SEGMENTATION}
