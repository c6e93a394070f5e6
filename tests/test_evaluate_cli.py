"""``fmuia evaluate`` and ``python -m evaluation``: files written, summary printed, user errors as
one line; importing the scorer stays free of torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from evaluate_helpers import make_predictions  # noqa: E402

from fmuia.cli import cli  # noqa: E402


def test_cli_evaluate_strict_and_official(synth_split, tmp_path):
    labels = synth_split / "labels"
    pred = make_predictions(labels, tmp_path / "pred", "perfect")
    runner = CliRunner()
    out = tmp_path / "res" / "results.json"
    r = runner.invoke(cli, ["evaluate", str(pred), "--data", str(labels), "--out", str(out), "--bootstrap", "20"])
    assert r.exit_code == 0, r.output
    assert "[aggregates]" in r.output and "seg_DSC" in r.output
    res = json.loads(out.read_text())
    assert res["aggregates"]["seg_DSC"] == 1.0 and res["aggregates"]["det_IoU"] == 1.0
    assert (tmp_path / "res" / "results_per_case.csv").exists()
    assert (tmp_path / "res" / "results_summary.txt").exists()
    off = tmp_path / "off.json"
    r = runner.invoke(cli, ["evaluate", str(pred), "--data", str(labels), "--out", str(off), "--mode", "official", "-q"])
    assert r.exit_code == 0, r.output
    assert set(json.loads(off.read_text())) == {"segmentation", "classification", "detection", "regression"}


def test_cli_evaluate_report(synth_split, tmp_path):
    from test_visualize_pictures import assert_picture, assert_self_contained

    labels = synth_split / "labels"
    pred = make_predictions(labels, tmp_path / "pred", "noisy", seed=4)
    out, report = tmp_path / "r.json", tmp_path / "report"
    r = CliRunner().invoke(cli, ["evaluate", str(pred), "--data", str(labels), "--out", str(out),
                                 "--bootstrap", "20", "--report", str(report), "-q"])
    assert r.exit_code == 0, r.output
    index = report / "index.html"
    assert f"report: {index}" in r.output
    pictures = assert_self_contained(index)
    kinds = ("segmentation", "classification", "detection", "regression")
    assert {p.name for p in pictures} == ({"aggregates.png"} | {f"metrics_{k}.png" for k in kinds}
                                         | {f"per_case_{k}.png" for k in kinds})
    for p in pictures:
        assert_picture(p)
    assert "seg_DSC" in index.read_text(encoding="utf-8")


def test_python_m_evaluation(synth_split, tmp_path):
    labels = synth_split / "labels"
    pred = make_predictions(labels, tmp_path / "pred", "partial")
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, "-m", "evaluation", str(pred), "--data", str(labels), "--out", str(out),
                        "--mode", "official", "--workers", "2"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads(out.read_text())["detection"] == {}
    h = subprocess.run([sys.executable, "-m", "evaluation", "--help"], capture_output=True, text=True, timeout=60)
    assert h.returncode == 0 and "--mode" in h.stdout and "Examples" in h.stdout


def test_bad_labels_root_is_one_line_not_a_traceback(synth_split, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    p = subprocess.run([sys.executable, "-m", "evaluation", str(pred), "--data", str(synth_split / "test"),
                        "--out", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and "error:" in p.stderr and "labelled root" in p.stderr


def test_import_is_torch_free():
    code = "import sys, evaluation.scoring, evaluation.cli; assert 'torch' not in sys.modules, 'torch imported'"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
