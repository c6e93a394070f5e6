"""Leaderboard: rankings by hand-worked cases, composite bounds, bootstrap stability, outputs, CLI, end to end."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy.stats import kendalltau, rankdata
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from test_visualize_pictures import assert_picture, assert_self_contained

from evaluation.aggregates import AGGREGATES
from evaluation.leaderboard import (
    CONFUSION_METRICS,
    DEFAULT_DIAGONAL,
    build_leaderboard,
    kendall_tau_b,
    load_results,
    rank_min,
    write_leaderboard,
)
from evaluation.leaderboard.bootstrap import confusion_columns
from evaluation.schema import CaseRow
from evaluation.scoring import evaluate
from evaluation.scoring import write_results as write_scored
from fmuia.cli import cli
from fmuia.dataset import load_root
from fmuia.dataset.images import image_size
from fmuia.errors import FmuiaError
from fmuia.formats import (
    ClassificationPrediction,
    DetectionPrediction,
    RegressionPrediction,
    SegmentationPrediction,
    write_predictions,
)
from fmuia.oracle import oracle_prediction, oracle_predictions


def seg(**tasks):
    """Results with segmentation tasks only: seg(lung=(DSC, HD), ...)."""
    return {
        "segmentation": {t: {"DSC": d, "HD": h, "num_samples": 3} for t, (d, h) in tasks.items()},
        "classification": {},
        "detection": {},
        "regression": {},
    }


def by_name(lb, arr):
    return {n: (arr[i].item() if hasattr(arr[i], "item") else arr[i]) for i, n in enumerate(lb.names)}


# ---- (a) rank then aggregate ------------------------------------------------------------------------

def test_rank_min_ties_share_lowest_rank_and_missing_is_worst():
    assert rank_min(np.array([0.8, np.nan, 0.8, np.nan, 0.9]), "higher").tolist() == [2, 4, 2, 4, 1]
    assert rank_min(np.array([5.0, 1.0, 5.0, np.nan]), "lower").tolist() == [2, 1, 2, 4]


def test_rank_then_aggregate_hand_worked():
    # DSC: A 0.9, B 0.9, C 0.5 -> ranks 1, 1, 3.  HD: A 10, B 5, C missing -> 2, 1, 3.
    # Mean ranks: A 1.5, B 1.0, C 3.0 -> final B 1, A 2, C 3.
    subs = {"A": seg(lung=(0.9, 10.0)), "B": seg(lung=(0.9, 5.0)), "C": seg(lung=(0.5, None))}
    lb = build_leaderboard(subs, n_bootstrap=0)
    assert lb.names == ["B", "A", "C"]
    assert by_name(lb, lb.mean_rank) == {"A": 1.5, "B": 1.0, "C": 3.0}
    assert by_name(lb, lb.rank) == {"A": 2, "B": 1, "C": 3}


def test_missing_task_ranks_worst_and_ties_with_other_missing():
    subs = {"A": seg(lung=(0.5, 9.0), cervix=(0.5, 9.0)), "B": seg(lung=(0.6, 8.0)), "C": seg(lung=(0.7, 7.0))}
    lb = build_leaderboard(subs, n_bootstrap=0)
    # lung: C 1, B 2, A 3 on both metrics; cervix: A 1, B and C missing -> 2 (tie) on both metrics.
    assert by_name(lb, lb.mean_rank) == {"A": 2.0, "B": 2.0, "C": 1.5}
    assert by_name(lb, lb.rank) == {"C": 1, "A": 2, "B": 2}


def test_rank_then_aggregate_differs_from_ranking_the_means():
    # A wins two tasks by a hair and loses one badly: rank-then-aggregate prefers A,
    # the mean DSC prefers B.
    a = seg(t1=(0.81, 5.0), t2=(0.81, 5.0), t3=(0.10, 5.0))
    b = seg(t1=(0.80, 5.0), t2=(0.80, 5.0), t3=(0.90, 5.0))
    lb = build_leaderboard({"A": a, "B": b}, n_bootstrap=0)
    assert lb.names == ["A", "B"]
    assert by_name(lb, lb.mean_rank) == pytest.approx({"A": 7 / 6, "B": 8 / 6})
    assert lb.aggregates["B"]["seg_DSC"] > lb.aggregates["A"]["seg_DSC"]


# ---- (b) composite ----------------------------------------------------------------------------------

def full_results(dsc, hd, acc, auc, f1m, f1w, mcc, iou, mre, seg_diag=500.0, reg_diag=100.0):
    return {
        "segmentation": {"lung": {"DSC": dsc, "HD": hd, "mean_diagonal": seg_diag, "num_samples": 2}},
        "classification": {
            "breast_2cls": {"Accuracy": acc, "AUC": auc, "F1_macro": f1m, "F1_weighted": f1w, "MCC": mcc, "num_samples": 2}
        },
        "detection": {"thyroid_nodule_det": {"IoU": iou, "num_samples": 2}},
        "regression": {"FUGC": {"MRE": mre, "mean_diagonal": reg_diag, "num_samples": 2}},
    }


def test_composite_hand_worked():
    r = full_results(0.8, 100.0, 0.5, 0.6, 0.7, 0.8, 0.2, 0.4, 50.0)
    lb = build_leaderboard({"x": r}, n_bootstrap=0)
    # parts: DSC .8, HD 1-100/500=.8, Acc .5, AUC .6, F1m .7, F1w .8, MCC (0.2+1)/2=.6, IoU .4, MRE 1-50/100=.5
    assert lb.composite[0] == pytest.approx(100 * 5.7 / 9)
    assert lb.diagonals == {"lung": 500.0, "FUGC": 100.0}


def test_composite_bounds_and_extremes():
    best = full_results(1.0, 0.0, 1, 1, 1, 1, 1, 1, 0.0)
    worst = full_results(0.0, 9999.0, 0, 0, 0, 0, -1, 0, 9999.0)
    lb = build_leaderboard({"best": best, "worst": worst}, n_bootstrap=0)
    assert by_name(lb, lb.composite) == pytest.approx({"best": 100.0, "worst": 0.0})
    rng = np.random.default_rng(0)
    for _ in range(20):
        u = rng.uniform(0.0, 1.0, size=6)
        r = full_results(u[0], rng.uniform(0, 9000), u[1], u[2], u[3], u[4], rng.uniform(-1, 1), u[5], rng.uniform(0, 3000))
        c = build_leaderboard({"r": r}, n_bootstrap=0).composite[0]
        assert 0.0 <= c <= 100.0
    # values outside a metric's range are not clamped into the composite: the results are refused
    with pytest.raises(FmuiaError, match="not a valid results file"):
        build_leaderboard({"r": full_results(1.5, -10.0, 1, 1, 1, 1, -1.5, 1, -10.0)}, n_bootstrap=0)


@pytest.mark.parametrize(
    "field,better,worse",
    [("dsc", 0.7, 0.6), ("hd", 40.0, 60.0), ("mcc", 0.3, -0.3), ("iou", 0.5, 0.4), ("mre", 10.0, 20.0), ("auc", 0.9, 0.8)],
)
def test_composite_is_monotone(field, better, worse):
    base = dict(dsc=0.5, hd=50.0, acc=0.5, auc=0.5, f1m=0.5, f1w=0.5, mcc=0.0, iou=0.5, mre=30.0)
    lb = build_leaderboard(
        {"better": full_results(**{**base, field: better}), "worse": full_results(**{**base, field: worse})}, n_bootstrap=0
    )
    c = by_name(lb, lb.composite)
    assert c["better"] > c["worse"]
    assert lb.names == ["better", "worse"]


def test_composite_default_diagonal_is_documented_in_notes():
    lb = build_leaderboard({"a": seg(lung=(0.9, 100.0))}, n_bootstrap=0)
    assert lb.diagonals == {"lung": DEFAULT_DIAGONAL}
    assert any("1000 px" in n for n in lb.notes)
    # DSC part 0.9, HD part 1 - 100/1000 = 0.9 (the only two aggregates with tasks)
    assert lb.composite[0] == pytest.approx(90.0)


# ---- (c) stability ----------------------------------------------------------------------------------

def test_kendall_tau_b_matches_scipy():
    rng = np.random.default_rng(3)
    assert kendall_tau_b(np.arange(5), np.arange(5)[None, :])[0] == pytest.approx(1.0)
    assert kendall_tau_b(np.arange(5), np.arange(5)[::-1][None, :])[0] == pytest.approx(-1.0)
    for _ in range(50):
        n = int(rng.integers(3, 9))
        x = rankdata(rng.integers(0, 4, n), method="min")
        ys = np.stack([rankdata(rng.integers(0, 4, n), method="min") for _ in range(4)])
        ours = kendall_tau_b(x, ys)
        for y, t in zip(ys, ours, strict=True):
            ref = kendalltau(x, y).statistic
            assert (math.isnan(ref) and math.isnan(t)) or t == pytest.approx(ref)


def per_case_results(quality: dict[str, list[float]], correct: list[bool] | None = None) -> dict:
    """Strict-like results whose per-task metrics are the means of the per-case rows."""
    pcs, segs = [], {}
    for task, dscs in quality.items():
        for i, d in enumerate(dscs):
            pcs.append({"task_id": task, "kind": "segmentation", "image_path": f"{task}/{i}.png", "DSC": d, "HD": 100 * (1 - d), "reason": None})
        segs[task] = {"DSC": float(np.mean(dscs)), "HD": float(np.mean([100 * (1 - d) for d in dscs])), "num_samples": len(dscs)}
    out = {"segmentation": segs, "classification": {}, "detection": {}, "regression": {}, "per_case": pcs}
    if correct is not None:
        for i, c in enumerate(correct):
            pcs.append({"task_id": "lung_2cls", "kind": "classification", "image_path": f"c/{i}.png", "correct": c, "prob_true": 0.5, "reason": None})
        acc = float(np.mean(correct))
        out["classification"]["lung_2cls"] = {"Accuracy": acc, "AUC": acc, "F1_macro": acc, "F1_weighted": acc, "MCC": 2 * acc - 1}
    return out


def test_stability_dominant_submissions_never_swap():
    subs = {
        "good": per_case_results({"lung": [0.9, 0.8, 0.95, 0.85], "cervix": [0.9, 0.9, 0.9]}),
        "bad": per_case_results({"lung": [0.5, 0.4, 0.6, 0.3], "cervix": [0.2, 0.3, 0.1]}),
    }
    lb = build_leaderboard(subs, n_bootstrap=200, seed=1)
    st = lb.stability
    assert st is not None and st.rank_samples.shape == (200, 2)
    assert np.all(st.tau == 1.0)
    assert st.tau_summary()["mean"] == 1.0
    assert by_name(lb, [tuple(iv) for iv in st.rank_intervals()]) == {"good": (1, 1), "bad": (2, 2)}


def test_stability_close_submissions_vary_and_match_brute_force():
    rng = np.random.default_rng(5)
    quality = {n: {"lung": list(rng.uniform(0.4, 0.9, 8)), "cervix": list(rng.uniform(0.4, 0.9, 6))} for n in "ABC"}
    correct = {n: list(rng.random(10) < 0.6) for n in "ABC"}
    subs = {n: per_case_results(quality[n], correct[n]) for n in "ABC"}
    B, seed = 60, 7
    lb = build_leaderboard(subs, n_bootstrap=B, seed=seed)
    st = lb.stability
    assert st.metrics == ["segmentation/DSC", "segmentation/HD", "classification/Accuracy"]
    # Full-data reference = ranking (a) restricted to those metrics, from the per-task values.
    # Brute force: redraw the same cases (tasks in kind, id order), resample with fancy indexing,
    # recompute means with pandas, rank with scipy.
    draw = np.random.default_rng(seed)
    idx = {t: draw.integers(0, n, size=(B, n)) for t, n in (("cervix", 6), ("lung", 8), ("lung_2cls", 10))}
    names = lb.names
    expected = np.zeros((B, 3), dtype=int)
    for b in range(B):
        cols = []
        for t in ("cervix", "lung"):
            frame = pd.DataFrame({n: np.asarray(quality[n][t])[idx[t][b]] for n in names})
            cols.append(rankdata(-frame.mean().to_numpy(), method="min"))  # DSC: higher is better
            cols.append(rankdata((100 * (1 - frame)).mean().to_numpy(), method="min"))  # HD: lower is better
        acc = pd.DataFrame({n: np.asarray(correct[n], dtype=float)[idx["lung_2cls"][b]] for n in names}).mean()
        cols.append(rankdata(-acc.to_numpy(), method="min"))
        expected[b] = rankdata(np.mean(cols, axis=0), method="min")
    assert np.array_equal(st.rank_samples, expected)
    ref_cols = []
    for t in ("cervix", "lung"):
        ref_cols.append(rankdata([-np.mean(quality[n][t]) for n in names], method="min"))
        ref_cols.append(rankdata([np.mean([100 * (1 - d) for d in quality[n][t]]) for n in names], method="min"))
    ref_cols.append(rankdata([-np.mean(correct[n]) for n in names], method="min"))
    assert st.reference_rank.tolist() == rankdata(np.mean(ref_cols, axis=0), method="min").tolist()
    for b in range(B):
        assert st.tau[b] == pytest.approx(kendalltau(st.reference_rank, st.rank_samples[b]).statistic, nan_ok=True)


def test_stability_skipped_without_per_case():
    subs = {"A": seg(lung=(0.9, 10.0)), "B": per_case_results({"lung": [0.5, 0.6]})}
    lb = build_leaderboard(subs, n_bootstrap=100)
    assert lb.stability is None
    assert any("per-case" in n and "'A'" in n for n in lb.notes)
    assert lb.to_dict()["stability"] is None


# ---- inputs and outputs ----------------------------------------------------------------------------

def write_results(path, results):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results))
    return path


def test_load_results_names_by_folder_and_manifest(tmp_path):
    a = write_results(tmp_path / "alpha" / "results.json", seg(lung=(0.9, 1.0)))
    write_results(tmp_path / "beta" / "results.json", seg(lung=(0.8, 2.0)))
    got = load_results([a, tmp_path / "beta"])
    assert sorted(got) == ["alpha", "beta"]
    (tmp_path / "m.csv").write_text("name,results\nfirst,alpha/results.json\nsecond,beta/results.json\n")
    assert sorted(load_results(manifest=tmp_path / "m.csv")) == ["first", "second"]
    lb = build_leaderboard(tmp_path / "m.csv", n_bootstrap=0)
    assert lb.names == ["first", "second"]
    lb = build_leaderboard({"b": tmp_path / "beta", "a": a}, n_bootstrap=0)
    assert lb.names == ["a", "b"]


def test_load_results_user_errors(tmp_path):
    a = write_results(tmp_path / "x" / "sub" / "results.json", seg(lung=(0.9, 1.0)))
    b = write_results(tmp_path / "y" / "sub" / "results.json", seg(lung=(0.9, 1.0)))
    with pytest.raises(FmuiaError, match="both named 'sub'"):
        load_results([a, b])
    bad = tmp_path / "bad" / "results.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    with pytest.raises(FmuiaError, match="not valid UTF-8 JSON"):
        load_results([bad])
    other = write_results(tmp_path / "other" / "results.json", {"hello": 1})
    with pytest.raises(FmuiaError, match="not a results.json"):
        load_results([other])
    (tmp_path / "m.csv").write_text("name,path\na,b\n")
    with pytest.raises(FmuiaError, match="name,results"):
        load_results(manifest=tmp_path / "m.csv")


def test_outputs_exist_parse_and_html_is_self_contained(tmp_path):
    subs = {
        "good": per_case_results({"lung": [0.9, 0.8, 0.95]}, [True, True, False]),
        "mid": per_case_results({"lung": [0.7, 0.6, 0.8]}, [True, False, False]),
        "bad <script>": per_case_results({"lung": [0.1, 0.2, 0.3]}, [False, False, False]),
    }
    lb = build_leaderboard(subs, n_bootstrap=50)
    paths = write_leaderboard(lb, tmp_path / "board")
    assert sorted(p.name for p in paths.values()) == ["leaderboard.csv", "leaderboard.html", "leaderboard.json", "leaderboard.md"]
    df = pd.read_csv(paths["csv"])
    assert df["name"].tolist() == ["good", "mid", "bad <script>"]
    assert df["rank"].tolist() == [1, 2, 3]
    for key in AGGREGATES:
        assert key in df.columns
    assert {"lung/DSC", "lung/HD", "lung_2cls/Accuracy", "lung_2cls/MCC"} <= set(df.columns)
    assert df.loc[0, "lung/DSC"] == pytest.approx(np.mean([0.9, 0.8, 0.95]))
    data = json.loads(paths["json"].read_text())
    assert data["submissions"] == ["good", "mid", "bad <script>"]
    assert len(data["stability"]["rank_samples"]["good"]) == 50
    assert data["aggregates"]["seg_HD"]["direction"] == "lower"
    md = paths["md"].read_text()
    assert "seg_DSC ↑" in md and "reg_MRE ↓" in md and "| 1 | good |" in md
    html = paths["html"].read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"https?://|src=|<script|<link|@import|url\(", html)
    assert "bad &lt;script&gt;" in html
    # No temporary files left behind by the atomic writes.
    assert sorted(p.name for p in (tmp_path / "board").iterdir()) == sorted(p.name for p in paths.values())


def test_cli_prints_ranked_table(tmp_path):
    write_results(tmp_path / "one" / "results.json", seg(lung=(0.9, 1.0)))
    write_results(tmp_path / "two" / "results.json", seg(lung=(0.5, 9.0)))
    res = CliRunner().invoke(cli, ["leaderboard", str(tmp_path / "two"), str(tmp_path / "one" / "results.json"), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split()[:2] == ["rank", "name"]
    assert lines[1].split()[:2] == ["1", "one"] and lines[2].split()[:2] == ["2", "two"]
    assert (tmp_path / "b" / "leaderboard.html").is_file()


# ---- end to end: the real strict scorer on synth data ------------------------------------------------

def _noisy(sample, rng):
    """The oracle prediction, degraded (shifted mask/box/points, every other class flipped)."""
    p = oracle_prediction(sample)
    if isinstance(p, SegmentationPrediction):
        return dataclasses.replace(p, mask=np.roll(p.mask, 4, axis=1))
    if isinstance(p, ClassificationPrediction):
        if rng.random() < 0.5:
            n = len(p.predicted_probs)
            c = (p.predicted_class + 1) % n
            return dataclasses.replace(p, predicted_class=c, predicted_probs=tuple(float(i == c) for i in range(n)))
        return p
    w, h = image_size(sample.image_file)
    if isinstance(p, DetectionPrediction):
        pix = tuple(min(v + 5.0, w if i % 2 == 0 else h) for i, v in enumerate(p.bbox_pixels))
        return dataclasses.replace(p, bbox_pixels=pix, bbox_normalized=tuple(v / (w if i % 2 == 0 else h) for i, v in enumerate(pix)))
    assert isinstance(p, RegressionPrediction)
    pix = tuple(v + 6.0 for v in p.points_pixels)
    return dataclasses.replace(p, points_pixels=pix, points_normalized=tuple(v / (w if i % 2 == 0 else h) for i, v in enumerate(pix)))


@pytest.mark.filterwarnings("ignore:A single label was found")
def test_end_to_end_perfect_beats_noisy_beats_empty(synth_split, tmp_path):
    labels = synth_split / "labels"
    root = load_root(labels)
    rng = np.random.default_rng(0)
    preds = {
        "perfect": list(oracle_predictions(root)),
        "noisy": [_noisy(s, rng) for s in root.samples],
        "empty": [],
    }
    files = []
    for name, records in preds.items():
        folder = tmp_path / name
        folder.mkdir()
        write_predictions(folder, records)
        write_scored(evaluate(folder, labels, mode="strict", n_bootstrap=0), folder / "results.json")
        files.append(folder / "results.json")
    # Named by folder, read back from disk (per-case rows included), in a scrambled order.
    lb = build_leaderboard(load_results([files[2], files[0], files[1]]), n_bootstrap=200, seed=0)
    assert lb.names == ["perfect", "noisy", "empty"]
    assert lb.rank.tolist() == [1, 2, 3]
    c = by_name(lb, lb.composite)
    assert c["perfect"] > c["noisy"] > c["empty"]
    assert lb.aggregates["perfect"]["seg_DSC"] == pytest.approx(1.0)
    assert lb.aggregates["empty"]["seg_DSC"] == 0.0
    assert lb.stability is not None and lb.stability.rank_samples.shape == (200, 3)
    assert lb.stability.metrics == ["segmentation/DSC", "segmentation/HD", "classification/Accuracy",
                                    "classification/F1_macro", "classification/F1_weighted", "classification/MCC",
                                    "detection/IoU", "regression/MRE"]
    # Strict results record each task's mean image diagonal: no --labels needed for the composite.
    assert not any("diagonal" in n for n in lb.notes)
    assert set(lb.diagonals) == {t for t, rows in root.by_task().items() if rows[0].kind.value in ("segmentation", "regression")}
    # The per-case reference ranking agrees with the per-task one here, and perfect is never beaten.
    assert lb.stability.reference_rank.tolist() == [1, 2, 3]
    assert np.all(lb.stability.rank_samples[:, 0] == 1)
    n_tasks = len(root.by_task())
    assert len([col for col in lb.metric_columns if col.endswith(("/DSC", "/Accuracy", "/IoU", "/MRE"))]) == n_tasks
    paths = write_leaderboard(lb, tmp_path / "board")
    assert pd.read_csv(paths["csv"])["name"].tolist() == ["perfect", "noisy", "empty"]


def test_label_diagonals_normalise_worst_distances_to_zero(synth_split, tmp_path):
    """With the labels' diagonals, an empty submission's HD and MRE (strict: the image diagonal
    per image) normalise to exactly 0, and the diagonals are the mean hypot of the image sizes."""
    labels = synth_split / "labels"
    (tmp_path / "empty").mkdir()
    results = evaluate(tmp_path / "empty", labels, mode="strict", n_bootstrap=0)
    lb = build_leaderboard({"empty": results, "also_empty": results}, n_bootstrap=0, labels=labels)
    expected: dict[str, list[float]] = {}
    for s in load_root(labels).samples:
        with Image.open(s.image_file) as im:
            expected.setdefault(s.task_id, []).append(math.hypot(*im.size))
    for task, d in lb.diagonals.items():
        assert d == pytest.approx(np.mean(expected[task]))
    assert not any("diagonal" in n for n in lb.notes)
    parts = lb.composite_parts["empty"]
    assert parts["seg_HD"] == pytest.approx(0.0, abs=1e-9) and parts["reg_MRE"] == pytest.approx(0.0, abs=1e-9)
    assert parts["seg_DSC"] == 0.0 and parts["det_IoU"] == 0.0


# ---- classification metrics recomputed in the bootstrap ---------------------------------------------

def cls_case_results(y: list[int], pred: list[int | None], c: int = 3, task: str = "breast_3cls") -> dict:
    """Strict-like classification results with per-case label/predicted (None = invalid row)."""
    yv = np.asarray(y)
    pv = np.asarray([-1 if p is None else p for p in pred])
    rows = [{"task_id": task, "kind": "classification", "image_path": f"c/{i}.png", "label": int(t),
             "predicted": p, "correct": p == t, "prob_true": 0.5, "reason": None if p is not None else "missing"}
            for i, (t, p) in enumerate(zip(y, pred, strict=True))]
    acc = float(accuracy_score(yv, pv))
    block = {"Accuracy": acc, "AUC": 0.5, "F1_macro": 0.0, "F1_weighted": 0.0, "MCC": 0.0, "num_samples": len(y),
             "per_class": {f"class_{k}": {"F1": 0.0} for k in range(c)}}
    return {"segmentation": {}, "classification": {task: block}, "detection": {}, "regression": {}, "per_case": rows}


def sk_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """The strict definitions via scikit-learn: -1 = invalid (wrong, a false positive for no class);
    F1 over the classes present in the labels or the valid predictions; MCC with -1 as a class."""
    labels = sorted(set(y.tolist()) | {v for v in p.tolist() if v >= 0})
    return {
        "F1_macro": f1_score(y, p, labels=labels, average="macro", zero_division=0),
        "F1_weighted": f1_score(y, p, labels=labels, average="weighted", zero_division=0),
        "MCC": matthews_corrcoef(y, p),
    }


@pytest.mark.filterwarnings("ignore:A single label was found")
def test_batch_confusion_metrics_match_sklearn():
    rng = np.random.default_rng(11)
    for _ in range(60):
        c = int(rng.integers(2, 5))
        n = int(rng.integers(1, 15))
        y = rng.integers(0, c, n)
        p = np.where(rng.random(n) < 0.2, -1, rng.integers(0, c, n))
        cm = np.zeros((c, c + 1))
        np.add.at(cm, (y, np.where(p < 0, c, p)), 1.0)
        ref = sk_metrics(y, p)
        for m, fn in CONFUSION_METRICS.items():
            assert fn(cm) == pytest.approx(ref[m], abs=1e-12), (m, y, p)
            assert fn(np.stack([cm, cm]))[1] == pytest.approx(ref[m], abs=1e-12)


@pytest.mark.filterwarnings("ignore:A single label was found")
def test_stability_recomputes_f1_and_mcc_like_sklearn_on_resamples():
    """The bootstrap's F1_macro, F1_weighted and MCC per round equal scikit-learn's on the same
    resample (drawn again here with the same seed), and the all-cases values equal sklearn's."""
    rng = np.random.default_rng(2)
    n, c = 14, 3
    y = rng.integers(0, c, n).tolist()
    preds = {name: [None if rng.random() < 0.15 else int(v) for v in np.where(rng.random(n) < q, y, rng.integers(0, c, n))]
             for name, q in (("A", 0.8), ("B", 0.5), ("C", 0.3))}
    subs = {name: cls_case_results(y, p, c) for name, p in preds.items()}
    B, seed = 40, 3
    lb = build_leaderboard(subs, n_bootstrap=B, seed=seed)
    st = lb.stability
    assert st.metrics == ["classification/Accuracy", "classification/F1_macro", "classification/F1_weighted", "classification/MCC"]
    names = lb.names
    idx = np.random.default_rng(seed).integers(0, n, size=(B, n))  # the one task's draw
    counts = np.stack([np.bincount(row, minlength=n) for row in idx]).astype(float)
    rows_by = {nm: {r["image_path"]: CaseRow.from_dict(r) for r in subs[nm]["per_case"]} for nm in names}
    cases = sorted(rows_by[names[0]])
    order = [int(cs.split("/")[1].split(".")[0]) for cs in cases]  # case key -> row index
    conf = confusion_columns(names, rows_by, cases, counts, c)
    yv = np.asarray(y)
    for i, nm in enumerate(names):
        pv = np.asarray([-1 if v is None else v for v in preds[nm]])
        full = sk_metrics(yv, pv)
        for m in ("F1_macro", "F1_weighted", "MCC"):
            assert conf[m][1][i] == pytest.approx(full[m], abs=1e-12)
        for b in range(B):
            sel = np.asarray(order)[idx[b]]
            ref = sk_metrics(yv[sel], pv[sel])
            for m in ("F1_macro", "F1_weighted", "MCC"):
                assert conf[m][0][i, b] == pytest.approx(ref[m], abs=1e-12), (nm, b, m)
    # The reference ranking is ranking (a) over those four metrics on all cases, by sklearn.
    cols = [rankdata([-np.mean(np.asarray(preds[nm], dtype=object) == yv) for nm in names], method="min")]
    for m in ("F1_macro", "F1_weighted", "MCC"):
        vals = [sk_metrics(yv, np.asarray([-1 if v is None else v for v in preds[nm]]))[m] for nm in names]
        cols.append(rankdata(-np.round(vals, 9), method="min"))
    assert st.reference_rank.tolist() == rankdata(np.mean(cols, axis=0), method="min").tolist()


def test_stability_without_label_columns_keeps_accuracy_only():
    a = cls_case_results([0, 1, 2, 1], [0, 1, 1, None])
    b = cls_case_results([0, 1, 2, 1], [0, 2, 2, 1])
    for r in b["per_case"]:
        del r["label"], r["predicted"]  # e.g. results from an older scorer
    lb = build_leaderboard({"a": a, "b": b}, n_bootstrap=10)
    assert lb.stability.metrics == ["classification/Accuracy"]


def test_write_leaderboard_with_report_and_cli(tmp_path):
    subs = {
        "good": per_case_results({"lung": [0.9, 0.8, 0.95]}, [True, True, False]),
        "bad": per_case_results({"lung": [0.1, 0.2, 0.3]}, [False, False, True]),
    }
    lb = build_leaderboard(subs, n_bootstrap=30)
    paths = write_leaderboard(lb, tmp_path / "board", report=True)
    assert paths["report"] == tmp_path / "board" / "report" / "index.html"
    pictures = {f.name for f in assert_self_contained(paths["report"])}
    assert pictures == {"aggregates_compare.png", "rank_stability.png"}
    for name in pictures:
        assert_picture(tmp_path / "board" / "report" / name)
    assert [r for r in assert_self_contained(paths["html"])] == [paths["report"].resolve()]  # linked
    # The CLI writes it by default (and --no-report skips it).
    for name, r in subs.items():
        write_results(tmp_path / "runs" / name / "results.json", r)
    runs = [str(tmp_path / "runs" / n) for n in subs]
    res = CliRunner().invoke(cli, ["leaderboard", *runs, "--out", str(tmp_path / "b1"), "--bootstrap", "20"])
    assert res.exit_code == 0, res.output
    index = tmp_path / "b1" / "report" / "index.html"
    assert {f.name for f in assert_self_contained(index)} == {"aggregates_compare.png", "rank_stability.png"}
    assert str(index) in res.output
    res = CliRunner().invoke(cli, ["leaderboard", *runs, "--out", str(tmp_path / "b2"), "--no-report"])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "b2" / "report").exists()
