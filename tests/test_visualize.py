"""``fmuia visualize``: grids per task from synth data, with and without labels, worst cases, zip, CLI."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_visualize_pictures import assert_picture, assert_self_contained

from fmuia.cli import cli, main
from fmuia.dataset import load_root, prediction_mask_relpath
from fmuia.dataset.synth import synthesize
from fmuia.errors import FmuiaError
from fmuia.formats import (
    DetectionPrediction,
    RegressionPrediction,
    SegmentationPrediction,
    write_predictions,
)
from fmuia.oracle import oracle_predictions
from fmuia.tasks import PREDICTION_FILES, TaskKind
from fmuia.visualize import DRAWERS, GT_COLOR, PRED_COLOR, WORST_BY, visualize

TASKS = ["cervix_multi", "breast_3cls", "thyroid_nodule_det", "IUGC"]  # one task of each kind


def perturb(pred, rng: np.random.Generator):
    """A plausible, imperfect prediction: shifted masks, jittered boxes and points, noisy probabilities."""
    if isinstance(pred, SegmentationPrediction):
        return dataclasses.replace(pred, mask=np.roll(pred.mask, int(rng.integers(-6, 7)), axis=1))
    if isinstance(pred, DetectionPrediction):
        return dataclasses.replace(pred, bbox_pixels=tuple(float(v + rng.normal(0, 4)) for v in pred.bbox_pixels))
    if isinstance(pred, RegressionPrediction):
        return dataclasses.replace(pred, points_pixels=tuple(float(v + rng.normal(0, 6)) for v in pred.points_pixels))
    probs = rng.dirichlet(np.ones(len(pred.predicted_probs)) * 0.7)
    return dataclasses.replace(pred, predicted_probs=tuple(float(p) for p in probs), predicted_class=int(probs.argmax()))


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("viz_split")
    synthesize(out, per_task=12, seed=5, tasks=TASKS, split=True)
    return out


@pytest.fixture(scope="module")
def preds(split: Path, tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("viz_preds") / "preds"
    write_predictions(out, [perturb(p, rng) for p in oracle_predictions(load_root(split / "labels"))])
    return out


def shown_images(index: Path) -> dict[str, list[str]]:
    """task id → image paths drawn, in order, as listed by index.html."""
    text = index.read_text(encoding="utf-8")
    out = {}
    for task, body in re.findall(r"<figure id='([^']+)'>(.*?)</figure>", text, flags=re.S):
        out[task] = [m for m in re.findall(r"<code class='image'>(.*?)</code>", body)]
    return out


def check_pictures(index: Path, tasks: list[str]) -> None:
    files = assert_self_contained(index)
    names = {f.name for f in files}
    for t in tasks:
        assert f"{t}.png" in names
        w, h = assert_picture(index.parent / f"{t}.png")
        assert w >= 300 and h >= 200


def test_visualize_with_labels(split: Path, preds: Path, tmp_path: Path):
    index = visualize(preds, split / "labels", tmp_path / "viz", per_task=3)
    assert index == tmp_path / "viz" / "index.html"
    check_pictures(index, TASKS)
    shown = shown_images(index)
    by_task = load_root(split / "labels").by_task()
    assert set(shown) == set(TASKS)
    for t in TASKS:  # without --worst: the first cases in CSV order
        assert shown[t] == [s.image_path for s in by_task[t][:3]]
    assert "ground truth solid" in index.read_text(encoding="utf-8")
    assert set(DRAWERS) == set(TaskKind) == set(WORST_BY)  # a fifth kind must bring its drawer


def test_visualize_without_labels_and_from_zip(split: Path, preds: Path, tmp_path: Path):
    archive = tmp_path / "preds.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in preds.rglob("*"):
            if f.is_file():
                zf.write(f, f.relative_to(preds).as_posix())
    assert not load_root(split / "test").labelled
    index = visualize(archive, split / "test", tmp_path / "viz", per_task=2)
    check_pictures(index, TASKS)
    assert "predictions only" in index.read_text(encoding="utf-8")
    with pytest.raises(FmuiaError, match="labelled"):
        visualize(archive, split / "test", tmp_path / "viz2", worst=True)


def test_missing_and_malformed_predictions_still_draw(split: Path, preds: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(preds, broken)
    det = broken / PREDICTION_FILES[TaskKind.DETECTION]
    entries = json.loads(det.read_text())
    entries[0]["bbox_pixels"] = "not a box"
    det.write_text(json.dumps(entries))
    (broken / PREDICTION_FILES[TaskKind.REGRESSION]).unlink()
    first_seg = load_root(split / "labels").by_task()["cervix_multi"][0]
    (broken / prediction_mask_relpath(first_seg.mask_path)).unlink()
    index = visualize(broken, split / "labels", tmp_path / "viz", per_task=4)
    check_pictures(index, TASKS)
    text = index.read_text(encoding="utf-8")
    assert "1 malformed entry skipped" in text
    assert "regression_predictions.json: absent" in text
    assert "without prediction" in text


def _hand_made_per_case(root, rng) -> list[dict]:
    column = {"segmentation": "DSC", "classification": "prob_true", "detection": "IoU", "regression": "MRE"}
    rows = []
    for s in root.samples:
        rows.append({"task_id": s.task_id, "kind": s.kind.value, "image_path": s.image_path,
                     column[s.kind.value]: float(rng.uniform(0, 50 if s.kind.value == "regression" else 1)),
                     "reason": None})
    return rows


def test_worst_picks_the_worst_rows(split: Path, preds: Path, tmp_path: Path):
    root = load_root(split / "labels")
    rows = _hand_made_per_case(root, np.random.default_rng(3))
    index = visualize(preds, split / "labels", tmp_path / "viz", per_task=3, worst=True, results={"per_case": rows})
    check_pictures(index, TASKS)
    shown = shown_images(index)
    for t in TASKS:
        mine = [r for r in rows if r["task_id"] == t]
        key = next(k for k in ("DSC", "prob_true", "IoU", "MRE") if k in mine[0])
        mine.sort(key=lambda r: -r[key] if key == "MRE" else r[key])  # MRE: larger is worse
        assert shown[t] == [r["image_path"] for r in mine[:3]], t


def test_worst_scores_with_the_strict_scorer(split: Path, preds: Path, tmp_path: Path):
    scoring = pytest.importorskip("evaluation.scoring")
    index = visualize(preds, split / "labels", tmp_path / "viz", per_task=2, worst=True)
    check_pictures(index, TASKS)
    shown = shown_images(index)
    # Independent of the scorer: the detection cases drawn are those with the lowest IoU, computed here.
    root = load_root(split / "labels")
    boxes = {e["image_path"]: e["bbox_pixels"]
             for e in json.loads((preds / PREDICTION_FILES[TaskKind.DETECTION]).read_text())}

    def iou(a, b):
        ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
        return ix * iy / union

    det = sorted(root.by_task()["thyroid_nodule_det"], key=lambda s: iou(boxes[s.image_path], s.label))
    assert shown["thyroid_nodule_det"] == [s.image_path for s in det[:2]]
    # And every task matches the scorer's own per-case rows.
    per_case = scoring.evaluate(preds, split / "labels", mode="strict", n_bootstrap=0)["per_case"]
    col = {"segmentation": "DSC", "classification": "prob_true", "detection": "IoU", "regression": "MRE"}
    for t in TASKS:
        mine = [r for r in per_case if r["task_id"] == t]
        c = col[mine[0]["kind"]]
        mine.sort(key=lambda r: -r[c] if c == "MRE" else r[c])
        assert [r[c] for r in mine[:2]] == [
            next(r[c] for r in mine if r["image_path"] == p) for p in shown[t]
        ], t


def test_bad_arguments(split: Path, preds: Path, tmp_path: Path):
    with pytest.raises(FmuiaError):
        visualize(preds, split / "labels", tmp_path / "v", per_task=0)
    with pytest.raises(FmuiaError, match="per-case"):
        visualize(preds, split / "labels", tmp_path / "v", worst=True, results={"segmentation": {}})


def test_cli(split: Path, preds: Path, tmp_path: Path):
    rows = _hand_made_per_case(load_root(split / "labels"), np.random.default_rng(1))
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"per_case": rows}))
    out = tmp_path / "viz"
    res = CliRunner().invoke(cli, ["visualize", str(preds), "--data", str(split / "labels"), "--out", str(out),
                                   "--per-task", "2", "--worst", "--results", str(results)])
    assert res.exit_code == 0, res.output
    assert str(out / "index.html") in res.output
    check_pictures(out / "index.html", TASKS)
    assert all(len(v) == 2 for v in shown_images(out / "index.html").values())


def test_cli_user_error_is_one_line(split: Path, preds: Path, tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["visualize", str(preds), "--data", str(split / "test"), "--out", str(tmp_path / "v"), "--worst"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "labelled" in err and "Traceback" not in err


def _colour_pixels(png: Path, hex_colour: str, tol: float = 40.0) -> int:
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=float)
    target = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)
    return int((np.linalg.norm(rgb - target, axis=2) < tol).sum())


def test_ground_truth_is_drawn_only_with_labels(split: Path, preds: Path, tmp_path: Path):
    """The synth images are grey, so coloured pixels come from the overlays: the ground-truth colour
    appears with labels and not without; the prediction colour appears in both."""
    with_labels = visualize(preds, split / "labels", tmp_path / "a", per_task=2).parent
    without = visualize(preds, split / "test", tmp_path / "b", per_task=2).parent
    for t in ("thyroid_nodule_det", "IUGC", "breast_3cls"):
        assert _colour_pixels(with_labels / f"{t}.png", GT_COLOR) > 30, t
        assert _colour_pixels(without / f"{t}.png", GT_COLOR) == 0, t
        assert _colour_pixels(without / f"{t}.png", PRED_COLOR) > 30, t
