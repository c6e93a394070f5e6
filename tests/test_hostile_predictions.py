"""Hostile predictions: one reader per format, so ``fmuia check``, strict and official scoring agree.

What check calls an error, strict scores as the worst with the same reason, and the reverse; official
mode reads like the published scorer: ``zipfile.ZipFile(...).extractall`` on Linux, then
``json.load(open(path))`` and ``cv2.imread(path, cv2.IMREAD_GRAYSCALE)`` (re-implemented plainly here
and compared). Every input is built in code from a small synthetic root and its oracle predictions.

Classes: JSON prediction files (size cap before reading, huge integers, deep nesting, BOM, repeated
keys, floats/booleans/NaN where the format says otherwise); zip uploads (bad CRC, encryption, two
members at one path, backslashes); masks (truncated, no IEND, bad CRCs, Pillow-only and OpenCV-only
readable files, 1-bit and palette masks); symlinked folders; then a hypothesis property over all of it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import tempfile
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation.scoring import evaluate
from fmuia import predfolder
from fmuia.check import check_predictions
from fmuia.dataset import load_root, prediction_mask_relpath
from fmuia.dataset.masks import encode_mask_png, read_mask_like_opencv, read_prediction_mask
from fmuia.errors import UnsafeInputError
from fmuia.formats import write_predictions
from fmuia.oracle import oracle_predictions
from fmuia.predfolder import MAX_JSON_BYTES, open_predictions
from fmuia.tasks import PREDICTION_FILES, TaskKind

cv2 = pytest.importorskip("cv2")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

CLS, DET, REG, SEG = TaskKind.CLASSIFICATION, TaskKind.DETECTION, TaskKind.REGRESSION, TaskKind.SEGMENTATION
TASKS = "cardiac_multi,fetal_head,breast_3cls,thyroid_nodule_det,IUGC"
CLS_FILE, DET_FILE, REG_FILE = (PREDICTION_FILES[k] for k in (CLS, DET, REG))


# ---- a small root, its perfect predictions, and the three verdicts -----------------------------------

def _make_root(out: Path) -> Path:
    from fmuia.dataset.synth import synthesize

    return synthesize(out, per_task=3, seed=0, tasks=TASKS, sizes=(32, 64))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """``(root path, loaded root, perfect prediction folder)``: 5 tasks (2 segmentation), 3 rows each."""
    base = tmp_path_factory.mktemp("hostile")
    path = _make_root(base / "root")
    root = load_root(path)
    write_predictions(base / "perfect", oracle_predictions(root))
    return path, root, base / "perfect"


@pytest.fixture
def pred(small, tmp_path) -> Path:
    out = tmp_path / "pred"
    shutil.copytree(small[2], out)
    return out


def _seg_rows(root):
    return [s for s in root.samples if s.kind is SEG]


def _rel(s) -> str:
    return prediction_mask_relpath(s.mask_path)


def _errors(report, file=None, contains=""):
    return [p for p in report.problems if p.severity == "error" and (file is None or p.file == file) and contains in p.message]


def _reasons(res) -> dict:
    return {(c["task_id"], c["image_path"]): c["reason"] for c in res["per_case"]}


def strict(pred: Path, root_path: Path) -> dict:
    return evaluate(pred, root_path, mode="strict", workers=1, n_bootstrap=0)


def official(pred: Path, root_path: Path) -> dict:
    return evaluate(pred, root_path, mode="official", workers=1)


def _entries_of(data: bytes):
    try:
        value = json.loads(data.decode("utf-8"))
    except Exception:  # noqa: BLE001 - unreadable: no entry can be named
        return None
    return value if isinstance(value, list) else None


def check_error_rows(report, root, written: dict[str, bytes]) -> set:
    """The CSV rows ``fmuia check`` reports an error for, mapped by file and entry: ``written`` holds
    the JSON files' bytes as submitted (to name the row of an ``entry i``)."""
    rows: set = set()
    by_task: dict[str, list] = {}
    for s in root.samples:
        by_task.setdefault(s.task_id, []).append(s)
    kind_of = {name: k for k, name in PREDICTION_FILES.items()}
    seg_by_rel = {}
    for s in _seg_rows(root):
        seg_by_rel.setdefault(_rel(s), []).append(s)
    for p in report.errors:
        if p.file in kind_of:
            kind = kind_of[p.file]
            of_kind = [s for s in root.samples if s.kind is kind]
            if p.where.startswith("entry "):
                entries = _entries_of(written.get(p.file, b"")) or []
                i = int(p.where.split()[1])
                e = entries[i] if i < len(entries) else None
                if isinstance(e, dict) and isinstance(e.get("task_id"), str) and isinstance(e.get("image_path"), str):
                    rows |= {s.key for s in of_kind if s.key == (e["task_id"], e["image_path"])}
            elif "none of its entries could be checked" in p.message or p.message.startswith("not read:"):
                rows |= {s.key for s in of_kind}
            else:
                named = {s.key for s in of_kind if f"task {s.task_id!r}, image {s.image_path!r}" in p.message}
                if not named:
                    named = {s.key for s in of_kind if f"task {s.task_id!r}" in p.message}
                rows |= named
        elif p.file in seg_by_rel:
            rows |= {s.key for s in seg_by_rel[p.file]}
        elif "no mask for any of the" in p.message:
            rows |= {s.key for t, ss in by_task.items() if f"task {t!r}" in p.message for s in ss}
    return rows


def verdicts(pred: Path, small, written: dict[str, bytes] | None = None):
    """``(check report, rows check calls errors, strict {row: reason} of the rows with one, official results)``."""
    path, root, _ = small
    if written is None:
        written = {n: (pred / n).read_bytes() for n in PREDICTION_FILES.values() if pred.is_dir() and (pred / n).is_file()}
    report = check_predictions(pred, root, workers=1)
    st_res = strict(pred, path)
    bad = {k: r for k, r in _reasons(st_res).items() if r is not None}
    return report, check_error_rows(report, root, written), bad, official(pred, path)


def assert_agree(pred: Path, small, written: dict[str, bytes] | None = None):
    report, rows, bad, off = verdicts(pred, small, written)
    assert rows == set(bad), {"check only": sorted(rows - set(bad)), "strict only": sorted(set(bad) - rows),
                              "problems": [str(p) for p in report.problems]}
    return report, bad, off


# ---- the platform, plainly: zipfile on Linux, json.load, cv2.imread ------------------------------------

UNREADABLE = object()


def platform_extract(archive: Path, out: Path) -> BaseException | None:
    """``zipfile.ZipFile(archive).extractall(out)``; the exception it raised, if any."""
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(out)
    except BaseException as exc:  # noqa: BLE001 - what the platform would see
        return exc
    return None


def platform_json(folder: Path, name: str):
    path = folder / name
    if not path.exists():
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except BaseException:  # noqa: BLE001 - ValueError, RecursionError, UnicodeDecodeError...
        return UNREADABLE


def platform_mask(folder: Path, rel: str):
    path = folder / rel
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path.is_file() else None


def zip_folder(src: Path, out: Path, extra: list[tuple[str, bytes]] = (), rename: dict[str, str] | None = None,
               skip: set[str] = frozenset()) -> Path:
    """A stored (uncompressed) zip of ``src``'s files at the archive root, then ``extra`` members."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name"
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
            for f in sorted(src.rglob("*")):
                if f.is_file():
                    rel = f.relative_to(src).as_posix()
                    if rel not in skip:
                        zf.writestr((rename or {}).get(rel, rel), f.read_bytes())
            for name, data in extra:
                zf.writestr(name, data)
    return out


def _member_data_offset(archive: bytes, info: zipfile.ZipInfo) -> int:
    name_len, extra_len = struct.unpack("<HH", archive[info.header_offset + 26 : info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len


def corrupt_member(archive: Path, name: str, index: int = -1) -> None:
    """Flip one data byte of a stored member (its CRC no longer matches)."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = [i for i in zf.infolist() if i.filename == name][index]
    data[_member_data_offset(bytes(data), info) + info.file_size // 2] ^= 0xFF
    archive.write_bytes(bytes(data))


def encrypt_flag(archive: Path, name: str) -> None:
    """Set the 'encrypted' flag bit (0x1) of a member, in its local header and the central directory."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(name)
    data[info.header_offset + 6] |= 0x1
    cd = data.find(b"PK\x01\x02")
    while cd != -1:
        n, e, c = struct.unpack("<HHH", data[cd + 28 : cd + 34])
        if bytes(data[cd + 46 : cd + 46 + n]).decode("utf-8", "replace") == name:
            data[cd + 8] |= 0x1
        cd = data.find(b"PK\x01\x02", cd + 46 + n + e + c)
    archive.write_bytes(bytes(data))


# ---- PNG surgery ------------------------------------------------------------------------------------

def chunks(png: bytes) -> list[list]:
    out, pos = [], 8
    while pos + 8 <= len(png):
        (n,) = struct.unpack(">I", png[pos : pos + 4])
        out.append([png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + n]])
        pos += 12 + n
    return out


def build(chs, bad_crc=()) -> bytes:
    out = b"\x89PNG\r\n\x1a\n"
    for i, (t, d) in enumerate(chs):
        crc = zlib.crc32(t + d) ^ (1 if i in bad_crc else 0)
        out += struct.pack(">I", len(d)) + t + d + struct.pack(">I", crc)
    return out


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _cv(data: bytes):
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE) if data else None


# =====================================================================================================
# 1. JSON prediction files
# =====================================================================================================

def test_json_cap_is_32_mib_and_checked_before_reading(tmp_path, monkeypatch):
    assert MAX_JSON_BYTES == 32 * 1024 * 1024
    with open(tmp_path / CLS_FILE, "wb") as fh:  # a sparse 40 MiB file: stat says 40 MiB, nothing written
        fh.truncate(40 << 20)
    opened: list[str] = []
    real_open = open

    def spy(file, *a, **k):
        opened.append(str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(predfolder, "open", spy, raising=False)
    t = time.perf_counter()
    with pytest.raises(UnsafeInputError, match=r"exceeds the cap of 33,554,432 bytes \(32 MiB\)"):
        open_predictions(tmp_path).read_json(CLS)
    assert not opened and time.perf_counter() - t < 1.0  # refused on the file's size alone
    # a zip member: refused on its header's file_size, never inflated
    big = ("[" + ",".join(["123456789"] * 2000) + "]").encode()
    archive = tmp_path / "p.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(CLS_FILE, big)
    monkeypatch.setattr(predfolder, "MAX_JSON_BYTES", 1000)
    calls: list = []
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, *a, **k: calls.append(a) or (_ for _ in ()).throw(AssertionError))
    with pytest.raises(UnsafeInputError, match=f"{len(big):,} bytes exceeds the cap of 1,000 bytes"):
        open_predictions(archive).read_json(CLS)
    assert not calls


def _set(pred: Path, name: str, mutate) -> list:
    entries = json.loads((pred / name).read_text())
    mutate(entries)
    (pred / name).write_text(json.dumps(entries))  # NaN/Infinity literals and huge integers as json writes them
    return entries


def test_json_huge_integers_are_clean_errors(small, pred):
    path, root, _ = small

    def cls(e):
        e[0]["predicted_probs"] = [10**400, 0, 0]  # beyond the float range: float() overflows
        e[1]["predicted_class"] = 10**400

    _set(pred, CLS_FILE, cls)
    _set(pred, DET_FILE, lambda e: e[0].update(score=-(10**400)))
    _set(pred, REG_FILE, lambda e: e[0]["predicted_points_pixels"].__setitem__(0, 10**400))
    report, bad, off = assert_agree(pred, small)
    assert _errors(report, CLS_FILE, "expected finite numbers") and _errors(report, CLS_FILE, "an integer of 401 digits")
    assert _errors(report, DET_FILE, "score: expected a finite number")
    assert _errors(report, REG_FILE, "predicted_points_pixels: expected finite numbers")
    assert len(bad) == 4 and all(len(r) < 300 for r in bad.values())  # messages stay short
    assert all(len(p.message) < 300 for p in report.problems)
    # thousands of digits: json.load itself refuses the file (Python's int-string limit)
    (pred / REG_FILE).write_text('[{"task_id": "IUGC", "image_path": "x", "v": ' + "7" * 5000 + "}]")
    assert platform_json(pred, REG_FILE) is UNREADABLE
    report, bad, off = assert_agree(pred, small)
    (p,) = _errors(report, REG_FILE)
    assert "more than 4,300 digits" in p.message and "none of its entries could be checked" in p.message
    assert all("4,300 digits" in r for k, r in bad.items() if k[0] == "IUGC")
    assert off["regression"] == {}  # official: unreadable, as for the published scorer


def test_json_nested_thousands_deep_is_unreadable(small, pred):
    deep = "[" * 5000 + "]" * 5000
    (pred / DET_FILE).write_text(deep)
    assert platform_json(pred, DET_FILE) is UNREADABLE  # json.load: RecursionError
    report, bad, off = assert_agree(pred, small)
    (p,) = report.errors
    assert p.file == DET_FILE and "nested 5000 levels deep" in p.message
    assert {k[0] for k in bad} == {"thyroid_nodule_det"} and all("nested 5000 levels deep" in r for r in bad.values())
    assert off["detection"] == {}
    # nested deep inside an entry: the same, one clear message
    entries = json.loads((small[2] / DET_FILE).read_text())
    text = json.dumps(entries)[:-1] + ', {"x": ' + "[" * 3000 + "]" * 3000 + "}]"
    (pred / DET_FILE).write_text(text)
    report, bad, off = assert_agree(pred, small)
    assert len(report.errors) == 1 and "nested 3002 levels deep" in report.errors[0].message


def test_json_with_a_bom_is_an_error(small, pred):
    data = (small[2] / CLS_FILE).read_bytes()
    (pred / CLS_FILE).write_bytes(b"\xef\xbb\xbf" + data)
    with pytest.raises(json.JSONDecodeError, match="Unexpected UTF-8 BOM"):  # the published scorer's read
        with open(pred / CLS_FILE) as f:
            json.load(f)
    report, bad, off = assert_agree(pred, small)
    (p,) = report.errors
    assert p.file == CLS_FILE and "byte-order mark (BOM)" in p.message
    assert len(bad) == 3 and all("byte-order mark (BOM)" in r for r in bad.values())
    assert off["classification"] == {}


def test_json_repeated_key_is_a_warning_naming_it(small, pred):
    text = (small[2] / CLS_FILE).read_text()
    entries = json.loads(text)
    # entry 0: a bad value first, the good one last (json.load keeps the last); entry 1: the reverse
    e0 = entries[0]
    raw0 = '{"predicted_class": "bad", ' + json.dumps(e0)[1:]
    e1 = entries[1]
    raw1 = json.dumps(e1)[:-1] + ', "predicted_class": 99}'
    (pred / CLS_FILE).write_text("[" + ", ".join([raw0, raw1] + [json.dumps(e) for e in entries[2:]]) + "]")
    assert platform_json(pred, CLS_FILE)[0]["predicted_class"] == e0["predicted_class"]
    report, bad, off = assert_agree(pred, small)
    warns = [p for p in report.warnings if p.file == CLS_FILE]
    assert {p.where for p in warns} == {"entry 0", "entry 1"} and all("'predicted_class' appears more than once" in p.message for p in warns)
    assert list(bad) == [(e1["task_id"], e1["image_path"])] and "predicted_class 99 out of range" in bad[list(bad)[0]]


def test_regression_normalized_points_of_the_wrong_length_fail_check_and_strict(small, pred):
    """Found by the property test: valid pixels but ``predicted_points_normalized: []`` (here as the last of a
    repeated key) was an error for check and scored normally by strict."""
    entries = json.loads((small[2] / REG_FILE).read_text())
    e0 = entries[0]
    raw0 = json.dumps(e0)[:-1] + ', "predicted_points_normalized": []}'
    (pred / REG_FILE).write_text("[" + ", ".join([raw0] + [json.dumps(e) for e in entries[1:]]) + "]")
    report, bad, off = assert_agree(pred, small)
    assert list(bad) == [(e0["task_id"], e0["image_path"])]
    assert "predicted_points_normalized has 0 numbers" in bad[list(bad)[0]]


@pytest.mark.parametrize("value,expect", [(1.0, "got the number 1.0"), (True, "expected an integer, got True"),
                                          (float("nan"), "expected an integer"), (float("inf"), "expected an integer")])
def test_json_float_bool_nan_where_an_integer_goes(small, pred, value, expect):
    entries = _set(pred, CLS_FILE, lambda e: e[0].update(predicted_class=value))
    report, bad, off = assert_agree(pred, small)
    (p,) = report.errors
    assert p.where == "entry 0" and expect in p.message
    assert list(bad) == [(entries[0]["task_id"], entries[0]["image_path"])] and expect in list(bad.values())[0]


@pytest.mark.parametrize("field,value", [("bbox_pixels", [0, 0, True, 5]), ("bbox_normalized", [0, 0, float("nan"), 1]),
                                         ("score", True), ("score", float("-inf"))])
def test_json_booleans_and_nan_where_numbers_go(small, pred, field, value):
    _set(pred, DET_FILE, lambda e: e[1].update({field: value}))
    report, bad, off = assert_agree(pred, small)
    assert len(report.errors) == 1 and report.errors[0].where == "entry 1" and len(bad) == 1


# =====================================================================================================
# 2. zip uploads, proved against the platform's own reading
# =====================================================================================================

def test_zip_member_with_a_bad_crc(small, tmp_path):
    path, root, perfect = small
    s = _seg_rows(root)[0]
    archive = zip_folder(perfect, tmp_path / "p.zip")
    corrupt_member(archive, _rel(s))
    corrupt_member(archive, REG_FILE)
    with zipfile.ZipFile(archive) as zf, pytest.raises(zipfile.BadZipFile, match="Bad CRC-32"):
        zf.read(REG_FILE)
    exc = platform_extract(archive, tmp_path / "x")
    assert isinstance(exc, zipfile.BadZipFile)  # the platform's extraction stops at the first one
    report, bad, off = assert_agree(archive, small, {})
    assert _errors(report, _rel(s), "Bad CRC-32") and _errors(report, REG_FILE, "Bad CRC-32")
    assert bad[s.key].startswith("prediction mask unreadable") and "Bad CRC-32" in bad[s.key]
    assert {k[0] for k in bad} == {s.task_id, "IUGC"} and off["regression"] == {}


def test_zip_junk_member_with_a_bad_crc_is_an_error(small, tmp_path):
    archive = zip_folder(small[2], tmp_path / "p.zip", extra=[("notes.txt", b"hello world")])
    corrupt_member(archive, "notes.txt")
    assert isinstance(platform_extract(archive, tmp_path / "x"), zipfile.BadZipFile)
    report = check_predictions(archive, small[1], workers=1)
    (p,) = report.errors
    assert p.file == "notes.txt" and "the platform's unzip stops at it" in p.message


def test_zip_encrypted_member(small, tmp_path):
    path, root, perfect = small
    s = _seg_rows(root)[1]
    archive = zip_folder(perfect, tmp_path / "p.zip")
    encrypt_flag(archive, _rel(s))
    encrypt_flag(archive, CLS_FILE)
    exc = platform_extract(archive, tmp_path / "x")
    assert isinstance(exc, RuntimeError) and "encrypted" in str(exc)
    report, bad, off = assert_agree(archive, small, {})
    assert _errors(report, _rel(s), "encrypted") and _errors(report, CLS_FILE, "encrypted")
    assert "encrypted" in bad[s.key] and all("encrypted" in r for k, r in bad.items() if k[0] == "breast_3cls")


def test_zip_two_members_with_one_name(small, tmp_path):
    path, root, perfect = small
    s = _seg_rows(root)[0]
    good = (perfect / _rel(s)).read_bytes()
    cls = (perfect / CLS_FILE).read_bytes()
    broken_cls = json.dumps([{**e, "predicted_class": 0} for e in json.loads(cls)]).encode()
    zeros = encode_mask_png(np.zeros_like(np.asarray(Image.open(io.BytesIO(good)))))
    archive = zip_folder(perfect, tmp_path / "p.zip", extra=[(_rel(s), zeros), ("./" + CLS_FILE, broken_cls)])
    # the platform: both copies extracted to one path, the last one wins
    out = tmp_path / "x"
    assert platform_extract(archive, out) is None
    assert np.array_equal(platform_mask(out, _rel(s)), np.asarray(Image.open(io.BytesIO(zeros))))
    assert platform_json(out, CLS_FILE) == json.loads(broken_cls)
    report, bad, off = assert_agree(archive, small, {})
    for rel in (_rel(s), CLS_FILE):
        (p,) = _errors(report, rel)
        assert "2 members of the archive extract to this path" in p.message
    assert "extract to this path" in bad[s.key] and all("extract to this path" in r for k, r in bad.items() if k[0] == "breast_3cls")
    # official mode reads what the platform extracted, exactly
    reference = pytest.importorskip("reference_scorer", reason="tests/reference_scorer.py")
    reference.assert_results_close(off, reference.reference_evaluate(str(out), str(path)), tol=1e-9)


def test_zip_names_with_backslashes(small, tmp_path):
    path, root, perfect = small
    rows = [s for s in _seg_rows(root) if s.task_id == "fetal_head"]
    s = rows[0]
    win = _rel(s).replace("/", "\\")
    archive = zip_folder(perfect, tmp_path / "p.zip", rename={_rel(s): win})
    out = tmp_path / "x"
    assert platform_extract(archive, out) is None
    assert (out / win).is_file() and platform_mask(out, _rel(s)) is None  # a file literally named 'a\b.png'
    report, bad, off = assert_agree(archive, small, {})
    (p,) = _errors(report, _rel(s))
    assert "missing mask" in p.message and "backslash is no folder separator" in p.message
    assert bad == {s.key: "prediction mask missing"}
    reference = pytest.importorskip("reference_scorer", reason="tests/reference_scorer.py")
    reference.assert_results_close(off, reference.reference_evaluate(str(out), str(path)), tol=1e-9)


def test_zip_slip_name_refused_while_the_official_view_reads_it_where_the_platform_extracts_it(small, tmp_path):
    path, root, perfect = small
    archive = zip_folder(perfect, tmp_path / "p.zip", rename={CLS_FILE: "../" + CLS_FILE})
    out = tmp_path / "x"
    assert platform_extract(archive, out) is None and platform_json(out, CLS_FILE)  # zipfile drops the '..'
    report, bad, off = assert_agree(archive, small, {})
    assert _errors(report, "../" + CLS_FILE, "zip-slip") and _errors(report, CLS_FILE, "file missing")
    assert {k[0] for k in bad} == {"breast_3cls"}
    assert off["classification"]["breast_3cls"]["num_samples"] == 3  # official: what the published scorer reads
    reference = pytest.importorskip("reference_scorer", reason="tests/reference_scorer.py")
    reference.assert_results_close(off, reference.reference_evaluate(str(out), str(path)), tol=1e-9)


# =====================================================================================================
# 3. masks: one reader; the stricter of Pillow and OpenCV decides
# =====================================================================================================

def _mask_cases():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 4, (23, 31)).astype(np.uint8)
    base = _png(Image.fromarray(arr, "L"))
    ch = chunks(base)
    ihdr, idat = ch[0], ch[1]
    raw = zlib.decompress(idat[1])
    text = [b"tEXt", b"k\x00v"]
    p = Image.fromarray(arr, "P")
    p.putpalette([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    pal = _png(p)
    p.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    colour = _png(p)
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb = _png(Image.fromarray(rng.integers(0, 256, (9, 11, 3)).astype(np.uint8)))
    taller = ihdr[1][:4] + struct.pack(">I", 40) + ihdr[1][8:]
    return {
        # (bytes, Pillow reads it, OpenCV reads it)
        "valid": (base, True, True),
        "truncated in IDAT": (base[: len(base) // 2], False, False),
        "no IEND chunk": (build(ch[:-1]), True, False),
        "IEND without its CRC": (base[:-4], True, False),
        "bad CRC in IDAT": (build(ch, bad_crc={1}), True, False),
        "bad CRC in IHDR": (build(ch, bad_crc={0}), False, False),
        "bad CRC in IEND": (build(ch, bad_crc={2}), True, True),
        "bad CRC in tEXt before IDAT": (build([ihdr, text, *ch[1:]], bad_crc={1}), False, True),
        "bad CRC in tEXt after IDAT": (build([ihdr, idat, text, ch[2]], bad_crc={2}), True, True),
        "unknown critical chunk": (build([ihdr, [b"XXXX", b"abc"], *ch[1:]]), True, False),
        "zlib stream ends a row early (IHDR taller)": (build([[b"IHDR", taller], idat, ch[2]]), True, False),
        "stream without its adler32, rest after tEXt": (build([ihdr, [b"IDAT", idat[1][:-1]], text, [b"IDAT", idat[1][-1:]], ch[2]]), True, False),
        "too much image data": (build([ihdr, [b"IDAT", zlib.compress(raw + bytes(100))], ch[2]]), True, True),
        "bad adler32": (build([ihdr, [b"IDAT", idat[1][:-4] + bytes(4)], ch[2]]), False, False),
        "bad adler32 in an IDAT chunk of its own": (build([ihdr, [b"IDAT", idat[1][:-4]], [b"IDAT", bytes(4)], ch[2]]), True, True),
        "adler32 in an IDAT after tEXt": (build([ihdr, [b"IDAT", idat[1][:-4]], text, [b"IDAT", idat[1][-4:]], ch[2]]), True, False),
        "colour palette, gAMA 1/2.2": (build([chunks(colour)[0], [b"gAMA", struct.pack(">I", 45455)], *chunks(colour)[1:]]), True, True),
        "colour palette, sRGB after PLTE (ignored)": (build([*chunks(colour)[:2], [b"sRGB", b"\x00"], *chunks(colour)[2:]]), True, True),
        "RGB, sRGB": (build([chunks(rgb)[0], [b"sRGB", b"\x00"], *chunks(rgb)[1:]]), True, True),
        "RGB, gAMA 1.0 (no gamma tables)": (build([chunks(rgb)[0], [b"gAMA", struct.pack(">I", 100000)], *chunks(rgb)[1:]]), True, True),
        "trailing junk after IEND": (base + b"junk", True, True),
        "1-bit": (_png(Image.fromarray(arr > 1)), True, True),
        "grey palette": (pal, True, True),
        "colour palette": (colour, True, True),
        "16-bit": (_png(Image.fromarray(arr.astype(np.uint16) * 300)), True, True),
        "EXIF orientation 6": (_png(Image.fromarray(arr, "L"), exif=exif), True, True),
        "garbage": (b"not an image", False, False),
    }


@pytest.mark.parametrize("name", list(_mask_cases()))
def test_mask_reader_matches_opencv(name):
    """``read_prediction_mask`` without cv2 says what ``cv2.imdecode(..., IMREAD_GRAYSCALE)`` does
    (and ``cv2.imread`` of the same file does the same), and whether Pillow reads the file."""
    data, pillow_ok, opencv_ok = _mask_cases()[name]
    ref = _cv(data)
    assert (ref is not None) == opencv_ok, "the case is what its name says"
    with tempfile.TemporaryDirectory() as d:
        Path(d, "m.png").write_bytes(data)
        by_path = cv2.imread(str(Path(d, "m.png")), cv2.IMREAD_GRAYSCALE)
    assert (by_path is None) == (ref is None) and (ref is None or np.array_equal(by_path, ref))
    m = read_prediction_mask(data)
    if ref is None:
        assert m.opencv is None and read_mask_like_opencv(data) is None and "OpenCV:" in m.error
    else:
        assert np.array_equal(m.opencv, ref) and np.array_equal(read_mask_like_opencv(data), ref)
    assert (m.array is not None) == pillow_ok
    assert (m.error is None) == (pillow_ok and opencv_ok)  # the stricter reader decides


def test_fuzzed_pngs_match_opencv():
    """300 seeded mutations of PNG masks (grey, palette, 1-bit, RGB, 16-bit; truncations, bit flips,
    CRCs, chunks dropped or added (gAMA, sRGB, unknown ones...), split IDAT runs, IHDR fields): the
    emulated read equals OpenCV's every time."""
    rng = np.random.default_rng(12345)
    mismatches, n = [], 0
    chunk_types = [b"tEXt", b"gAMA", b"gAMA", b"sRGB", b"pHYs", b"XXXX", b"xxXx", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"IHDR", b"eXIf"]
    while n < 300:
        a = rng.integers(0, 4, (int(rng.integers(1, 25)), int(rng.integers(1, 25)))).astype(np.uint8)
        pick = int(rng.integers(0, 4))
        if pick == 0:
            img = Image.fromarray(a, "L")
        elif pick == 1:
            img = Image.fromarray(a, "P")
            img.putpalette([int(v) for v in rng.integers(0, 256, 12)])
        elif pick == 2 and rng.random() < 0.5:
            img = Image.fromarray(rng.integers(0, 256, (*a.shape, 3)).astype(np.uint8))
        elif pick == 2:
            img = Image.fromarray(a > 1)
        else:
            img = Image.fromarray(a.astype(np.uint16) * 300)
        ch = chunks(_png(img))
        op = int(rng.integers(0, 7))
        if op == 0:
            data = build(ch)[: int(rng.integers(8, len(build(ch))))]
        elif op == 1:
            b = bytearray(build(ch))
            b[int(rng.integers(8, len(b)))] ^= 1 << int(rng.integers(0, 8))
            data = bytes(b)
        elif op == 2:
            data = build(ch, bad_crc={int(rng.integers(0, len(ch)))})
        elif op == 3:
            del ch[int(rng.integers(0, len(ch)))]
            data = build(ch)
        elif op == 4:
            t = chunk_types[int(rng.integers(0, len(chunk_types)))]
            body = bytes(int(v) for v in rng.integers(0, 256, int(rng.integers(0, 9))))
            if t == b"gAMA" and rng.random() < 0.7:
                body = struct.pack(">I", int(rng.choice([45455, 70000, 220000, 100000, 96000])))
            ch.insert(int(rng.integers(1, len(ch) + 1)), [t, body])
            data = build(ch, bad_crc={int(rng.integers(0, len(ch)))} if rng.random() < 0.3 else ())
        elif op == 5:
            i = next(i for i, c in enumerate(ch) if c[0] == b"IDAT")
            d = ch[i][1]
            cut = int(rng.integers(0, len(d) + 1))
            mid = [b"tEXt" if rng.random() < 0.5 else b"IDAT", b"k\x00v"]
            ch[i : i + 1] = [[b"IDAT", d[:cut]], mid, [b"IDAT", d[cut:]]]
            data = build(ch)
        else:
            ihdr = bytearray(ch[0][1])
            ihdr[int(rng.integers(0, 13))] ^= 1 << int(rng.integers(0, 8))
            ch[0][1] = bytes(ihdr)
            data = build(ch)
        try:
            ours = read_prediction_mask(data)
            ref = _cv(data)
        except UnsafeInputError:
            continue  # over the pixel cap: refused before decoding (OpenCV would read it)
        except cv2.error:
            continue  # over OpenCV's own pixel limit
        n += 1
        same = (ref is None and ours.opencv is None) or (
            ref is not None and ours.opencv is not None and np.array_equal(ref, ours.opencv))
        if not same:
            mismatches.append((op, data))
    assert not mismatches, f"{len(mismatches)} of {n} differ (ops {[m[0] for m in mismatches]})"


MASK_PROBLEMS = {
    "truncated": (lambda w, h, a: encode_mask_png(a)[:-30], "cannot decode the mask"),
    "no IEND chunk": (lambda w, h, a: build(chunks(encode_mask_png(a))[:-1]), "before its IEND chunk"),
    "bad CRC in IDAT": (lambda w, h, a: build(chunks(encode_mask_png(a)), bad_crc={1}), "bad CRC in an IDAT chunk"),
    "Pillow-only failure": (lambda w, h, a: build([chunks(encode_mask_png(a))[0], [b"tEXt", b"k\x00v"], *chunks(encode_mask_png(a))[1:]],
                                                  bad_crc={1}), "Pillow:"),
    "1-bit": (lambda w, h, a: _png(Image.fromarray(a > 0)), "mode 1"),
    "colour palette": (lambda w, h, a: _palette(a, [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]), "palette PNG whose colours"),
    "16-bit": (lambda w, h, a: _png(Image.fromarray(a.astype(np.uint16))), "mode I;16"),
    "EXIF rotation": (lambda w, h, a: _png(Image.fromarray(a, "L"), exif=_exif(6)), "EXIF orientation 6"),
}


def _palette(a, pal):
    p = Image.fromarray(a, "P")
    p.putpalette(pal)
    return _png(p)


def _exif(v):
    e = Image.Exif()
    e[0x0112] = v
    return e


@pytest.mark.parametrize("name", list(MASK_PROBLEMS))
def test_mask_problems_same_in_check_and_strict(small, pred, name):
    """Check says error, strict scores the row the worst with the same reason (1-bit and palette
    masks included: strict used to score them), official reads what OpenCV reads."""
    path, root, _ = small
    s = next(s for s in _seg_rows(root) if s.task_id == "cardiac_multi")
    a = np.asarray(Image.open(pred / _rel(s)))
    make, expect = MASK_PROBLEMS[name]
    data = make(a.shape[1], a.shape[0], a)
    (pred / _rel(s)).write_bytes(data)
    report, bad, off = assert_agree(pred, small)
    (p,) = report.errors
    assert p.file == _rel(s) and expect in p.message
    assert list(bad) == [s.key] and expect in bad[s.key]
    assert p.message.endswith(bad[s.key])  # the same text: check prefixes the row
    assert off["segmentation"][s.task_id]["num_samples"] == 3 - (_cv(data) is None)


def test_palette_grey_identity_and_one_bit_as_the_official_scorer_sees_them(small, pred):
    path, root, _ = small
    s = next(s for s in _seg_rows(root) if s.task_id == "fetal_head")  # 2 classes: 0/1
    a = np.asarray(Image.open(pred / _rel(s)))
    (pred / _rel(s)).write_bytes(_png(Image.fromarray(a > 0)))
    assert set(np.unique(_cv((pred / _rel(s)).read_bytes()))) <= {0, 255}  # what the published scorer sees
    report, bad, off = assert_agree(pred, small)
    assert "mode 1" in bad[s.key] and off["segmentation"]["fetal_head"]["DSC"] < 1
    (pred / _rel(s)).write_bytes(_palette(a, [0, 0, 0, 1, 1, 1]))  # grey identity: fine for every reader
    report, bad, off = assert_agree(pred, small)
    assert report.ok and not bad and off["segmentation"]["fetal_head"]["DSC"] == 1.0


# =====================================================================================================
# 4. symlinked folders
# =====================================================================================================

@pytest.mark.parametrize("inside", [True, False])
def test_symlinked_folder_is_not_followed_by_check_nor_strict(small, pred, tmp_path, inside):
    path, root, _ = small
    rows = [s for s in _seg_rows(root) if s.task_id == "cardiac_multi"]
    folder = pred / os.path.dirname(_rel(rows[0]))
    target = (pred / "kept") if inside else (tmp_path / "elsewhere")
    shutil.move(folder, target)
    os.symlink(target, folder)
    report, bad, off = assert_agree(pred, small)
    linked = os.path.dirname(_rel(rows[0]))
    assert _errors(report, linked, "symbolic link to a folder: not followed")
    assert set(bad) == {s.key for s in rows} and all("not followed" in r for r in bad.values())
    assert off["segmentation"]["cardiac_multi"]["num_samples"] == 0


# =====================================================================================================
# the property: no exception escapes, and check's error rows are strict's rows with a reason
# =====================================================================================================

HOSTILE_VALUES = [1.0, True, False, None, float("nan"), float("inf"), -float("inf"), 10**400, -(10**400), "1", "",
                  [], {}, [1, "x"], [float("nan")], [10**400, 0, 0, 0], [[1, 2]], "\ud800", 99, -1, 0.5]
FIELDS = {CLS: ["predicted_class", "predicted_probs", "task_id", "image_path"],
          DET: ["bbox_pixels", "bbox_normalized", "score", "task_id", "image_path"],
          REG: ["predicted_points_pixels", "predicted_points_normalized", "task_id", "image_path"]}
JSON_FILE_FAULTS = ["bom", "latin1", "truncate", "deep", "deep_in_entry", "digits", "not_a_list", "delete", "folder"]
MASK_FAULTS = ["truncate", "no_iend", "bad_crc", "flip", "one_bit", "palette_colour", "palette_grey", "sixteen", "rgb",
               "jpeg", "size", "value", "garbage", "empty", "exif", "critical", "folder", "delete"]
ZIP_FAULTS = ["bad_crc", "encrypt", "duplicate", "backslash", "junk_crc"]


def _dumps_pairs(pairs) -> str:
    return "{" + ", ".join(json.dumps(k) + ": " + json.dumps(v) for k, v in pairs) + "}"


def _json_fault(draw, kind, text: str) -> bytes:
    entries = json.loads(text)
    fault = draw(st.sampled_from(JSON_FILE_FAULTS + ["entry"] * 6 + ["repeat_key", "dup_entry", "drop_entry"]))
    data = text.encode()
    if fault == "bom":
        return b"\xef\xbb\xbf" + data
    if fault == "latin1":
        return data.replace(b'"', b'"\xe9', 1)
    if fault == "truncate":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if fault == "deep":
        d = draw(st.sampled_from([3, 600, 2000]))
        return ("[" * d + "]" * d).encode()
    if fault == "deep_in_entry":
        d = draw(st.sampled_from([5, 513, 1500]))
        return (text[:-1] + ', {"x": ' + "[" * d + "]" * d + "}]").encode()
    if fault == "digits":
        return (text[:-1] + ', {"x": ' + "9" * draw(st.sampled_from([400, 4301, 6000])) + "}]").encode()
    if fault == "not_a_list":
        return json.dumps({"entries": entries}).encode()
    if fault in ("delete", "folder"):
        return fault.encode()  # handled by the caller
    i = draw(st.integers(0, len(entries) - 1))
    if fault == "dup_entry":
        entries.append(dict(entries[i]))
    elif fault == "drop_entry":
        del entries[i]
    elif fault == "repeat_key":
        field = draw(st.sampled_from(FIELDS[kind]))
        value = draw(st.sampled_from(HOSTILE_VALUES))
        pairs = list(entries[i].items())
        pairs = [(field, value), *pairs] if draw(st.booleans()) else [*pairs, (field, value)]
        return ("[" + ", ".join(_dumps_pairs(pairs) if j == i else json.dumps(e) for j, e in enumerate(entries)) + "]").encode()
    else:
        field = draw(st.sampled_from(FIELDS[kind]))
        if draw(st.integers(0, 4)) == 0:
            entries[i].pop(field, None)
        else:
            entries[i][field] = draw(st.sampled_from(HOSTILE_VALUES))
    return json.dumps(entries).encode()


def _mask_fault(draw, data: bytes, num_classes: int) -> bytes:
    a = np.asarray(Image.open(io.BytesIO(data)))
    h, w = a.shape
    f = draw(st.sampled_from(MASK_FAULTS))
    ch = chunks(data)
    if f == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if f == "no_iend":
        return build(ch[:-1])
    if f == "bad_crc":
        return build(ch, bad_crc={draw(st.integers(0, len(ch) - 1))})
    if f == "flip":
        b = bytearray(data)
        b[draw(st.integers(8, len(b) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(b)
    if f == "one_bit":
        return _png(Image.fromarray(a > 0))
    if f == "palette_colour":
        return _palette(a, [0, 0, 0, 200, 10, 10, 10, 200, 10, 10, 10, 200, 90, 90, 0])
    if f == "palette_grey":
        return _palette(a, [v for i in range(num_classes) for v in (i, i, i)])
    if f == "sixteen":
        return _png(Image.fromarray(a.astype(np.uint16) * draw(st.sampled_from([1, 256]))))
    if f == "rgb":
        return _png(Image.fromarray(np.repeat(a[..., None], 3, axis=2)))
    if f == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG")
        return buf.getvalue()
    if f == "size":
        return encode_mask_png(np.zeros((h + 1, w), np.uint8))
    if f == "value":
        b = a.copy()
        b[0, 0] = num_classes
        return encode_mask_png(b)
    if f == "garbage":
        return b"\x89PNG\r\n\x1a\n garbage"
    if f == "empty":
        return b""
    if f == "exif":
        return _png(Image.fromarray(a, "L"), exif=_exif(draw(st.integers(1, 8))))
    if f == "critical":
        return build([ch[0], [b"ZZZZ", b""], *ch[1:]])
    return f.encode()  # "folder" / "delete": handled by the caller


class _Stats:
    examples = 0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_property_check_and_strict_agree_and_nothing_escapes(small_property, data):
    path, root, perfect = small_property
    _Stats.examples += 1
    with tempfile.TemporaryDirectory() as tmp:
        pred = Path(tmp) / "pred"
        shutil.copytree(perfect, pred)
        written: dict[str, bytes] = {}
        for kind, name in PREDICTION_FILES.items():
            if data.draw(st.integers(0, 2), label=f"fault {name}?") == 0:
                new = _json_fault(data.draw, kind, (pred / name).read_text())
                if new in (b"delete", b"folder"):
                    (pred / name).unlink()
                    if new == b"folder":
                        (pred / name).mkdir()
                    continue
                (pred / name).write_bytes(new)
            written[name] = (pred / name).read_bytes()
        for s in _seg_rows(root):
            if data.draw(st.integers(0, 3), label="fault mask?") == 0:
                target = pred / _rel(s)
                new = _mask_fault(data.draw, target.read_bytes(), s.task.num_classes)
                target.unlink()
                if new == b"folder":
                    target.mkdir()
                elif new != b"delete":
                    target.write_bytes(new)
        as_zip = data.draw(st.booleans(), label="zip")
        if not as_zip and data.draw(st.integers(0, 5)) == 0:
            folder = pred / os.path.dirname(_rel(_seg_rows(root)[0]))
            shutil.move(folder, pred / "moved")
            os.symlink(pred / "moved", folder)
        target: Path = pred
        if as_zip:
            members = sorted(f.relative_to(pred).as_posix() for f in pred.rglob("*") if f.is_file())
            extra, rename = [], {}
            faults = data.draw(st.lists(st.sampled_from(ZIP_FAULTS), max_size=2), label="zip faults")
            picks = [data.draw(st.sampled_from(members)) for _ in faults] if members else []
            for fault, m in zip(faults, picks, strict=False):
                if fault == "duplicate":
                    extra.append((m, data.draw(st.sampled_from([b"[]", b"junk", (pred / m).read_bytes()]))))
                elif fault == "backslash" and "/" in m:
                    rename[m] = m.replace("/", "\\")
                elif fault == "junk_crc":
                    extra.append(("junk.txt", b"some junk"))
            target = zip_folder(pred, Path(tmp) / "p.zip", extra=extra, rename=rename)
            for fault, m in zip(faults, picks, strict=False):
                if fault == "bad_crc" and (pred / m).stat().st_size:
                    corrupt_member(target, rename.get(m, m), index=0)
                elif fault == "encrypt":
                    encrypt_flag(target, rename.get(m, m))
                elif fault == "junk_crc":
                    corrupt_member(target, "junk.txt")
            # what the platform would read: the last copy of a duplicate
            with zipfile.ZipFile(target) as zf:
                for name in list(written):
                    infos = [i for i in zf.infolist() if i.filename == name]
                    if infos:
                        try:
                            written[name] = zf.read(infos[-1])
                        except Exception:  # noqa: BLE001 - unreadable member
                            written[name] = b""
        report, rows, bad, off = verdicts(target, small_property, written)  # nothing may raise
        assert rows == set(bad), {"check only": sorted(rows - set(bad)), "strict only": sorted(set(bad) - rows),
                                  "problems": [str(p) for p in report.problems], "reasons": bad}
        assert set(off) == {"segmentation", "classification", "detection", "regression"}


@pytest.fixture(scope="module")
def small_property(small):
    return small


def test_property_ran_enough_examples():
    """Runs after the property (file order): report how many examples it ran."""
    print(f"hypothesis property: {_Stats.examples} examples")
    assert _Stats.examples >= 50 or _Stats.examples == 0
