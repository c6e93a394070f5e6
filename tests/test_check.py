"""``fmuia check``: every rule with a passing and a failing case, built from synth output.

A perfect folder comes from the oracle (labels → predictions → official writer); each test copies
it, breaks one thing and asserts the problem names the right file and entry/image.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmuia import predfolder
from fmuia.check import RULES, CheckUsageError, check_predictions
from fmuia.dataset import images, load_root, prediction_mask_relpath
from fmuia.dataset.images import image_size
from fmuia.dataset.masks import encode_mask_png
from fmuia.formats import write_predictions
from fmuia.oracle import oracle_predictions
from fmuia.predfolder import ZipPredictionFolder
from fmuia.tasks import PREDICTION_FILES, TaskKind

CLS, DET, REG, SEG = TaskKind.CLASSIFICATION, TaskKind.DETECTION, TaskKind.REGRESSION, TaskKind.SEGMENTATION


# ---- fixtures and helpers -------------------------------------------------------------------------



def load(pred: Path, kind: TaskKind) -> list:
    return json.loads((pred / PREDICTION_FILES[kind]).read_text(encoding="utf-8"))


def save(pred: Path, kind: TaskKind, entries: list) -> None:
    (pred / PREDICTION_FILES[kind]).write_text(json.dumps(entries), encoding="utf-8")


def edit(pred: Path, kind: TaskKind, index: int, **fields) -> dict:
    """Change fields of one entry (a value of ``...`` deletes the field); returns the new entry."""
    entries = load(pred, kind)
    for k, v in fields.items():
        if v is ...:
            entries[index].pop(k)
        else:
            entries[index][k] = v
    save(pred, kind, entries)
    return entries[index]


def errors(report, file: str | None = None, where: str | None = None, contains: str = "", severity: str = "error"):
    return [
        p
        for p in report.problems
        if p.severity == severity
        and (file is None or p.file == file)
        and (where is None or p.where == where)
        and contains in p.message
    ]


def only_problem(report, file: str, contains: str, where: str | None = None, severity: str = "error"):
    """Assert the report's errors (or warnings) are exactly one, matching file/where/text."""
    found = [p for p in report.problems if p.severity == severity]
    assert len(found) == 1, [str(p) for p in report.problems]
    p = found[0]
    assert p.file == file and contains in p.message, str(p)
    if where is not None:
        assert p.where == where, str(p)
    return p


def first(root, kind: TaskKind, task_id: str | None = None):
    return next(s for s in root.samples if s.kind is kind and (task_id is None or s.task_id == task_id))


def entry_index(pred: Path, kind: TaskKind, sample) -> int:
    return next(i for i, e in enumerate(load(pred, kind)) if (e["task_id"], e["image_path"]) == sample.key)


# ---- the perfect folder -----------------------------------------------------------------------------

def test_rule_table_covers_every_kind():
    assert set(RULES) == set(TaskKind)


def test_perfect_oracle_folder_passes(root, perfect):
    report = check_predictions(perfect, root)
    assert report.ok and report.problems == [], [str(p) for p in report.problems]
    by_task = root.by_task()
    assert set(report.tasks) == set(by_task) and len(report.tasks) == 27
    for tid, c in report.tasks.items():
        assert c.expected == c.found == c.valid == len(by_task[tid]) and c.errors == c.warnings == 0
    table = report.summary_table()
    assert all(tid in table for tid in by_task) and "TOTAL" in table and table.splitlines()[-1].startswith("OK")


def test_hidden_test_root_needs_no_labels(synth_split, tmp_path):
    labels, test = load_root(synth_split / "labels"), load_root(synth_split / "test")
    assert not test.labelled
    write_predictions(tmp_path / "pred", oracle_predictions(labels))
    report = check_predictions(tmp_path / "pred", synth_split / "test")
    assert report.ok and not report.problems, [str(p) for p in report.problems]
    assert sum(c.found for c in report.tasks.values()) == len(test.samples)


# ---- generic entry rules ----------------------------------------------------------------------------

def test_missing_entry(root, pred):
    entries = load(pred, CLS)
    gone = entries.pop(3)
    save(pred, CLS, entries)
    report = check_predictions(pred, root)
    p = only_problem(report, "classification_predictions.json", "missing entry")
    assert repr(gone["image_path"]) in p.message and repr(gone["task_id"]) in p.message
    assert report.tasks[gone["task_id"]].found == report.tasks[gone["task_id"]].expected - 1
    assert report.tasks[gone["task_id"]].errors == 1


def test_duplicate_entry(root, pred):
    entries = load(pred, DET)
    entries.append(dict(entries[1]))
    save(pred, DET, entries)
    report = check_predictions(pred, root)
    only_problem(report, "detection_predictions.json", "duplicate entry (first at entry 1)", where=f"entry {len(entries) - 1}")


def test_unknown_task_and_task_of_another_kind(root, pred):
    entries = load(pred, REG)
    entries.append({**entries[0], "task_id": "no_such_task"})
    seg = first(root, SEG)
    entries.append({**entries[0], "task_id": seg.task_id, "image_path": seg.image_path})
    save(pred, REG, entries)
    report = check_predictions(pred, root)
    n = len(entries)
    assert errors(report, "regression_predictions.json", f"entry {n - 2}", "unknown task_id 'no_such_task'")
    assert errors(report, "regression_predictions.json", f"entry {n - 1}", "is a segmentation task")
    assert len(report.errors) == 2


def test_unknown_image_with_hint(root, pred):
    s = first(root, CLS)
    i = entry_index(pred, CLS, s)
    stripped = s.image_path.replace("../", "")
    edit(pred, CLS, i, image_path=stripped)
    report = check_predictions(pred, root)
    e = errors(report, "classification_predictions.json", f"entry {i}", "is not in the data root's CSVs")
    assert e and "expected the CSV string unchanged" in e[0].message and repr(s.image_path) in e[0].message
    assert errors(report, "classification_predictions.json", "", "missing entry")  # the row is now missing
    # an image that exists for nobody: no hint, still an error
    edit(pred, CLS, i, image_path="../Classification/nowhere.png")
    assert errors(check_predictions(pred, root), "classification_predictions.json", f"entry {i}", "not in the data root's CSVs")


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("predicted_class", "1", "predicted_class: expected an integer"),
        ("predicted_class", True, "predicted_class: expected an integer"),
        ("predicted_class", ..., "missing field 'predicted_class'"),
        ("predicted_probs", "0.5,0.5", "predicted_probs: expected a list of numbers"),
        ("task_id", 7, None),  # not a string: the entry cannot even be matched to a row
    ],
)
def test_wrong_types(root, pred, field, value, message):
    edit(pred, CLS, 0, **{field: value})
    report = check_predictions(pred, root)
    assert not report.ok
    if message is None:
        assert errors(report, "classification_predictions.json", "entry 0", "task_id: expected a string")
    else:
        (p,) = errors(report, "classification_predictions.json", "entry 0")
        assert message in p.message


def test_entry_not_an_object_and_file_not_a_list(root, pred):
    entries = load(pred, REG)
    entries[2] = ["not", "an", "object"]
    save(pred, REG, entries)
    report = check_predictions(pred, root)
    assert errors(report, "regression_predictions.json", "entry 2", "expected an object")
    (pred / PREDICTION_FILES[REG]).write_text('{"a": 1}')
    report = check_predictions(pred, root)
    assert errors(report, "regression_predictions.json", "", "expected a JSON list")
    (pred / PREDICTION_FILES[REG]).write_text("[{broken")
    report = check_predictions(pred, root)
    assert errors(report, "regression_predictions.json", "", "not valid UTF-8 JSON")


def test_missing_json_file_is_one_error_per_task(root, pred):
    (pred / PREDICTION_FILES[DET]).unlink()
    report = check_predictions(pred, root)
    det_tasks = {s.task_id for s in root.of_kind(DET)}
    assert len(report.errors) == len(det_tasks) == 3
    assert {p.message.split("task ")[-1].strip("'") for p in report.errors} == det_tasks
    assert all(p.file == "detection_predictions.json" and "file missing" in p.message for p in report.errors)


def test_extra_files_are_warnings(root, pred):
    (pred / "notes.txt").write_text("hi")
    (pred / "Segmentation" / "stray.png").write_bytes(encode_mask_png(np.zeros((4, 4), np.uint8)))
    report = check_predictions(pred, root)
    assert report.ok
    assert {p.file for p in report.warnings} == {"notes.txt", "Segmentation/stray.png"}
    assert all("unexpected file" in p.message for p in report.warnings)


# ---- classification --------------------------------------------------------------------------------

def test_class_out_of_range(root, pred):
    s = first(root, CLS, "breast_3cls")
    i = entry_index(pred, CLS, s)
    edit(pred, CLS, i, predicted_class=3)
    only_problem(check_predictions(pred, root), "classification_predictions.json", "predicted_class 3 out of range; expected an integer in 0..2", f"entry {i}")
    edit(pred, CLS, i, predicted_class=-1)
    only_problem(check_predictions(pred, root), "classification_predictions.json", "predicted_class -1 out of range")
    # the top class is fine: 2 with probs pointing at 2
    edit(pred, CLS, i, predicted_class=2, predicted_probs=[0.1, 0.2, 0.7])
    assert check_predictions(pred, root).problems == []


@pytest.mark.parametrize(
    "probs,message",
    [
        ([0.5, 0.5], "predicted_probs has 2 values; expected 3"),
        ([0.5, 0.3, 0.3, -0.1], "predicted_probs has 4 values; expected 3"),
        ([1.2, -0.2, 0.0], "predicted_probs[1] = -0.2 is negative"),
        ([0.5, 0.3, 0.3], "predicted_probs sum to 1.1; expected 1"),
        ([0.2, 0.2, 0.2], "predicted_probs sum to 0.6"),
        (None, "predicted_probs missing"),
    ],
)
def test_probabilities(root, pred, probs, message):
    s = first(root, CLS, "breast_3cls")
    i = entry_index(pred, CLS, s)
    edit(pred, CLS, i, predicted_class=0, predicted_probs=... if probs is None else probs)
    only_problem(check_predictions(pred, root), "classification_predictions.json", message, f"entry {i}")


def test_probabilities_non_finite(root, pred):
    s = first(root, CLS, "breast_2cls")
    i = entry_index(pred, CLS, s)
    entries = load(pred, CLS)
    entries[i]["predicted_probs"] = [float("nan"), 1.0]
    (pred / PREDICTION_FILES[CLS]).write_text(json.dumps(entries))  # writes the NaN token
    only_problem(check_predictions(pred, root), "classification_predictions.json", "expected finite numbers", f"entry {i}")


def test_probabilities_within_tolerance_pass(root, pred):
    s = first(root, CLS, "breast_3cls")
    i = entry_index(pred, CLS, s)
    edit(pred, CLS, i, predicted_class=1, predicted_probs=[0.2, 0.6, 0.2005])  # sum 1.0005
    assert check_predictions(pred, root).problems == []


def test_argmax_disagreement_is_a_warning(root, pred):
    s = first(root, CLS, "breast_3cls")
    i = entry_index(pred, CLS, s)
    edit(pred, CLS, i, predicted_class=0, predicted_probs=[0.2, 0.7, 0.1])
    report = check_predictions(pred, root)
    assert report.ok
    only_problem(report, "classification_predictions.json", "not the argmax of predicted_probs (class 1", f"entry {i}", severity="warning")
    # a tie is not a disagreement
    edit(pred, CLS, i, predicted_class=0, predicted_probs=[0.4, 0.4, 0.2])
    assert check_predictions(pred, root).problems == []


# ---- detection -------------------------------------------------------------------------------------

def _det_case(root, pred):
    s = first(root, DET)
    w, h = image_size(s.image_file)
    return s, entry_index(pred, DET, s), w, h


def _box(w, h, x0, y0, x1, y1, **over):
    e = {"bbox_pixels": [x0, y0, x1, y1], "bbox_normalized": [x0 / w, y0 / h, x1 / w, y1 / h]}
    e.update(over)
    return e


def test_box_inside_and_consistent_passes(root, pred):
    s, i, w, h = _det_case(root, pred)
    edit(pred, DET, i, **_box(w, h, 0, 0, w, h))  # the whole image is inside
    assert check_predictions(pred, root).problems == []
    # within tolerance: half a pixel out, and normalized off by half a pixel
    e = _box(w, h, -0.5, 0, w + 0.5, h)
    e["bbox_normalized"][1] += 0.4 / h
    edit(pred, DET, i, **e)
    assert check_predictions(pred, root).problems == []


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda w, h: _box(w, h, 30, 10, 20, 40), "bbox_normalized [0."),  # x_min > x_max (both boxes)
        (lambda w, h: _box(w, h, 10, 10, 20, 40, bbox_pixels=[10, 40, 20, 40]), "bbox_pixels [10.0, 40.0, 20.0, 40.0]: expected x_min < x_max and y_min < y_max"),
        (lambda w, h: _box(w, h, 10, 10, w + 5, 40), "lies outside the image"),
        (lambda w, h: _box(w, h, -3, 10, 20, 40), "lies outside the image"),
        (lambda w, h: _box(w, h, 10, 10, 20, 40, bbox_normalized=[0.5, 0.1, 0.9, 0.4]), "bbox_normalized[0] = 0.5 but pixels / image width"),
        (lambda w, h: _box(w, h, 10, 10, 20, 40, bbox_normalized=[10 / w, 10 / h, 20 / w, 45 / h]), "bbox_normalized[3]"),
        (lambda w, h: _box(w, h, 10, 10, 20, 40, bbox_pixels=[10, 10, 20]), "bbox_pixels: expected 4 numbers, got 3"),
        (lambda w, h: _box(w, h, 10, 10, 20, 40, bbox_pixels=[10, 10, 20, None]), "bbox_pixels: expected a list of numbers"),
        (lambda w, h: {"bbox_normalized": ...}, "missing field 'bbox_normalized'"),
    ],
)
def test_box_errors(root, pred, make, message):
    s, i, w, h = _det_case(root, pred)
    edit(pred, DET, i, **make(w, h))
    report = check_predictions(pred, root)
    assert not report.ok
    hits = errors(report, "detection_predictions.json", f"entry {i}", message)
    assert hits, [str(p) for p in report.problems]
    assert all(p.where == f"entry {i}" for p in report.errors)


def test_box_pixels_match_the_image_size_not_a_guess(root, pred):
    """A box normalized by the wrong size (e.g. a square 256 resize) is caught."""
    s, i, w, h = _det_case(root, pred)
    assert (w, h) != (256, 256)
    x0, y0, x1, y1 = 10, 10, 60, 50
    edit(pred, DET, i, bbox_pixels=[x0, y0, x1, y1], bbox_normalized=[x0 / 256, y0 / 256, x1 / 256, y1 / 256])
    assert errors(check_predictions(pred, root), "detection_predictions.json", f"entry {i}", "expected normalized = pixels / image size")


# ---- regression ------------------------------------------------------------------------------------

def _reg_case(root, pred, task_id="IUGC"):
    s = first(root, REG, task_id)
    w, h = image_size(s.image_file)
    return s, entry_index(pred, REG, s), w, h


def test_landmark_count(root, pred):
    s, i, w, h = _reg_case(root, pred)  # IUGC: 3 landmarks → 6 numbers
    e = load(pred, REG)[i]
    edit(pred, REG, i, predicted_points_pixels=e["predicted_points_pixels"][:4])
    only_problem(check_predictions(pred, root), "regression_predictions.json", "predicted_points_pixels has 4 numbers; expected 6", f"entry {i}")
    edit(pred, REG, i, predicted_points_normalized=e["predicted_points_normalized"] + [0.1, 0.2], predicted_points_pixels=e["predicted_points_pixels"])
    only_problem(check_predictions(pred, root), "regression_predictions.json", "predicted_points_normalized has 8 numbers; expected 6")


def test_landmark_non_finite(root, pred):
    s, i, w, h = _reg_case(root, pred)
    entries = load(pred, REG)
    entries[i]["predicted_points_pixels"][1] = float("inf")
    (pred / PREDICTION_FILES[REG]).write_text(json.dumps(entries))  # writes the Infinity token
    only_problem(check_predictions(pred, root), "regression_predictions.json", "expected finite numbers", f"entry {i}")


def test_landmark_normalized_vs_pixels(root, pred):
    s, i, w, h = _reg_case(root, pred)
    pix = [w * 0.25, h * 0.5, w * 0.5, h * 0.5, w * 0.75, h * 0.6]
    norm = [v / (w if k % 2 == 0 else h) for k, v in enumerate(pix)]
    edit(pred, REG, i, predicted_points_pixels=pix, predicted_points_normalized=norm)
    assert check_predictions(pred, root).problems == []
    swapped = list(norm)
    swapped[4], swapped[5] = norm[5], norm[4]  # x/y swapped for landmark 3
    edit(pred, REG, i, predicted_points_normalized=swapped)
    only_problem(check_predictions(pred, root), "regression_predictions.json", "predicted_points_normalized[4]", f"entry {i}")


def test_landmark_outside_image_is_a_warning(root, pred):
    s, i, w, h = _reg_case(root, pred)
    pix = [w + 20.0, h * 0.5, w * 0.5, h * 0.5, w * 0.75, h * 0.6]
    norm = [v / (w if k % 2 == 0 else h) for k, v in enumerate(pix)]
    edit(pred, REG, i, predicted_points_pixels=pix, predicted_points_normalized=norm)
    report = check_predictions(pred, root)
    assert report.ok
    only_problem(report, "regression_predictions.json", "landmark 1 at pixels", f"entry {i}", severity="warning")


# ---- segmentation ----------------------------------------------------------------------------------

def _seg_case(root, task_id="cardiac_multi"):
    s = first(root, SEG, task_id)
    w, h = image_size(s.image_file)
    return s, prediction_mask_relpath(s.mask_path), w, h


def test_missing_mask(root, pred):
    s, rel, w, h = _seg_case(root)
    (pred / rel).unlink()
    report = check_predictions(pred, root)
    p = only_problem(report, rel, "missing mask")
    assert repr(s.image_path) in p.message and s.where in p.message
    assert report.tasks[s.task_id].found == report.tasks[s.task_id].expected - 1


def test_mask_path_is_csv_mask_path_without_dotdot(root, pred):
    """Masks are looked up at mask_path minus '../': a mask written next to the image path is missing."""
    s, rel, w, h = _seg_case(root)
    assert rel.startswith("Segmentation/") and "../" not in rel and (pred / rel).is_file()
    wrong = pred / s.image_path.replace("../", "")
    wrong.parent.mkdir(parents=True, exist_ok=True)
    (pred / rel).rename(wrong.with_suffix(".png"))
    report = check_predictions(pred, root)
    assert errors(report, rel, None, "missing mask")
    assert any(p.file == wrong.with_suffix(".png").relative_to(pred).as_posix() for p in report.warnings)


def _encode(arr: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda w, h: _encode(np.zeros((h, w), np.uint8), "JPEG"), "mask is JPEG; expected a lossless PNG"),
        (lambda w, h: _encode(np.zeros((h, w, 3), np.uint8)), "mask has mode RGB; expected an 8-bit single-channel"),
        (lambda w, h: _encode(np.zeros((h, w), np.uint16)), "expected an 8-bit single-channel"),
        (lambda w, h: _encode(np.zeros((h, w), np.uint8), "BMP"), "mask is BMP; expected a lossless PNG"),
        (lambda w, h: _encode(np.zeros((h, w + 1), np.uint8)), lambda w, h: f"mask is {w + 1}x{h}, expected {w}x{h}: the image size"),
        (lambda w, h: _encode(np.zeros((w, h), np.uint8)), "the image size (width x height)"),  # transposed
        (lambda w, h: _encode(np.full((h, w), 4, np.uint8)), "mask value 4 out of range; expected class indices 0..3"),
        (lambda w, h: _encode(np.full((h, w), 255, np.uint8)), "mask value 255 out of range"),
        (lambda w, h: _encode(np.zeros((h, w), bool)), "mask has mode 1; expected an 8-bit single-channel"),
        (lambda w, h: _encode(np.zeros((h, w, 2), np.uint8)), "mask has mode LA; expected an 8-bit single-channel"),
        (lambda w, h: b"this is not an image", "cannot decode the mask"),
        (lambda w, h: encode_mask_png(np.zeros((h, w), np.uint8))[:60], "cannot decode the mask"),  # truncated
    ],
)
def test_mask_errors(root, pred, make, message):
    s, rel, w, h = _seg_case(root)  # cardiac_multi: 4 classes
    (pred / rel).write_bytes(make(w, h))
    report = check_predictions(pred, root)
    hits = errors(report, rel, None, message(w, h) if callable(message) else message)
    assert hits and all(p.file == rel for p in report.errors), [str(p) for p in report.problems]
    assert repr(s.image_path) in hits[0].message
    assert report.tasks[s.task_id].valid == report.tasks[s.task_id].expected - 1


def test_mask_values_and_palette_pass(root, pred):
    s, rel, w, h = _seg_case(root)
    arr = (np.arange(w * h).reshape(h, w) % 4).astype(np.uint8)  # every class 0..3
    (pred / rel).write_bytes(encode_mask_png(arr))
    assert check_predictions(pred, root).problems == []
    pal = Image.fromarray(arr, mode="L").convert("P")  # mode P holds indices 0..3
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    (pred / rel).write_bytes(buf.getvalue())
    assert Image.open(pred / rel).mode == "P"
    assert check_predictions(pred, root).problems == []


def test_colour_palette_mask_is_an_error(root, pred):
    """The official scorer reads masks as greyscale: a colour palette would turn classes into grey levels."""
    s, rel, w, h = _seg_case(root)
    arr = (np.arange(w * h).reshape(h, w) % 4).astype(np.uint8)
    pal = Image.fromarray(arr).convert("L").convert("P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (3 * 252))
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    (pred / rel).write_bytes(buf.getvalue())
    assert np.array_equal(np.asarray(Image.open(pred / rel)), arr)  # indices intact, colours not grey
    report = check_predictions(pred, root)
    assert errors(report, rel, None, "palette PNG whose colours are not the grey levels")


def test_mask_over_pixel_cap_is_refused(root, pred, monkeypatch):
    s, rel, w, h = _seg_case(root)
    (pred / rel).write_bytes(encode_mask_png(np.zeros((1500, 1500), np.uint8)))
    monkeypatch.setattr(images, "MAX_PIXELS", 1_000_000)  # above every synth image, below the mask
    report = check_predictions(pred, root)
    (p,) = report.errors
    assert p.file == rel and "exceeds the cap of 1,000,000 pixels" in p.message


def test_json_over_size_cap_is_refused(root, pred, monkeypatch):
    size = (pred / PREDICTION_FILES[CLS]).stat().st_size
    monkeypatch.setattr(predfolder, "MAX_JSON_BYTES", size - 1)
    report = check_predictions(pred, root)
    # every JSON file over the cap is refused with a clear message; the regression file is small enough
    hit = errors(report, "classification_predictions.json", "", "exceeds the cap")
    assert hit and "none of its entries could be checked" in hit[0].message


# ---- links and safety ------------------------------------------------------------------------------

def test_symlink_outside_is_refused_and_never_read(root, pred, tmp_path, monkeypatch):
    s, rel, w, h = _seg_case(root)
    outside = tmp_path / "outside_mask.png"
    shutil.copy(pred / rel, outside)  # a perfectly valid mask, but outside PRED_DIR
    (pred / rel).unlink()
    os.symlink(outside, pred / rel)
    secret = tmp_path / "secret.json"
    shutil.copy(pred / PREDICTION_FILES[DET], secret)
    (pred / PREDICTION_FILES[DET]).unlink()
    os.symlink(secret, pred / PREDICTION_FILES[DET])

    opened: list[str] = []

    def spy(file, *a, **k):
        opened.append(os.path.realpath(file))
        return builtins.open(file, *a, **k)

    monkeypatch.setattr(predfolder, "open", spy, raising=False)
    report = check_predictions(pred, root)
    assert str(outside) not in opened and str(secret) not in opened and opened  # other files were read
    hit = errors(report, rel, None, "not read: symbolic link pointing outside")
    assert hit and report.tasks[s.task_id].valid == report.tasks[s.task_id].expected - 1
    assert errors(report, "detection_predictions.json", None, "not read: symbolic link pointing outside")
    assert not errors(report, rel, None, "missing mask")  # one line per problem, not two


def test_symlink_inside_is_fine(root, pred):
    s, rel, w, h = _seg_case(root)
    target = pred / "kept" / "m.png"
    target.parent.mkdir()
    (pred / rel).rename(target)
    os.symlink(os.path.relpath(target, (pred / rel).parent), pred / rel)
    report = check_predictions(pred, root)
    assert report.ok and [p.file for p in report.warnings] == ["kept/m.png"]


def test_symlinked_folder_is_not_followed(root, pred, tmp_path):
    seg = pred / "Segmentation"
    shutil.move(seg, tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", seg)
    report = check_predictions(pred, root)
    assert errors(report, "Segmentation", None, "symbolic link to a folder: not followed")
    seg_tasks = {s.task_id for s in root.of_kind(SEG)}
    whole = errors(report, contains="no mask for any of the 4 rows of task")
    assert len(whole) == len(seg_tasks) == 12 and not errors(report, contains="missing mask")


def test_a_wholly_missing_task_is_one_line(root, pred):
    s, rel, w, h = _seg_case(root)
    for t in root.of_kind(SEG):
        if t.task_id == s.task_id:
            (pred / prediction_mask_relpath(t.mask_path)).unlink()
    save(pred, CLS, [e for e in load(pred, CLS) if e["task_id"] != "breast_3cls"])
    report = check_predictions(pred, root)
    assert len(report.errors) == 2, [str(p) for p in report.problems]
    (m,) = errors(report, contains="no mask for any of the 4 rows of task 'cardiac_multi'")
    assert m.file == os.path.dirname(rel) + "/" and repr(rel) in m.message
    assert errors(report, "classification_predictions.json", "", "no entry for any of the 4 rows of task 'breast_3cls'")
    assert report.tasks["cardiac_multi"].errors == report.tasks["breast_3cls"].errors == 1
    assert report.tasks["cardiac_multi"].found == report.tasks["breast_3cls"].found == 0


# ---- zip input -------------------------------------------------------------------------------------

def _zip_dir(src: Path, out: Path, prefix: str = "", extra: dict[str, bytes] | None = None, links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(src.rglob("*")):
            if f.is_file():
                zf.write(f, prefix + f.relative_to(src).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return out


def test_good_zip_passes(root, perfect, tmp_path):
    report = check_predictions(_zip_dir(perfect, tmp_path / "p.zip"), root)
    assert report.ok and not report.problems
    assert sum(c.valid for c in report.tasks.values()) == len(root.samples)


def test_zip_with_a_top_folder_is_reported(root, perfect, tmp_path):
    z = _zip_dir(perfect, tmp_path / "p.zip", prefix="my_preds/", extra={"__MACOSX/._x": b"junk"})
    report = check_predictions(z, root)
    (p,) = report.problems
    assert p.severity == "error" and p.file == "my_preds/" and "archive root" in p.message and "'my_preds'" in p.message


def test_folder_with_a_top_folder_is_reported(root, perfect, tmp_path):
    shutil.copytree(perfect, tmp_path / "outer" / "inner")
    (p,) = check_predictions(tmp_path / "outer", root).problems
    assert p.file == "inner/" and "expected them at the top of" in p.message


def test_zip_slip_and_link_members_are_refused(root, pred, tmp_path):
    s, rel, w, h = _seg_case(root)
    data = (pred / rel).read_bytes()
    (pred / rel).unlink()
    z = _zip_dir(pred, tmp_path / "p.zip", extra={"../evil.json": b"[]", f"../{rel}": data}, links={rel: "/etc/passwd"})
    report = check_predictions(z, root)
    assert errors(report, "../evil.json", None, "zip-slip")
    assert errors(report, f"../{rel}", None, "zip-slip")
    assert errors(report, rel, None, "symbolic link inside the archive")
    assert len(report.errors) == 3  # the rest of the archive is checked and fine


def test_zip_inflating_past_cap_is_refused(root, perfect, tmp_path, monkeypatch):
    z = _zip_dir(perfect, tmp_path / "p.zip")
    monkeypatch.setattr(ZipPredictionFolder.__init__, "__defaults__", (10_000,))
    report = check_predictions(z, root)
    (p,) = report.problems
    assert p.file == "p.zip" and "over the cap of 10,000 bytes" in p.message


def test_zip_member_json_over_cap(root, perfect, tmp_path, monkeypatch):
    z = _zip_dir(perfect, tmp_path / "p.zip")
    monkeypatch.setattr(predfolder, "MAX_JSON_BYTES", 100)
    report = check_predictions(z, root)
    assert {p.file for p in report.errors} == set(PREDICTION_FILES.values())
    assert all("exceeds the cap of 100 bytes" in p.message for p in report.errors)


def test_usage_errors(root, perfect, tmp_path):
    with pytest.raises(CheckUsageError, match="no such prediction folder"):
        check_predictions(tmp_path / "nope", root)
    (tmp_path / "p.txt").write_text("hello")
    with pytest.raises(CheckUsageError, match="expected a prediction folder or a .zip"):
        check_predictions(tmp_path / "p.txt", root)
    with pytest.raises(CheckUsageError, match="cannot read the data root") as exc:
        check_predictions(perfect, tmp_path)
    assert exc.value.exit_code == 2


def test_threads_and_serial_agree(root, pred):
    s, rel, w, h = _seg_case(root)
    (pred / rel).write_bytes(_encode(np.zeros((h, w, 3), np.uint8)))
    edit(pred, CLS, 0, predicted_class=99)
    a, b = check_predictions(pred, root, workers=1), check_predictions(pred, root, workers=4)
    assert a.to_dict() == b.to_dict() and len(a.errors) == 2


def test_image_over_pixel_cap_in_the_data_root(root, pred, monkeypatch):
    """Sizes come from the data root's image headers; an image over the cap is reported, not decoded."""
    s, i, w, h = _det_case(root, pred)
    monkeypatch.setattr(images, "MAX_PIXELS", w * h - 1)
    report = check_predictions(pred, root)
    hit = errors(report, "detection_predictions.json", f"entry {i}", "cannot check against the image")
    assert hit and "exceeds the cap" in hit[0].message


def test_corrupt_zip_members_are_problems_not_crashes(root, perfect, tmp_path):
    z = tmp_path / "p.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(perfect.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(perfect).as_posix())
    s, rel, w, h = _seg_case(root)
    data = bytearray(z.read_bytes())
    for name in (rel, PREDICTION_FILES[REG]):  # flip bytes inside two stored members: CRC mismatch
        with zipfile.ZipFile(z) as zf:
            info = zf.getinfo(name)
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
        data[start + info.file_size // 2] ^= 0xFF
    z.write_bytes(bytes(data))
    report = check_predictions(z, root)
    assert errors(report, PREDICTION_FILES[REG], "", "cannot read the file (BadZipFile")
    assert errors(report, rel, None, "cannot read the file (BadZipFile")
