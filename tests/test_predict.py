"""Inference: writers and coordinate mappings proven with an oracle network that returns the labels."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fmuia.inference
from fmuia.cli import main
from fmuia.dataset import load_root
from fmuia.dataset.images import image_size, read_image
from fmuia.dataset.masks import read_mask
from fmuia.errors import FmuiaError
from fmuia.formats import SegmentationPrediction, to_entry
from fmuia.inference import _TTA, _with_mirror, predict, predict_with_model
from fmuia.model import build_model
from fmuia.oracle import oracle_predictions
from fmuia.resize import resize_nearest_centres
from fmuia.tasks import PREDICTION_FILES, TaskKind, get_task, list_tasks
from fmuia.training.checkpoint import make_meta, save_checkpoint
from fmuia.transforms import preprocess


class OracleNet(torch.nn.Module):
    """Same interface as ``MultiTaskNet``; recognizes each input image and returns its label.

    ``forward`` identifies every image of the batch among the task's samples by its preprocessed
    pixels (nearest fingerprint); ``postprocess`` returns the label in the network's normalized
    output convention: segmentation one-hot probabilities at the input resolution (the GT mask
    resized with Pillow's nearest neighbour), classification one-hot probabilities, detection the GT
    box divided by the image size, regression the GT points divided by the image size.
    """

    def __init__(self, root, img_size: int):
        super().__init__()
        self.img_size = img_size
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # so .to(device) has something to move
        self.table: dict[str, list] = {}
        for s in root.samples:
            x = preprocess(read_image(s.image_file), img_size)
            self.table.setdefault(s.task_id, []).append((self._fingerprint(torch.from_numpy(x)), s))
        self.calls = 0

    @staticmethod
    def _fingerprint(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x.float()[None], 16).flatten()

    def forward(self, images: torch.Tensor, task_id: str) -> torch.Tensor:
        self.calls += 1
        assert images.ndim == 4 and images.shape[1:] == (3, self.img_size, self.img_size)
        entries = self.table[task_id]
        refs = torch.stack([f for f, _ in entries])
        found = []
        for img in images:
            d = ((refs - self._fingerprint(img)) ** 2).sum(dim=1)
            found.append(int(d.argmin()))
        return torch.tensor(found)

    def postprocess(self, task_id: str, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        samples = [self.table[task_id][int(i)][1] for i in raw]
        kind, n = samples[0].kind, samples[0].task.num_classes
        S = self.img_size
        if kind is TaskKind.SEGMENTATION:
            out = torch.zeros(len(samples), n, S, S)
            for b, s in enumerate(samples):
                m = np.asarray(Image.fromarray(read_mask(s.label).astype(np.uint8)).resize((S, S), Image.NEAREST))
                out[b] = torch.nn.functional.one_hot(torch.from_numpy(m.astype(np.int64)), n).permute(2, 0, 1).float()
            return {"probs": out}
        if kind is TaskKind.CLASSIFICATION:
            return {"probs": torch.nn.functional.one_hot(torch.tensor([s.label for s in samples]), n).float()}
        sizes = [image_size(s.image_file) for s in samples]
        if kind is TaskKind.DETECTION:
            box = torch.tensor([[x0 / w, y0 / h, x1 / w, y1 / h] for s, (w, h) in zip(samples, sizes, strict=True)
                                for (x0, y0, x1, y1) in [s.label]], dtype=torch.float64)
            return {"box": box, "score": torch.ones(len(samples))}
        pts = torch.tensor([[(p[0] / w, p[1] / h) if p is not None else (0.5, 0.5) for p in s.label]
                            for s, (w, h) in zip(samples, sizes, strict=True)], dtype=torch.float64)
        return {"points": pts}


def _meta(root, img_size: int) -> dict:
    return {"img_size": img_size, "tasks": [spec.to_dict() for spec in root.tasks.values()]}


def _oracle_size(root) -> int:
    """An input size at least as large as every image: nearest resizing then round-trips exactly."""
    return max(max(image_size(s.image_file)) for s in root.samples)


@pytest.fixture(scope="module")
def oracle_run(synth_split, tmp_path_factory):
    labels = load_root(synth_split / "labels")
    size = _oracle_size(labels)
    net = OracleNet(labels, size)
    out = tmp_path_factory.mktemp("pred_oracle")
    counts = predict_with_model(labels, net, _meta(labels, size), out, batch_size=4, device="cpu", workers=1)
    return labels, out, counts


def _entries(out: Path, kind: TaskKind) -> dict:
    data = json.loads((out / PREDICTION_FILES[kind]).read_text())
    return {(e["task_id"], e["image_path"]): e for e in data}


def test_resize_nearest_matches_opencv_pixel_centre_nearest():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    for (h, w), (H, W) in [((7, 5), (23, 11)), ((64, 64), (300, 211)), ((50, 40), (13, 9)), ((16, 16), (16, 16)), ((96, 96), (640, 480)), ((128, 128), (37, 1000))]:
        m = rng.integers(0, 5, size=(h, w), dtype=np.uint8)
        ref = cv2.resize(m, (W, H), interpolation=cv2.INTER_NEAREST_EXACT)
        np.testing.assert_array_equal(resize_nearest_centres(m, H, W), ref)


def test_oracle_predictions_equal_labels(oracle_run):
    labels, out, counts = oracle_run
    by_task = labels.by_task()
    assert counts == {t: len(v) for t, v in by_task.items()}
    seg = cls = det = reg = 0
    cls_e, det_e, reg_e = (_entries(out, k) for k in (TaskKind.CLASSIFICATION, TaskKind.DETECTION, TaskKind.REGRESSION))
    for s in labels.samples:
        w, h = image_size(s.image_file)
        if s.kind is TaskKind.SEGMENTATION:
            pred_file = out / s.mask_path.replace("../", "")
            with Image.open(pred_file) as im:
                assert im.mode == "L" and im.size == (w, h)
            np.testing.assert_array_equal(read_mask(pred_file), read_mask(s.label))
            seg += 1
        elif s.kind is TaskKind.CLASSIFICATION:
            e = cls_e[s.key]
            assert e["predicted_class"] == s.label
            assert len(e["predicted_probs"]) == s.task.num_classes
            assert math.isclose(sum(e["predicted_probs"]), 1.0, abs_tol=1e-9)
            cls += 1
        elif s.kind is TaskKind.DETECTION:
            e = det_e[s.key]
            np.testing.assert_allclose(e["bbox_pixels"], s.label, atol=1e-3)
            x0, y0, x1, y1 = s.label
            np.testing.assert_allclose(e["bbox_normalized"], [x0 / w, y0 / h, x1 / w, y1 / h], atol=1e-6)
            assert 0.0 <= e["score"] <= 1.0
            det += 1
        else:
            e = reg_e[s.key]
            pix = np.asarray(e["predicted_points_pixels"]).reshape(-1, 2)
            norm = np.asarray(e["predicted_points_normalized"]).reshape(-1, 2)
            assert pix.shape == (s.task.num_classes, 2)
            np.testing.assert_allclose(norm * [w, h], pix, atol=1e-6)
            for p, q in zip(s.label, pix, strict=True):
                if p is not None:
                    np.testing.assert_allclose(q, p, atol=1e-3)
            reg += 1
    assert min(seg, cls, det, reg) > 0
    assert len(cls_e) == cls and len(det_e) == det and len(reg_e) == reg  # nothing extra


def test_oracle_output_matches_reference_oracle(oracle_run):
    """The same records as fmuia.oracle builds directly from the labels (no network, no resizing)."""
    labels, out, _ = oracle_run
    files = {k: _entries(out, k) for k in PREDICTION_FILES}
    for ref in oracle_predictions(labels):
        if isinstance(ref, SegmentationPrediction):
            np.testing.assert_array_equal(read_mask(out / ref.relpath), ref.mask)
            continue
        got, want = files[ref.kind][(ref.task_id, ref.image_path)], to_entry(ref)
        assert set(got) >= set(want) - {"score"}
        for key, value in want.items():
            if isinstance(value, list):
                np.testing.assert_allclose(got[key], value, atol=1e-3, err_msg=key)
            elif key != "score":
                assert got[key] == value, key


def test_oracle_output_passes_check(oracle_run, synth_split):
    check = pytest.importorskip("fmuia.check")
    labels, out, _ = oracle_run
    report = check.check_predictions(out, synth_split / "test")
    errors = [p for p in getattr(report, "problems", []) if getattr(p, "severity", "error") == "error"]
    assert not errors, errors[:5]
    assert getattr(report, "ok", True)


def test_oracle_output_scores_perfectly(oracle_run, synth_split):
    scoring = pytest.importorskip("evaluation.scoring")
    labels, out, _ = oracle_run
    res = scoring.evaluate(out, synth_split / "labels", mode="strict", n_bootstrap=0)
    agg = res["aggregates"]
    assert agg["seg_DSC"] == pytest.approx(1.0)
    assert agg["seg_HD"] == pytest.approx(0.0)
    for key in ("cls_Accuracy", "cls_F1_macro", "cls_F1_weighted"):
        assert agg[key] == pytest.approx(1.0), key
    assert agg["det_IoU"] == pytest.approx(1.0, abs=1e-9)
    assert agg["reg_MRE"] == pytest.approx(0.0, abs=1e-9)
    # MCC (and AUC) are 1 wherever they are defined: tasks whose test rows hold two or more classes.
    for task_id, rows in labels.by_task().items():
        if rows[0].kind is TaskKind.CLASSIFICATION and len({s.label for s in rows}) > 1:
            assert res["classification"][task_id]["MCC"] == pytest.approx(1.0), task_id
            assert res["classification"][task_id]["AUC"] == pytest.approx(1.0), task_id


def test_unreadable_image_is_named_and_others_written(synth_split, tmp_path):
    root_dir = tmp_path / "labels"
    shutil.copytree(synth_split / "labels", root_dir)
    labels = load_root(root_dir)
    size = 64
    # Build the oracle first, then break one classification and one segmentation image.
    net = OracleNet(labels, size)
    broken = [labels.of_kind(TaskKind.CLASSIFICATION)[0], labels.of_kind(TaskKind.SEGMENTATION)[1]]
    broken[0].image_file.write_bytes(b"not an image at all")
    broken[1].image_file.unlink()
    out = tmp_path / "pred"
    with pytest.raises(FmuiaError) as info:
        predict_with_model(labels, net, _meta(labels, size), out, batch_size=3, device="cpu", workers=0)
    err = info.value
    assert "2 image(s) could not be read" in err.message
    assert sorted(p.file for p in err.problems) == sorted(str(s.image_file) for s in broken)
    assert all(p.where == s.where for p, s in zip(sorted(err.problems, key=lambda p: p.file),
                                                   sorted(broken, key=lambda s: str(s.image_file)), strict=True))
    # Every other row has its prediction; the broken rows have none (nothing predicted in their place).
    cls_e = _entries(out, TaskKind.CLASSIFICATION)
    assert broken[0].key not in cls_e
    assert len(cls_e) == len(labels.of_kind(TaskKind.CLASSIFICATION)) - 1
    for s in labels.of_kind(TaskKind.CLASSIFICATION):
        if s is not broken[0]:
            assert cls_e[s.key]["predicted_class"] == s.label
    assert not (out / broken[1].mask_path.replace("../", "")).exists()
    written = [s for s in labels.of_kind(TaskKind.SEGMENTATION) if (out / s.mask_path.replace("../", "")).exists()]
    assert len(written) == len(labels.of_kind(TaskKind.SEGMENTATION)) - 1
    assert (out / PREDICTION_FILES[TaskKind.DETECTION]).is_file()


def test_task_missing_from_checkpoint_is_a_clear_error(synth_split, tmp_path):
    labels = load_root(synth_split / "labels")
    meta = {"img_size": 32, "tasks": [s.to_dict() for s in list(labels.tasks.values())[1:]]}
    missing = next(iter(labels.tasks))
    with pytest.raises(FmuiaError) as info:
        predict_with_model(labels, torch.nn.Identity(), meta, tmp_path / "p", device="cpu", workers=0)
    assert [p.where for p in info.value.problems] == [missing]


def test_tta_averages_with_the_mirror_mapped_back_for_every_kind():
    """An output whose mirror is its exact mirror image is unchanged by TTA (every kind's rule)."""
    assert set(_TTA) == set(TaskKind)
    probs = torch.rand(2, 3, 5, 7).softmax(1)
    out = _TTA[TaskKind.SEGMENTATION]({"probs": probs}, {"probs": torch.flip(probs, dims=[3])})
    torch.testing.assert_close(out["probs"], probs)
    cls = torch.tensor([[0.2, 0.8], [0.6, 0.4]])
    torch.testing.assert_close(_TTA[TaskKind.CLASSIFICATION]({"probs": cls}, {"probs": cls})["probs"], cls)
    box, score = torch.tensor([[0.1, 0.2, 0.4, 0.6]]), torch.tensor([0.7])
    mirrored = torch.tensor([[0.6, 0.2, 0.9, 0.6]])  # x0' = 1 - x1, x1' = 1 - x0
    out = _TTA[TaskKind.DETECTION]({"box": box, "score": score}, {"box": mirrored, "score": score})
    torch.testing.assert_close(out["box"], box)
    torch.testing.assert_close(out["score"], score)
    pts = torch.tensor([[[0.1, 0.3], [0.8, 0.5]]])
    out = _TTA[TaskKind.REGRESSION]({"points": pts}, {"points": torch.stack([1 - pts[..., 0], pts[..., 1]], -1)})
    torch.testing.assert_close(out["points"], pts)


def test_tta_of_a_ramp_segmentation_net_is_flat():
    class Ramp(torch.nn.Module):
        def forward(self, x, task_id):  # ignores the image: left column class 0, right column class 1
            ramp = torch.linspace(-4, 4, x.shape[3])
            return torch.stack([-ramp, ramp])[None, :, None, :].expand(x.shape[0], 2, x.shape[2], x.shape[3])

        def postprocess(self, task_id, raw):
            return {"probs": raw.softmax(1)}

    net, x, spec = Ramp(), torch.randn(2, 3, 8, 8), get_task("cervix")
    out = _with_mirror(net, spec, x, net.postprocess("cervix", net(x, "cervix")))["probs"]
    torch.testing.assert_close(out, torch.full_like(out, 0.5))  # (p + mirror(p)) / 2 of an antisymmetric ramp


# ---- a real (tiny, untrained) network from a checkpoint ------------------------------------------

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = build_model(list_tasks(), backbone="test_efficientnet", pretrained="none", fpn_channels=16)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", net, make_meta(net, 64))


# Mirror-safe tasks of three kinds plus two mirror-unsafe ones (a position classification, landmarks).
SMALL_TASKS = ("fetal_abdomen_multi", "cervix", "breast_3cls", "fetal_sacral_pos_cls", "thyroid_nodule_det", "IUGC")


@pytest.fixture(scope="module")
def small_test(synth_split, tmp_path_factory) -> Path:
    """A copy of the hidden-test root reduced to one or two tasks per kind (fast runs)."""
    data = tmp_path_factory.mktemp("small") / "test"
    shutil.copytree(synth_split / "test", data)
    for csv_file in (data / "csv_files").glob("*.csv"):
        if csv_file.stem not in SMALL_TASKS:
            csv_file.unlink()
    assert sorted(load_root(data).tasks) == sorted(SMALL_TASKS)
    return data


def test_real_model_checkpoint_gives_a_valid_folder(synth_split, tiny_checkpoint, tmp_path):
    test = load_root(synth_split / "test")
    out = tmp_path / "pred"
    counts = predict(synth_split / "test", out, tiny_checkpoint, batch_size=5, device="auto", workers=1)
    assert counts == {t: len(v) for t, v in test.by_task().items()}
    for s in test.of_kind(TaskKind.SEGMENTATION):
        with Image.open(out / s.mask_path.replace("../", "")) as im:
            assert im.mode == "L" and im.size == image_size(s.image_file)
            assert np.asarray(im).max() < s.task.num_classes
    for e in json.loads((out / PREDICTION_FILES[TaskKind.DETECTION]).read_text()):
        x0, y0, x1, y1 = e["bbox_pixels"]
        assert 0 <= x0 < x1 and 0 <= y0 < y1 and 0 <= e["score"] <= 1
    check = pytest.importorskip("fmuia.check")
    report = check.check_predictions(out, synth_split / "test")
    assert report.ok, report.errors[:5]
    assert all(c.valid == c.expected for c in report.tasks.values())


def test_tta_mirrors_only_mirror_safe_tasks(small_test, tiny_checkpoint, tmp_path, monkeypatch):
    calls: list[str] = []

    def spy(net, spec, x, post):
        calls.append(spec.task_id)
        return _with_mirror(net, spec, x, post)

    plain, tta = tmp_path / "plain", tmp_path / "tta"
    predict(small_test, plain, tiny_checkpoint, device="cpu", workers=0, tta=False)
    monkeypatch.setattr(fmuia.inference, "_with_mirror", spy)
    predict(small_test, tta, tiny_checkpoint, device="cpu", workers=0, tta=True)
    root = load_root(small_test)
    safe = {t for t, spec in root.tasks.items() if spec.mirror_safe}
    assert set(calls) == safe and {"fetal_sacral_pos_cls", "IUGC"}.isdisjoint(calls)
    assert {"fetal_abdomen_multi", "breast_3cls", "thyroid_nodule_det"} <= safe
    for kind in PREDICTION_FILES:
        a, b = _entries(plain, kind), _entries(tta, kind)
        assert a.keys() == b.keys()
        for key in a:
            if key[0] in safe:
                assert a[key] != b[key], key  # averaged with the mirror: the untrained net is not symmetric
            else:
                assert a[key] == b[key], key  # never mirrored: exactly the plain prediction
    for s in root.of_kind(TaskKind.SEGMENTATION):
        rel = s.mask_path.replace("../", "")
        assert read_mask(tta / rel).shape == read_mask(plain / rel).shape


def test_cli_predict(small_test, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "pred"
    main(["predict", "--data", str(small_test), "--out", str(out), "--checkpoint",
          str(tiny_checkpoint), "--batch-size", "8", "--device", "cpu", "--workers", "0"])
    text = capsys.readouterr().out
    n = len(load_root(small_test).samples)
    assert f"wrote {n} predictions for {len(SMALL_TASKS)} task(s) to {out}" in text
    assert "thyroid_nodule_det" in text and (out / PREDICTION_FILES[TaskKind.REGRESSION]).is_file()


def test_cli_predict_unreadable_image_exits_2_naming_it(small_test, tiny_checkpoint, tmp_path, capsys):
    data = tmp_path / "test"
    shutil.copytree(small_test, data)
    victim = load_root(data).of_kind(TaskKind.DETECTION)[0]
    victim.image_file.write_bytes(victim.image_file.read_bytes()[:40])  # truncated file
    with pytest.raises(SystemExit) as info:
        main(["predict", "--data", str(data), "--out", str(tmp_path / "p"), "--checkpoint", str(tiny_checkpoint),
              "--device", "cpu", "--workers", "0"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "1 image(s) could not be read" in err and str(victim.image_file) in err and victim.where in err
    assert "Traceback" not in err
    entries = json.loads((tmp_path / "p" / PREDICTION_FILES[TaskKind.DETECTION]).read_text())
    assert victim.image_path not in {e["image_path"] for e in entries if e["task_id"] == victim.task_id}


def test_missing_checkpoint_is_a_user_error(synth_split, tmp_path):
    with pytest.raises(FmuiaError, match="checkpoint not found"):
        predict(synth_split / "test", tmp_path / "p", tmp_path / "nope.pt", device="cpu")
