"""Synthetic data: layout, determinism, split, path quirks, and labels that match the pixels."""

from __future__ import annotations

import csv
import hashlib
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from fmuia.dataset import load_root
from fmuia.dataset.images import read_image
from fmuia.dataset.masks import read_mask
from fmuia.dataset.synth import synthesize
from fmuia.errors import FmuiaError
from fmuia.tasks import TaskKind, list_tasks

SUBSET = ["cervix_multi", "organ_cls", "uterine_fibroid_det", "IUGC"]  # one task per kind


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _grey(path: Path) -> np.ndarray:
    return read_image(path)[..., 0].astype(np.float64)


# --- layout ------------------------------------------------------------------------------------
def test_all_tasks_load_with_counts(synth_root):
    data = load_root(synth_root)
    assert data.labelled and not data.warnings
    assert set(data.tasks) == {s.task_id for s in list_tasks()}
    assert Counter(s.task_id for s in data.samples) == {s.task_id: 4 for s in list_tasks()}
    assert {s.kind for s in data.samples} == set(TaskKind)
    for s in data.samples:  # each task's label is the right type
        assert s.task == data.tasks[s.task_id]
        expected = {
            TaskKind.SEGMENTATION: Path,
            TaskKind.CLASSIFICATION: int,
            TaskKind.DETECTION: tuple,
            TaskKind.REGRESSION: tuple,
        }[s.kind]
        assert isinstance(s.label, expected), s.where


def test_csv_layout_and_columns(synth_root):
    csvs = sorted((synth_root / "csv_files").glob("*.csv"))
    assert len(csvs) == 27
    words = {2: "Two", 3: "Three", 4: "Four", 5: "Five"}
    for f in csvs:
        with open(f, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        spec = next(s for s in list_tasks() if s.task_id == rows[0]["task_id"])
        assert {r["task_name"] for r in rows} == {spec.kind.csv_name}
        assert {r["num_classes"] for r in rows} == {str(spec.num_classes)}
        for r in rows:
            parts = r["image_path"].split("/")
            assert parts[0] == ".." and parts[1] == {
                TaskKind.SEGMENTATION: "Segmentation",
                TaskKind.CLASSIFICATION: "Classification",
                TaskKind.DETECTION: "Detection",
                TaskKind.REGRESSION: "Regression",
            }[spec.kind]
            if spec.kind is TaskKind.SEGMENTATION:
                assert parts[2] == words[spec.num_classes]
                assert "/mask/" in r["mask_path"] and r["mask_path"].endswith(".png")
                assert "/img/" in r["image_path"]
    assert any("Regression" == r for r in _task_names(csvs))  # the official capital R


def _task_names(csvs):
    for f in csvs:
        with open(f, newline="", encoding="utf-8") as fh:
            yield from (r["task_name"] for r in csv.DictReader(fh))


def test_path_quirks_formats_and_sizes(synth_root):
    data = load_root(synth_root)
    paths = [s.image_path for s in data.samples] + [s.mask_path for s in data.samples if s.mask_path]
    joined = "".join(paths)
    for quirk in (" ", ",", "+", "(", ")", "\xa0"):
        assert quirk in joined, f"no path with {quirk!r}"
    assert any("uterine fibroid\xa0ultrasound images_871" in p for p in paths)
    for s in data.samples:  # the quirky names resolve to real files
        assert s.image_file.is_file()
        assert s.kind is not TaskKind.SEGMENTATION or s.label.is_file()
    formats = Counter(Image.open(s.image_file).format for s in data.samples)
    assert {"PNG", "JPEG", "BMP"} <= set(formats)
    sizes = {Image.open(s.image_file).size for s in data.samples}
    assert len(sizes) > 20 and any(w != h for w, h in sizes)
    assert all(128 <= w <= 320 and 128 <= h <= 320 for w, h in sizes)
    for s in data.samples:
        if s.mask_path:
            with Image.open(s.label) as m:
                assert m.format == "PNG" and m.mode == "L"


# --- determinism ---------------------------------------------------------------------------------
def test_deterministic_and_subset_stable(tmp_path, synth_root):
    a = synthesize(tmp_path / "a", per_task=4, seed=0, tasks=SUBSET)
    b = synthesize(tmp_path / "b", per_task=4, seed=0, tasks=",".join(SUBSET))
    c = synthesize(tmp_path / "c", per_task=4, seed=7, tasks=SUBSET)
    ha, hb, hc = _hashes(a), _hashes(b), _hashes(c)
    assert ha == hb  # same seed: byte-identical
    assert len(ha) == 4 * 4 + 4 + 4  # images + cervix_multi masks + CSVs
    images = [k for k in ha if "/img/" in k]
    assert all(ha[k] != hc.get(k) for k in images)  # another seed: other images
    full = _hashes(synth_root)  # the subset equals the same files of the full set
    assert all(full[k] == v for k, v in ha.items())


def test_refuses_non_empty_target_unless_overwrite(tmp_path):
    out = synthesize(tmp_path / "out", per_task=2, tasks=["cervix"])
    with pytest.raises(FmuiaError, match="not empty.*--overwrite"):
        synthesize(out, per_task=2, tasks=["FUGC"])
    assert set(load_root(out).tasks) == {"cervix"}  # untouched
    synthesize(out, per_task=2, tasks=["FUGC"], overwrite=True)
    assert set(load_root(out).tasks) == {"FUGC"}  # replaced, nothing of the old set left
    assert not (out / "Segmentation").exists()
    synthesize(out, per_task=2, tasks=["FUGC"], split=True, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["labels", "test", "train"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers
    empty = tmp_path / "empty"
    empty.mkdir()
    synthesize(empty, per_task=1, tasks=["FUGC"])  # an empty folder is fine


def test_overwrite_never_deletes_a_foreign_folder(tmp_path):
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    (out / "csv_files").mkdir()
    with pytest.raises(FmuiaError, match="not a synthetic data folder.*'thesis.tex'"):
        synthesize(out, per_task=1, tasks=["FUGC"], overwrite=True)
    assert (out / "thesis.tex").read_text() == "precious"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    (tmp_path / "file").write_text("x")
    with pytest.raises(FmuiaError, match="not a folder"):
        synthesize(tmp_path / "file", per_task=1, tasks=["FUGC"])


def test_tasks_accept_specs_and_strings(tmp_path):
    from fmuia.tasks import get_task

    a = load_root(synthesize(tmp_path / "a", per_task=1, tasks=[get_task("IUGC"), "FUGC"]))
    b = load_root(synthesize(tmp_path / "b", per_task=1, tasks=" FUGC , IUGC "))
    assert set(a.tasks) == set(b.tasks) == {"FUGC", "IUGC"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tasks": ["cervix", "nope"]}, r"unknown task.*'nope'.*valid task ids: .*fetal_femur"),
        ({"per_task": 0}, "per_task"),
        ({"per_task": 1, "split": True}, "split needs per_task >= 2"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(FmuiaError, match=match):
        synthesize(tmp_path / "x", **{"per_task": 2, **kwargs})
    assert not (tmp_path / "x").exists()


# --- split ---------------------------------------------------------------------------------------
def test_split_consistency(synth_split, tmp_path):
    train, test, labels = (load_root(synth_split / d) for d in ("train", "test", "labels"))
    assert train.labelled and labels.labelled
    assert all(s.label is None for s in test.samples)
    assert [s.key for s in test.samples] == [s.key for s in labels.samples]
    assert not {s.key for s in train.samples} & {s.key for s in test.samples}
    per_task = Counter(s.task_id for s in train.samples + test.samples)
    assert per_task == {s.task_id: 6 for s in list_tasks()}
    assert Counter(s.task_id for s in test.samples) == {s.task_id: 2 for s in list_tasks()}
    for f in (synth_split / "test" / "csv_files").glob("*.csv"):
        with open(f, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh))
        assert header[:4] == ["image_path", "task_id", "task_name", "num_classes"]
        assert set(header[4:]) <= {"mask_path"}
        assert not {"mask", "x_min", "y_min", "x_max", "y_max"} & set(header)
        assert not any(h.startswith("point_") for h in header)
    for s in test.samples:
        assert s.image_file.is_file()
        if s.kind is TaskKind.SEGMENTATION:
            assert s.mask_path and not s.mask_file.exists()  # where the prediction goes; no label
    for s in labels.samples:
        assert s.image_file.read_bytes() == (synth_split / "test" / s.image_file.relative_to(labels.root)).read_bytes()
    # the split rows are the same images as an unsplit set with the same seed
    whole = synthesize(tmp_path / "whole", per_task=6, seed=1, tasks=SUBSET)
    for s in load_root(whole).samples:
        part = synth_split / ("train" if s.key in {t.key for t in train.samples} else "labels")
        assert (part / s.image_file.relative_to(whole)).read_bytes() == s.image_file.read_bytes()


# --- labels are in range and match the pixels ----------------------------------------------------
def test_labels_in_range(synth_root):
    for s in load_root(synth_root).samples:
        w, h = Image.open(s.image_file).size
        if s.kind is TaskKind.SEGMENTATION:
            m = read_mask(s.label)
            assert m.shape == (h, w)
            assert set(np.unique(m)) == set(range(s.task.num_classes)), s.where  # every class drawn
        elif s.kind is TaskKind.CLASSIFICATION:
            assert 0 <= s.label < s.task.num_classes
        elif s.kind is TaskKind.DETECTION:
            x0, y0, x1, y1 = s.label
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert (x1 - x0) * (y1 - y0) < 0.5 * w * h  # a lesion, not the frame
        else:
            assert len(s.label) == s.task.num_points
            assert all(0 <= x < w and 0 <= y < h for x, y in s.label)


@pytest.fixture(scope="module")
def content_root(tmp_path_factory) -> Path:
    start = time.perf_counter()
    out = synthesize(tmp_path_factory.mktemp("content") / "root", per_task=12, seed=5)
    print(f"\nsynth: 27 tasks x 12 images in {time.perf_counter() - start:.2f} s")
    return out


def test_segmentation_masks_match_pixels(content_root):
    for s in load_root(content_root).of_kind("segmentation"):
        img, m = _grey(s.image_file), read_mask(s.label)
        background = np.median(img[(m == 0) & (img > 0)])
        for c in range(1, s.task.num_classes):
            inside = np.median(img[m == c])
            assert abs(inside - background) > 25, f"{s.where}: class {c} looks like background"
        if s.task.num_classes > 2:  # multi-class: structures nest in or touch another class
            for c in range(1, s.task.num_classes):
                ring = ndimage.binary_dilation(m == c, iterations=3) & (m != c)
                neighbours = set(np.unique(m[ring])) - {0}
                nested = set(np.unique(m[ndimage.binary_fill_holes(m == c)])) - {0, c}
                assert neighbours or nested, f"{s.where}: class {c} is isolated"


def test_boxes_surround_a_lesion(content_root):
    for s in load_root(content_root).of_kind("detection"):
        img = _grey(s.image_file)
        x0, y0, x1, y1 = (int(v) for v in s.label)
        core = img[y0 + (y1 - y0) // 4 : y1 - (y1 - y0) // 4, x0 + (x1 - x0) // 4 : x1 - (x1 - x0) // 4]
        outside = np.ones(img.shape, bool)
        outside[y0:y1, x0:x1] = False
        outside &= img > 0
        assert abs(core.mean() - img[outside].mean()) > 25, s.where
        # tight: a margin band just outside the box looks like the surroundings, not the lesion
        pad = 4
        band = np.zeros(img.shape, bool)
        band[max(0, y0 - pad) : y1 + pad, max(0, x0 - pad) : x1 + pad] = True
        band[y0:y1, x0:x1] = False
        band &= img > 0
        assert abs(img[band].mean() - core.mean()) > 0.5 * abs(core.mean() - img[outside].mean()), s.where


def test_landmarks_sit_on_bright_structures(content_root):
    for s in load_root(content_root).of_kind("regression"):
        img = _grey(s.image_file)
        mean = img[img > 0].mean()
        for x, y in s.label:
            xi, yi = int(x), int(y)
            patch = img[max(0, yi - 2) : yi + 3, max(0, xi - 2) : xi + 3]
            assert patch.mean() > mean + 40, f"{s.where}: landmark ({x}, {y}) is not on a bright structure"


@pytest.fixture(scope="module")
def cls_root(tmp_path_factory) -> Path:
    tasks = [s.task_id for s in list_tasks("classification")]
    return synthesize(tmp_path_factory.mktemp("cls") / "root", per_task=24, seed=11, tasks=tasks)


def _bright_centroid(img: np.ndarray) -> tuple[float, float]:
    smooth = ndimage.uniform_filter(img, 5)
    ys, xs = np.nonzero(smooth >= np.percentile(smooth, 99.5))
    return xs.mean() / img.shape[1], ys.mean() / img.shape[0]


@pytest.mark.parametrize("task_id", ["fetal_head_pos_cls", "fetal_sacral_pos_cls"])
def test_position_classes_follow_left_right(cls_root, task_id):
    """Class = 4 columns left→right × 2 rows: a horizontal flip must change the class."""
    data = load_root(cls_root).by_task()[task_id]
    xs: dict[int, list[float]] = {}
    ys: dict[int, list[float]] = {}
    for s in data:
        x, y = _bright_centroid(_grey(s.image_file))
        xs.setdefault(s.label % 4, []).append(x)
        ys.setdefault(s.label // 4, []).append(y)
    col_x = [np.mean(xs[c]) for c in range(4)]
    assert all(a + 0.08 < b for a, b in zip(col_x[:-1], col_x[1:], strict=True)), col_x
    assert np.mean(ys[0]) + 0.1 < np.mean(ys[1])
    # every column's structure lies on its own side of the midline: flipping moves it to another column
    assert max(xs[0] + xs[1]) < 0.5 < min(xs[2] + xs[3])


def _blobs(img: np.ndarray) -> tuple[int, int]:
    """(dark, bright) blob counts inside the field of view, via scipy labelling."""
    smooth = ndimage.uniform_filter(img, 5)
    fov = ndimage.binary_erosion(ndimage.uniform_filter((img > 0).astype(float), 7) > 0.5, iterations=6)
    med = np.median(smooth[fov])
    counts = []
    for mask in (smooth < 0.35 * med, smooth > 1.9 * med):
        lab, n = ndimage.label(mask & fov)
        sizes = ndimage.sum(np.ones_like(lab), lab, range(1, n + 1))
        counts.append(int((np.asarray(sizes) >= 30).sum()))
    return counts[0], counts[1]


@pytest.mark.parametrize("task_id", ["fetal_plane_cls", "organ_cls"])
def test_count_classes_are_visible(cls_root, task_id):
    """organ/plane classes: how many structures and whether they are dark or bright."""
    good = 0
    data = load_root(cls_root).by_task()[task_id]
    for s in data:
        dark, bright = _blobs(_grey(s.image_file))
        expected = (s.label // 2 + 1, 0) if s.label % 2 == 0 else (0, s.label // 2 + 1)
        good += (dark, bright) == expected
    assert good >= 0.8 * len(data), f"{good}/{len(data)} images show their class"


@pytest.mark.parametrize("task_id", ["breast_2cls", "breast_3cls", "liver_lesion_2cls", "lung_2cls", "lung_disease_3cls"])
def test_classes_are_learnable_from_pixels(cls_root, task_id):
    """A plain logistic regression on coarse dark/bright maps beats chance by a wide margin (CV)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_root(cls_root).by_task()[task_id]
    feats, labels = [], []
    for s in data:
        img = _grey(s.image_file)
        smooth = ndimage.uniform_filter(img, 5)
        med = np.median(smooth[img > 0])
        f = []
        for m in (smooth > 1.6 * med, smooth < 0.4 * med):
            small = Image.fromarray(m.astype(np.float32), mode="F").resize((6, 6), Image.BOX)
            f += list(np.asarray(small).ravel()) + [m.mean(), ndimage.label(m)[1]]
            f += [m.mean(axis=1).std(), m.mean(axis=0).std()]  # horizontal vs vertical structure
        feats.append(f)
        labels.append(s.label)
    n = data[0].task.num_classes
    assert set(labels) == set(range(n))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    acc = cross_val_score(model, np.array(feats), np.array(labels), cv=4).mean()
    assert acc >= 1.0 / n + 0.3, f"accuracy {acc:.2f} (chance {1 / n:.2f})"


# --- CLI -----------------------------------------------------------------------------------------
def test_cli_synth(tmp_path, capsys):
    from fmuia.cli import main

    main(["synth", str(tmp_path / "s"), "--per-task", "3", "--tasks", "cervix,FUGC", "--split"])
    out = capsys.readouterr().out
    assert "train: 4 images" in out and "test: 2 images" in out and "labels: 2 images" in out
    assert len(load_root(tmp_path / "s" / "labels").samples) == 2

    with pytest.raises(SystemExit) as exc:
        main(["synth", str(tmp_path / "t"), "--tasks", "cervix,bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown task(s) 'bogus'" in err and "breast_lesion" in err and "Traceback" not in err

    with pytest.raises(SystemExit) as exc:  # non-empty target without --overwrite
        main(["synth", str(tmp_path / "s"), "--tasks", "cervix"])
    assert exc.value.code == 2 and "--overwrite" in capsys.readouterr().err
