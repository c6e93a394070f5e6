"""The official prediction formats: one record type, parser and serializer per task kind.

- classification → ``classification_predictions.json``: ``{image_path, task_id, predicted_class, predicted_probs}``
- detection → ``detection_predictions.json``: ``{image_path, task_id, bbox_normalized, bbox_pixels}`` (+ optional ``score``)
- regression → ``regression_predictions.json``: ``{image_path, task_id, predicted_points_normalized, predicted_points_pixels}``
- segmentation → one PNG per CSV row at ``PRED_DIR/<mask_path with every '../' removed>``

Parsers are strict about types (a bool is not a number, NaN is not finite, ``1.0`` is not an
integer, an integer beyond the float range is not a finite number) and raise
:class:`~fmuia.errors.FormatError` with what was expected; range checks that need the data root
(class count, image size) live in :mod:`fmuia.check`.

:func:`load_prediction_json` is the one reader of a prediction JSON file's bytes (through
:meth:`fmuia.predfolder.PredictionFolder.read_json`): it accepts exactly what the official
scorer's ``json.load(open(path))`` accepts (UTF-8 without a byte-order mark, NaN/Infinity
literals, integers of at most 4,300 digits), refuses nesting deeper than :data:`MAX_JSON_DEPTH`,
and reports keys repeated within one object (``json.load`` keeps the last value).
"""

from __future__ import annotations

import json
import math
import os
import reprlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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
    "PredictionJson",
    "load_prediction_json",
    "MAX_JSON_DEPTH",
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


def _finite(v: int | float) -> float | None:
    """``float(v)`` when finite; ``None`` for NaN, infinities and integers beyond the float range."""
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


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
    out = tuple(_finite(x) for x in v)
    if any(x is None for x in out):
        raise FormatError(f"{name}: expected finite numbers, got {_short(v)}")
    return out  # type: ignore[return-value]


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 8, 4, 40, 40, 40


def _short(v: Any, n: int = 60) -> str:
    """A bounded repr (never recursing deep, never printing an integer of thousands of digits)."""
    text = _REPR.repr(v)
    return text if len(text) <= n else text[: n - 3] + "..."


def _parse_classification(entry: dict) -> ClassificationPrediction:
    image_path, task_id = _str_field(entry, "image_path"), _str_field(entry, "task_id")
    if "predicted_class" not in entry:
        raise FormatError("missing field 'predicted_class'")
    c = entry["predicted_class"]
    if isinstance(c, float):  # 1.0 too: the format says integer
        raise FormatError(f"predicted_class: expected an integer, got the number {_short(c)} (write it without a decimal point)")
    if not isinstance(c, int) or isinstance(c, bool):
        raise FormatError(f"predicted_class: expected an integer, got {_short(c)}")
    if not -(2**63) <= c < 2**63:
        raise FormatError(f"predicted_class: expected a class index, got an integer of {len(str(abs(c)))} digits")
    probs = _numbers(entry, "predicted_probs", optional=True)
    return ClassificationPrediction(image_path, task_id, c, probs)


def _parse_detection(entry: dict) -> DetectionPrediction:
    image_path, task_id = _str_field(entry, "image_path"), _str_field(entry, "task_id")
    norm = _numbers(entry, "bbox_normalized", 4)
    pix = _numbers(entry, "bbox_pixels", 4)
    score = entry.get("score")
    if score is not None and (not _is_number(score) or _finite(score) is None):
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


# ---- reading a prediction JSON file ---------------------------------------------------------------

MAX_JSON_DEPTH = 512  # arrays/objects nested deeper: unreadable (json.load's recursion fails near 1,000)
_INT_DIGITS = 4300  # Python's default int-string limit: json.load refuses longer integer literals
_BOM = b"\xef\xbb\xbf"


@dataclass
class PredictionJson:
    """A prediction JSON file as read: its entries (the top-level list) and what is suspicious
    but readable, as ``(where, message)``: ``where`` is ``"entry <i>"`` or ``""``."""

    entries: list
    warnings: list[tuple[str, str]] = field(default_factory=list)


def _depth_over(data: bytes, limit: int) -> int | None:
    """How deep a (valid) JSON text nests arrays and objects when that is over ``limit``, else
    ``None``; without parsing: strings are cut out (escaped backslashes and quotes first), then
    the running count of the brackets left is taken."""
    text = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(text.split(b'"')[0::2]).translate(None, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return None  # fewer brackets than the limit: cannot nest deeper
    import numpy as np  # loaded by every caller already; imported here to keep this module's imports light

    steps = np.frombuffer(brackets.translate(_STEP), np.int8)
    best, level = 0, 0
    for i in range(0, len(steps), 1 << 22):
        run = np.cumsum(steps[i : i + (1 << 22)], dtype=np.int64) + level
        best, level = max(best, int(run.max())), int(run[-1])
    return best if best > limit else None


_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def load_prediction_json(data: bytes, name: str, *, max_depth: int | None = MAX_JSON_DEPTH,
                         duplicate_keys: bool = True) -> PredictionJson:
    """Parse a prediction JSON file's bytes into its list of entries; :class:`FormatError` (naming
    ``name``) when the official scorer's ``json.load`` could not read it, when it nests deeper
    than ``max_depth`` (``None``: as deep as ``json`` manages) or is not a list.

    With ``duplicate_keys``, a key repeated in one object is a warning naming it (the last value
    is used, as by ``json.load``).
    """
    if data.startswith(_BOM):
        raise FormatError(f"{name}: starts with a UTF-8 byte-order mark (BOM), which the official scorer's "
                          "json.load rejects ('Unexpected UTF-8 BOM'); save it as UTF-8 without a BOM")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{name}: not valid UTF-8 JSON ({exc})") from None
    if max_depth is not None:
        depth = _depth_over(data, max_depth)
        if depth is not None:
            raise FormatError(f"{name}: arrays/objects nested {depth} levels deep, over the limit of {max_depth}: "
                              "unreadable (the official scorer's json.load fails with RecursionError on deep nesting)")
    repeated: list[tuple[str, dict]] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            for k, _ in pairs:
                if k in seen:
                    repeated.append((k, obj))
                seen.add(k)
        return obj

    try:
        value = json.loads(text, object_pairs_hook=pairs_hook if duplicate_keys else None)
    except RecursionError:
        raise FormatError(f"{name}: arrays/objects nested too deep: unreadable (json.load fails with "
                          "RecursionError)") from None
    except ValueError as exc:  # JSONDecodeError, or an integer over the int-string limit
        msg = str(exc)
        if "integer string conversion" in msg:
            msg = (f"an integer literal of more than {_INT_DIGITS:,} digits, which json.load refuses "
                   "(Python's int-string conversion limit)")
        raise FormatError(f"{name}: not valid UTF-8 JSON ({msg})") from None
    if not isinstance(value, list):
        raise FormatError(f"{name}: expected a JSON list of entries, got {type(value).__name__}")
    warnings: list[tuple[str, str]] = []
    if repeated:
        index = {id(e): i for i, e in enumerate(value) if isinstance(e, dict)}
        for key, obj in repeated:
            i = index.get(id(obj))
            warnings.append((f"entry {i}" if i is not None else "",
                             f"key {_short(key)} appears more than once in one {'entry' if i is not None else 'nested object'}; "
                             "the last value is used (as json.load does)"))
    return PredictionJson(value, warnings)


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
