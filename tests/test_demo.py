"""``fmuia demo`` end to end, with a very small configuration (hidden options)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from evaluation.aggregates import AGGREGATES
from fmuia.cli import cli, main
from fmuia.dataset import load_root
from fmuia.demo import DemoConfig, _train_within, real_baseline_commands, steps_for


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    main(["demo", "--out", str(out), "--per-task", "4", "--steps", "2", "--epochs", "2",
          "--backbone", "test_efficientnet", "--img-size", "64"])
    text = capsys.readouterr().out

    for sub in ("data/train/csv_files", "data/test/csv_files", "data/labels/csv_files", "run/best.pt", "run/last.pt",
                "predictions", "results.json"):
        assert (out / sub).exists(), sub
    results = json.loads((out / "results.json").read_text())
    assert set(results["aggregates"]) == set(AGGREGATES)
    assert all(v is None or isinstance(v, (int, float)) for v in results["aggregates"].values())
    # every test row was predicted and every task kind was scored
    test = load_root(out / "data" / "test")
    assert {"segmentation", "classification", "detection", "regression"} <= set(results)
    n_pred = sum(len(v) for k, v in results.items() if k in ("classification", "detection", "regression", "segmentation"))
    assert n_pred == len(test.tasks)
    assert "is a valid submission" in text
    for key in AGGREGATES:
        assert key in text
    for line in real_baseline_commands():
        assert line in text
    assert str(out / "results.json") in text
    report = out / "report" / "index.html"
    assert report.is_file() and str(report) in text
    assert list((out / "report").glob("*.png"))


def test_training_resumes_epoch_by_epoch_and_stops_at_the_budget(tmp_path):
    calls = []

    def fake_train(data, run, **options):
        calls.append(options)
        return run / "best.pt"

    opts = {"backbone": "b", "lr": 0.1, "workers": 1, "progress": False}
    assert _train_within(fake_train, tmp_path, tmp_path / "run", opts, 3, 1e9, lambda _: None) == tmp_path / "run" / "best.pt"
    assert [c.get("resume") for c in calls] == [None, tmp_path / "run", tmp_path / "run"]
    assert all(c["stop_after_epochs"] == 1 for c in calls)
    assert calls[0]["backbone"] == "b" and "backbone" not in calls[1]  # resumed runs pass only mutable options
    calls.clear()
    notes = []
    _train_within(fake_train, tmp_path, tmp_path / "run", opts, 3, 0.0, notes.append)
    assert len(calls) == 1 and "stopping after 1/3 epochs" in notes[0]


def test_steps_follow_the_time_budget():
    cfg = DemoConfig()
    assert steps_for(6.0, cfg) == pytest.approx(2 * steps_for(3.0, cfg), abs=1)
    assert steps_for(0.01, cfg) == 5  # never zero
    fixed = DemoConfig(steps_per_epoch=7)
    assert steps_for(100.0, fixed) == 7


def test_demo_help_teaches():
    res = CliRunner().invoke(cli, ["demo", "--help"])
    assert res.exit_code == 0
    assert "fmuia demo --out" in res.output and "--minutes" in res.output
    assert "--steps" not in res.output  # test-only knobs stay hidden
