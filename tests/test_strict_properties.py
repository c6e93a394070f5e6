"""Strict scoring on random broken submissions (hypothesis): it never raises, every scored value is
finite, and it is monotone — deleting prediction rows or breaking their fields never raises any
metric of any task, nor any aggregate."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evaluation.schema import AGGREGATES, DIRECTIONS, HIGHER, TASK_METRICS
from evaluation.scoring import evaluate
from fmuia.dataset import load_root
from fmuia.dataset.masks import encode_mask_png
from fmuia.dataset.schema import prediction_mask_relpath
from fmuia.dataset.synth import synthesize
from fmuia.formats import (
    ClassificationPrediction,
    DetectionPrediction,
    RegressionPrediction,
    SegmentationPrediction,
    write_predictions,
)
from fmuia.oracle import oracle_predictions
from fmuia.tasks import PREDICTION_FILES, TaskKind

EXAMPLES = 100
RAN: list[int] = []


def _imperfect(pred, rng: np.random.Generator):
    """A plausible model's prediction: the oracle's, often wrong."""
    if isinstance(pred, ClassificationPrediction):
        c = len(pred.predicted_probs)
        probs = rng.dirichlet(np.ones(c))
        cls = int(rng.integers(0, c)) if rng.random() < 0.5 else pred.predicted_class
        return dataclasses.replace(pred, predicted_class=cls, predicted_probs=tuple(float(v) for v in probs))
    if isinstance(pred, DetectionPrediction):
        x0, y0, x1, y1 = pred.bbox_pixels
        dx, dy = rng.normal(0, 0.2 * (x1 - x0)), rng.normal(0, 0.2 * (y1 - y0))
        px = (x0 + dx, y0 + dy, x1 + dx, y1 + dy)
        scale = [a / b if b else 0.0 for a, b in zip(pred.bbox_normalized, pred.bbox_pixels, strict=True)]
        return dataclasses.replace(pred, bbox_pixels=px, bbox_normalized=tuple(v * s for v, s in zip(px, scale, strict=True)),
                                   score=float(rng.random()))
    if isinstance(pred, RegressionPrediction):
        px = tuple(v + float(rng.normal(0, 8)) for v in pred.points_pixels)
        return dataclasses.replace(pred, points_pixels=px)
    assert isinstance(pred, SegmentationPrediction)
    m = np.roll(pred.mask, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), axis=(0, 1)).copy()
    h, w = m.shape
    y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
    m[y : y + 8, x : x + 8] = int(rng.integers(0, int(m.max()) + 1))
    return dataclasses.replace(pred, mask=m)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    out = tmp_path_factory.mktemp("props")
    root_dir = synthesize(out / "root", per_task=3, seed=11)
    root = load_root(root_dir)
    rng = np.random.default_rng(5)
    base = out / "base"
    write_predictions(base, (_imperfect(p, rng) for p in oracle_predictions(root)))
    results = evaluate(base, root_dir, mode="strict", n_bootstrap=0, workers=1)
    yield root_dir, root, base, results
    print(f"\nstrict property examples run: {len(RAN)}")


CORRUPT_JSON = {
    TaskKind.CLASSIFICATION: [("predicted_class", "x"), ("predicted_class", 1e308), ("predicted_class", -1),
                              ("predicted_class", 99), ("predicted_class", True), ("predicted_class", 1.5),
                              ("predicted_probs", [float("nan")]), ("predicted_probs", "x"), ("predicted_probs", [-1.0, 2.0]),
                              ("predicted_probs", [0.5])],
    TaskKind.DETECTION: [("bbox_pixels", [1e30, 1e30, 1e31, 1e31]), ("bbox_pixels", [5, 5, 1, 1]), ("bbox_pixels", "x"),
                         ("bbox_pixels", [1, 2, 3]), ("bbox_pixels", [float("inf"), 0, 1, 1]), ("score", "high")],
    TaskKind.REGRESSION: [("predicted_points_pixels", [1e308, 1e308, 1e308, 1e308, 1e308, 1e308]),
                          ("predicted_points_pixels", ["a", "b"]), ("predicted_points_pixels", [1.0]),
                          ("predicted_points_pixels", None)],
}
BAD_MASKS = ["garbage", "rgb", "wrong_size", "out_of_range", "empty_file"]

op = st.tuples(st.sampled_from(list(TaskKind)), st.floats(0, 1, exclude_max=True), st.booleans(),
               st.integers(0, 99))


def _break(root, folder: Path, ops) -> None:
    for kind, where, delete, variant in ops:
        rows = [s for s in root.samples if s.kind is kind]
        s = rows[int(where * len(rows))]
        if kind is TaskKind.SEGMENTATION:
            path = folder / prediction_mask_relpath(s.mask_path or "")
            if delete or not path.exists():
                path.unlink(missing_ok=True)
                continue
            bad = BAD_MASKS[variant % len(BAD_MASKS)]
            c = s.task.num_classes
            data = {"garbage": b"\x89PNG\r\n\x1a\nnot really",
                    "rgb": _rgb_png(), "wrong_size": encode_mask_png(np.zeros((7, 5), np.uint8)),
                    "out_of_range": encode_mask_png(np.full((8, 8), c, np.uint8)), "empty_file": b""}[bad]
            if bad == "out_of_range":
                from fmuia.dataset.masks import read_mask

                data = encode_mask_png(np.full(read_mask(s.label).shape, c, np.uint8))
            path.write_bytes(data)
            continue
        path = folder / PREDICTION_FILES[kind]
        entries = json.loads(path.read_text())
        idx = [i for i, e in enumerate(entries) if (e.get("task_id"), e.get("image_path")) == s.key]
        if not idx:
            continue
        if delete:
            entries.pop(idx[0])
        else:
            field, value = CORRUPT_JSON[kind][variant % len(CORRUPT_JSON[kind])]
            entries[idx[0]][field] = value
        path.write_text(json.dumps(entries))


def _rgb_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


def _finite_everywhere(results: dict) -> None:
    for kind in TaskKind:
        for task_id, block in (results.get(kind.value) or {}).items():
            for m in TASK_METRICS[kind]:
                v = block.get(m)
                if v is None:
                    assert m in ("AUC", "AP"), (task_id, m)  # AUC undefined by the labels; AP without scores
                    continue
                assert isinstance(v, float) and math.isfinite(v), (task_id, m, v)
    for key, v in results["aggregates"].items():
        assert v is None or math.isfinite(v), (key, v)
    for row in results["per_case"]:
        for v in row.values():
            if isinstance(v, float):
                assert math.isfinite(v), row


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=1, max_size=5))
def test_strict_is_monotone_and_finite(case, ops):
    root_dir, root, base, before = case
    RAN.append(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pred"
        shutil.copytree(base, folder)
        _break(root, folder, ops)
        after = evaluate(folder, root_dir, mode="strict", n_bootstrap=0, workers=1)
    _finite_everywhere(after)
    for kind in TaskKind:
        for task_id, b in before[kind.value].items():
            a = after[kind.value][task_id]
            for metric, direction in DIRECTIONS.items():
                if b.get(metric) is None or a.get(metric) is None:
                    continue
                if direction == HIGHER:
                    assert a[metric] <= b[metric] + 1e-9, (task_id, metric, b[metric], a[metric], ops)
                else:
                    assert a[metric] >= b[metric] - 1e-9, (task_id, metric, b[metric], a[metric], ops)
            for k, pc in b.get("per_class", {}).items():
                if "F1" in pc:
                    assert a["per_class"][k]["F1"] <= pc["F1"] + 1e-9, (task_id, k, ops)
    for key, (_kind, _metric, direction) in AGGREGATES.items():
        b, a = before["aggregates"][key], after["aggregates"][key]
        if b is None or a is None:
            continue
        assert (a <= b + 1e-9) if direction == HIGHER else (a >= b - 1e-9), (key, b, a, ops)


def test_base_submission_is_scored_finite(case):
    _, _, _, results = case
    _finite_everywhere(results)
    assert all(v is not None for v in results["aggregates"].values())
