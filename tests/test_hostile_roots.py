"""Hostile data roots: each class of broken input is one located, one-line problem (file, row, what was
expected) — never a traceback, never silently accepted.

CSV quirks are read both ways, with the official reader (``pandas.read_csv``, defaults) and with
:func:`fmuia.dataset.load_root`: where pandas would read a cell differently from a plain CSV reader,
the file is refused; where the quirk is harmless, every accepted value equals what pandas reads.
Label contents (masks, full image decodes) are :func:`~fmuia.dataset.schema.validate_labels`'.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fmuia.dataset import load_root
from fmuia.dataset.images import image_size
from fmuia.dataset.masks import encode_mask_png
from fmuia.dataset.schema import validate_labels
from fmuia.dataset.synth import synthesize
from fmuia.errors import SchemaError

sys.path.insert(0, str(Path(__file__).parent))
from pandas_view import disagreements  # noqa: E402

TASKS = ["breast_lesion", "organ_cls", "uterine_fibroid_det", "IUGC"]  # one per kind; .png, .bmp, .jpg images


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("hostile") / "root", per_task=3, seed=5, tasks=TASKS)


@pytest.fixture
def root(base, tmp_path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "root", symlinks=True))


def csv_path(root: Path, task: str) -> Path:
    return root / "csv_files" / f"{task}.csv"


def rows_of(root: Path, task: str) -> list[dict]:
    with open(csv_path(root, task), newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def file_of(root: Path, text: str) -> Path:
    return Path(os.path.normpath(root / "csv_files" / text))


def problems(call) -> list:
    with pytest.raises(SchemaError) as exc:
        call()
    assert exc.value.problems, exc.value.message
    for p in exc.value.problems:
        assert "\n" not in str(p) and "Traceback" not in str(p)  # one line each
    return exc.value.problems


def assert_one(root: Path, name: str, row: int | str, pattern: str, call=None) -> None:
    """Exactly one problem, at ``name:row``, matching ``pattern``."""
    found = problems(call or (lambda: load_root(root)))
    assert len(found) == 1, "\n".join(map(str, found))
    p = found[0]
    assert Path(p.file).name == name and p.where == str(row), str(p)
    assert re.search(pattern, p.message), str(p)
    assert str(p).startswith(f"{p.file}:{row}: " if str(row) else f"{p.file}: ")


def write_text(root: Path, task: str, text: str, encoding: str = "utf-8") -> Path:
    path = csv_path(root, task)
    path.write_bytes(text.encode(encoding))
    return path


def read_text(root: Path, task: str) -> str:
    return csv_path(root, task).read_text(encoding="utf-8")


# ---- images and masks: unreadable -----------------------------------------------------------------

def test_image_that_is_not_an_image(root):
    file_of(root, rows_of(root, "organ_cls")[1]["image_path"]).write_bytes(b"not an image at all")
    assert_one(root, "organ_cls.csv", 3, r"image_path: 002\.bmp: not an image")


def test_image_truncated_png(root):
    f = file_of(root, rows_of(root, "IUGC")[0]["image_path"])
    f.write_bytes(f.read_bytes()[:-20])
    assert_one(root, "IUGC.csv", 2, r"image_path: 001\.png: not a readable image \(truncated PNG")


def test_image_truncated_jpeg_found_by_validate_labels(root):
    f = file_of(root, rows_of(root, "uterine_fibroid_det")[2]["image_path"])
    f.write_bytes(f.read_bytes()[:-400])
    data = load_root(root)  # the header is intact: the cheap check passes...
    assert_one(root, "uterine_fibroid_det.csv", 4, r"image_path: 003\.jpg: not a readable image \(image file is truncated",
               call=lambda: validate_labels(data))  # ...the full decode does not


def test_image_that_is_a_folder(root):
    f = file_of(root, rows_of(root, "organ_cls")[0]["image_path"])
    f.unlink()
    f.mkdir()
    assert_one(root, "organ_cls.csv", 2, r"image_path: not a regular file")


def test_label_mask_not_an_image(root):
    file_of(root, rows_of(root, "breast_lesion")[0]["mask_path"]).write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    assert_one(root, "breast_lesion.csv", 2, r"mask_path: .*_mask\.png: not a readable image")


def test_label_mask_truncated(root):
    f = file_of(root, rows_of(root, "breast_lesion")[2]["mask_path"])
    f.write_bytes(f.read_bytes()[:-5])
    assert_one(root, "breast_lesion.csv", 4, r"mask_path: .*: not a readable image \(truncated PNG")


# ---- label masks: values and readings -------------------------------------------------------------

def _rewrite_mask(root: Path, row: int, make) -> Path:
    f = file_of(root, rows_of(root, "breast_lesion")[row - 2]["mask_path"])
    with Image.open(f) as img:
        mask = np.asarray(img)
    f.write_bytes(make(mask))
    return f


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_label_mask_value_out_of_range(root):
    f = _rewrite_mask(root, 3, lambda m: encode_mask_png(np.where(m > 0, 2, 0).astype(np.uint8)))
    cv2 = pytest.importorskip("cv2")
    assert cv2.imread(str(f), cv2.IMREAD_GRAYSCALE).max() == 2  # what the official scorer sees
    data = load_root(root)  # load_root does not decode masks (see validate_labels)
    assert_one(root, "breast_lesion.csv", 3, r"mask_path: .*: label mask holds value 2 \(\d+ pixel\(s\) >= 2\); "
               r"expected class indices 0\.\.1 \(num_classes=2\)", call=lambda: validate_labels(data))


def test_label_mask_saved_as_0_255(root):
    _rewrite_mask(root, 2, lambda m: encode_mask_png((m > 0).astype(np.uint8) * 255))
    assert_one(root, "breast_lesion.csv", 2, r"holds value 255", call=lambda: validate_labels(root))


def test_label_mask_colour_palette(root):
    def colour(m):
        img = Image.fromarray(m.astype(np.uint8), "L").convert("P")
        img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # class 1 drawn red: OpenCV reads grey 76
        return _png(img)

    _rewrite_mask(root, 4, colour)
    assert_one(root, "breast_lesion.csv", 4, r"mode P\) reads differently as OpenCV grey levels than as class indices",
               call=lambda: validate_labels(root))


def test_label_mask_16_bit(root):
    f = _rewrite_mask(root, 2, lambda m: _png(Image.fromarray(m.astype(np.uint16))))
    cv2 = pytest.importorskip("cv2")
    assert cv2.imread(str(f), cv2.IMREAD_GRAYSCALE).max() == 0  # the high byte of 1 is 0: the lesion vanishes
    assert_one(root, "breast_lesion.csv", 2, r"mode I;16\) reads differently", call=lambda: validate_labels(root))


def test_label_mask_with_exif_orientation(root):
    exif = Image.Exif()
    exif[0x0112] = 6
    _rewrite_mask(root, 3, lambda m: _png(Image.fromarray(m.astype(np.uint8), "L"), exif=exif.tobytes()))
    assert_one(root, "breast_lesion.csv", 3, r"EXIF orientation 6: OpenCV rotates it", call=lambda: validate_labels(root))


def test_label_mask_of_another_size(root):
    _rewrite_mask(root, 2, lambda m: encode_mask_png(m[:-3].astype(np.uint8)))
    assert_one(root, "breast_lesion.csv", 2, r"label mask is \d+x\d+ but the image is \d+x\d+ .*expected the same size",
               call=lambda: validate_labels(root))


def test_label_mask_in_the_stored_frame_of_an_exif_rotated_image(root):
    rows = rows_of(root, "breast_lesion")
    row, f = next((i, file_of(root, r["image_path"])) for i, r in enumerate(rows, start=2)
                  if len(set(image_size(file_of(root, r["image_path"])))) == 2)  # not square
    with Image.open(f) as img:
        w, h = img.size
        exif = Image.Exif()
        exif[0x0112] = 6
        f.write_bytes(_png(img.copy(), exif=exif.tobytes()))  # OpenCV now reads it h x w
    assert_one(root, "breast_lesion.csv", row, rf"label mask is {w}x{h} but the image is {h}x{w} \(as OpenCV reads it, "
               r"after EXIF orientation\)", call=lambda: validate_labels(root))


def test_validate_labels_accepts_good_roots(base, tmp_path):
    data = load_root(base)
    assert validate_labels(data) is data
    assert len(validate_labels(base).samples) == len(data.samples)  # a path is loaded first
    split = synthesize(tmp_path / "split", per_task=3, seed=1, tasks=TASKS, split=True)
    assert validate_labels(split / "test").samples  # a hidden test root: images only, no masks


# ---- CSV files that are not regular files -----------------------------------------------------------

def test_csv_path_that_is_a_folder(root):
    (root / "csv_files" / "x.csv").mkdir()
    assert_one(root, "x.csv", "", r"a folder; expected a regular CSV file")


def test_csv_path_that_is_a_symlink(root):
    link = root / "csv_files" / "more.csv"
    link.symlink_to(csv_path(root, "organ_cls"))
    assert_one(root, "more.csv", "", r"a symbolic link; expected a regular CSV file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_csv_path_that_is_a_fifo(root):
    os.mkfifo(root / "csv_files" / "pipe.csv")  # pandas would block forever opening it
    assert_one(root, "pipe.csv", "", r"a FIFO \(named pipe\); expected a regular CSV file")


def test_upper_case_extension_is_refused(root):
    csv_path(root, "organ_cls").rename(root / "csv_files" / "organ_cls.CSV")  # glob('*.csv') skips it
    assert_one(root, "organ_cls.CSV", "", r"reads only '\*\.csv' \(case-sensitive\)")


def test_hidden_csv_is_skipped_like_glob(root):
    (root / "csv_files" / "._organ_cls.csv").write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")
    with pytest.warns(UserWarning, match=r"\._organ_cls\.csv: warning: hidden file skipped"):
        data = load_root(root)
    assert len(data.samples) == 3 * len(TASKS)


# ---- encodings ----------------------------------------------------------------------------------------

def _with_accent(root: Path) -> str:
    return read_text(root, "organ_cls").replace("organ cls", "organ cl\u00e9s")  # a path that does not exist: fine


def test_csv_in_latin_1(root):
    path = write_text(root, "organ_cls", _with_accent(root), "latin-1")
    with pytest.raises(UnicodeDecodeError):
        pd.read_csv(path)  # the official reader fails on it
    assert_one(root, "organ_cls.csv", 2, r"unreadable CSV: byte 0xE9 is not UTF-8 \(latin-1 or Windows-1252 text\?\)")


def test_csv_in_utf16_with_bom(root):
    path = write_text(root, "organ_cls", read_text(root, "organ_cls"), "utf-16")
    with pytest.raises(UnicodeDecodeError):
        pd.read_csv(path)
    assert_one(root, "organ_cls.csv", 1, r"unreadable CSV: UTF-16 text \(byte-order mark FF FE\); expected UTF-8")


def test_csv_in_utf16_without_bom(root):
    write_text(root, "organ_cls", read_text(root, "organ_cls"), "utf-16-le")  # ASCII: "valid" UTF-8 full of NULs
    assert_one(root, "organ_cls.csv", 1, r"unreadable CSV: NUL byte \(UTF-16 text without a byte-order mark")


def test_csv_with_utf8_bom_agrees_with_pandas(root):
    path = write_text(root, "organ_cls", read_text(root, "organ_cls"), "utf-8-sig")
    assert disagreements(load_root(root), path) == []


# ---- empty files -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "\n\n", "  \n\t\n"])
def test_empty_csv(root, text):
    path = write_text(root, "organ_cls", text)
    with pytest.raises(pd.errors.EmptyDataError):
        pd.read_csv(path)
    assert_one(root, "organ_cls.csv", 1, r"empty file; expected a header with \['image_path', 'task_id', 'task_name', 'num_classes'\]")


def test_header_only_csv(root):
    path = write_text(root, "organ_cls", read_text(root, "organ_cls").split("\n")[0] + "\n")
    assert len(pd.read_csv(path)) == 0  # pandas: an empty table, the task silently absent
    assert_one(root, "organ_cls.csv", 1, r"no data rows \(only a header\)")


# ---- header quirks ------------------------------------------------------------------------------------

def test_duplicate_column(root):
    text = read_text(root, "organ_cls").split("\n")
    text[0] += ",mask"
    text[1:4] = [line + ",5" for line in text[1:4]]
    path = write_text(root, "organ_cls", "\n".join(text))
    assert "mask.1" in pd.read_csv(path).columns  # pandas renames the second and reads the first
    assert list(csv.DictReader(io.StringIO(path.read_text())))[0]["mask"] == "5"  # a dict reader keeps the last
    assert_one(root, "organ_cls.csv", 1, r"duplicate column 'mask' \(columns 5 and 6\); pandas renames the second to 'mask\.1'")


def test_padded_header(root):
    path = write_text(root, "organ_cls", read_text(root, "organ_cls").replace("image_path,", " image_path,", 1))
    assert " image_path" in pd.read_csv(path).columns and "image_path" not in pd.read_csv(path).columns
    assert_one(root, "organ_cls.csv", 1, r"column 1 ' image_path' has leading/trailing spaces; pandas, the official reader, keeps them")


def test_trailing_comma_in_header_is_an_empty_column(root):
    lines = read_text(root, "organ_cls").split("\n")
    path = write_text(root, "organ_cls", "\n".join(line + "," if line else line for line in lines))
    assert "Unnamed: 5" in pd.read_csv(path).columns
    assert_one(root, "organ_cls.csv", 1, r"column 6 of the header has no name \(a trailing comma\?\); pandas reads it as 'Unnamed: 5'")


def test_trailing_comma_in_rows_shifts_pandas_values(root):
    lines = read_text(root, "organ_cls").split("\n")
    path = write_text(root, "organ_cls", "\n".join([lines[0]] + [line + "," for line in lines[1:] if line]) + "\n")
    first = pd.read_csv(path).iloc[0]
    ours = next(csv.DictReader(io.StringIO(path.read_text())))
    assert first["image_path"] == "organ_cls" != ours["image_path"]  # pandas: every value one column to the left
    found = problems(lambda: load_root(root))
    assert [(Path(p.file).name, p.where) for p in found] == [("organ_cls.csv", "2"), ("organ_cls.csv", "3"), ("organ_cls.csv", "4")]
    assert all(re.search(r"6 fields, but the header has 5 columns \(a trailing comma", p.message) for p in found)


def test_space_before_quote_splits_the_value(root):
    rows = read_text(root, "IUGC").split("\n")
    rows[2] = rows[2].replace(',"[', ', "[', 1)  # `, "[74.2, 45.6]"`: the quote no longer opens a quoted value
    path = write_text(root, "IUGC", "\n".join(rows))
    with pytest.raises(pd.errors.ParserError):
        pd.read_csv(path)  # the official reader refuses the file
    assert_one(root, "IUGC.csv", 3, r"8 fields, but the header has 7 columns")


@pytest.mark.parametrize("bad", ['"unterminated', '"x"y', '"a""b"c'])
def test_malformed_quoting(root, bad):
    lines = read_text(root, "organ_cls").split("\n")
    lines[2] = lines[2].rsplit(",", 1)[0] + "," + bad
    write_text(root, "organ_cls", "\n".join(lines) + "\n")
    assert_one(root, "organ_cls.csv", 3, r"malformed CSV \(.*\): a quote inside a quoted value must be doubled")


def test_zero_padded_point_column_is_not_a_point_column(root):
    path = write_text(root, "IUGC", read_text(root, "IUGC").replace("point_1_xy", "point_01_xy", 1))
    assert "point_1_xy" not in pd.read_csv(path).columns  # the scorer asks for point_1_xy: (0, 0) for every row
    found = problems(lambda: load_root(root))
    assert len(found) == 3 and all("missing column(s) ['point_1_xy']" in p.message for p in found)


# ---- cell quirks ---------------------------------------------------------------------------------------

def _set_cells(root: Path, task: str, column: str, values: list[str]) -> Path:
    path = csv_path(root, task)
    rows = rows_of(root, task)
    for r, v in zip(rows, values, strict=False):
        r[column] = v
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


def test_padded_task_id(root):
    path = _set_cells(root, "organ_cls", "task_id", ["organ_cls", "organ_cls ", "organ_cls"])
    assert pd.read_csv(path)["task_id"].tolist()[1] == "organ_cls "  # kept: predictions for 'organ_cls' never match
    assert_one(root, "organ_cls.csv", 3, r"task_id: 'organ_cls ' has leading/trailing spaces; pandas, the official reader, keeps them")


def test_padded_task_name(root):
    _set_cells(root, "organ_cls", "task_name", ["classification", " classification", "classification"])
    assert_one(root, "organ_cls.csv", 3, r"task_name: ' classification' has leading/trailing spaces")


@pytest.mark.parametrize("word", ["NA", "null", "None", "n/a", "#N/A"])
def test_task_id_pandas_reads_as_missing(root, word):
    path = _set_cells(root, "organ_cls", "task_id", [word] * 3)
    assert pd.read_csv(path)["task_id"].isna().all()
    found = problems(lambda: load_root(root))
    assert len(found) == 3 and all(f"task_id: {word!r} is read as a missing value (NaN) by pandas" in p.message for p in found)


def test_numeric_task_id_column(root):
    path = _set_cells(root, "organ_cls", "task_id", ["7", "7", "7"])
    assert pd.read_csv(path)["task_id"].tolist() == [7, 7, 7]  # numbers, not the text '7'
    found = problems(lambda: load_root(root))
    assert len(found) == 3 and all("task_id: '7' looks like a number" in p.message for p in found)


def test_boolean_looking_task_id(root):
    path = _set_cells(root, "organ_cls", "task_id", ["True"] * 3)
    assert pd.read_csv(path)["task_id"].dtype == bool
    assert "looks like a boolean" in problems(lambda: load_root(root))[0].message


@pytest.mark.parametrize("value", [" 3", "3 ", "\t3"])
def test_padded_number(root, value):
    _set_cells(root, "organ_cls", "mask", ["0", value, "1"])
    assert_one(root, "organ_cls.csv", 3, r"mask: .* is not an integer class label \(leading/trailing spaces\)")


def test_integer_beyond_float64_is_refused(root):
    path = _set_cells(root, "organ_cls", "num_classes", ["6", "6", "99999999999999999999"])
    assert int(pd.read_csv(path)["num_classes"].iloc[2]) == 99999999999999999999
    assert_one(root, "organ_cls.csv", 4, r"num_classes: '99999999999999999999' is not a positive integer")


def test_point_spelled_nan_in_capitals(root):
    # pandas reads "nan" as missing but "NAN" as text, which the scorer's json.loads cannot parse
    path = _set_cells(root, "IUGC", "point_2_xy", ["nan", "NAN", "[1.5, 2.5]"])
    col = pd.read_csv(path)["point_2_xy"]
    assert pd.isna(col.iloc[0]) and col.iloc[1] == "NAN"
    assert_one(root, "IUGC.csv", 3, r"point_2_xy: 'NAN' is not a point")


@pytest.mark.parametrize("word", ["", "nan", "NA", "null", "None"])
def test_missing_point_words_agree_with_pandas(root, word):
    path = _set_cells(root, "IUGC", "point_3_xy", [word, "[10, 20]", "[1.5e1, 3]"])
    data = load_root(root)
    assert data.by_task()["IUGC"][0].label[2] is None
    assert disagreements(data, path) == []


# ---- harmless quirks: accepted, and every value is what pandas reads --------------------------------

def _lines(root: Path, task: str) -> list[str]:
    return read_text(root, task).rstrip("\n").split("\n")


HARMLESS = {
    "crlf": lambda ls: "\r\n".join(ls) + "\r\n",
    "cr only": lambda ls: "\r".join(ls) + "\r",
    "no final newline": lambda ls: "\n".join(ls),
    "blank lines": lambda ls: "\n\n".join(ls) + "\n\n",
    "lines of spaces": lambda ls: ls[0] + "\n   \n" + "\n\t\n".join(ls[1:]) + "\n",
    "leading blank lines": lambda ls: "\n\n" + "\n".join(ls) + "\n",
    "everything quoted": lambda ls: "\n".join(",".join(f'"{c}"' for c in next(csv.reader([line]))) for line in ls) + "\n",
}


@pytest.mark.parametrize("quirk", sorted(HARMLESS))
@pytest.mark.parametrize("task", ["organ_cls", "IUGC", "uterine_fibroid_det"])
def test_harmless_quirks_agree_with_pandas(root, quirk, task):
    path = write_text(root, task, HARMLESS[quirk](_lines(root, task)))
    data = load_root(root)
    assert len(data.by_task()[task]) == 3
    assert disagreements(data, path) == []


@pytest.mark.parametrize("task", ["organ_cls", "uterine_fibroid_det"])
def test_integers_written_as_floats_agree_with_pandas(root, task):
    lines = _lines(root, task)  # pandas writes 3.0 for an int column with gaps
    path = write_text(root, task, "\n".join([lines[0]] + [line + ".0" for line in lines[1:]]) + "\n")
    data = load_root(root)
    assert disagreements(data, path) == []


def test_quoted_blank_line_is_a_row_like_pandas(root):
    lines = _lines(root, "organ_cls")
    path = write_text(root, "organ_cls", "\n".join(lines[:2] + ['" "'] + lines[2:]) + "\n")
    assert len(pd.read_csv(path)) == 4  # a quoted space is a value, not a blank line
    assert_one(root, "organ_cls.csv", 3, r"task_id: empty")


def test_short_rows_are_missing_labels_like_pandas(root):
    lines = _lines(root, "organ_cls")
    path = write_text(root, "organ_cls", "\n".join([lines[0]] + [line.rsplit(",", 1)[0] for line in lines[1:]]) + "\n")
    data = load_root(root)  # no label column values: an unlabelled CSV, as pandas reads NaN
    assert all(s.label is None for s in data.by_task()["organ_cls"])
    assert disagreements(data, path) == []


def test_rows_are_located_by_their_line_after_blank_lines_and_multiline_values(root):
    lines = _lines(root, "organ_cls")
    # line 1 header, 2 blank, 3 row, 4-5 a row whose quoted path spans two lines, 6 the bad row
    lines[2] = lines[2].replace("../Classification", '"../Classifi\ncation', 1).replace(".bmp,", '.bmp",', 1)
    lines[3] = lines[3].rsplit(",", 1)[0] + ",9"
    write_text(root, "organ_cls", lines[0] + "\n\n" + "\n".join(lines[1:]) + "\n")
    found = problems(lambda: load_root(root))
    where = {p.where: p.message for p in found}
    assert "4" in where and "file not found" in where["4"]  # the two-line path does not exist
    assert "class 9 out of range" in where["6"]


def test_synth_root_agrees_with_pandas_everywhere(base):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_root(base)
    for f in sorted((base / "csv_files").glob("*.csv")):
        assert disagreements(data, f) == [], f.name
