"""``fmuia check``: validate a prediction folder (or its ``.zip``) against a data root's CSVs.

No labels are needed: the data root only says which predictions must exist (one per CSV row),
their task, class count and image size. Rules are organised per task kind in one table
(:data:`RULES`), plus generic rules shared by every kind:

Generic
  * every CSV row has exactly one prediction (missing → error, duplicate → error; a task with
    no prediction at all is reported in one line, not one per row);
  * no unknown task, no task of another kind in a kind's file, no unknown image for a task;
  * the folder's JSON files are UTF-8 JSON lists, entries are objects of the right field types;
  * files/links resolving outside the folder, zip-slip names and links in archives are refused
    (never read) and reported; JSON over the size cap, images over the pixel cap and archives
    inflating past their cap are refused with a clear message;
  * a zip whose files sit in one top folder instead of the archive root is reported as such;
  * files nobody asked for are warnings.

Per kind
  * classification: class an integer in ``0..C-1``; ``predicted_probs`` present, ``C`` finite,
    non-negative numbers summing to 1 (±1e-3); argmax disagreeing with the class → warning;
  * detection: both boxes 4 finite numbers with min < max, inside the image (1 px / 1e-3
    tolerance, whichever is larger), ``bbox_normalized`` ≈ ``bbox_pixels`` / image size;
  * regression: ``2K`` finite coordinates in both lists, normalized ≈ pixels / image size;
    points outside the image → warning;
  * segmentation: a mask at ``<mask_path without '../'>``, decodable, lossless PNG, 8-bit
    single channel (mode L or P), the image's size, values < C.

Image sizes come from image headers (cached); masks, the hot path, are decoded once each, in a
thread pool (Pillow and zlib release the GIL while decoding).
"""

from __future__ import annotations

import math
import os
import struct
import sys
import zipfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmuia.dataset import images as _images
from fmuia.dataset.masks import MaskInfo, inspect_mask
from fmuia.dataset.schema import DataRoot, Sample, load_root, prediction_mask_relpath
from fmuia.errors import FmuiaError, Problem, UnsafeInputError
from fmuia.formats import (
    ClassificationPrediction,
    DetectionPrediction,
    RegressionPrediction,
    parse_entry,
)
from fmuia.predfolder import MAX_MASK_BYTES, PredictionFolder, open_predictions
from fmuia.tasks import PREDICTION_FILES, TaskKind

__all__ = ["CheckReport", "CheckUsageError", "TaskCounts", "RULES", "RULE_LIST", "check_predictions", "load_data_root"]

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


class CheckUsageError(FmuiaError):
    """The check cannot run at all (missing path, not a folder or zip, unreadable data root)."""

    exit_code = 2


# ---- report -----------------------------------------------------------------------------------------

@dataclass
class TaskCounts:
    """Per-task tallies: CSV rows, predictions found, found and valid, and problems."""

    task_id: str
    kind: TaskKind
    expected: int = 0
    found: int = 0
    valid: int = 0
    errors: int = 0
    warnings: int = 0

    def to_dict(self) -> dict:
        return {
            "kind": self.kind.value,
            "expected": self.expected,
            "found": self.found,
            "valid": self.valid,
            "errors": self.errors,
            "warnings": self.warnings,
        }


@dataclass
class CheckReport:
    """The outcome of :func:`check_predictions`.

    ``problems`` holds errors and warnings in a stable order; ``problem_tasks[i]`` is the task
    the ``i``-th problem belongs to (``None`` for file-level problems).
    """

    pred_path: str
    data_root: str
    tasks: dict[str, TaskCounts]
    problems: list[Problem] = field(default_factory=list)
    problem_tasks: list[str | None] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity != "error"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not any(p.severity == "error" for p in self.problems)

    def add(self, problem: Problem, task_id: str | None = None) -> None:
        self.problems.append(problem)
        self.problem_tasks.append(task_id)
        counts = self.tasks.get(task_id) if task_id is not None else None
        if counts is not None:
            if problem.severity == "error":
                counts.errors += 1
            else:
                counts.warnings += 1

    def to_dict(self) -> dict:
        """A JSON-able report (what ``fmuia check --json`` writes)."""
        return {
            "ok": self.ok,
            "pred_path": self.pred_path,
            "data_root": self.data_root,
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "tasks": {tid: c.to_dict() for tid, c in self.tasks.items()},
            "problems": [
                {**p.to_dict(), "task_id": t} for p, t in zip(self.problems, self.problem_tasks, strict=True)
            ],
        }

    def summary_table(self) -> str:
        """A per-task table (kind, expected, found, valid, errors, warnings) plus a total line."""
        header = ("task", "kind", "expected", "found", "valid", "errors", "warnings")
        rows = [
            (c.task_id, c.kind.value, c.expected, c.found, c.valid, c.errors, c.warnings)
            for c in sorted(self.tasks.values(), key=lambda c: (list(TaskKind).index(c.kind), c.task_id))
        ]
        file_level = [p for p, t in zip(self.problems, self.problem_tasks, strict=True) if t is None]
        tot = [sum(r[i] for r in rows) for i in range(2, 7)]
        tot[3] += sum(p.severity == "error" for p in file_level)
        tot[4] += sum(p.severity != "error" for p in file_level)
        total = ("TOTAL", "", *tot)
        cells = [tuple(str(v) for v in r) for r in [header, *rows, total]]
        widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

        def fmt(r: tuple[str, ...]) -> str:
            return "  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))

        rule = "-" * len(fmt(cells[0]))
        lines = [fmt(cells[0]), rule, *(fmt(r) for r in cells[1:-1]), rule, fmt(cells[-1])]
        if file_level:
            lines.append(f"({len(file_level)} file-level problem(s) not tied to one task are in the TOTAL line)")
        lines.append(self.verdict())
        return "\n".join(lines)

    def verdict(self) -> str:
        n_err, n_warn = len(self.errors), len(self.warnings)
        if n_err == 0:
            return f"OK: {self.pred_path} is a valid submission ({n_warn} warning(s))."
        return f"INVALID: {n_err} error(s), {n_warn} warning(s) in {self.pred_path}."


# ---- rules per kind -----------------------------------------------------------------------------------

Finding = tuple[str, str]  # (severity, message)


def _err(msg: str) -> Finding:
    return ("error", msg)


def _warn(msg: str) -> Finding:
    return ("warning", msg)


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _classification_rules(p: ClassificationPrediction, s: Sample, size: tuple[int, int] | None) -> list[Finding]:
    n = s.task.num_classes
    out: list[Finding] = []
    if not 0 <= p.predicted_class < n:
        out.append(_err(f"predicted_class {p.predicted_class} out of range; expected an integer in 0..{n - 1}"))
    probs = p.predicted_probs
    if probs is None:
        out.append(_err(f"predicted_probs missing; expected a list of {n} probabilities summing to 1"))
        return out
    if len(probs) != n:
        out.append(_err(f"predicted_probs has {len(probs)} values; expected {n} (num_classes)"))
        return out
    neg = [i for i, v in enumerate(probs) if v < 0]
    if neg:
        out.append(_err(f"predicted_probs[{neg[0]}] = {_fmt(probs[neg[0]])} is negative; expected probabilities >= 0"))
    total = math.fsum(probs)
    if abs(total - 1.0) > PROB_SUM_TOL:
        out.append(_err(f"predicted_probs sum to {_fmt(total)}; expected 1 (±{PROB_SUM_TOL:g})"))
    if not out and 0 <= p.predicted_class < n and probs[p.predicted_class] < max(probs):
        best = max(range(n), key=probs.__getitem__)
        out.append(
            _warn(
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
            return _err(
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
            out.append(_err(f"{name} {list(box)}: expected x_min < x_max and y_min < y_max"))
            ordered = False
    for name, box, normalized in (("bbox_normalized", p.bbox_normalized, True), ("bbox_pixels", p.bbox_pixels, False)):
        i = _outside(box, w, h, normalized)
        if i is not None:
            bound = "[0, 1]" if normalized else f"[0, {w}] x [0, {h}] (the image is {w}x{h})"
            out.append(_err(f"{name} {list(box)} lies outside the image; expected coordinates within {bound}"))
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
            out.append(_err(f"{name} has {len(values)} numbers; expected {2 * k} ([x1, y1, ..., x{k}, y{k}] for {k} landmarks)"))
    if out:
        return out
    bad = _consistency("predicted_points_normalized", p.points_normalized, p.points_pixels, w, h)
    if bad:
        out.append(bad)
    i = _outside(p.points_pixels, w, h, normalized=False)
    if i is not None:
        out.append(
            _warn(
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
        out.append(_err(f"mask is {m.format or 'an unknown format'}; expected a lossless PNG (JPEG compression alters class indices)"))
    if m.mode not in PNG_MODES:
        out.append(_err(f"mask has mode {m.mode}; expected an 8-bit single-channel image (mode L or P) of class indices"))
    if m.mode == "P" and not m.palette_grey:
        out.append(_err("palette PNG whose colours are not the grey levels of its indices; the official scorer reads "
                        "masks as greyscale, so it would see the colours, not the classes: save as mode L"))
    if m.size != tuple(size):
        out.append(_err(f"mask is {m.size[0]}x{m.size[1]}; expected the image size {size[0]}x{size[1]} (width x height)"))
    if m.max_value is not None and m.max_value >= n:
        out.append(_err(f"mask value {m.max_value} out of range; expected class indices 0..{n - 1}"))
    return out


# The rule table: kind -> rule function over (parsed record, CSV row, image size or None).
RULES: dict[TaskKind, Callable[[Any, Sample, tuple[int, int] | None], list[Finding]]] = {
    TaskKind.CLASSIFICATION: _classification_rules,
    TaskKind.DETECTION: _detection_rules,
    TaskKind.REGRESSION: _regression_rules,
    TaskKind.SEGMENTATION: _segmentation_rules,
}
# Kinds whose rules need the image size (read from the image header, cached).
NEEDS_SIZE = {TaskKind.DETECTION, TaskKind.REGRESSION, TaskKind.SEGMENTATION}


# ---- the checker --------------------------------------------------------------------------------------

_PNG_HEAD = struct.Struct(">8sI4sII")  # signature, IHDR length, b"IHDR", width, height


def _header_size(path: Path) -> tuple[int, int]:
    """Image ``(width, height)``: read straight from a PNG's IHDR chunk, else from Pillow."""
    with open(path, "rb") as fh:
        head = fh.read(_PNG_HEAD.size)
    if len(head) == _PNG_HEAD.size:
        sig, _, chunk, w, h = _PNG_HEAD.unpack(head)
        if sig == b"\x89PNG\r\n\x1a\n" and chunk == b"IHDR" and w > 0 and h > 0:
            if w * h > _images.MAX_PIXELS:
                raise UnsafeInputError(f"{path}: {w}x{h} pixels exceeds the cap of {_images.MAX_PIXELS:,} pixels")
            return w, h
    return _images.image_size(path)


class _SizeCache:
    def __init__(self) -> None:
        self._sizes: dict[Path, tuple[int, int] | Exception] = {}

    def get(self, path: Path) -> tuple[int, int]:
        v = self._sizes.get(path)
        if v is None:
            try:
                v = _header_size(path)
            except Exception as exc:  # noqa: BLE001 - any unreadable image becomes a problem
                v = exc if isinstance(exc, FmuiaError) else FmuiaError(f"{path}: cannot read the image size ({exc})")
            self._sizes[path] = v
        if isinstance(v, Exception):
            raise v
        return v


def _default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        n = os.cpu_count() or 1
    return max(1, min(4, n))


def _wholly_absent(samples: Iterable[Sample], present: Callable[[Sample], bool]) -> dict[str, int | None]:
    """Tasks none of whose rows is ``present`` → their row count (reported as one line)."""
    total: dict[str, int] = {}
    hit: set[str] = set()
    for s in samples:
        total[s.task_id] = total.get(s.task_id, 0) + 1
        if present(s):
            hit.add(s.task_id)
    return {t: n for t, n in total.items() if t not in hit}


def _desc(s: Sample) -> str:
    return f"task {s.task_id!r}, image {s.image_path!r}"


def _norm_key(path: str) -> str:
    return os.path.normpath(path.replace("\\", "/")).replace("\\", "/").lstrip("./")


class _Checker:
    def __init__(self, folder: PredictionFolder, root: DataRoot, report: CheckReport, workers: int, progress: bool):
        self.folder, self.root, self.report = folder, root, report
        self.workers, self.progress = workers, progress
        self.sizes = _SizeCache()
        self.by_kind: dict[TaskKind, dict[tuple[str, str], Sample]] = {k: {} for k in TaskKind}
        for s in root.samples:
            self.by_kind[s.kind][s.key] = s
        self.files = set(folder.files())
        self.refused = dict(folder.refused())
        self.reported_refused: set[str] = set()
        # Hints for image paths that differ from the CSV string only by normalisation.
        self.hints: dict[tuple[str, str], str] = {(s.task_id, _norm_key(s.image_path)): s.image_path for s in root.samples}

    def add(self, file: str, where: str, finding: Finding, task_id: str | None) -> None:
        sev, msg = finding
        self.report.add(Problem(file, where, msg, sev), task_id)

    # generic -----------------------------------------------------------------------------------
    def expected_files(self) -> set[str]:
        names = set(PREDICTION_FILES.values())  # checked whenever present (entries of absent tasks are errors)
        names |= {prediction_mask_relpath(s.mask_path or "") for s in self.by_kind[TaskKind.SEGMENTATION].values()}
        return names

    def nested_top_folder(self, files: list[str], expected: set[str]) -> str | None:
        """The single top folder the expected files sit in, when none of them is at the root."""
        if not expected or set(files) & expected:
            return None
        tops = sorted({f.split("/", 1)[0] for f in files if "/" in f} - {"__MACOSX"})
        for top in tops:
            inner = {f[len(top) + 1 :] for f in files if f.startswith(top + "/")}
            if inner & expected:
                return top
        return None

    def refused_problem(self, rel: str, task_id: str | None = None) -> bool:
        reason = self.refused.get(rel)
        if reason is None:
            return False
        self.add(rel, "", _err(f"not read: {reason}; expected a regular file inside the prediction folder"), task_id)
        self.reported_refused.add(rel)
        return True

    # JSON kinds ---------------------------------------------------------------------------------
    def check_json_kind(self, kind: TaskKind) -> None:
        rel = PREDICTION_FILES[kind]
        expected = self.by_kind[kind]
        try:
            entries = self.folder.read_json(kind)
        except FmuiaError as exc:  # invalid JSON, not a list, over the size cap, refused
            self.add(rel, "", _err(f"{exc.message}; none of its entries could be checked"), None)
            return
        except Exception as exc:  # noqa: BLE001 - e.g. a corrupt archive member (bad CRC)
            self.add(rel, "", _err(f"cannot read the file ({type(exc).__name__}: {exc}); none of its entries could be checked"), None)
            return
        if entries is None:
            if expected and not self.refused_problem(rel):
                per_task: dict[str, int] = {}
                for t, _ in expected:
                    per_task[t] = per_task.get(t, 0) + 1
                for t, n in per_task.items():
                    self.add(rel, "", _err(f"file missing; expected {n} entries for task {t!r}"), t)
            return
        rule = RULES[kind]
        seen: dict[tuple[str, str], int] = {}
        for i, entry in enumerate(entries):
            where = f"entry {i}"
            task_id = entry.get("task_id") if isinstance(entry, dict) else None
            image_path = entry.get("image_path") if isinstance(entry, dict) else None
            key = (task_id, image_path) if isinstance(task_id, str) and isinstance(image_path, str) else None
            sample = expected.get(key) if key else None
            counted = sample.task_id if sample else None
            if sample is not None:
                if key in seen:
                    self.add(rel, where, _err(f"{_desc(sample)}: duplicate entry (first at entry {seen[key]}); expected exactly one per CSV row"), counted)
                    continue
                seen[key] = i
                self.report.tasks[sample.task_id].found += 1
            try:
                pred = parse_entry(kind, entry)
            except FmuiaError as exc:
                prefix = f"{_desc(sample)}: " if sample else ""
                self.add(rel, where, _err(prefix + exc.message), counted)
                continue
            if sample is None:
                self.unknown(kind, rel, where, pred.task_id, pred.image_path)
                continue
            size = None
            if kind in NEEDS_SIZE:
                try:
                    size = self.sizes.get(sample.image_file)
                except FmuiaError as exc:
                    self.add(rel, where, _err(f"{_desc(sample)}: cannot check against the image: {exc.message}"), counted)
                    continue
            findings = rule(pred, sample, size)
            for f in findings:
                self.add(rel, where, (f[0], f"{_desc(sample)}: {f[1]}"), counted)
            if not any(f[0] == "error" for f in findings):
                self.report.tasks[sample.task_id].valid += 1
        self.missing(kind, rel, set(seen))

    def unknown(self, kind: TaskKind, rel: str, where: str, task_id: str, image_path: str) -> None:
        spec = self.root.tasks.get(task_id)
        if spec is None:
            known = sorted(t for t, s in self.root.tasks.items() if s.kind is kind)
            msg = f"unknown task_id {task_id!r}: no CSV row of the data root has it; expected one of {known}"
        elif spec.kind is not kind:
            where_ok = PREDICTION_FILES.get(spec.kind, "a mask PNG per row under Segmentation/")
            msg = f"task {task_id!r} is a {spec.kind.value} task; its predictions belong in {where_ok}, not {rel}"
        else:
            hint = self.hints.get((task_id, _norm_key(image_path)))
            extra = f"; expected the CSV string unchanged: {hint!r}" if hint else "; expected an image_path string from the task's CSV rows"
            msg = f"task {task_id!r}: image {image_path!r} is not in the data root's CSVs for this task{extra}"
            self.add(rel, where, _err(msg), task_id)
            return
        self.add(rel, where, _err(msg), None)

    def missing(self, kind: TaskKind, rel: str, seen: set[tuple[str, str]]) -> None:
        """One error per missing row; one line for a task with no entry at all."""
        absent = _wholly_absent(self.by_kind[kind].values(), lambda s: s.key in seen)
        for key, s in self.by_kind[kind].items():
            if key in seen:
                continue
            n = absent.get(s.task_id, 0)
            if n is None:
                continue  # already reported as a whole task
            if n > 1:
                self.add(rel, "", _err(f"no entry for any of the {n} rows of task {s.task_id!r}; expected one per CSV row"), s.task_id)
                absent[s.task_id] = None
                continue
            self.add(rel, "", _err(f"missing entry for {_desc(s)} (CSV {s.where}); expected exactly one"), s.task_id)

    # segmentation -------------------------------------------------------------------------------
    def check_masks(self) -> None:
        samples = list(self.by_kind[TaskKind.SEGMENTATION].values())
        if not samples:
            return
        jobs = [(s, prediction_mask_relpath(s.mask_path or "")) for s in samples]
        results = self._map(self._check_mask, jobs)
        present = {rel for (_, rel), (found, _) in zip(jobs, results, strict=True) if found or rel in self.refused}
        absent = _wholly_absent(samples, lambda s: prediction_mask_relpath(s.mask_path or "") in present)
        for (s, rel), (found, findings) in zip(jobs, results, strict=True):
            if not found:
                n = absent.get(s.task_id, 0)
                if n is None:
                    continue  # already reported as a whole task
                if n > 1:
                    folder = os.path.dirname(rel) + "/"
                    self.add(folder, "", _err(f"no mask for any of the {n} rows of task {s.task_id!r}; expected one 8-bit PNG per row, e.g. {rel!r}"), s.task_id)
                    absent[s.task_id] = None
                elif not self.refused_problem(rel, s.task_id):
                    self.add(rel, "", _err(f"missing mask for {_desc(s)} (CSV {s.where}); expected an 8-bit PNG of class indices"), s.task_id)
                continue
            self.report.tasks[s.task_id].found += 1
            for f in findings:
                self.add(rel, "", (f[0], f"{_desc(s)}: {f[1]}"), s.task_id)
            if not any(f[0] == "error" for f in findings):
                self.report.tasks[s.task_id].valid += 1

    def _check_mask(self, job: tuple[Sample, str]) -> tuple[bool, list[Finding]]:
        s, rel = job
        if rel not in self.files:
            return False, []
        try:
            data = self.folder.read_bytes(rel, MAX_MASK_BYTES)
        except UnsafeInputError as exc:
            return True, [_err(f"refused: {exc.message}")]
        except FmuiaError as exc:
            return True, [_err(exc.message)]
        except Exception as exc:  # noqa: BLE001 - a corrupt archive member is a finding, never a crash
            return True, [_err(f"cannot read the file ({type(exc).__name__}: {exc})")]
        try:
            mask = inspect_mask(data, rel)
        except UnsafeInputError as exc:
            return True, [_err(f"refused: {exc.message}")]
        except Exception as exc:  # noqa: BLE001 - undecodable input is a finding, never a crash
            return True, [_err(f"cannot decode the mask ({type(exc).__name__}: {exc}); expected an 8-bit PNG")]
        try:
            size = self.sizes.get(s.image_file)
        except FmuiaError as exc:
            return True, [_err(f"cannot check against the image: {exc.message}")]
        return True, RULES[TaskKind.SEGMENTATION](mask, s, size)

    def _map(self, fn: Callable, jobs: list) -> list:
        bar = None
        if self.progress and len(jobs) > 200:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc="masks", unit="mask", file=sys.stderr, leave=False)
        chunk = 64
        chunks = [jobs[i : i + chunk] for i in range(0, len(jobs), chunk)]

        def run(c: list) -> list:
            out = [fn(j) for j in c]
            if bar is not None:
                bar.update(len(c))
            return out

        try:
            if self.workers <= 1 or len(chunks) <= 1:
                parts = [run(c) for c in chunks]
            else:
                with ThreadPoolExecutor(self.workers) as pool:
                    parts = list(pool.map(run, chunks))
        finally:
            if bar is not None:
                bar.close()
        return [r for p in parts for r in p]

    # extras ---------------------------------------------------------------------------------------
    def check_extras(self, files: Iterable[str], expected: set[str]) -> None:
        for f in files:
            if f not in expected:
                self.add(f, "", _warn("unexpected file: not asked for by the data root's CSVs; it is ignored"), None)
        for name, reason in sorted(self.refused.items()):
            if name not in self.reported_refused:
                self.add(name, "", _err(f"not read: {reason}"), None)


def load_data_root(data: DataRoot | str | os.PathLike) -> DataRoot:
    """``data`` itself if already loaded, else :func:`load_root`; errors become :class:`CheckUsageError`."""
    if isinstance(data, DataRoot):
        return data
    try:
        return load_root(data)
    except FmuiaError as exc:
        raise CheckUsageError(f"cannot read the data root: {exc.message}", exc.problems) from None
    except OSError as exc:
        raise CheckUsageError(f"cannot read the data root {data}: {exc}") from None


def check_predictions(
    pred_path: str | os.PathLike,
    data: DataRoot | str | os.PathLike,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> CheckReport:
    """Validate a prediction folder or ``.zip`` against a data root (a path or a loaded :class:`DataRoot`).

    Never raises for a bad submission: every problem is in the returned report. Raises
    :class:`CheckUsageError` when the check cannot run (no such path, neither a folder nor a zip,
    unreadable data root).

    >>> report = check_predictions("preds/", "data/test")      # doctest: +SKIP
    >>> report.ok, report.tasks["fetal_head"].valid             # doctest: +SKIP
    """
    root = load_data_root(data)
    p = Path(pred_path)
    if not p.exists():
        raise CheckUsageError(f"{p}: no such prediction folder or zip")
    if not p.is_dir() and not (p.is_file() and zipfile.is_zipfile(p)):
        raise CheckUsageError(f"{p}: expected a prediction folder or a .zip archive")
    tasks = {}
    for s in root.samples:
        c = tasks.get(s.task_id)
        if c is None:
            c = tasks[s.task_id] = TaskCounts(s.task_id, s.kind)
        c.expected += 1
    report = CheckReport(str(p), str(root.root), tasks)
    try:
        folder = open_predictions(p)
    except FmuiaError as exc:  # bad zip, zip bomb, archive over the inflate cap
        report.add(Problem(p.name, "", exc.message))
        return report
    with folder:
        checker = _Checker(folder, root, report, workers or _default_workers(), progress)
        files = folder.files()
        expected = checker.expected_files()
        top = checker.nested_top_folder(files, expected)
        if top is not None:
            where = "the archive root" if p.is_file() else f"the top of {p}"
            report.add(
                Problem(
                    top + "/",
                    "",
                    f"the prediction files sit inside the folder {top!r}; expected them at {where} "
                    "(zip the folder's contents, not the folder: `fmuia pack` does it right)",
                )
            )
            return report
        for kind in PREDICTION_FILES:
            checker.check_json_kind(kind)
        checker.check_masks()
        checker.check_extras(files, expected)
    return report
