"""``fmuia check`` / ``fmuia pack``: exit codes, --json report, and the packed archive's exact contents."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fmuia.check import check_predictions
from fmuia.cli import cli
from fmuia.dataset import load_root, prediction_mask_relpath
from fmuia.dataset.masks import encode_mask_png
from fmuia.errors import FmuiaError
from fmuia.pack import PackRefusedError, pack_predictions
from fmuia.predfolder import DirPredictionFolder
from fmuia.tasks import PREDICTION_FILES, TaskKind


def _break_class(pred: Path) -> dict:
    path = pred / PREDICTION_FILES[TaskKind.CLASSIFICATION]
    entries = json.loads(path.read_text())
    entries[0]["predicted_class"] = 99
    path.write_text(json.dumps(entries))
    return entries[0]


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


# ---- check -----------------------------------------------------------------------------------------

def test_check_exit_0_on_a_valid_folder(synth_root, perfect):
    r = run("check", perfect, "--data", synth_root)
    assert r.exit_code == 0, r.output
    assert "TOTAL" in r.output and "fetal_femur" in r.output and "OK:" in r.output


def test_check_exit_0_with_warnings_only(synth_root, pred):
    (pred / "README.txt").write_text("notes")
    r = run("check", pred, "--data", synth_root)
    assert r.exit_code == 0 and "README.txt: warning: unexpected file" in r.output


def test_check_exit_1_prints_one_line_per_problem_then_the_table(synth_root, pred):
    broken = _break_class(pred)
    r = run("check", pred, "--data", synth_root)
    assert r.exit_code == 1
    lines = r.output.splitlines()
    assert lines[0].startswith("classification_predictions.json:entry 0: ")
    assert "predicted_class 99 out of range" in lines[0] and repr(broken["image_path"]) in lines[0]
    assert "TOTAL" in r.output and lines[-1].startswith("INVALID: 1 error(s)")
    table_row = next(line for line in lines if line.startswith(broken["task_id"] + " "))
    assert table_row.split()[-2:] == ["1", "0"]  # errors, warnings


def test_check_json_report(synth_root, pred, tmp_path, root):
    broken = _break_class(pred)
    out = tmp_path / "reports" / "check.json"
    r = run("check", pred, "--data", synth_root, "--json", out)
    assert r.exit_code == 1 and out.is_file()
    rep = json.loads(out.read_text())
    assert rep["ok"] is False and rep["n_errors"] == 1 and rep["n_warnings"] == 0
    assert set(rep["tasks"]) == {s.task_id for s in root.samples}
    t = rep["tasks"][broken["task_id"]]
    n = sum(s.task_id == broken["task_id"] for s in root.samples)
    assert t == {"kind": "classification", "expected": n, "found": n, "valid": n - 1, "errors": 1, "warnings": 0}
    (p,) = rep["problems"]
    assert p["file"] == "classification_predictions.json" and p["where"] == "entry 0"
    assert p["severity"] == "error" and p["task_id"] == broken["task_id"] and "out of range" in p["message"]


def test_check_max_problems_and_quiet(synth_root, pred):
    one_per_task = {s.task_id: s for s in load_root(synth_root).of_kind(TaskKind.SEGMENTATION)}
    for s in list(one_per_task.values())[:5]:
        (pred / prediction_mask_relpath(s.mask_path)).unlink()
    r = run("check", pred, "--data", synth_root, "--max-problems", "2")
    assert r.exit_code == 1 and "... and 3 more problem(s)" in r.output
    assert sum("missing mask" in line for line in r.output.splitlines()) == 2
    r = run("check", pred, "--data", synth_root, "--quiet")
    assert r.exit_code == 1 and r.output.strip().splitlines() == ["INVALID: 5 error(s), 0 warning(s) in " + str(pred) + "."]


def test_check_zip_input(synth_root, perfect, tmp_path):
    out = tmp_path / "p.zip"
    pack_predictions(perfect, synth_root, out)
    assert run("check", out, "--data", synth_root).exit_code == 0


@pytest.mark.parametrize(
    "case",
    ["no_pred", "no_data", "data_not_a_root", "pred_not_zip", "missing_data_option", "bad_option"],
)
def test_check_usage_errors_exit_2(synth_root, perfect, tmp_path, case):
    (tmp_path / "notes.txt").write_text("not a zip")
    (tmp_path / "empty").mkdir()
    args = {
        "no_pred": ["check", tmp_path / "nope", "--data", synth_root],
        "no_data": ["check", perfect, "--data", tmp_path / "nowhere"],
        "data_not_a_root": ["check", perfect, "--data", tmp_path / "empty"],
        "pred_not_zip": ["check", tmp_path / "notes.txt", "--data", synth_root],
        "missing_data_option": ["check", perfect],
        "bad_option": ["check", perfect, "--data", synth_root, "--max-problems", "many"],
    }[case]
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    if case in ("data_not_a_root", "pred_not_zip"):
        assert "error:" in r.output and ("not a data root" in r.output or "expected a prediction folder or a .zip" in r.output)


# ---- pack ------------------------------------------------------------------------------------------

def _expected_members(pred: Path, root) -> list[str]:
    jsons = [n for n in PREDICTION_FILES.values() if (pred / n).is_file()]
    masks = sorted(prediction_mask_relpath(s.mask_path) for s in root.of_kind(TaskKind.SEGMENTATION))
    return jsons + masks


def _add_junk(pred: Path) -> None:
    (pred / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (pred / "__MACOSX").mkdir()
    (pred / "__MACOSX" / "._classification_predictions.json").write_bytes(b"junk")
    (pred / "notes.txt").write_text("my notes")
    (pred / "Segmentation" / ".hidden.png").write_bytes(encode_mask_png(np.zeros((3, 3), np.uint8)))
    (pred / "Segmentation" / "Two" / "extra_mask.png").write_bytes(encode_mask_png(np.zeros((3, 3), np.uint8)))


def test_pack_writes_exactly_the_official_files(root, pred, tmp_path):
    _add_junk(pred)
    out = tmp_path / "out" / "predictions.zip"
    report = pack_predictions(pred, root, out)
    assert report.ok and len(report.warnings) == 5  # the junk is reported, then left out
    with zipfile.ZipFile(out) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names == _expected_members(pred, root)  # JSON files first, then sorted masks; nothing else
        assert not any(i.is_dir() for i in infos)
        assert all(not n.startswith(("/", "__MACOSX")) and "/." not in n and not n.startswith(".") for n in names)
        for i in infos:
            assert zf.read(i) == (pred / i.filename).read_bytes()
            assert i.compress_type == (zipfile.ZIP_STORED if i.filename.endswith(".png") else zipfile.ZIP_DEFLATED)
    assert [p.name for p in out.parent.iterdir()] == ["predictions.zip"]  # no temp file left behind
    assert check_predictions(out, root).problems == []


def test_pack_is_deterministic(root, perfect, tmp_path):
    a, b = tmp_path / "a.zip", tmp_path / "b.zip"
    pack_predictions(perfect, root, a)
    pack_predictions(perfect, root, b)
    assert a.read_bytes() == b.read_bytes()


def test_pack_refuses_an_invalid_folder_unless_forced(root, pred, tmp_path):
    s = root.of_kind(TaskKind.SEGMENTATION)[0]
    (pred / prediction_mask_relpath(s.mask_path)).unlink()
    out = tmp_path / "predictions.zip"
    with pytest.raises(PackRefusedError) as exc:
        pack_predictions(pred, root, out)
    assert not out.exists() and not list(tmp_path.glob(".predictions.zip*"))
    assert not exc.value.report.ok and "missing mask" in exc.value.report.errors[0].message
    report = pack_predictions(pred, root, out, force=True)
    assert not report.ok and out.is_file()
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
    assert prediction_mask_relpath(s.mask_path) not in names
    assert len(names) == len(_expected_members(pred, root)) - 1


def test_pack_failure_midway_leaves_nothing(root, perfect, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = DirPredictionFolder.read_bytes

    def flaky(self, rel, cap):
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError("disk on fire")
        return real(self, rel, cap)

    out = tmp_path / "predictions.zip"
    out.write_bytes(b"previous")
    good = check_predictions(perfect, root)
    monkeypatch.setattr("fmuia.pack.check_predictions", lambda *a, **k: good)
    monkeypatch.setattr(DirPredictionFolder, "read_bytes", flaky)
    with pytest.raises(FmuiaError, match="disk on fire"):
        pack_predictions(perfect, root, out)
    assert out.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["predictions.zip"]


def test_pack_cli(synth_root, pred, tmp_path):
    out = tmp_path / "predictions.zip"
    r = run("pack", pred, "--data", synth_root, "-o", out)
    assert r.exit_code == 0 and out.is_file() and f"packed {out}" in r.output
    out.unlink()
    _break_class(pred)
    r = CliRunner().invoke(cli, ["pack", str(pred), "--data", str(synth_root), "-o", str(out)])
    assert r.exit_code == 1 and not out.exists()
    assert "out of range" in r.output and "not packed" in r.output
    r = run("pack", pred, "--data", synth_root, "-o", out, "--force")
    assert r.exit_code == 0 and out.is_file() and "despite errors" in r.output
    r = CliRunner().invoke(cli, ["pack", str(pred), "--data", str(tmp_path / "nowhere"), "-o", str(out)])
    assert r.exit_code == 2


def test_console_entry_point_exit_codes(synth_root, perfect, pred, tmp_path):
    """The real entry point (not CliRunner) propagates 0 / 1 / 2."""
    _break_class(pred)

    def rc(*args) -> int:
        return subprocess.run([sys.executable, "-m", "fmuia", *map(str, args)], capture_output=True, text=True).returncode

    assert rc("check", perfect, "--data", synth_root, "-q") == 0
    assert rc("check", pred, "--data", synth_root, "-q") == 1
    assert rc("check", perfect, "--data", perfect) == 2  # exists, but is not a data root
    assert rc("pack", pred, "--data", synth_root, "-o", tmp_path / "p.zip", "-q") == 1
