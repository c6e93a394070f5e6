"""Classification metrics from one confusion-matrix core, and AUC.

Every count-based metric takes a confusion matrix ``cm[..., C, C + 1]``: ``cm[t, p]`` counts (or
sums weights of) rows with label ``t`` predicted as ``p``; the extra last column holds rows with no
valid prediction (wrong for their row, a false positive for no class). Leading axes are a batch
(bootstrap resamples, submissions): a ``[C, C+1]`` matrix gives a float, ``[B, C, C+1]`` an
array of ``B``. These match scikit-learn (``zero_division=0``) when no row is invalid; the tests
check that.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "confusion_matrix",
    "accuracy",
    "f1_per_class",
    "f1_macro",
    "f1_weighted",
    "mcc",
    "auc_binary",
    "auc_ovr_macro",
]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int,
                     weights: np.ndarray | None = None) -> np.ndarray:
    """``cm[t, p]`` counts (or summed ``weights``) for classes ``0..num_classes-1``.

    A prediction outside ``0..num_classes-1`` (e.g. -1 for "no valid prediction") lands in the
    extra last column. Labels must lie in ``0..num_classes-1``.
    """
    c = int(num_classes)
    yt = np.asarray(y_true, dtype=np.intp)
    yp = np.asarray(y_pred, dtype=np.intp)
    if yt.size and (yt.min() < 0 or yt.max() >= c):
        raise ValueError(f"labels must lie in 0..{c - 1}")
    yp = np.where((yp < 0) | (yp >= c), c, yp)
    return np.bincount(yt * (c + 1) + yp, weights=weights, minlength=c * (c + 1)).reshape(c, c + 1)


def _out(v: np.ndarray) -> float | np.ndarray:
    return float(v) if np.ndim(v) == 0 else v


def _counts(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """tp, fp, fn and support (label count) per class, each ``[..., C]``."""
    cm = np.asarray(cm, dtype=np.float64)
    c = cm.shape[-2]
    tp = np.diagonal(cm[..., :c], axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    fp = cm[..., :c].sum(axis=-2) - tp
    return tp, fp, support - tp, support


def accuracy(cm: np.ndarray) -> float | np.ndarray:
    """Fraction of rows on the diagonal. Edge case: no rows → 0.0."""
    tp, _, _, support = _counts(cm)
    total = support.sum(axis=-1)
    return _out(np.divide(tp.sum(axis=-1), total, out=np.zeros(total.shape), where=total > 0))


def f1_per_class(cm: np.ndarray) -> np.ndarray:
    """F1 of each class ``[..., C]`` with ``zero_division = 0``: 0.0 when ``2TP + FP + FN == 0``."""
    tp, fp, fn, _ = _counts(cm)
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros(den.shape), where=den > 0)


def f1_macro(cm: np.ndarray) -> float | np.ndarray:
    """Unweighted mean F1 over the classes present in the labels or the valid predictions
    (scikit-learn's default label set). Edge case: no class present → 0.0."""
    tp, fp, fn, support = _counts(cm)
    present = (support > 0) | (tp + fp > 0)
    n = present.sum(axis=-1)
    total = np.where(present, f1_per_class(cm), 0.0).sum(axis=-1)
    return _out(np.divide(total, n, out=np.zeros(total.shape), where=n > 0))


def f1_weighted(cm: np.ndarray) -> float | np.ndarray:
    """Support-weighted mean F1 (support = label count). Edge case: no rows → 0.0."""
    _, _, _, support = _counts(cm)
    total = support.sum(axis=-1)
    num = (f1_per_class(cm) * support).sum(axis=-1)
    return _out(np.divide(num, total, out=np.zeros(num.shape), where=total > 0))


def mcc(cm: np.ndarray) -> float | np.ndarray:
    """Multi-class Matthews correlation (Gorodkin's R_K), as scikit-learn computes it.

    Invalid predictions (the extra column) count as a predicted class that is never true.
    Edge case: an undefined ratio (0/0, e.g. one class only) → 0.0.
    """
    cm = np.asarray(cm, dtype=np.float64)
    c = cm.shape[-2]
    t = cm.sum(axis=-1)
    p = cm[..., :c].sum(axis=-2)
    n = cm.sum(axis=(-2, -1))
    correct = np.trace(cm[..., :c], axis1=-2, axis2=-1)
    extra = cm[..., c].sum(axis=-1)
    cov_tp = correct * n - (t * p).sum(axis=-1)
    cov_pp = n * n - (p * p).sum(axis=-1) - extra * extra
    cov_tt = n * n - (t * t).sum(axis=-1)
    den = cov_tt * cov_pp
    return _out(np.divide(cov_tp, np.sqrt(np.where(den > 0, den, 1.0)), out=np.zeros(cov_tp.shape), where=den > 0))


def auc_binary(y: np.ndarray, score: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Area under the ROC curve of ``score`` for ``y == 1`` (ties count one half).

    Mann–Whitney form, optionally with per-sample ``weights`` (bootstrap counts). Edge case:
    only one class present → ``nan`` (undefined).
    """
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    w = np.ones(y.size) if weights is None else np.asarray(weights, dtype=np.float64)
    wp, wn = float(w[y].sum()), float(w[~y].sum())
    if wp == 0 or wn == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    s_sorted, y_sorted, w_sorted = s[order], y[order], w[order]
    # per distinct score: positives there x (negatives strictly below + half of the tied negatives)
    uniq_idx = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    neg_w = np.add.reduceat(np.where(y_sorted, 0.0, w_sorted), uniq_idx)
    pos_w = np.add.reduceat(np.where(y_sorted, w_sorted, 0.0), uniq_idx)
    neg_below = np.cumsum(neg_w) - neg_w
    return float(np.sum(pos_w * (neg_below + 0.5 * neg_w)) / (wp * wn))


def auc_ovr_macro(y: np.ndarray, probs: np.ndarray, num_classes: int,
                  weights: np.ndarray | None = None) -> float:
    """One-vs-rest macro AUC over the classes for which it is defined (present and not alone).

    Unlike scikit-learn, classes absent from ``y`` are skipped instead of failing the whole metric,
    and probabilities need not sum to one. Edge case: no class defined → ``nan``.
    """
    y = np.asarray(y)
    probs = np.asarray(probs, dtype=np.float64)
    vals = [auc_binary(y == c, probs[:, c], weights) for c in range(int(num_classes))]
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan
