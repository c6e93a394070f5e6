"""Leaderboard bootstrap on per-case rows read through the results schema: F1/MCC of hand-made
resamples against scikit-learn, hostile and invalid rows, and what `import evaluation.leaderboard` loads."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import f1_score, matthews_corrcoef

from evaluation.leaderboard import CONFUSION_METRICS, build_leaderboard
from evaluation.leaderboard.bootstrap import class_counts, confusion_columns
from evaluation.metrics import classification
from evaluation.schema import CaseRow
from fmuia.tasks import TaskKind

TASK = "breast_3cls"  # registered: 3 classes


def cls_rows(y: list[int], pred: list[int | None], task: str = TASK) -> list[dict]:
    """Strict-mode classification rows (``predicted`` None = invalid prediction)."""
    return [{"task_id": task, "kind": "classification", "image_path": f"c/{i:02d}.png", "label": t,
             "predicted": p, "correct": p == t, "prob_true": 0.5,
             "reason": None if p is not None else "missing"}
            for i, (t, p) in enumerate(zip(y, pred, strict=True))]


def cls_results(rows: list[dict], task: str = TASK, per_class: int | None = 3) -> dict:
    block = {"Accuracy": 0.5, "AUC": 0.5, "F1_macro": 0.5, "F1_weighted": 0.5, "MCC": 0.0,
             "num_samples": len(rows)}
    if per_class is not None:
        block["per_class"] = {f"class_{k}": {"F1": 0.0} for k in range(per_class)}
    return {"segmentation": {}, "classification": {task: block}, "detection": {}, "regression": {},
            "per_case": rows}


def sklearn_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Strict definitions by scikit-learn: -1 = invalid (wrong, a false positive for no class)."""
    labels = sorted(set(y.tolist()) | {v for v in p.tolist() if v >= 0})
    return {
        "F1_macro": f1_score(y, p, labels=labels, average="macro", zero_division=0),
        "F1_weighted": f1_score(y, p, labels=labels, average="weighted", zero_division=0),
        "MCC": matthews_corrcoef(y, p),
    }


def test_confusion_metrics_are_the_metrics_module():
    assert CONFUSION_METRICS == {"F1_macro": classification.f1_macro,
                                 "F1_weighted": classification.f1_weighted, "MCC": classification.mcc}


@pytest.mark.filterwarnings("ignore:A single label was found")
def test_bootstrap_f1_and_mcc_equal_sklearn_on_hand_made_resamples():
    y = [0, 1, 2, 2, 1, 0, 1, 2]
    preds = {"A": [0, 1, 2, 1, 1, 0, None, 2], "B": [1, 1, 0, 2, None, None, 1, 0]}
    cases = [f"c/{i:02d}.png" for i in range(len(y))]
    rows = {n: {r["image_path"]: CaseRow.from_dict(r) for r in cls_rows(y, p)} for n, p in preds.items()}
    resamples = [
        [0, 1, 2, 3, 4, 5, 6, 7],  # every case once: the all-cases values
        [0, 0, 0, 1, 1, 2, 6, 6],  # repeats, some cases never drawn
        [2, 3, 7, 7, 7, 2, 3, 2],  # one class only in the labels
        [6, 6, 6, 6, 4, 4, 4, 4],  # invalid predictions only for A on case 6
        [5, 5, 5, 5, 5, 5, 5, 5],  # one case: MCC undefined -> 0
    ]
    counts = np.stack([np.bincount(r, minlength=len(y)) for r in resamples]).astype(float)
    conf = confusion_columns(list(preds), rows, cases, counts, 3)
    assert conf is not None and set(conf) == {"F1_macro", "F1_weighted", "MCC"}
    for i, (name, pred) in enumerate(preds.items()):
        yv = np.asarray(y)
        pv = np.asarray([-1 if v is None else v for v in pred])
        full = sklearn_metrics(yv, pv)
        for b, sel in enumerate(resamples):
            expected = sklearn_metrics(yv[sel], pv[sel])
            for m, (boot, ref) in conf.items():
                assert boot.shape == (2, len(resamples)) and ref.shape == (2,)
                assert boot[i, b] == pytest.approx(expected[m], abs=1e-12), (name, b, m)
                assert ref[i] == pytest.approx(full[m], abs=1e-12)


def test_missing_label_column_gives_no_confusion_metrics():
    rows = {"A": {"x": CaseRow("t", TaskKind.CLASSIFICATION, "x", correct=True)}}
    assert confusion_columns(["A"], rows, ["x"], np.ones((2, 1)), 2) is None


def test_class_counts_prefer_the_registry():
    blocks = [{TASK: (TaskKind.CLASSIFICATION, {"per_class": {str(k): {} for k in range(3000)}}),
               "custom_cls": (TaskKind.CLASSIFICATION, {"per_class": {"a": {}, "b": {}}}),
               "nothing": (TaskKind.CLASSIFICATION, {}),
               "lung": (TaskKind.SEGMENTATION, {"per_class": {"a": {}}})},
              {"custom_cls": (TaskKind.CLASSIFICATION, {"per_class": {"a": {}, "b": {}, "c": {}}})}]
    assert class_counts(blocks) == {TASK: 3, "custom_cls": 3}


def test_hostile_label_is_skipped_and_counted_not_allocated():
    y = [0, 1, 2, 1, 0, 2]
    a = cls_rows(y, [0, 1, 2, 1, 0, 2])
    a[2]["label"] = 3000  # would make a 3000 x 3001 confusion matrix per round if trusted
    b = cls_rows(y, [0, 2, 2, 1, None, 0])
    lb = build_leaderboard({"A": cls_results(a), "B": cls_results(b)}, n_bootstrap=20, seed=0)
    assert lb.stability is not None
    assert lb.stability.metrics == ["classification/Accuracy", "classification/F1_macro",
                                    "classification/F1_weighted", "classification/MCC"]
    note = [n for n in lb.notes if "skipped as invalid" in n]
    assert len(note) == 1 and "1 per-case row(s) of 'A'" in note[0] and "per_case[2]" in note[0]


def test_invalid_rows_are_counted_in_the_notes():
    good = cls_rows([0, 1, 2, 1], [0, 1, 2, 1])
    bad = cls_rows([0, 1, 2, 1], [0, 2, 2, 1]) + [
        "not a row",
        {"task_id": TASK, "kind": "classification", "image_path": "c/x.png", "label": 1, "predicted": "two"},
        {"task_id": TASK, "kind": "nonsense", "image_path": "c/y.png"},
    ]
    lb = build_leaderboard({"good": cls_results(good), "bad": cls_results(bad)}, n_bootstrap=10)
    notes = [n for n in lb.notes if "skipped as invalid" in n]
    assert len(notes) == 1 and "3 per-case row(s) of 'bad'" in notes[0]
    assert lb.stability is not None and "classification/MCC" in lb.stability.metrics


def test_unknown_class_count_keeps_accuracy_only_with_a_note():
    y = [0, 1, 1, 0]
    subs = {n: cls_results(cls_rows(y, p, task="custom_cls"), task="custom_cls", per_class=None)
            for n, p in (("A", [0, 1, 1, 0]), ("B", [1, 1, 0, 0]))}
    lb = build_leaderboard(subs, n_bootstrap=10)
    assert lb.stability.metrics == ["classification/Accuracy"]
    assert any("class count unknown" in n and "'custom_cls'" in n for n in lb.notes)


def test_numpy_scalars_in_memory_are_read():
    rows = cls_rows([0, 1, 2, 1], [0, 1, 2, None])
    for r in rows:
        r["correct"] = np.bool_(r["correct"])
        r["label"] = np.int64(r["label"])
    other = cls_rows([0, 1, 2, 1], [1, 1, 2, 0])
    lb = build_leaderboard({"np": cls_results(rows), "py": cls_results(other)}, n_bootstrap=10)
    assert not any("skipped as invalid" in n for n in lb.notes)
    assert "classification/MCC" in lb.stability.metrics


def test_import_loads_neither_torch_nor_matplotlib():
    code = ("import sys, evaluation.leaderboard; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'matplotlib')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
