"""Strict mode: each policy on small hand-made roots, checked against hand-worked values or
scikit-learn; malformed submissions never beat an empty one; bootstrap intervals are seeded."""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score, matthews_corrcoef, roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
from evaluate_helpers import make_predictions  # noqa: E402

from evaluation.aggregates import AGGREGATES  # noqa: E402
from evaluation.scoring import evaluate, write_results  # noqa: E402

H, W = 30, 40
DIAG = 50.0  # sqrt(30² + 40²)


def _png(arr: np.ndarray, mode: str = "L", fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format=fmt)
    return buf.getvalue()


def _images(root: Path, sub: str, n: int, size=(W, H)) -> list[str]:
    (root / sub).mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        Image.new("L", size).save(root / sub / f"{i}.png")
        paths.append(f"../{sub}/{i}.png")
    return paths


def _csv(root: Path, name: str, header: str, lines: list[str]) -> None:
    (root / "csv_files").mkdir(parents=True, exist_ok=True)
    (root / "csv_files" / f"{name}.csv").write_text("\n".join([header, *lines]) + "\n")


def seg_root(root: Path, n: int) -> list[np.ndarray]:
    """cervix_multi (3 classes): n label masks of 30x40 with two objects each."""
    imgs = _images(root, "seg/img", n)
    (root / "seg/mask").mkdir(parents=True)
    masks, lines = [], []
    for i in range(n):
        m = np.zeros((H, W), np.uint8)
        m[5 + i : 15 + i, 5:20] = 1
        m[18:25, 25 + i : 35] = 2
        Image.fromarray(m, "L").save(root / "seg/mask" / f"{i}.png")
        masks.append(m)
        lines.append(f"{imgs[i]},cervix_multi,segmentation,3,../seg/mask/{i}.png")
    _csv(root, "cervix_multi", "image_path,task_id,task_name,num_classes,mask_path", lines)
    return masks


def test_strict_segmentation_policies(tmp_path):
    root = tmp_path / "labels"
    gts = seg_root(root, 7)
    pred = tmp_path / "pred"
    d = pred / "seg/mask"
    d.mkdir(parents=True)
    (d / "0.png").write_bytes(_png(gts[0]))  # perfect
    # 1: missing
    (d / "2.png").write_bytes(_png(np.asarray(Image.fromarray(gts[2]).resize((W * 2, H * 2), Image.NEAREST))))
    (d / "3.png").write_bytes(_png(np.repeat(gts[3][..., None], 3, axis=2), "RGB"))
    bad = gts[4].copy()
    bad[0, 0] = 7
    (d / "4.png").write_bytes(_png(bad))
    (d / "5.png").write_bytes(_png(gts[5], fmt="JPEG"))
    (d / "6.png").write_bytes(b"garbage")
    res = evaluate(pred, root, mode="strict", n_bootstrap=0)
    cases = res["per_case"]
    assert [c["reason"] is None for c in cases] == [True] + [False] * 6
    assert cases[0]["DSC"] == 1.0 and cases[0]["HD"] == 0.0 and cases[0]["HD95"] == 0.0
    for c in cases[1:]:
        assert c["DSC"] == 0.0 and c["HD"] == pytest.approx(DIAG) and c["HD95"] == pytest.approx(DIAG)
    reasons = [c["reason"] for c in cases[1:]]
    assert "missing" in reasons[0]
    assert "80x60, expected 40x30" in reasons[1]  # wrong size: an error, not a resize
    assert "mode RGB" in reasons[2]
    assert "value 7" in reasons[3]
    assert "JPEG" in reasons[4]
    assert "unreadable" in reasons[5]
    task = res["segmentation"]["cervix_multi"]
    assert task["DSC"] == pytest.approx(1 / 7) and task["HD"] == pytest.approx(6 * DIAG / 7)
    assert task["num_samples"] == 7 and task["num_failed"] == 6
    assert task["per_class"]["class_0"]["DSC"] == pytest.approx(1 / 7)  # worst for background too
    # official mode resizes the double-size mask and decodes RGB as grey: both score perfectly
    off = evaluate(pred, root, mode="official")["segmentation"]["cervix_multi"]
    assert off["num_samples"] == 5  # missing and garbage skipped; JPEG, RGB, big and 7-valued scored


def test_strict_segmentation_valid_values_match_metrics(tmp_path):
    from evaluation.metrics import hausdorff, hd95

    root = tmp_path / "labels"
    gts = seg_root(root, 2)
    pred = tmp_path / "pred"
    (pred / "seg/mask").mkdir(parents=True)
    shifted = [np.roll(g, 2, axis=1) for g in gts]
    for i, p in enumerate(shifted):
        (pred / "seg/mask" / f"{i}.png").write_bytes(_png(p))
    res = evaluate(pred, root, mode="strict", n_bootstrap=0)
    hd = [np.mean([hausdorff(p == c, g == c) for c in (1, 2)]) for p, g in zip(shifted, gts, strict=True)]
    h95 = [np.mean([hd95(p == c, g == c) for c in (1, 2)]) for p, g in zip(shifted, gts, strict=True)]
    assert [c["HD"] for c in res["per_case"]] == pytest.approx(hd)
    assert [c["HD95"] for c in res["per_case"]] == pytest.approx(h95)


def cls_root(root: Path, labels: list[int], task="breast_3cls", c=3) -> None:
    imgs = _images(root, "cls", len(labels))
    _csv(root, task, "image_path,task_id,task_name,num_classes,mask",
         [f"{p},{task},classification,{c},{y}" for p, y in zip(imgs, labels, strict=True)])


def test_strict_classification_policies(tmp_path):
    y = [0, 1, 2, 1, 0, 2, 1]
    root = tmp_path / "labels"
    cls_root(root, y)
    img = [f"../cls/{i}.png" for i in range(len(y))]
    rng = np.random.default_rng(0)
    probs = rng.random((len(y), 3))
    probs /= probs.sum(axis=1, keepdims=True)

    def e(i, c, p=True):
        out = {"image_path": img[i], "task_id": "breast_3cls", "predicted_class": c}
        if p:
            out["predicted_probs"] = probs[i].tolist()
        return out

    entries = [
        e(0, 0),  # right
        # 1: missing
        e(2, 5),  # out of range: wrong, uniform probabilities
        e(3, 1, p=False),  # no probabilities: class counts, uniform for AUC
        e(4, 0), e(4, 0),  # duplicate: invalid
        {**e(5, 2), "predicted_class": "2"},  # malformed
        e(6, 2),  # wrong
        {"image_path": "../cls/none.png", "task_id": "breast_3cls", "predicted_class": 0},  # matches no row
    ]
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "classification_predictions.json").write_text(json.dumps(entries))
    res = evaluate(pred, root, mode="strict", n_bootstrap=0)
    cases = res["per_case"]
    assert [c["correct"] for c in cases] == [True, False, False, True, False, False, False]
    no_probs = [False, True, True, True, True, True, False]
    for c, u, i in zip(cases, no_probs, range(len(y)), strict=True):
        assert c["prob_true"] == (None if u else pytest.approx(probs[i, y[i]]))
    assert [c["reason"] is None for c in cases] == [True, False, False, False, False, False, True]
    assert "duplicate" in cases[4]["reason"] and "malformed" in cases[5]["reason"]
    # independent references for the worst-case policies: rows 1, 2, 4, 5 have no valid class
    p_ref = np.array([0, -1, -1, 1, -1, -1, 2])
    invalid = p_ref < 0
    t = res["classification"]["breast_3cls"]
    assert t["Accuracy"] == pytest.approx(2 / 7)
    # F1: an invalid row is a false negative of its class and a false positive of every other
    per = [f1_score(np.equal(y, k), np.where(invalid, np.not_equal(y, k), p_ref == k), zero_division=0)
           for k in range(3)]
    support = np.bincount(y, minlength=3)
    assert [t["per_class"][f"class_{k}"]["F1"] for k in range(3)] == pytest.approx(per)
    assert t["F1_macro"] == pytest.approx(np.mean(per))
    assert t["F1_weighted"] == pytest.approx(np.dot(per, support) / support.sum())
    # MCC: the lowest over every wrong class the invalid rows could take (brute force)
    choices = [[k for k in range(3) if k != y[i]] for i in np.flatnonzero(invalid)]
    worst = min(matthews_corrcoef(y, _fill(p_ref, combo)) for combo in itertools.product(*choices))
    assert t["MCC"] == pytest.approx(worst)
    # AUC: a row without valid probabilities ranks below every negative of its own class and
    # above every positive of the others (scores outside [0, 1] stand for -inf / +inf)
    auc = []
    for k in range(3):
        s = np.array([probs[i, k] if not u else (-10.0 if y[i] == k else 10.0) for i, u in enumerate(no_probs)])
        auc.append(roc_auc_score(np.equal(y, k), s))
    assert t["AUC"] == pytest.approx(np.mean(auc))
    assert any("match no label row" in n for n in res["notes"])


def _fill(pred: np.ndarray, combo: tuple[int, ...]) -> np.ndarray:
    out = pred.copy()
    out[np.flatnonzero(pred < 0)] = combo
    return out


def det_root(root: Path, boxes: list[list[float]]) -> None:
    imgs = _images(root, "det", len(boxes))
    _csv(root, "thyroid_nodule_det", "image_path,task_id,task_name,num_classes,x_min,y_min,x_max,y_max",
         [f"{p},thyroid_nodule_det,detection,1," + ",".join(str(v) for v in b) for p, b in zip(imgs, boxes, strict=True)])


def _det_entry(i, box, score=1.0):
    e = {"image_path": f"../det/{i}.png", "task_id": "thyroid_nodule_det",
         "bbox_normalized": [v / 40 for v in box], "bbox_pixels": box}
    if score is not None:
        e["score"] = score
    return e


def test_strict_detection_policies_and_coco_ap(tmp_path):
    boxes = [[2.0, 3.0, 12.0, 13.0], [5.0, 5.0, 25.0, 20.0], [0.0, 0.0, 10.0, 10.0], [10.0, 10.0, 30.0, 28.0]]
    root = tmp_path / "labels"
    det_root(root, boxes)
    pred = tmp_path / "pred"
    pred.mkdir()
    entries = [_det_entry(0, boxes[0]), _det_entry(1, boxes[1]), _det_entry(2, [0.0, 0.0, 5.0, 10.0]),
               _det_entry(3, [30.0, 10.0, 10.0, 28.0])]  # inverted: IoU 0 with a reason
    (pred / "detection_predictions.json").write_text(json.dumps(entries))
    res = evaluate(pred, root, mode="strict", n_bootstrap=0)
    t = res["detection"]["thyroid_nodule_det"]
    assert [c["IoU"] for c in res["per_case"]] == pytest.approx([1.0, 1.0, 0.5, 0.0])
    assert "x_min < x_max" in res["per_case"][3]["reason"]
    assert t["IoU"] == pytest.approx(2.5 / 4)
    # COCO: image 2 (IoU 0.5) is a true positive only at threshold 0.50; image 3's invalid box is
    # the most confident false positive (ranked first). AP50: ranks FP, TP, TP, TP → interpolated
    # precision 3/4 up to recall 3/4 (76 of the 101 recall points); AP75 and above: FP, TP, TP, FP
    # → precision 2/3 up to recall 2/4 (51 points).
    assert t["AP50"] == pytest.approx(76 * 3 / 4 / 101)
    assert t["AP75"] == pytest.approx(51 * 2 / 3 / 101)
    assert t["AP"] == pytest.approx((76 * 3 / 4 + 9 * 51 * 2 / 3) / 10 / 101)
    # a valid prediction without a score: no AP
    entries[0] = _det_entry(0, boxes[0], score=None)
    (pred / "detection_predictions.json").write_text(json.dumps(entries))
    assert evaluate(pred, root, mode="strict", n_bootstrap=0)["detection"]["thyroid_nodule_det"]["AP"] is None


def test_strict_regression_policies_and_empty_task(tmp_path):
    root = tmp_path / "labels"
    imgs = _images(root, "reg", 4)
    _csv(root, "FUGC", "image_path,task_id,task_name,num_classes,point_1_xy,point_2_xy", [
        f'{imgs[0]},FUGC,Regression,2,"[1.0, 2.0]","[10.0, 10.0]"',
        f'{imgs[1]},FUGC,Regression,2,"[5.0, 5.0]",',  # landmark 2 missing: left out in strict
        f'{imgs[2]},FUGC,Regression,2,"[3.0, 3.0]","[4.0, 4.0]"',
        f'{imgs[3]},FUGC,Regression,2,"[3.0, 3.0]","[4.0, 4.0]"',
    ])
    pred = tmp_path / "pred"
    pred.mkdir()
    e = [
        {"image_path": imgs[0], "task_id": "FUGC", "predicted_points_normalized": [0, 0, 0, 0],
         "predicted_points_pixels": [4.0, 6.0, 10.0, 10.0]},  # errors 5 and 0
        {"image_path": imgs[1], "task_id": "FUGC", "predicted_points_normalized": [0, 0, 0, 0],
         "predicted_points_pixels": [8.0, 9.0, 100.0, 100.0]},  # 5; landmark 2 ignored
        {"image_path": imgs[2], "task_id": "FUGC", "predicted_points_normalized": [0, 0],
         "predicted_points_pixels": [3.0, 3.0]},  # wrong length: the diagonal
        # imgs[3] missing: the diagonal
    ]
    (pred / "regression_predictions.json").write_text(json.dumps(e))
    res = evaluate(pred, root, mode="strict", n_bootstrap=0)
    assert [c["MRE"] for c in res["per_case"]] == pytest.approx([2.5, 5.0, DIAG, DIAG])
    assert res["regression"]["FUGC"]["MRE"] == pytest.approx((7.5 + 2 * DIAG) / 4)
    # official: missing landmark counts as (0, 0), 1-point entries broadcast, missing rows skipped
    off = evaluate(pred, root, mode="official")["regression"]["FUGC"]
    expected = [2.5, (5.0 + math.hypot(100, 100)) / 2, (0 + math.hypot(1, 1)) / 2]
    assert off["num_samples"] == 3 and off["MRE"] == pytest.approx(np.mean(expected))
    # nothing predicted: official says MRE 0 (a known flaw), strict the mean diagonal
    empty = tmp_path / "empty"
    empty.mkdir()
    assert evaluate(empty, root, mode="official")["regression"] == {}
    (empty / "regression_predictions.json").write_text("[]")
    assert evaluate(empty, root, mode="official")["regression"]["FUGC"]["MRE"] == 0.0
    assert evaluate(empty, root, mode="strict", n_bootstrap=0)["regression"]["FUGC"]["MRE"] == pytest.approx(DIAG)


# ---- whole submissions on synth data ----------------------------------------------------------

def _fully_malformed(labels: Path, out: Path) -> Path:
    from fmuia.dataset import load_root
    from fmuia.dataset.schema import prediction_mask_relpath

    make_predictions(labels, out, "perfect")
    for s in load_root(labels).of_kind("segmentation"):
        (out / prediction_mask_relpath(s.mask_path)).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cls = json.loads((out / "classification_predictions.json").read_text())
    for e in cls:
        e["predicted_class"] = str(e["predicted_class"])
    (out / "classification_predictions.json").write_text(json.dumps(cls))
    det = json.loads((out / "detection_predictions.json").read_text())
    for e in det:
        e["bbox_pixels"] = e["bbox_pixels"][:3]
    (out / "detection_predictions.json").write_text(json.dumps(det))
    (out / "regression_predictions.json").write_bytes(b"\xff\xfe garbage")
    return out


def _not_better(a: dict, b: dict) -> None:
    """Aggregates ``a`` are nowhere better than ``b``."""
    for key, (_, _, direction) in AGGREGATES.items():
        x, y = a[key], b[key]
        assert (x is None) == (y is None), key
        if x is None:
            continue
        assert (x <= y + 1e-12) if direction == "higher" else (x >= y - 1e-12), (key, x, y)


def test_malformed_never_scores_above_empty(synth_split, tmp_path):
    labels = synth_split / "labels"
    empty = tmp_path / "empty"
    empty.mkdir()
    e = evaluate(empty, labels, mode="strict", n_bootstrap=0)
    m = evaluate(_fully_malformed(labels, tmp_path / "bad"), labels, mode="strict", n_bootstrap=0)
    _not_better(m["aggregates"], e["aggregates"])
    _not_better(e["aggregates"], m["aggregates"])  # malformed rows score exactly like missing ones
    assert all(c["reason"] for c in m["per_case"])
    assert len(m["per_case"]) == len(e["per_case"]) == sum(
        t["num_samples"] for kind in ("segmentation", "classification", "detection", "regression") for t in m[kind].values())


def test_malformed_rows_count_as_missing(synth_split, tmp_path):
    """The noisy set with some rows corrupted scores exactly like the same set with them deleted."""
    labels = synth_split / "labels"
    a = make_predictions(labels, tmp_path / "a", "noisy", seed=3)
    b = make_predictions(labels, tmp_path / "b", "noisy", seed=3)
    masks = sorted(p for p in a.rglob("*.png"))[::3]
    for p in masks:
        p.write_bytes(b"junk")
        (b / p.relative_to(a)).unlink()
    for name in ("classification_predictions.json", "regression_predictions.json"):
        ea = json.loads((a / name).read_text())
        eb = json.loads((b / name).read_text())
        ea[1]["task_id"] = 5  # unusable: no row
        ea[2].pop("predicted_points_pixels" if "regression" in name else "predicted_class")
        del eb[1:3]
        (a / name).write_text(json.dumps(ea))
        (b / name).write_text(json.dumps(eb))
    ra = evaluate(a, labels, mode="strict", n_bootstrap=0)
    rb = evaluate(b, labels, mode="strict", n_bootstrap=0)
    assert ra["aggregates"] == rb["aggregates"]


def test_strict_never_crashes_on_hostile_submissions(synth_split, tmp_path):
    labels = synth_split / "labels"
    pred = make_predictions(labels, tmp_path / "p", "malformed", seed=1)
    (pred / "classification_predictions.json").write_text(json.dumps({"not": "a list"}))
    (pred / "detection_predictions.json").write_bytes(b"\x00\x01\x02")
    masks = sorted(pred.rglob("*.png"))
    if masks:
        masks[-1].unlink()
        os.symlink("/etc/passwd", masks[-1])  # points outside: refused
    res = evaluate(pred, labels, mode="strict", n_bootstrap=20)
    assert set(res["aggregates"]) == set(AGGREGATES)
    assert all(v is None or math.isfinite(v) for v in res["aggregates"].values())
    json.dumps(res, allow_nan=True)
    off = evaluate(pred, labels, mode="official")
    assert off["classification"] == {} and off["detection"] == {}


def test_strict_shape_extends_official(synth_split, tmp_path):
    labels = synth_split / "labels"
    pred = make_predictions(labels, tmp_path / "p", "noisy", seed=2)
    off = evaluate(pred, labels, mode="official")
    st = evaluate(pred, labels, mode="strict", n_bootstrap=50)
    for kind, tasks in off.items():
        for task_id, block in tasks.items():
            assert set(block) <= set(st[kind][task_id]), (kind, task_id)
            assert set(block["per_class"] if "per_class" in block else {}) <= set(st[kind][task_id].get("per_class", {}))
    assert set(st["aggregates"]) == set(AGGREGATES)
    paths = write_results(st, tmp_path / "r" / "results.json")
    lines = paths["per_case"].read_text().splitlines()
    assert len(lines) == 1 + len(st["per_case"])
    assert json.loads(paths["json"].read_text())["aggregates"] == pytest.approx(st["aggregates"])


def test_bootstrap_intervals_are_seeded(tmp_path):
    root = tmp_path / "labels"
    n = 25
    imgs = _images(root, "reg", n)
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 30, (n, 4))
    _csv(root, "FUGC", "image_path,task_id,task_name,num_classes,point_1_xy,point_2_xy",
         [f'{imgs[i]},FUGC,Regression,2,"[{gt[i, 0]}, {gt[i, 1]}]","[{gt[i, 2]}, {gt[i, 3]}]"' for i in range(n)])
    pred = tmp_path / "pred"
    pred.mkdir()
    pts = gt + rng.normal(0, 1, (n, 4)) * rng.uniform(0, 5, (n, 1))
    (pred / "regression_predictions.json").write_text(json.dumps([
        {"image_path": imgs[i], "task_id": "FUGC", "predicted_points_normalized": [0, 0, 0, 0],
         "predicted_points_pixels": pts[i].tolist()} for i in range(n)]))
    a = evaluate(pred, root, mode="strict", n_bootstrap=300, seed=7)["regression"]["FUGC"]
    b = evaluate(pred, root, mode="strict", n_bootstrap=300, seed=7)["regression"]["FUGC"]
    c = evaluate(pred, root, mode="strict", n_bootstrap=300, seed=8)["regression"]["FUGC"]
    assert a["ci95"] == b["ci95"]
    assert a["ci95"] != c["ci95"]
    lo, hi = a["ci95"]["MRE"]
    assert lo < a["MRE"] < hi
    # the interval of a mean of 25 cases: close to the normal approximation
    per_case = np.array([c["MRE"] for c in evaluate(pred, root, mode="strict", n_bootstrap=0)["per_case"]])
    half = 1.96 * per_case.std() / math.sqrt(n)
    assert hi - lo == pytest.approx(2 * half, rel=0.35)
    assert evaluate(pred, root, mode="strict", n_bootstrap=0)["regression"]["FUGC"]["ci95"] == {}


def test_strict_records_mean_diagonal_per_task(synth_split, tmp_path):
    """Segmentation, detection and regression tasks carry the mean image diagonal of their rows
    (measured here with PIL), so the leaderboard needs no --labels; classification does not."""
    from fmuia.dataset import load_root

    labels = synth_split / "labels"
    (tmp_path / "empty").mkdir()
    res = evaluate(tmp_path / "empty", labels, mode="strict", n_bootstrap=0)
    expected: dict[str, list[float]] = {}
    for s in load_root(labels).samples:
        with Image.open(s.image_file) as im:
            expected.setdefault(s.task_id, []).append(math.hypot(*im.size))
    seen = 0
    for kind in ("segmentation", "detection", "regression"):
        for task_id, block in res[kind].items():
            assert block["mean_diagonal"] == pytest.approx(np.mean(expected[task_id])), task_id
            seen += 1
    assert seen > 0
    assert all("mean_diagonal" not in b for b in res["classification"].values())
    # an empty submission's strict HD and MRE are exactly the diagonal, per row and so on average
    for block in res["regression"].values():
        assert block["MRE"] == pytest.approx(block["mean_diagonal"])


def test_strict_classification_rows_carry_label_and_predicted(tmp_path):
    y = [0, 1, 2, 1]
    root = tmp_path / "labels"
    cls_root(root, y)
    entries = [{"image_path": f"../cls/{i}.png", "task_id": "breast_3cls", "predicted_class": c,
                "predicted_probs": [1 / 3] * 3} for i, c in [(0, 0), (1, 2), (2, 9)]]  # row 3 missing, row 2 invalid
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "classification_predictions.json").write_text(json.dumps(entries))
    res = evaluate(pred, root, mode="strict", n_bootstrap=0)
    cases = res["per_case"]
    assert [c["label"] for c in cases] == y
    assert [c["predicted"] for c in cases] == [0, 2, None, None]
    paths = write_results(res, tmp_path / "out" / "r.json")
    import csv

    rows = list(csv.DictReader(paths["per_case"].open()))
    assert [r["label"] for r in rows] == ["0", "1", "2", "1"] and [r["predicted"] for r in rows] == ["0", "2", "", ""]


def test_coco_ap_is_null_with_a_note_without_pycocotools(tmp_path, monkeypatch):
    import builtins

    boxes = [[2.0, 3.0, 12.0, 13.0], [5.0, 5.0, 25.0, 20.0]]
    root = tmp_path / "labels"
    det_root(root, boxes)
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "detection_predictions.json").write_text(json.dumps([_det_entry(0, boxes[0]), _det_entry(1, boxes[1])]))
    real_import = builtins.__import__

    def no_pycocotools(name, *args, **kwargs):
        if name == "pycocotools" or name.startswith("pycocotools."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pycocotools)
    for mod in [m for m in sys.modules if m == "pycocotools" or m.startswith("pycocotools.")]:
        monkeypatch.delitem(sys.modules, mod)
    res = evaluate(pred, root, mode="strict", n_bootstrap=0)
    t = res["detection"]["thyroid_nodule_det"]
    assert t["IoU"] == pytest.approx(1.0)
    assert t["AP"] is None and t["AP50"] is None and t["AP75"] is None
    assert "pycocotools" in t["AP_note"]
    assert any("pycocotools" in n for n in res["notes"])
    monkeypatch.undo()
    assert evaluate(pred, root, mode="strict", n_bootstrap=0)["detection"]["thyroid_nodule_det"]["AP"] == pytest.approx(1.0)


def test_an_absurdly_large_box_is_a_false_positive_for_ap(tmp_path):
    # COCOeval ignores an unmatched detection whose area is beyond its "all" range (1e10 px²):
    # such a box must still count against AP, or breaking a box would raise it
    boxes = [[2.0, 3.0, 12.0, 13.0], [5.0, 5.0, 25.0, 20.0], [0.0, 0.0, 10.0, 10.0]]
    root = tmp_path / "labels"
    det_root(root, boxes)
    pred = tmp_path / "pred"
    pred.mkdir()
    near = [_det_entry(0, boxes[0], 0.5), _det_entry(1, [30.0, 30.0, 35.0, 35.0], 0.9), _det_entry(2, boxes[2], 0.3)]
    (pred / "detection_predictions.json").write_text(json.dumps(near))
    ap_miss = evaluate(pred, root, mode="strict", n_bootstrap=0)["detection"]["thyroid_nodule_det"]["AP"]
    near[1] = _det_entry(1, [1e30, 1e30, 1e31, 1e31], 0.9)
    (pred / "detection_predictions.json").write_text(json.dumps(near))
    ap_huge = evaluate(pred, root, mode="strict", n_bootstrap=0)["detection"]["thyroid_nodule_det"]["AP"]
    assert ap_huge == pytest.approx(ap_miss) and ap_huge < 1.0
