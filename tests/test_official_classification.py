"""Official mode's classification block equals what the published scorer's scikit-learn calls give,
on random rows with every edge case: few rows, one class, predictions outside the classes,
probabilities that do not sum to one, of another length, or missing."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import f1_score, matthews_corrcoef, roc_auc_score

from evaluation.scoring.official import _cls_metrics
from evaluation.scoring.rows import ClsScore
from fmuia.tasks import TaskKind, list_tasks

SPECS = list_tasks(TaskKind.CLASSIFICATION)


def _sklearn_block(spec, rows) -> dict:
    """The official scorer's code path, written plainly with scikit-learn."""
    yt = np.array([r.label for r in rows])
    yp = np.array([r.predicted for r in rows])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auc = 0.0
        if all(r.probs is not None for r in rows) and len({len(r.probs) for r in rows}) == 1:
            probs = np.array([r.probs for r in rows], dtype=np.float64)
            try:
                if spec.num_classes == 2:
                    auc = roc_auc_score(yt, probs[:, 1])
                else:
                    auc = roc_auc_score(yt, probs, average="macro", multi_class="ovr")
            except Exception:  # noqa: BLE001 - the official fallback
                auc = 0.0
            if not math.isfinite(auc):
                auc = 0.0
        per = f1_score(yt, yp, average=None, zero_division=0)
        return {"AUC": auc, "Accuracy": float(np.mean(yt == yp)),
                "F1_macro": f1_score(yt, yp, average="macro", zero_division=0),
                "F1_weighted": f1_score(yt, yp, average="weighted", zero_division=0),
                "MCC": matthews_corrcoef(yt, yp),
                "per_class": [float(per[c]) if c < len(per) else 0.0 for c in range(spec.num_classes)]}


@pytest.mark.parametrize("seed", range(4))
def test_matches_scikit_learn_on_random_rows(seed):
    rng = np.random.default_rng(seed)
    with_auc = 0
    for i in range(400):
        spec = SPECS[i % len(SPECS)]
        c = spec.num_classes
        n = int(rng.integers(1, 30))
        present = rng.choice(c, size=int(rng.integers(1, c + 1)), replace=False)
        labels = rng.choice(present, size=n)
        lo, hi = (-1, c + 2) if rng.random() < 0.2 else (0, c)
        preds = np.where(rng.random(n) < 0.6, labels, rng.integers(lo, hi, n))
        mode = int(rng.integers(0, 6))
        k = c if mode < 4 else int(rng.integers(0, c + 2))
        rows = []
        for t, p in zip(labels, preds, strict=True):
            probs = None
            if mode != 5 or rng.random() < 0.8:
                v = rng.random(k)
                if mode in (0, 1, 4) and k:
                    v = v / v.sum()
                if mode == 2:
                    v = np.round(v * 3)  # ties
                probs = tuple(float(x) for x in v)
            rows.append(ClsScore(int(t), int(p), probs))
        ours, ref = _cls_metrics(spec, rows), _sklearn_block(spec, rows)
        with_auc += ref["AUC"] != 0.0
        for key in ("AUC", "Accuracy", "F1_macro", "F1_weighted", "MCC"):
            assert ours[key] == pytest.approx(ref[key], abs=1e-12), (i, key, mode, k)
        assert [ours["per_class"][f"class_{j}"]["F1"] for j in range(c)] == pytest.approx(ref["per_class"], abs=1e-12)
    assert with_auc > 40  # the AUC branches were exercised, not only their refusals


def test_hand_worked_per_class_f1_read_by_position():
    # labels {0, 2}, predictions {0, 2}: scikit-learn's per-class F1 array is [F1(0), F1(2)], and the
    # official code reads it by position, so class_1 gets F1(2) and class_2 gets 0
    spec = next(s for s in SPECS if s.num_classes == 3)
    rows = [ClsScore(0, 0), ClsScore(2, 2), ClsScore(2, 0)]
    out = _cls_metrics(spec, rows)
    f1_0, f1_2 = 2 / 3, 2 / 3
    assert [out["per_class"][f"class_{j}"]["F1"] for j in range(3)] == pytest.approx([f1_0, f1_2, 0.0])
    assert out["F1_macro"] == pytest.approx((f1_0 + f1_2) / 2) and out["AUC"] == 0.0  # no probabilities


def test_official_mode_does_not_import_scikit_learn(synth_root, perfect):
    import subprocess
    import sys

    code = ("import sys; from evaluation.scoring import evaluate; "
            f"evaluate({str(perfect)!r}, {str(synth_root)!r}, mode='official', workers=1); "
            "assert 'sklearn' not in sys.modules, 'sklearn imported'")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
