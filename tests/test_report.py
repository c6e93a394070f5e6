"""Evaluation and leaderboard HTML reports: every plot kind renders, decodes, is not blank; pages are
self-contained (local files or data: URIs only, no http(s))."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from test_visualize_pictures import assert_picture, assert_self_contained

from evaluation import plots
from evaluation.aggregates import AGGREGATES, compute_aggregates
from evaluation.report import leaderboard_parts, write_leaderboard_report, write_report
from fmuia.tasks import TaskKind

SEG, CLS, DET, REG = (["fetal_head", "cervix_multi", "lung"], ["breast_2cls", "organ_cls"],
                      ["thyroid_nodule_det"], ["IUGC", "FUGC"])


def hand_made_results(seed: int = 0, failures: bool = True) -> dict:
    """A strict-mode-shaped results object with CIs in every accepted shape and per-case rows."""
    rng = np.random.default_rng(seed)
    res: dict = {"mode": "strict", "segmentation": {}, "classification": {}, "detection": {}, "regression": {},
                 "per_case": []}

    def rows(task, kind, cols):
        for i in range(8):
            row = {"task_id": task, "kind": kind, "image_path": f"../x/{task}/{i}.png", "reason": None}
            row.update({c: f() for c, f in cols.items()})
            if failures and i == 0:
                row["reason"] = "prediction file missing"
            res["per_case"].append(row)

    for t in SEG:
        d = float(rng.uniform(0.5, 0.9))
        res["segmentation"][t] = {"DSC": d, "HD": float(rng.uniform(5, 40)), "HD95": float(rng.uniform(3, 20)),
                                  "num_samples": 8, "ci95": {"DSC": [d - 0.08, d + 0.05], "HD": {"lo": 2.0, "hi": 45.0}}}
        rows(t, "segmentation", {"DSC": lambda: float(rng.uniform(0.2, 1)), "HD": lambda: float(rng.uniform(1, 60)),
                                 "HD95": lambda: float(rng.uniform(1, 30))})
    for t in CLS:
        a = float(rng.uniform(0.5, 1))
        res["classification"][t] = {"Accuracy": a, "AUC": 0.8, "F1_macro": 0.6, "F1_weighted": 0.7, "MCC": -0.2,
                                    "num_samples": 8, "ci95": {"Accuracy": {"low": a - 0.2, "high": min(1.0, a + 0.1)}}}
        rows(t, "classification", {"correct": lambda: int(rng.integers(2)), "prob_true": lambda: float(rng.uniform())})
    for t in DET:
        res["detection"][t] = {"IoU": 0.66, "num_samples": 8, "IoU_ci95": [0.5, 0.8]}
        rows(t, "detection", {"IoU": lambda: float(rng.uniform())})
    for t in REG:
        res["regression"][t] = {"MRE": float(rng.uniform(5, 25)), "num_samples": 8,
                                "ci95": {"MRE": {"lower": 3.0, "upper": 30.0}}}
        rows(t, "regression", {"MRE": lambda: float(rng.uniform(1, 50))})
    res["aggregates"] = compute_aggregates(res)
    return res


def test_ci_shapes():
    assert plots.ci_of({"ci95": {"DSC": [0.7, 0.9]}}, "DSC") == (0.7, 0.9)
    assert plots.ci_of({"ci95": {"DSC": {"lo": 0.9, "hi": 0.7}}}, "DSC") == (0.7, 0.9)
    assert plots.ci_of({"ci95": {"HD": {"low": 1, "high": 2}}}, "HD") == (1.0, 2.0)
    assert plots.ci_of({"MRE_ci95": [1, 3]}, "MRE") == (1.0, 3.0)
    assert plots.ci_of({"ci95": {"DSC": [0.7, float("nan")]}}, "DSC") is None
    assert plots.ci_of({"ci95": {}}, "DSC") is None
    assert plots.ci_of({}, "DSC") is None


def test_plot_kinds_not_in_the_evaluation_report_render():
    """(The per-kind metric bars, per-case plots and aggregates are checked via write_report below.)"""
    res = hand_made_results()
    assert_picture(plots.plot_aggregates({k: None for k in AGGREGATES}), min_std=5)  # all n/a still draws
    assert_picture(plots.plot_aggregates_compare({"a": res["aggregates"], "b": hand_made_results(1)["aggregates"]}))
    samples = np.array([np.random.default_rng(i).permutation(3) + 1 for i in range(50)])
    assert_picture(plots.plot_rank_blobs(["a", "b", "c"], samples, observed=[1, 2, 3]))
    # Nothing to draw -> None, not an empty picture.
    assert plots.plot_metric_bars({}, TaskKind.DETECTION) is None
    assert plots.plot_per_case([], TaskKind.REGRESSION) is None
    assert plots.plot_rank_blobs(["a", "b"], samples) is None  # 3 columns for 2 names
    assert plots.plot_aggregates_compare({}) is None


def test_blob_areas_are_proportional_to_rank_frequencies():
    """Read the circles back from the figure: one per (submission, rank), area ∝ frequency."""
    from unittest import mock

    from matplotlib.axes import Axes

    samples = np.array([[1, 2]] * 30 + [[2, 1]] * 10)  # a: rank 1 in 75 %, b: rank 1 in 25 %
    calls = []
    real = Axes.scatter

    def spy(self, x, y, s=None, **kw):
        calls.append((np.asarray(x), np.asarray(y), np.asarray(s)))
        return real(self, x, y, s=s, **kw)

    with mock.patch.object(Axes, "scatter", spy):
        assert_picture(plots.plot_rank_blobs(["a", "b"], samples, observed=[1, 2]))
    got = {}
    for x, y, s in calls:
        for xi, yi, si in zip(x, y, s, strict=True):
            got[(int(xi), int(yi))] = float(si)
    assert got[(0, 1)] / got[(0, 2)] == pytest.approx(3.0)  # a: 30 vs 10 rounds
    assert got[(1, 2)] / got[(1, 1)] == pytest.approx(3.0)
    assert got[(0, 1)] == pytest.approx(got[(1, 2)])


def test_write_report_files_and_links(tmp_path: Path):
    res = hand_made_results()
    index = write_report(res, tmp_path / "rep")
    files = assert_self_contained(index)
    names = {f.name for f in files}
    expected = {"aggregates.png"} | {f"metrics_{k.value}.png" for k in TaskKind} | {f"per_case_{k.value}.png" for k in TaskKind}
    assert names == expected
    for f in files:
        assert_picture(f)
    text = index.read_text(encoding="utf-8")
    for key in AGGREGATES:
        assert key in text
    for t in SEG + CLS + DET + REG:
        assert t in text
    assert "prediction file missing" in text  # failures listed by reason
    assert re.search(r"\[0\.\d+, 0\.\d+\]", text)  # CIs shown next to values


def _only(res: dict, kind: str) -> dict:
    out = {k: (v if k == kind else {}) for k, v in res.items() if k in ("segmentation", "classification", "detection", "regression")}
    out["per_case"] = [r for r in res["per_case"] if r["kind"] == kind]
    return out


def test_write_report_embedded_is_one_file(tmp_path: Path):
    index = write_report(_only(hand_made_results(), "regression"), tmp_path / "rep", embed=True,
                         filename="detailed_results.html")
    assert index == tmp_path / "rep" / "detailed_results.html"
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["detailed_results.html"]
    assert assert_self_contained(index) == []  # every picture is a data: URI (decoded and checked there)
    assert index.read_text(encoding="utf-8").count("data:image/png;base64,") == 3  # aggregates, bars, per case


def test_official_mode_results_without_extras(tmp_path: Path):
    res = _only(hand_made_results(), "segmentation")
    official = {k: {t: {m: v for m, v in d.items() if m != "ci95" and not m.endswith("_ci95")}
                    for t, d in res[k].items()} for k in ("segmentation", "classification", "detection", "regression")}
    index = write_report(official, tmp_path / "rep")
    assert {f.name for f in assert_self_contained(index)} == {"aggregates.png", "metrics_segmentation.png"}
    assert "n/a" in index.read_text(encoding="utf-8")  # aggregates of absent kinds


def _hand_made_leaderboard() -> dict:
    rng = np.random.default_rng(4)
    names = ["alpha", "beta", "gamma", "delta"]
    rows = [{"rank": i + 1, "name": n, **{k: float(rng.uniform()) for k in AGGREGATES}} for i, n in enumerate(names)]
    samples = {n: [int(v) for v in np.clip(i + 1 + rng.integers(-1, 2, size=100), 1, 4)] for i, n in enumerate(names)}
    return {"submissions": names, "rows": rows,
            "stability": {"rank_samples": samples, "reference_rank": {n: i + 1 for i, n in enumerate(names)}}}


def test_leaderboard_parts_and_report(tmp_path: Path):
    lb = _hand_made_leaderboard()
    parts = leaderboard_parts(lb)
    assert parts["names"] == ["alpha", "beta", "gamma", "delta"]
    assert np.asarray(parts["rank_samples"]).shape == (100, 4)
    assert [row[2] for row in parts["rank_samples"]] == lb["stability"]["rank_samples"]["gamma"]
    index = write_leaderboard_report(lb, tmp_path / "lb")
    names = {f.name for f in assert_self_contained(index)}
    assert names == {"aggregates_compare.png", "rank_stability.png"}
    for n in names:
        assert_picture(tmp_path / "lb" / n)
    # Without bootstrap samples: no blob plot, still a valid page.
    lb["stability"] = None
    index = write_leaderboard_report(lb, tmp_path / "lb2")
    assert {f.name for f in assert_self_contained(index)} == {"aggregates_compare.png"}


# ---- end to end from synth data, with the real scorer and leaderboard (when they are installed) -------

@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    scoring = pytest.importorskip("evaluation.scoring")
    import dataclasses

    from fmuia.dataset import load_root
    from fmuia.dataset.synth import synthesize
    from fmuia.formats import (
        DetectionPrediction,
        RegressionPrediction,
        SegmentationPrediction,
        write_predictions,
    )
    from fmuia.oracle import oracle_predictions

    base = tmp_path_factory.mktemp("report_synth")
    synthesize(base / "data", per_task=9, seed=2, tasks=["fetal_head", "cervix_multi", "breast_3cls", "lung_2cls",
                                                           "thyroid_nodule_det", "IUGC"], split=True)
    labels = load_root(base / "data" / "labels")
    out = {}
    for name, shift in (("good", 1), ("bad", 6)):
        rng = np.random.default_rng(shift)
        preds = []
        for p in oracle_predictions(labels):
            if isinstance(p, SegmentationPrediction):
                p = dataclasses.replace(p, mask=np.roll(p.mask, shift, axis=0))
            elif isinstance(p, DetectionPrediction):
                p = dataclasses.replace(p, bbox_pixels=tuple(v + rng.normal(0, shift) for v in p.bbox_pixels))
            elif isinstance(p, RegressionPrediction):
                p = dataclasses.replace(p, points_pixels=tuple(v + rng.normal(0, shift) for v in p.points_pixels))
            elif rng.random() < shift / 10:
                p = dataclasses.replace(p, predicted_class=(p.predicted_class + 1) % len(p.predicted_probs))
            preds.append(p)
        write_predictions(base / name, preds)
        out[name] = scoring.evaluate(base / name, base / "data" / "labels", mode="strict", n_bootstrap=200)
    return out


def test_report_from_strict_scorer(scored, tmp_path: Path):
    index = write_report(scored["good"], tmp_path / "rep")
    files = assert_self_contained(index)
    assert {f.name for f in files} == ({"aggregates.png"} | {f"metrics_{k.value}.png" for k in TaskKind}
                                       | {f"per_case_{k.value}.png" for k in TaskKind})
    for f in files:
        assert_picture(f)


def test_leaderboard_report_from_real_leaderboard(scored, tmp_path: Path):
    leaderboard = pytest.importorskip("evaluation.leaderboard")
    lb = leaderboard.build_leaderboard(scored, n_bootstrap=100, seed=0)
    index = write_leaderboard_report(lb, tmp_path / "lb")
    names = {f.name for f in assert_self_contained(index)}
    assert names == {"aggregates_compare.png", "rank_stability.png"}
    for n in names:
        assert_picture(tmp_path / "lb" / n)
    assert "good" in index.read_text(encoding="utf-8")


def test_write_report_preamble_and_appendix_in_place(tmp_path: Path):
    res = _only(hand_made_results(), "detection")
    index = write_report(res, tmp_path / "rep", preamble=["<p id='first'>why it failed</p>"],
                         appendix=["<p id='last'>rows</p>"])
    text = index.read_text(encoding="utf-8")
    assert text.index("<h1>") < text.index("id='first'") < text.index("Leaderboard aggregates")
    assert text.index("Failed predictions") < text.index("id='last'") < text.index("</body>")
