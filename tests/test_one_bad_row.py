"""One bad entry never sinks a submission: strict scoring and the Codabench program score every
other row as usual."""

from __future__ import annotations

import json
import shutil

import pytest

from evaluation.codabench import score_submission
from evaluation.scoring import evaluate, strict
from fmuia.tasks import PREDICTION_FILES, TaskKind


def _det_file(pred):
    return pred / PREDICTION_FILES[TaskKind.DETECTION]


def test_huge_integer_in_one_box_costs_only_its_row(synth_root, pred):
    entries = json.loads(_det_file(pred).read_text())
    victim = entries[0]
    victim["bbox_pixels"][2] = 10**400  # beyond the float range
    _det_file(pred).write_text(json.dumps(entries))
    res = evaluate(pred, synth_root, mode="strict", n_bootstrap=0)
    rows = [r for r in res["per_case"] if r["kind"] == "detection"]
    bad = [r for r in rows if r["reason"]]
    assert [(r["task_id"], r["image_path"]) for r in bad] == [(victim["task_id"], victim["image_path"])]
    assert bad[0]["IoU"] == 0.0 and all(r["IoU"] == pytest.approx(1.0) for r in rows if not r["reason"])
    assert res["aggregates"]["seg_DSC"] == pytest.approx(1.0)


def test_codabench_program_scores_the_rest(synth_root, pred, tmp_path):
    entries = json.loads(_det_file(pred).read_text())
    entries[0]["bbox_pixels"][2] = 10**400
    _det_file(pred).write_text(json.dumps(entries))
    inp = tmp_path / "input"
    shutil.copytree(synth_root, inp / "ref")
    shutil.copytree(pred, inp / "res")
    scores = score_submission(inp, tmp_path / "out", n_bootstrap=0, workers=1)
    assert scores["seg_DSC"] == pytest.approx(1.0) and scores["cls_Accuracy"] == pytest.approx(1.0)
    assert 0.5 < scores["det_IoU"] < 1.0


def test_a_row_whose_scoring_raises_scores_worst_with_a_note(synth_root, pred, monkeypatch):
    real = strict._ROWS[TaskKind.REGRESSION]
    calls = []

    def flaky(s, rec, problem):
        calls.append(s)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(s, rec, problem)

    monkeypatch.setitem(strict._ROWS, TaskKind.REGRESSION, flaky)
    res = evaluate(pred, synth_root, mode="strict", n_bootstrap=0)
    reg = [r for r in res["per_case"] if r["kind"] == "regression"]
    bad = [r for r in reg if r["reason"]]
    assert len(bad) == 1 and "internal error" in bad[0]["reason"] and "RuntimeError" in bad[0]["reason"]
    assert bad[0]["MRE"] > 0 and all(r["MRE"] == pytest.approx(0.0, abs=1e-9) for r in reg if not r["reason"])
    assert any("internal error" in n for n in res["notes"])


def test_a_mask_whose_scoring_raises_scores_worst(synth_root, pred, monkeypatch):
    real = strict.StrictPolicy.score_mask
    calls = []

    def flaky(self, folder, gt, rel, c):
        calls.append(rel)
        if len(calls) == 1:
            raise MemoryError("pretend")
        return real(self, folder, gt, rel, c)

    monkeypatch.setattr(strict.StrictPolicy, "score_mask", flaky)
    res = evaluate(pred, synth_root, mode="strict", n_bootstrap=0, workers=1)
    seg = [r for r in res["per_case"] if r["kind"] == "segmentation"]
    bad = [r for r in seg if r["reason"]]
    assert len(bad) == 1 and bad[0]["DSC"] == 0.0 and "MemoryError" in bad[0]["reason"]
    assert all(r["DSC"] == pytest.approx(1.0) for r in seg if not r["reason"])
