"""Official mode equals the plain reference oracle (tests/reference_scorer.py) to 1e-9 on perfect,
noisy, partial, empty-mask and malformed prediction sets; mask decoding equals OpenCV's."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from evaluate_helpers import VARIANTS, make_predictions  # noqa: E402

from evaluation.scoring import evaluate, write_results  # noqa: E402
from fmuia.dataset.masks import read_mask_like_opencv  # noqa: E402

cv2 = pytest.importorskip("cv2")
reference = pytest.importorskip("reference_scorer")


@pytest.fixture(scope="module")
def pred_sets(synth_split, tmp_path_factory):
    base = tmp_path_factory.mktemp("preds")
    labels = synth_split / "labels"
    return {v: make_predictions(labels, base / v, v, seed=i) for i, v in enumerate(VARIANTS)}


@pytest.mark.parametrize("variant", VARIANTS)
def test_official_equals_reference(pred_sets, synth_split, variant):
    labels = synth_split / "labels"
    ours = evaluate(pred_sets[variant], labels, mode="official")
    ref = reference.reference_evaluate(pred_sets[variant], labels)
    reference.assert_results_close(ours, ref, tol=1e-9)
    assert set(ours) == {"segmentation", "classification", "detection", "regression"}
    json.dumps(ours, allow_nan=False)  # no NaN ever reaches the file


def test_official_sets_exercise_the_quirks(pred_sets, synth_split):
    """The prediction sets really hit the interesting paths (so equality above means something)."""
    labels = synth_split / "labels"
    perfect = evaluate(pred_sets["perfect"], labels, mode="official")
    assert all(t["DSC"] == 1.0 and t["HD"] == 0.0 for t in perfect["segmentation"].values())
    assert all(t["IoU"] == 1.0 for t in perfect["detection"].values())
    noisy = evaluate(pred_sets["noisy"], labels, mode="official")
    assert 0 < np.mean([t["DSC"] for t in noisy["segmentation"].values()]) < 1
    partial = evaluate(pred_sets["partial"], labels, mode="official")
    assert partial["detection"] == {}  # missing JSON: the kind is empty
    first = next(iter(partial["segmentation"].values()))
    assert first == {"DSC": 0.0, "HD": 0.0, "num_samples": 0, "per_class": {}}  # nothing matched
    assert any(t["num_samples"] == 0 and t["MRE"] == 0.0 for t in partial["regression"].values())
    empty = evaluate(pred_sets["empty"], labels, mode="official")
    assert all(t["num_samples"] == 0 for t in empty["classification"].values())
    malformed = evaluate(pred_sets["malformed"], labels, mode="official")
    assert malformed["regression"] == {}  # not JSON: treated as missing
    assert all(t["num_samples"] == 0 for t in malformed["detection"].values())


def test_official_zip_equals_folder_and_workers_agree(pred_sets, synth_split, tmp_path):
    labels = synth_split / "labels"
    folder = pred_sets["noisy"]
    archive = tmp_path / "sub.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())
    a = evaluate(folder, labels, mode="official")
    b = evaluate(archive, labels, mode="official")
    c = evaluate(folder, labels, mode="official", workers=2)
    reference.assert_results_close(a, b, tol=0)
    reference.assert_results_close(a, c, tol=0)


def make_cls_root(root: Path, labels: list[int], task="breast_3cls", num_classes=3) -> Path:
    """A tiny hand-made labelled root with one classification task."""
    (root / "csv_files").mkdir(parents=True)
    (root / "img").mkdir()
    lines = ["image_path,task_id,task_name,num_classes,mask"]
    for i, y in enumerate(labels):
        Image.new("L", (8, 6)).save(root / "img" / f"{i}.png")
        lines.append(f"../img/{i}.png,{task},classification,{num_classes},{y}")
    (root / "csv_files" / f"{task}.csv").write_text("\n".join(lines) + "\n")
    return root


def write_cls_preds(out: Path, labels: list[int], preds: list[int], num_classes=3, task="breast_3cls") -> Path:
    out.mkdir(parents=True)
    entries = [{"image_path": f"../img/{i}.png", "task_id": task, "predicted_class": p,
                "predicted_probs": np.eye(num_classes)[p].tolist()} for i, p in enumerate(preds)]
    (out / "classification_predictions.json").write_text(json.dumps(entries))
    return out


def test_official_per_class_f1_misalignment_is_reproduced(tmp_path):
    """Labels and predictions use classes {0, 2} only: sklearn returns two F1 values, which the
    official scorer reads by position, so class_1 shows class 2's F1 and class_2 shows 0."""
    y = [0, 2, 2, 0]
    root = make_cls_root(tmp_path / "root", y)
    preds = write_cls_preds(tmp_path / "p", y, y)
    res = evaluate(preds, root, mode="official")
    per = res["classification"]["breast_3cls"]["per_class"]
    assert [per[f"class_{c}"]["F1"] for c in range(3)] == [1.0, 1.0, 0.0]
    reference.assert_results_close(res, reference.reference_evaluate(preds, root), tol=1e-9)
    strict = evaluate(preds, root, mode="strict", n_bootstrap=0)
    per = strict["classification"]["breast_3cls"]["per_class"]
    assert [per[f"class_{c}"]["F1"] for c in range(3)] == [1.0, 0.0, 1.0]  # aligned to the index


def test_write_results_official_shape(pred_sets, synth_split, tmp_path):
    res = evaluate(pred_sets["noisy"], synth_split / "labels", mode="official")
    paths = write_results(res, tmp_path / "out" / "results.json")
    assert json.loads(paths["json"].read_text()) == res
    assert "per_case" not in paths
    assert "[aggregates]" in paths["summary"].read_text()


# ---- mask decoding like cv2.imread(IMREAD_GRAYSCALE) -------------------------------------------

def _enc(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _cv(data: bytes):
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)


def _cases():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    pal = Image.fromarray(rng.integers(0, 6, (20, 25), dtype=np.uint8), "P")
    pal.putpalette(list(rng.integers(0, 256, 768)))
    pal_t = pal.copy()
    pal_t.info["transparency"] = 2
    yield "L", _enc(Image.fromarray(rng.integers(0, 256, (17, 9), dtype=np.uint8), "L"))
    yield "RGB", _enc(Image.fromarray(rgb, "RGB"))
    yield "RGBA", _enc(Image.fromarray(rng.integers(0, 256, (12, 14, 4), dtype=np.uint8), "RGBA"))
    yield "LA", _enc(Image.fromarray(rng.integers(0, 256, (12, 14, 2), dtype=np.uint8), "LA"))
    yield "P", _enc(pal)
    yield "P+tRNS", _enc(pal_t)
    yield "I;16", _enc(Image.fromarray(rng.integers(0, 65536, (11, 13)).astype(np.uint16)))
    yield "1", _enc(Image.fromarray(rng.random((9, 16)) < 0.5))
    yield "JPEG L", _enc(Image.fromarray(rng.integers(0, 3, (32, 32), dtype=np.uint8) * 100, "L"), "JPEG")
    yield "JPEG RGB", _enc(Image.fromarray(rgb, "RGB"), "JPEG")
    yield "BMP RGB", _enc(Image.fromarray(rgb, "RGB"), "BMP")


@pytest.mark.parametrize("name,data", list(_cases()), ids=[c[0] for c in _cases()])
def test_read_mask_like_opencv(name, data):
    ours, ref = read_mask_like_opencv(data), _cv(data)
    assert ours is not None and ref is not None
    if name == "JPEG RGB":  # decoders may differ by rounding; equal in practice with libjpeg-turbo
        assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1
    else:
        np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("data", [b"", b"garbage", _enc(Image.new("L", (8, 8)))[:30]])
def test_unreadable_masks_are_none_like_opencv(data):
    assert read_mask_like_opencv(data) is None
    assert _cv(data) is None if data else True
