"""The schema reader on synthetic roots (with the real data's path quirks) and every schema error.

Broken roots are copies of a small synth root with one CSV edited; each error must name the CSV
file and the row (spreadsheet line, header = 1).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import warnings
from pathlib import Path

import pytest

from fmuia.dataset import load_root
from fmuia.dataset.schema import prediction_mask_relpath
from fmuia.dataset.synth import synthesize
from fmuia.errors import SchemaError
from fmuia.tasks import TaskKind

# one task per kind, chosen for their quirky folder names: "(", ")", ",", "+", "\xa0"
TASKS = ["breast_lesion", "cardiac_multi", "carotid_artery", "organ_cls", "uterine_fibroid_det", "IUGC", "fetal_femur"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("schema") / "root", per_task=3, seed=2, tasks=TASKS)


@pytest.fixture
def root(base, tmp_path) -> Path:
    """A private, editable copy of the small synth root."""
    return Path(shutil.copytree(base, tmp_path / "root", symlinks=True))


def read_csv(root: Path, task: str) -> tuple[list[str], list[dict]]:
    with open(root / "csv_files" / f"{task}.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def write_csv(root: Path, task: str, header: list[str], rows: list[dict], name: str | None = None) -> Path:
    path = root / "csv_files" / (name or f"{task}.csv")
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def edit(root: Path, task: str, row: int, **changes: str) -> None:
    """Change cells of spreadsheet line ``row`` (header = 1) of a task's CSV."""
    header, rows = read_csv(root, task)
    rows[row - 2].update(changes)
    write_csv(root, task, header, rows)


def problems_of(root: Path) -> list:
    with pytest.raises(SchemaError) as exc:
        load_root(root)
    assert exc.value.problems, exc.value.message
    return exc.value.problems


def assert_problem(root: Path, csv_name: str, row: int | str, pattern: str, count: int = 1) -> None:
    """Loading fails with a problem located at ``csv_name:row`` whose message matches ``pattern``."""
    found = problems_of(root)
    hits = [p for p in found if Path(p.file).name == csv_name and p.where == str(row) and re.search(pattern, p.message)]
    assert hits, f"no {csv_name}:{row} problem matching {pattern!r} in:\n" + "\n".join(map(str, found))
    assert len(found) == count, f"expected {count} problem(s):\n" + "\n".join(map(str, found))
    line = str(hits[0])
    assert line.startswith(f"{Path(hits[0].file)}:{row}: ") and csv_name in line  # one actionable line


# --- reading good roots ------------------------------------------------------------------------
def test_reads_synth_root_with_path_quirks(base):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a registered-task root loads without warnings
        data = load_root(base)
    assert len(data.samples) == 3 * len(TASKS) and data.labelled
    assert set(data.tasks) == set(TASKS)
    by_kind = {k: data.of_kind(k) for k in TaskKind}
    assert all(len(v) >= 3 for v in by_kind.values())
    paths = [s.image_path for s in data.samples]
    for quirk in (" ", ",", "+", "(", ")", "\xa0"):
        assert any(quirk in p for p in paths), quirk
    for s in data.samples:
        # the CSV string is kept verbatim and resolves, relative to csv_files/, to a real file
        assert s.image_path.startswith("../")
        assert s.image_file == Path(os.path.normpath(base / "csv_files" / s.image_path))
        assert s.image_file.is_file()
        assert s.where == f"{s.csv_file.name}:{s.row}"
    seg = by_kind[TaskKind.SEGMENTATION][0]
    assert seg.label == seg.mask_file and seg.mask_file.is_file()
    assert prediction_mask_relpath(seg.mask_path) == seg.mask_path[3:]
    assert "\xa0" in by_kind[TaskKind.DETECTION][0].image_path  # not normalised away
    for s in by_kind[TaskKind.CLASSIFICATION]:
        assert isinstance(s.label, int) and 0 <= s.label < 6
    for s in by_kind[TaskKind.DETECTION]:
        x0, y0, x1, y1 = s.label
        assert x0 < x1 and y0 < y1
    for s in by_kind[TaskKind.REGRESSION]:
        assert len(s.label) == s.task.num_points and all(len(p) == 2 for p in s.label)


def test_regression_point_values_match_the_csv_text(base):
    _, rows = read_csv(base, "IUGC")
    data = load_root(base)
    first = next(s for s in data.samples if s.task_id == "IUGC" and s.row == 2)
    for k, point in enumerate(first.label, start=1):
        x, y = (float(v) for v in rows[0][f"point_{k}_xy"].strip("[]").split(","))
        assert point == (x, y)


def test_hidden_test_root_has_no_labels(tmp_path):
    out = synthesize(tmp_path / "split", per_task=3, seed=4, tasks=TASKS, split=True)
    test = load_root(out / "test")
    assert test.samples and not test.labelled
    assert all(s.label is None for s in test.samples)
    for s in test.of_kind("segmentation"):
        assert s.mask_path and s.mask_file is not None and not s.mask_file.exists()
    labels = load_root(out / "labels")
    assert [s.key for s in labels.samples] == [s.key for s in test.samples]


def test_regression_capital_and_lower_case_task_name(root):
    header, rows = read_csv(root, "fetal_femur")
    assert {r["task_name"] for r in rows} == {"Regression"}  # the official spelling
    assert len(load_root(root).by_task()["fetal_femur"]) == 3
    edit(root, "fetal_femur", 2, task_name="regression")  # our canonical name is accepted too
    assert all(s.kind is TaskKind.REGRESSION for s in load_root(root).by_task()["fetal_femur"])


def test_unregistered_task_is_accepted_with_a_warning(root):
    header, rows = read_csv(root, "fetal_femur")
    for r in rows:
        r["task_id"] = "femur_v2_not_registered"
    write_csv(root, "fetal_femur", header, rows, name="extra.csv")
    with pytest.warns(UserWarning, match=r"extra\.csv:2: .*'femur_v2_not_registered' is not in the registry"):
        data = load_root(root)
    spec = data.tasks["femur_v2_not_registered"]
    assert (spec.kind, spec.num_classes) == (TaskKind.REGRESSION, 2)
    assert len(data.by_task()["femur_v2_not_registered"]) == 3
    assert len(data.warnings) == 1 and data.warnings[0].severity == "warning"


def test_check_files_false_skips_existence(root):
    header, rows = read_csv(root, "organ_cls")
    (root / "csv_files" / rows[0]["image_path"]).unlink()
    problems_of(root)
    assert len(load_root(root, check_files=False).samples) == 3 * len(TASKS)


def test_bom_accepted(root):
    path = root / "csv_files" / "organ_cls.csv"
    path.write_text("\ufeff" + path.read_text(encoding="utf-8"), encoding="utf-8")  # pandas strips it too
    assert len(load_root(root).by_task()["organ_cls"]) == 3


def test_padded_header_refused(root):
    # pandas keeps the spaces (" task_id"), so the official scorer would not find the column
    path = root / "csv_files" / "organ_cls.csv"
    text = path.read_text(encoding="utf-8")
    header, rest = text.split("\n", 1)
    path.write_text(", ".join(header.split(",")) + "\n" + rest, encoding="utf-8")
    found = problems_of(root)
    assert {p.where for p in found} == {"1"} and len(found) == len(header.split(",")) - 1
    assert all("leading/trailing spaces" in p.message for p in found)


# --- every schema error, located at file:row ---------------------------------------------------
def test_missing_column(root):
    header, rows = read_csv(root, "organ_cls")
    write_csv(root, "organ_cls", [h for h in header if h != "task_name"], rows)
    assert_problem(root, "organ_cls.csv", 1, r"missing column.*'task_name'")


def test_missing_point_column(root):
    header, rows = read_csv(root, "IUGC")
    write_csv(root, "IUGC", [h for h in header if h != "point_3_xy"], rows)
    assert_problem(root, "IUGC.csv", 2, r"missing column.*point_3_xy", count=3)  # one per row


def test_unknown_task_name(root):
    edit(root, "organ_cls", 3, task_name="Classification ")
    assert_problem(root, "organ_cls.csv", 3, r"task_name: unknown task_name 'Classification '.*'Regression'")


@pytest.mark.parametrize("value", ["two", "1.5", "nan", "inf"])
def test_non_integer_class_label(root, value):
    edit(root, "organ_cls", 4, mask=value)
    assert_problem(root, "organ_cls.csv", 4, rf"mask: '{value}' is not an integer class label")


@pytest.mark.parametrize("value", ["6", "-1", "100"])
def test_class_label_out_of_range(root, value):
    edit(root, "organ_cls", 2, mask=value)
    assert_problem(root, "organ_cls.csv", 2, rf"class {value} out of range; expected 0\.\.5")


def test_class_label_written_as_float_is_accepted(root):
    edit(root, "organ_cls", 2, mask="3.0")  # pandas writes ints as floats when a column has gaps
    s = next(s for s in load_root(root).samples if s.task_id == "organ_cls" and s.row == 2)
    assert s.label == 3


@pytest.mark.parametrize("text", ["[1, 2", "[1, 2, 3]", "1;2", "[\"a\", 2]", "[true, 2]", "{\"x\": 1}", "[1, Infinity]"])
def test_malformed_point_json(root, text):
    edit(root, "IUGC", 3, point_2_xy=text)
    assert_problem(root, "IUGC.csv", 3, r"point_2_xy: .* is not a point; expected JSON text like")


def test_missing_point_is_none(root):
    edit(root, "IUGC", 2, point_1_xy="")
    s = next(s for s in load_root(root).samples if s.task_id == "IUGC" and s.row == 2)
    assert s.label[0] is None and s.label[1] is not None


@pytest.mark.parametrize(
    "change",
    [{"x_max": "10", "x_min": "10"}, {"x_min": "50", "x_max": "20"}, {"y_min": "30", "y_max": "29.5"}],
)
def test_box_min_not_below_max(root, change):
    edit(root, "uterine_fibroid_det", 3, **change)
    assert_problem(root, "uterine_fibroid_det.csv", 3, r"expected x_min < x_max and y_min < y_max")


def test_box_not_numbers(root):
    edit(root, "uterine_fibroid_det", 2, y_max="abc")
    assert_problem(root, "uterine_fibroid_det.csv", 2, r"are not four finite numbers")


def test_path_escaping_the_root(root):
    outside = root.parent / "outside.png"
    shutil.copy(next((root / "csv_files").glob("*.csv")), outside)  # exists, but outside the root
    edit(root, "organ_cls", 2, image_path="../../outside.png")
    edit(root, "carotid_artery", 3, mask_path="../../outside.png")
    edit(root, "IUGC", 4, image_path=str(outside))  # absolute
    found = problems_of(root)
    located: dict[tuple[str, str], list[str]] = {}
    for p in found:
        located.setdefault((Path(p.file).name, p.where), []).append(p.message)
    assert len(found) == 3, found  # one problem per bad row, nothing repeated
    assert "image_path" in located[("organ_cls.csv", "2")][0] and "escapes the data root" in located[("organ_cls.csv", "2")][0]
    assert "mask_path" in located[("carotid_artery.csv", "3")][0] and "escapes" in located[("carotid_artery.csv", "3")][0]
    assert "must be a non-empty path relative to csv_files/" in located[("IUGC.csv", "4")][0]


def test_path_escaping_via_symlink(root):
    outside = root.parent / "secret.png"
    _, rows = read_csv(root, "organ_cls")
    image = root / "csv_files" / rows[1]["image_path"]
    shutil.copy(image, outside)
    image.unlink()
    image.symlink_to(outside)  # same path string in the CSV, but the file lives outside the root
    assert_problem(root, "organ_cls.csv", 3, r"image_path: path .* escapes the data root")
    # a symlinked dataset folder pointing outside the root is refused the same way
    folder = image.parent.parent
    moved = root.parent / "moved dataset"
    shutil.move(folder, moved)
    folder.symlink_to(moved, target_is_directory=True)
    found = problems_of(root)
    rows_hit = {p.where for p in found if Path(p.file).name == "organ_cls.csv" and "escapes" in p.message}
    assert rows_hit == {"2", "3", "4"}


def test_symlink_inside_the_root_is_fine(root):
    _, rows = read_csv(root, "organ_cls")
    image = root / "csv_files" / rows[0]["image_path"]
    target = image.with_name("real " + image.name)
    image.rename(target)
    image.symlink_to(target.name)
    assert len(load_root(root).by_task()["organ_cls"]) == 3


def test_missing_image_file(root):
    _, rows = read_csv(root, "uterine_fibroid_det")
    (root / "csv_files" / rows[2]["image_path"]).unlink()
    assert_problem(root, "uterine_fibroid_det.csv", 4, r"image_path: file not found: .*uterine fibroid\xa0ultrasound")


def test_missing_mask_in_a_labelled_csv(root):
    _, rows = read_csv(root, "cardiac_multi")
    (root / "csv_files" / rows[1]["mask_path"]).unlink()
    assert_problem(root, "cardiac_multi.csv", 3, r"mask file not found.*other rows of this CSV are labelled")


def test_label_missing_in_a_labelled_csv(root):
    edit(root, "organ_cls", 3, mask="")
    assert_problem(root, "organ_cls.csv", 3, r"label missing \(other rows of this CSV are labelled\)")


def test_segmentation_row_without_mask_path(root):
    edit(root, "breast_lesion", 2, mask_path="")
    assert_problem(root, "breast_lesion.csv", 2, r"mask_path: missing")


def test_duplicate_row(root):
    header, rows = read_csv(root, "carotid_artery")
    write_csv(root, "carotid_artery", header, rows + [dict(rows[0])])
    assert_problem(root, "carotid_artery.csv", 5, r"duplicate row for task 'carotid_artery'.*first at carotid_artery\.csv:2")


def test_duplicate_row_across_csvs(root):
    header, rows = read_csv(root, "organ_cls")
    write_csv(root, "organ_cls", header, rows[:1], name="zz_more.csv")
    assert_problem(root, "zz_more.csv", 2, r"duplicate row.*first at organ_cls\.csv:2")


def test_registry_contradiction_num_classes(root):
    edit(root, "organ_cls", 2, num_classes="5")
    assert_problem(root, "organ_cls.csv", 2, r"'organ_cls' is classification with num_classes=5 here, but classification with num_classes=6")


def test_registry_contradiction_kind(root):
    edit(root, "IUGC", 3, task_name="detection", num_classes="3")
    assert_problem(root, "IUGC.csv", 3, r"'IUGC' is detection .* but Regression with num_classes=3")


def test_unregistered_task_contradicting_itself(root):
    header, rows = read_csv(root, "fetal_femur")
    for r in rows:
        r["task_id"] = "femur_v2_not_registered"
    rows[1]["num_classes"] = "3"
    write_csv(root, "fetal_femur", header, rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_problem(root, "fetal_femur.csv", 3, r"num_classes=3 here, but Regression with num_classes=2 in the registry/earlier rows")


@pytest.mark.parametrize("value", ["0", "two", ""])
def test_bad_num_classes(root, value):
    edit(root, "organ_cls", 2, num_classes=value)
    assert_problem(root, "organ_cls.csv", 2, r"num_classes: .* is not a positive integer")


def test_empty_task_id(root):
    edit(root, "organ_cls", 2, task_id=" ")
    assert_problem(root, "organ_cls.csv", 2, r"task_id: empty")


def test_all_problems_reported_together(root):
    edit(root, "organ_cls", 2, mask="9")
    edit(root, "IUGC", 4, point_1_xy="[oops]")
    edit(root, "uterine_fibroid_det", 3, x_min="999")
    found = problems_of(root)
    assert {(Path(p.file).name, p.where) for p in found} >= {("organ_cls.csv", "2"), ("IUGC.csv", "4"), ("uterine_fibroid_det.csv", "3")}


def test_unreadable_csvs(root):
    (root / "csv_files" / "binary.csv").write_bytes(b"image_path,task_id\n\xff\xfe\x00bad\n")
    (root / "csv_files" / "empty.csv").write_bytes(b"")
    found = problems_of(root)
    messages = {Path(p.file).name: p.message for p in found}
    assert "unreadable CSV" in messages["binary.csv"] and "UTF-8" in messages["binary.csv"]
    assert "empty file" in messages["empty.csv"]


def test_not_a_data_root(tmp_path):
    with pytest.raises(SchemaError, match="not a data root: no csv_files/"):
        load_root(tmp_path)
    (tmp_path / "csv_files").mkdir()
    (tmp_path / "csv_files" / "notes.txt").write_text("x")
    with pytest.raises(SchemaError, match=r"no \.csv files"):
        load_root(tmp_path)


def test_typed_label_accessors_check_kind_and_presence(synth_root, synth_split):
    labelled = load_root(synth_root)
    by_kind = {s.kind: s for s in labelled.samples}
    seg, cls = by_kind[TaskKind.SEGMENTATION], by_kind[TaskKind.CLASSIFICATION]
    det, reg = by_kind[TaskKind.DETECTION], by_kind[TaskKind.REGRESSION]
    assert seg.label_mask == seg.mask_file and isinstance(cls.class_index, int)
    assert len(det.box) == 4 and len(reg.points) == reg.task.num_points
    with pytest.raises(AttributeError, match="is segmentation, not classification"):
        _ = seg.class_index
    with pytest.raises(AttributeError, match="not detection"):
        _ = reg.box
    hidden = next(s for s in load_root(synth_split / "test").samples if s.kind is TaskKind.REGRESSION)
    with pytest.raises(AttributeError, match="no label"):
        _ = hidden.points
