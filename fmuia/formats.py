"""The official prediction formats: one record type, parser and serializer per task kind.

- classification → ``classification_predictions.json``: ``{image_path, task_id, predicted_class, predicted_probs}``
- detection → ``detection_predictions.json``: ``{image_path, task_id, bbox_normalized, bbox_pixels}`` (+ optional ``score``)
- regression → ``regression_predictions.json``: ``{image_path, task_id, predicted_points_normalized, predicted_points_pixels}``
- segmentation → one PNG per CSV row at ``PRED_DIR/<mask_path with every '../' removed>``

Parsers are strict about types (a bool is not a number, NaN is not finite) and raise
:class:`~fmuia.errors.FormatError` with what was expected; range checks that need the data root
(class count, image size) live in :mod:`fmuia.check`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmuia._atomic import ensure_dir, write_json
from fmuia.dataset.masks import write_mask_png
from fmuia.dataset.schema import prediction_mask_relpath
from fmuia.errors import FormatError
from fmuia.tasks import PREDICTION_FILES, TaskKind

__all__ = [
    "PREDICTION_FILES",
    "ClassificationPrediction",
    "DetectionPrediction",
    "RegressionPrediction",
    "SegmentationPrediction",
    "parse_entry",
    "to_entry",
    "PredictionWriter",
]


@dataclass(frozen=True)
class ClassificationPrediction:
    image_path: str
    task_id: str
    predicted_class: int
    predicted_probs: tuple[float, ...] | None = None
    kind = TaskKind.CLASSIFICATION


@dataclass(frozen=True)
class DetectionPrediction:
    image_path: str
    task_id: str
    bbox_normalized: tuple[float, float, float, float]
    bbox_pixels: tuple[float, float, float, float]
    score: float | None = None
    kind = TaskKind.DETECTION


@dataclass(frozen=True)
class RegressionPrediction:
    image_path: str
    task_id: str
    points_normalized: tuple[float, ...]
    points_pixels: tuple[float, ...]
    kind = TaskKind.REGRESSION


@dataclass(frozen=True)
class SegmentationPrediction:
    image_path: str
    task_id: str
    mask_path: str
    mask: np.ndarray
    kind = TaskKind.SEGMENTATION

    @property
    def relpath(self) -> str:
        return prediction_mask_relpath(self.mask_path)


Prediction = ClassificationPrediction | DetectionPrediction | RegressionPrediction | SegmentationPrediction


# ---- parsing --------------------------------------------------------------------------------------

def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _str_field(entry: dict, name: str) -> str:
    if name not in entry:
        raise FormatError(f"missing field {name!r}")
    v = entry[name]
    if not isinstance(v, str):
        raise FormatError(f"{name}: expected a string, got {type(v).__name__}")
    return v


def _numbers(entry: dict, name: str, length: int | None = None, *, optional: bool = False) -> tuple[float, ...] | None:
    if name not in entry or entry[name] is None:
        if optional:
            return None
        raise FormatError(f"missing field {name!r}")
    v = entry[name]
    if not isinstance(v, list) or not all(_is_number(x) for x in v):
        raise FormatError(f"{name}: expected a list of numbers, got {_short(v)}")
    if length is not None and len(v) != length:
        raise FormatError(f"{name}: expected {length} numbers, got {len(v)}")
    if not all(math.isfinite(x) for x in v):
        raise FormatError(f"{name}: expected finite numbers, got {_short(v)}")
    return tuple(float(x) for x in v)


def _short(v: Any, n: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= n else text[: n - 3] + "..."


def _parse_classification(entry: dict) -> ClassificationPrediction:
    image_path, task_id = _str_field(entry, "image_path"), _str_field(entry, "task_id")
    if "predicted_class" not in entry:
        raise FormatError("missing field 'predicted_class'")
    c = entry["predicted_class"]
    if isinstance(c, float) and c.is_integer():
        c = int(c)
    if not isinstance(c, int) or isinstance(c, bool):
        raise FormatError(f"predicted_class: expected an integer, got {_short(c)}")
    probs = _numbers(entry, "predicted_probs", optional=True)
    return ClassificationPrediction(image_path, task_id, c, probs)


def _parse_detection(entry: dict) -> DetectionPrediction:
    image_path, task_id = _str_field(entry, "image_path"), _str_field(entry, "task_id")
    norm = _numbers(entry, "bbox_normalized", 4)
    pix = _numbers(entry, "bbox_pixels", 4)
    score = entry.get("score")
    if score is not None and (not _is_number(score) or not math.isfinite(score)):
        raise FormatError(f"score: expected a finite number, got {_short(score)}")
    return DetectionPrediction(image_path, task_id, norm, pix, None if score is None else float(score))  # type: ignore[arg-type]


def _parse_regression(entry: dict) -> RegressionPrediction:
    image_path, task_id = _str_field(entry, "image_path"), _str_field(entry, "task_id")
    norm = _numbers(entry, "predicted_points_normalized")
    pix = _numbers(entry, "predicted_points_pixels")
    return RegressionPrediction(image_path, task_id, norm, pix)  # type: ignore[arg-type]


_PARSERS: dict[TaskKind, Callable[[dict], Prediction]] = {
    TaskKind.CLASSIFICATION: _parse_classification,
    TaskKind.DETECTION: _parse_detection,
    TaskKind.REGRESSION: _parse_regression,
}


def parse_entry(kind: TaskKind, entry: Any) -> Prediction:
    """Turn one JSON entry of a kind's prediction file into a record; :class:`FormatError` if malformed."""
    if not isinstance(entry, dict):
        raise FormatError(f"expected an object, got {type(entry).__name__}")
    return _PARSERS[TaskKind(kind)](entry)


# ---- serializing ----------------------------------------------------------------------------------

def _to_classification(p: ClassificationPrediction) -> dict:
    out: dict[str, Any] = {"image_path": p.image_path, "task_id": p.task_id, "predicted_class": int(p.predicted_class)}
    if p.predicted_probs is not None:
        out["predicted_probs"] = [float(x) for x in p.predicted_probs]
    return out


def _to_detection(p: DetectionPrediction) -> dict:
    out: dict[str, Any] = {
        "image_path": p.image_path,
        "task_id": p.task_id,
        "bbox_normalized": [float(x) for x in p.bbox_normalized],
        "bbox_pixels": [float(x) for x in p.bbox_pixels],
    }
    if p.score is not None:
        out["score"] = float(p.score)
    return out


def _to_regression(p: RegressionPrediction) -> dict:
    return {
        "image_path": p.image_path,
        "task_id": p.task_id,
        "predicted_points_normalized": [float(x) for x in p.points_normalized],
        "predicted_points_pixels": [float(x) for x in p.points_pixels],
    }


_SERIALIZERS: dict[TaskKind, Callable[[Any], dict]] = {
    TaskKind.CLASSIFICATION: _to_classification,
    TaskKind.DETECTION: _to_detection,
    TaskKind.REGRESSION: _to_regression,
}


def to_entry(pred: Prediction) -> dict:
    """The JSON entry for a non-segmentation prediction record."""
    return _SERIALIZERS[pred.kind](pred)


class PredictionWriter:
    """Writes a prediction folder in the official layout.

    Segmentation masks are written as they come (atomically, one PNG each); JSON entries are
    collected and written atomically by :meth:`close`. Only kinds that received predictions get a
    JSON file, as in the official baseline.
    """

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        ensure_dir(self.out_dir)
        self._entries: dict[TaskKind, list[dict]] = {k: [] for k in PREDICTION_FILES}
        self.counts: dict[str, int] = {}
        self.removed: list[Path] = []

    def add(self, pred: Prediction) -> None:
        self.counts[pred.task_id] = self.counts.get(pred.task_id, 0) + 1
        if isinstance(pred, SegmentationPrediction):
            target = (self.out_dir / pred.relpath).resolve()
            if os.path.commonpath([self.out_dir.resolve(), target]) != str(self.out_dir.resolve()):
                raise FormatError(f"mask_path {pred.mask_path!r} would be written outside {self.out_dir}")
            write_mask_png(target, pred.mask)
        else:
            self._entries[pred.kind].append(to_entry(pred))

    def add_all(self, preds: Iterable[Prediction]) -> None:
        for p in preds:
            self.add(p)

    def close(self) -> dict[str, int]:
        """Write the JSON files. A kind's JSON left in the folder by an earlier run, for which this
        run wrote nothing, is removed: scorers would otherwise read stale predictions."""
        for kind, entries in self._entries.items():
            path = self.out_dir / PREDICTION_FILES[kind]
            if entries:
                write_json(path, entries)
            elif path.is_file():
                path.unlink()
                self.removed.append(path)
        return dict(self.counts)

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, exc_type, *_: Any) -> None:
        if exc_type is None:
            self.close()


def write_predictions(out_dir: str | os.PathLike, preds: Iterable[Prediction]) -> dict[str, int]:
    """Write records to ``out_dir`` in the official layout; returns counts per task."""
    with PredictionWriter(out_dir) as w:
        w.add_all(preds)
    return w.counts
