"""Prediction sets for the scorer tests: oracle predictions from fmuia.oracle, then perturbed.

Variants: ``perfect``, ``noisy`` (shifted/noisy masks in several encodings and sizes, wrong classes,
random probabilities, jittered boxes and points, duplicate entries), ``partial`` (missing masks,
entries, tasks and a whole JSON file), ``empty`` (all-background masks, empty JSON lists) and
``malformed`` (undecodable masks, entries with missing or mistyped fields, non-finite numbers,
JSON that is not a list or not JSON).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from fmuia.dataset import load_root
from fmuia.dataset.masks import read_mask
from fmuia.formats import write_predictions
from fmuia.oracle import oracle_predictions
from fmuia.tasks import PREDICTION_FILES, TaskKind

VARIANTS = ("perfect", "noisy", "partial", "empty", "malformed")


def _json_path(out: Path, kind: TaskKind) -> Path:
    return out / PREDICTION_FILES[kind]


def _load(out: Path, kind: TaskKind) -> list:
    p = _json_path(out, kind)
    return json.loads(p.read_text()) if p.exists() else []


def _save(out: Path, kind: TaskKind, entries, raw: str | None = None) -> None:
    _json_path(out, kind).write_text(raw if raw is not None else json.dumps(entries))


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _seg_files(labels, out: Path) -> list[tuple[Path, int]]:
    from fmuia.dataset.schema import prediction_mask_relpath

    return [(out / prediction_mask_relpath(s.mask_path), s.task.num_classes)
            for s in labels.of_kind(TaskKind.SEGMENTATION)]


def make_predictions(labels_root: Path, out: Path, variant: str, seed: int = 0) -> Path:
    """Write a prediction folder of the given variant for the labelled root; returns ``out``."""
    if out.exists():
        shutil.rmtree(out)
    labels = load_root(labels_root)
    write_predictions(out, oracle_predictions(labels))
    rng = np.random.default_rng(seed)
    {"perfect": lambda *a: None, "noisy": _noisy, "partial": _partial, "empty": _empty,
     "malformed": _malformed}[variant](labels, out, rng)
    return out


def _noisy(labels, out: Path, rng) -> None:
    for i, (path, c) in enumerate(_seg_files(labels, out)):
        m = read_mask(path).astype(np.int64)
        m = np.roll(m, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), axis=(0, 1))
        flip = rng.random(m.shape) < 0.002
        m[flip] = rng.integers(0, c, int(flip.sum()))
        if rng.random() < 0.2:
            m[:] = 0  # a fully missed image
        m = m.astype(np.uint8)
        enc = i % 6
        if enc == 1:  # another size: the official scorer resizes it
            h, w = m.shape
            small = Image.fromarray(m, "L").resize((max(1, w * 2 // 3), max(1, h * 3 // 4)), Image.NEAREST)
            path.write_bytes(_png(small))
        elif enc == 2:  # RGB with equal channels: same grey values
            path.write_bytes(_png(Image.fromarray(np.repeat(m[..., None], 3, axis=2), "RGB")))
        elif enc == 3:  # palette: the official scorer reads the colour's grey level, not the index
            p = Image.fromarray(m, "P")
            p.putpalette([0, 0, 0, 1, 1, 1, 2, 2, 2, 255, 0, 0] + [7] * (768 - 12))
            path.write_bytes(_png(p))
        elif enc == 4:  # 16-bit grey: the official scorer keeps the high byte
            path.write_bytes(_png(Image.fromarray((m.astype(np.uint16) * 257).astype(np.uint16))))
        else:
            path.write_bytes(_png(Image.fromarray(m, "L")))
    cls = _load(out, TaskKind.CLASSIFICATION)
    by_task: dict = {}
    for e in cls:
        by_task.setdefault(e["task_id"], []).append(e)
    for t, entries in enumerate(by_task.values()):
        for e in entries:
            c = len(e["predicted_probs"])
            probs = rng.random(c) + np.eye(c)[e["predicted_class"]] * rng.random()
            probs = (probs / probs.sum()).tolist()
            e["predicted_probs"] = probs
            e["predicted_class"] = int(np.argmax(probs)) if rng.random() < 0.8 else int(rng.integers(0, c))
        if t == 0 and entries:
            del entries[0]["predicted_probs"]  # one row without probabilities: AUC 0 for the task
    if cls:
        dup = dict(cls[-1])
        dup["predicted_class"] = 0
        cls.insert(0, dup)  # an earlier duplicate: the last entry wins
    _save(out, TaskKind.CLASSIFICATION, cls)
    det = _load(out, TaskKind.DETECTION)
    for e in det:
        b = np.array(e["bbox_pixels"]) + rng.normal(0, 6, 4)
        e["bbox_pixels"] = b.tolist()
    if det:
        det[0]["bbox_pixels"] = [10.0, 10.0, 5.0, 20.0]  # inverted x: the formula as it comes
    _save(out, TaskKind.DETECTION, det)
    reg = _load(out, TaskKind.REGRESSION)
    for e in reg:
        e["predicted_points_pixels"] = (np.array(e["predicted_points_pixels"]) + rng.normal(0, 5, len(e["predicted_points_pixels"]))).tolist()
    if reg:
        reg[0]["predicted_points_pixels"] = reg[0]["predicted_points_pixels"][:2]  # one point: broadcast
    _save(out, TaskKind.REGRESSION, reg)


def _partial(labels, out: Path, rng) -> None:
    files = _seg_files(labels, out)
    first_task = labels.of_kind(TaskKind.SEGMENTATION)[0].task_id
    for (path, _), s in zip(files, labels.of_kind(TaskKind.SEGMENTATION), strict=True):
        if s.task_id == first_task or rng.random() < 0.35:
            path.unlink()
    for kind in (TaskKind.CLASSIFICATION, TaskKind.REGRESSION):
        entries = _load(out, kind)
        drop_task = entries[0]["task_id"] if entries else None
        kept = [e for e in entries if e["task_id"] != drop_task and rng.random() > 0.35]
        _save(out, kind, kept)
    _json_path(out, TaskKind.DETECTION).unlink()


def _empty(labels, out: Path, rng) -> None:
    for path, _ in _seg_files(labels, out):
        m = read_mask(path)
        path.write_bytes(_png(Image.fromarray(np.zeros_like(m, dtype=np.uint8), "L")))
    for kind in PREDICTION_FILES:
        _save(out, kind, [])


def _malformed(labels, out: Path, rng) -> None:
    for i, (path, _) in enumerate(_seg_files(labels, out)):
        r = i % 4
        if r == 0:
            path.write_bytes(b"not an image at all")
        elif r == 1:
            path.write_bytes(path.read_bytes()[:40])  # truncated PNG
        elif r == 2:
            path.unlink()
            path.mkdir()  # a folder where the mask should be
    cls = _load(out, TaskKind.CLASSIFICATION)
    garbage = [
        "a string", 17, None, [], {"task_id": 3, "image_path": "x"},
        {"image_path": cls[0]["image_path"]} if cls else {},
    ]
    for j, e in enumerate(cls):
        r = j % 6
        if r == 0:
            e["predicted_class"] = "1"
        elif r == 1:
            e["predicted_class"] = 1.5
        elif r == 2:
            e["predicted_probs"] = [float("nan")] * len(e["predicted_probs"])
        elif r == 3:
            e["predicted_probs"] = "high"
        elif r == 4:
            e.pop("predicted_class")
        else:
            e["predicted_class"] = True
    _save(out, TaskKind.CLASSIFICATION, garbage + cls, raw=json.dumps(garbage + cls))
    det = _load(out, TaskKind.DETECTION)
    for j, e in enumerate(det):
        e["bbox_pixels"] = [[1, 2, 3], ["a", 1, 2, 3], [float("inf"), 0, 1, 1], None][j % 4]
    _save(out, TaskKind.DETECTION, None, raw=json.dumps(det))
    _save(out, TaskKind.REGRESSION, None, raw="{not json")
