"""Set-level classification metrics for ``fmuia rank``: F1_macro, F1_weighted and MCC of a task are
computed over its cases (not a mean of per-case values), from the strict per-case rows' ``label`` and
``predicted`` (``None`` = invalid), with the functions and invalid-row policy strict scoring uses
(:func:`evaluation.scoring.strict._cls_metrics`): F1 with ``invalid="every_class"``, MCC as
:func:`~evaluation.metrics.classification.mcc_worst_case` (default budget). On all cases this is the
task's value in the results file.

AUC is refused: the rows keep only ``prob_true``, the probability of the true class, while AUC needs each
row's probability of every class (p(class 1) of a class-0 row is not ``1 - prob_true`` unless the
probabilities sum to one, which strict scoring does not require).

Bootstrap rounds are case counts ``w[B, C]``; one confusion matrix per round and algorithm is a matrix
product of the counts with the one-hot (label, predicted) code of every case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from evaluation.metrics import classification as CM

__all__ = ["SET_METRICS", "SET_REFUSED", "SetLevel", "set_values", "set_values_batched"]

SET_METRICS = ("F1_macro", "F1_weighted", "MCC")  # all larger-is-better
SET_REFUSED = {
    "AUC": "needs every row's probability of each class, and per-case rows keep only prob_true (the probability "
           "of the true class; p(class 1) of a class-0 row is not 1 - prob_true unless the probabilities sum to "
           "one, which strict scoring does not require), so the results' AUC cannot be reproduced from them",
    "AP": "a detection metric over the ranked boxes of a task, which per-case rows do not keep",
    "AP50": "a detection metric over the ranked boxes of a task, which per-case rows do not keep",
    "AP75": "a detection metric over the ranked boxes of a task, which per-case rows do not keep",
}


@dataclass
class SetLevel:
    """A table's set-level metric: its name and each task's number of classes."""

    metric: str
    num_classes: dict[str, int] = field(default_factory=dict)


def _one(metric: str, cm: np.ndarray) -> float:
    if metric == "F1_macro":
        return float(CM.f1_macro(cm, invalid="every_class"))
    if metric == "F1_weighted":
        return float(CM.f1_weighted(cm, invalid="every_class"))
    if metric == "MCC":
        return float(CM.mcc_worst_case(cm))
    raise ValueError(f"not a set-level metric: {metric!r}")


def set_values(metric: str, labels: np.ndarray, predicted: np.ndarray, num_classes: int,
               weights: np.ndarray | None = None) -> np.ndarray:
    """``[A]``: the metric of each algorithm over the cases (``labels[A, C]``, ``predicted[A, C]``: -1 for
    an invalid prediction; a negative label = no row for that case, left out), as strict scoring computes it."""
    out = np.empty(labels.shape[0])
    for a in range(labels.shape[0]):
        keep = labels[a] >= 0
        w = None if weights is None else np.asarray(weights, dtype=float)[keep]
        cm = CM.confusion_matrix(labels[a, keep], predicted[a, keep], num_classes, w)
        out[a] = _one(metric, cm)
    return out


def _mcc_binary_worst(cm: np.ndarray) -> np.ndarray:
    """:func:`mcc_worst_case` of ``[B, 2, 3]`` matrices at once: with two classes the only wrong class of an
    invalid row is the other one, so the enumeration has one vector (same arithmetic, same budget rule)."""
    inv = np.rint(cm[:, :, 2])
    m = inv.sum(axis=1)
    t = cm.sum(axis=2)
    p = cm[:, :, :2].sum(axis=1) + inv[:, ::-1]
    n = cm.sum(axis=(1, 2))
    correct = cm[:, 0, 0] + cm[:, 1, 1]
    cov_tp = correct * n - (p * t).sum(axis=1)
    cov_pp = n * n - (p * p).sum(axis=1)
    cov_tt = n * n - (t * t).sum(axis=1)
    den = cov_tt * cov_pp
    vals = np.divide(cov_tp, np.sqrt(np.where(den > 0, den, 1.0)), out=np.zeros(cov_tp.shape), where=den > 0)
    return np.where(m + 1 > CM.MCC_WORST_CASE_BUDGET, -1.0, vals)


@lru_cache(maxsize=512)
def _all_compositions(m: int, c: int) -> np.ndarray:
    """Every ``a >= 0`` of length ``c`` with ``sum(a) == m`` (rows; read-only, cached)."""
    if c == 1:
        out = np.array([[m]], dtype=np.int64)
    else:
        out = np.concatenate([np.column_stack([np.full(len(rest), first, dtype=np.int64), rest])
                              for first in range(m + 1) for rest in (_all_compositions(m - first, c - 1),)])
    out.setflags(write=False)
    return out


def _mcc_worst(cm: np.ndarray) -> np.ndarray:
    """:func:`mcc_worst_case` of ``[R, C, C+1]`` count matrices with invalid rows, rounds with the same
    number of invalid rows at once, the feasible vectors drawn from a cached table of compositions
    (filtered by each round's caps) instead of rebuilt: the same vectors, arithmetic and budget rule."""
    c = cm.shape[1]
    inv = np.rint(cm[:, :, c]).astype(np.int64)  # [R, C]
    m_all = inv.sum(axis=1)
    out = np.empty(cm.shape[0])
    t = cm.sum(axis=2)  # [R, C]
    p0 = cm[:, :, :c].sum(axis=1)
    n = cm.sum(axis=(1, 2))
    correct = np.trace(cm[:, :, :c], axis1=1, axis2=2)
    for m in np.unique(m_all):
        rows = np.flatnonzero(m_all == m)
        if math.comb(int(m) + c - 1, c - 1) > CM.MCC_WORST_CASE_BUDGET:
            out[rows] = -1.0
            continue
        a = _all_compositions(int(m), c).astype(float)  # [V, C]
        a2 = (a * a).sum(axis=1)
        for chunk in np.array_split(rows, max(1, len(rows) * len(a) // 200_000 + 1)):
            feasible = (a[None, :, :] <= (m - inv[chunk])[:, None, :]).all(axis=2)  # [r, V]
            # p = p0 + a; p.t and |p|^2 by matrix products (integer-valued floats: exact, in any order)
            tt, pp = t[chunk], p0[chunk]
            nn = n[chunk][:, None]
            pt = (pp * tt).sum(axis=1)[:, None] + tt @ a.T
            p2 = (pp * pp).sum(axis=1)[:, None] + 2.0 * (pp @ a.T) + a2[None, :]
            cov_tp = correct[chunk][:, None] * nn - pt
            cov_pp = nn * nn - p2
            cov_tt = nn * nn - (tt * tt).sum(axis=1)[:, None]
            den = cov_tt * cov_pp
            vals = np.divide(cov_tp, np.sqrt(np.where(den > 0, den, 1.0)), out=np.zeros(cov_tp.shape),
                             where=den > 0)
            out[chunk] = np.where(feasible, vals, np.inf).min(axis=1)
    return out


def set_values_batched(metric: str, labels: np.ndarray, predicted: np.ndarray, num_classes: int,
                       w: np.ndarray) -> np.ndarray:
    """``[B, A]``: :func:`set_values` for every round of case counts ``w[B, C]`` (vectorised per algorithm)."""
    c = int(num_classes)
    k = c * (c + 1)
    b = w.shape[0]
    out = np.empty((b, labels.shape[0]))
    for a in range(labels.shape[0]):
        keep = labels[a] >= 0
        pred = np.where((predicted[a] < 0) | (predicted[a] >= c), c, predicted[a])
        code = np.where(keep, labels[a] * (c + 1) + pred, 0)
        onehot = np.zeros((labels.shape[1], k))
        onehot[np.flatnonzero(keep), code[keep]] = 1.0
        cm = (w @ onehot).reshape(b, c, c + 1)
        if metric == "F1_macro":
            out[:, a] = CM.f1_macro(cm, invalid="every_class")
        elif metric == "F1_weighted":
            out[:, a] = CM.f1_weighted(cm, invalid="every_class")
        elif metric == "MCC":
            has_inv = cm[:, :, c].sum(axis=1) > 0
            vals = np.asarray(CM.mcc(cm), dtype=float).reshape(b)
            if has_inv.any():
                worst = _mcc_binary_worst if c == 2 else _mcc_worst
                vals[has_inv] = worst(cm[has_inv])
            out[:, a] = vals
        else:
            raise ValueError(f"not a set-level metric: {metric!r}")
    return out

