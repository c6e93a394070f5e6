"""Validation scores exactly the records ``fmuia predict`` writes (masks pixel for pixel, boxes, points)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fmuia.training.validate as V
from evaluation.scoring import evaluate
from fmuia.dataset import load_root
from fmuia.dataset.images import read_image
from fmuia.dataset.masks import read_mask
from fmuia.inference import predict
from fmuia.model import build_model
from fmuia.tasks import PREDICTION_FILES, TaskKind, get_task
from fmuia.training.checkpoint import make_meta, save_checkpoint
from fmuia.training.validate import validate
from fmuia.transforms import preprocess

IMG_SIZE = 64
BATCH = 2  # three images per task: a full batch and a batch of one
# A distinct odd (W, H) per image: upsampled from the 64 px network output, downsampled, non-square.
SIZES = iter([(97, 131), (131, 97), (75, 53), (53, 75), (101, 67), (67, 101), (143, 89), (89, 143), (111, 77),
              (77, 111), (123, 59), (59, 123), (85, 95), (95, 85), (129, 71), (71, 129), (99, 61), (61, 99)])
TASKS = ["cervix", "cardiac_multi", "breast_3cls", "thyroid_nodule_det", "IUGC"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _image(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Speckle with a few bright and dark rectangles: an untrained net gives varied outputs on it."""
    img = rng.integers(40, 120, (h, w, 3), dtype=np.uint8)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
        img[y0 : y0 + int(rng.integers(6, h // 2)), x0 : x0 + int(rng.integers(6, w // 2))] = rng.integers(0, 256)
    return img


def _write_root(root: Path) -> Path:
    """A labelled data root in the official layout, every image of its own odd size."""
    rng = np.random.default_rng(7)
    (root / "csv_files").mkdir(parents=True)
    for task_id in TASKS:
        spec = get_task(task_id)
        folder = root / spec.kind.value / task_id
        (folder / "img").mkdir(parents=True)
        header = ["image_path", "task_id", "task_name", "num_classes"]
        header += {TaskKind.SEGMENTATION: ["mask_path"], TaskKind.CLASSIFICATION: ["mask"],
                   TaskKind.DETECTION: ["x_min", "y_min", "x_max", "y_max"],
                   TaskKind.REGRESSION: [f"point_{k + 1}_xy" for k in range(spec.num_classes)]}[spec.kind]
        rows = []
        for i in range(3):
            w, h = next(SIZES)
            rel = f"{spec.kind.value}/{task_id}/img/{i:03d}.png"
            Image.fromarray(_image(rng, w, h)).save(root / rel)
            row = [f"../{rel}", task_id, spec.kind.csv_name, str(spec.num_classes)]
            if spec.kind is TaskKind.SEGMENTATION:
                (folder / "mask").mkdir(exist_ok=True)
                mask = np.zeros((h, w), np.uint8)
                for c in range(1, spec.num_classes):
                    y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
                    mask[y0 : y0 + h // 3, x0 : x0 + w // 3] = c
                mrel = f"{spec.kind.value}/{task_id}/mask/{i:03d}.png"
                Image.fromarray(mask).save(root / mrel)
                row.append(f"../{mrel}")
            elif spec.kind is TaskKind.CLASSIFICATION:
                row.append(str(i % spec.num_classes))
            elif spec.kind is TaskKind.DETECTION:
                x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
                row += [str(x0), str(y0), str(x0 + w // 3), str(y0 + h // 4)]
            else:
                row += [f"[{rng.uniform(1, w - 1):.1f}, {rng.uniform(1, h - 1):.1f}]" for _ in range(spec.num_classes)]
            rows.append(row)
        with open(root / "csv_files" / f"{task_id}.csv", "w", newline="") as fh:
            csv.writer(fh).writerows([header, *rows])
    return root


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """(data root, validate's result, what validate scored, predict's output folder)."""
    tmp = tmp_path_factory.mktemp("validate")
    root_dir = _write_root(tmp / "root")
    root = load_root(root_dir)
    torch.manual_seed(0)
    net = build_model([get_task(t) for t in TASKS], backbone="test_efficientnet", pretrained="none", fpn_channels=16)
    # An untrained segmentation head predicts one class everywhere: give it per-task BN statistics of
    # these images and large output weights so that its masks hold several classes.
    net.train()
    with torch.no_grad():
        for task_id in ("cervix", "cardiac_multi"):
            x = [preprocess(read_image(s.image_file), IMG_SIZE) for s in root.samples if s.task_id == task_id]
            net(torch.from_numpy(np.stack(x)), task_id)
            torch.nn.init.normal_(net.head(task_id).out.weight, std=3.0)
            torch.nn.init.zeros_(net.head(task_id).out.bias)
    ckpt = save_checkpoint(tmp / "m.pt", net, make_meta(net, IMG_SIZE))

    seen: dict[str, list] = {"seg": [], "det": [], "reg": []}
    mp = pytest.MonkeyPatch()
    real_seg, real_iou, real_mre = V.per_class_metrics, V.iou_xyxy, V.mean_radial_error

    def seg_spy(pred, gt, num_classes, **kw):
        seen["seg"].append((np.array(pred, copy=True), np.array(gt, copy=True)))
        return real_seg(pred, gt, num_classes, **kw)

    def iou_spy(pred, gt):
        seen["det"].append((tuple(pred), tuple(gt)))
        return real_iou(pred, gt)

    def mre_spy(pred, gt):
        seen["reg"].append((np.array(pred, copy=True), np.array(gt, copy=True)))
        return real_mre(pred, gt)

    mp.setattr(V, "per_class_metrics", seg_spy)
    mp.setattr(V, "iou_xyxy", iou_spy)
    mp.setattr(V, "mean_radial_error", mre_spy)
    try:
        result = validate(net, root.samples, IMG_SIZE, torch.device("cpu"), batch_size=BATCH, workers=0)
    finally:
        mp.undo()
    out = tmp / "pred"
    predict(root_dir, out, ckpt, batch_size=BATCH, device="cpu", workers=0)
    return root, result, seen, out


def _entries(out: Path, kind: TaskKind) -> dict:
    return {(e["task_id"], e["image_path"]): e for e in json.loads((out / PREDICTION_FILES[kind]).read_text())}


def test_validated_masks_are_the_pngs_predict_writes(scored):
    root, _, seen, out = scored
    segs = root.of_kind(TaskKind.SEGMENTATION)
    assert len(seen["seg"]) == len(segs) == 6
    by_shape = {gt.shape: pred for pred, gt in seen["seg"]}
    assert len(by_shape) == len(segs)  # every image has its own size
    distinct = 0
    for s in segs:
        written = read_mask(out / s.mask_path.replace("../", ""))
        with Image.open(s.image_file) as im:
            assert written.shape == (im.height, im.width)
        pred = by_shape[written.shape]
        assert pred.dtype == np.uint8
        np.testing.assert_array_equal(pred, written)  # pixel for pixel
        distinct += len(np.unique(pred)) > 1
    assert distinct == len(segs)  # the comparison is not between blank masks


def test_validated_boxes_and_points_are_the_records_predict_writes(scored):
    root, _, seen, out = scored
    det = _entries(out, TaskKind.DETECTION)
    boxes = {gt: pred for pred, gt in seen["det"]}
    dets = root.of_kind(TaskKind.DETECTION)
    assert len(seen["det"]) == len(dets) == 3
    for s in dets:
        assert boxes[tuple(s.label)] == tuple(det[s.key]["bbox_pixels"])  # exactly, float for float

    reg = _entries(out, TaskKind.REGRESSION)
    points = {tuple(gt.ravel()): pred for pred, gt in seen["reg"]}
    regs = root.of_kind(TaskKind.REGRESSION)
    assert len(seen["reg"]) == len(regs) == 3
    for s in regs:
        gt = tuple(float(v) for p in s.label for v in p)
        written = np.asarray(reg[s.key]["predicted_points_pixels"]).reshape(-1, 2)
        np.testing.assert_array_equal(points[gt], written)


def test_validation_metrics_agree_with_the_strict_scorer_on_predicts_folder(scored):
    root, result, _, out = scored
    strict = evaluate(out, root.root, mode="strict", n_bootstrap=0)
    tasks = result["tasks"]
    assert set(tasks) == set(TASKS)
    assert tasks["thyroid_nodule_det"]["IoU"] == pytest.approx(strict["detection"]["thyroid_nodule_det"]["IoU"], abs=1e-12)
    assert tasks["IUGC"]["MRE"] == pytest.approx(strict["regression"]["IUGC"]["MRE"], abs=1e-9)
    for metric in ("Accuracy", "F1_macro", "F1_weighted", "MCC"):
        assert tasks["breast_3cls"][metric] == pytest.approx(strict["classification"]["breast_3cls"][metric]), metric
    assert tasks["cervix"]["DSC"] == pytest.approx(strict["segmentation"]["cervix"]["DSC"])  # one foreground class
    assert result["composite"] is not None and 0.0 <= result["composite"] <= 1.0
