"""Classification metrics from one confusion-matrix core, and AUC.

Every count-based metric takes a confusion matrix ``cm[..., C, C + 1]``: ``cm[t, p]`` counts (or
sums weights of) rows with label ``t`` predicted as ``p``; the extra last column holds rows with no
valid prediction. Leading axes are a batch (bootstrap resamples, submissions): a ``[C, C+1]``
matrix gives a float, ``[B, C, C+1]`` an array of ``B``. These match scikit-learn
(``zero_division=0``) when no row is invalid; the tests check that.

How an invalid row counts is an explicit policy (keyword ``invalid``):

- ``"no_class"`` (default): wrong for its row, a false positive for no class.
- ``"every_class"`` (F1; strict scoring): wrong for its row *and* a false positive for every other
  class. Whatever a valid prediction of that row would have been (its own class: a true positive;
  another class ``j``: one false positive for ``j``), this adds at least as many errors to every
  class and keeps the same true positives, so no per-class F1 can be higher; classes it makes
  "present" have no true positive (F1 0), so macro and weighted F1 cannot be higher either. Hence
  turning any row invalid never raises F1.
- :func:`mcc_worst_case`: the lowest MCC over every way of giving the invalid rows a wrong class.
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
    "mcc_worst_case",
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


_INVALID_POLICIES = ("no_class", "every_class")


def _counts(cm: np.ndarray, invalid: str = "no_class") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """tp, fp, fn and support (label count) per class, each ``[..., C]``."""
    if invalid not in _INVALID_POLICIES:
        raise ValueError(f"invalid must be one of {_INVALID_POLICIES}, got {invalid!r}")
    cm = np.asarray(cm, dtype=np.float64)
    c = cm.shape[-2]
    tp = np.diagonal(cm[..., :c], axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    fp = cm[..., :c].sum(axis=-2) - tp
    if invalid == "every_class" and cm.shape[-1] > c:
        inv = cm[..., c]  # [..., C] invalid rows per label
        fp = fp + inv.sum(axis=-1, keepdims=True) - inv  # a false positive for every class but its own
    return tp, fp, support - tp, support


def accuracy(cm: np.ndarray) -> float | np.ndarray:
    """Fraction of rows on the diagonal. Edge case: no rows → 0.0."""
    tp, _, _, support = _counts(cm)
    total = support.sum(axis=-1)
    return _out(np.divide(tp.sum(axis=-1), total, out=np.zeros(total.shape), where=total > 0))


def f1_per_class(cm: np.ndarray, *, invalid: str = "no_class") -> np.ndarray:
    """F1 of each class ``[..., C]`` with ``zero_division = 0``: 0.0 when ``2TP + FP + FN == 0``."""
    tp, fp, fn, _ = _counts(cm, invalid)
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros(den.shape), where=den > 0)


def f1_macro(cm: np.ndarray, *, invalid: str = "no_class") -> float | np.ndarray:
    """Unweighted mean F1 over the classes present in the labels or the predictions
    (scikit-learn's default label set). Edge case: no class present → 0.0."""
    tp, fp, fn, support = _counts(cm, invalid)
    present = (support > 0) | (tp + fp > 0)
    n = present.sum(axis=-1)
    total = np.where(present, f1_per_class(cm, invalid=invalid), 0.0).sum(axis=-1)
    return _out(np.divide(total, n, out=np.zeros(total.shape), where=n > 0))


def f1_weighted(cm: np.ndarray, *, invalid: str = "no_class") -> float | np.ndarray:
    """Support-weighted mean F1 (support = label count). Edge case: no rows → 0.0."""
    _, _, _, support = _counts(cm, invalid)
    total = support.sum(axis=-1)
    num = (f1_per_class(cm, invalid=invalid) * support).sum(axis=-1)
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


# The enumeration in mcc_worst_case visits at most this many assignments; beyond it the bound -1.
MCC_WORST_CASE_BUDGET = 100_000


def _compositions(total: int, caps: np.ndarray) -> np.ndarray:
    """Every vector ``a >= 0`` with ``sum(a) == total`` and ``a <= caps`` (rows of an int array)."""
    out = [np.zeros(0, dtype=np.int64)]
    for k in range(len(caps)):
        rest_cap = int(caps[k + 1:].sum())
        nxt = []
        for prefix in out:
            left = total - int(prefix.sum())
            lo = max(0, left - rest_cap)
            for v in range(lo, min(int(caps[k]), left) + 1):
                nxt.append(np.append(prefix, v))
        out = nxt
    return np.array(out, dtype=np.int64).reshape(len(out), len(caps))


def mcc_worst_case(cm: np.ndarray, *, budget: int = MCC_WORST_CASE_BUDGET) -> float:
    """The lowest multi-class MCC over every way of giving each invalid row (last column of a
    ``[C, C+1]`` count matrix) a wrong class; :func:`mcc` when no row is invalid.

    MCC depends on the counts only through the number of correct rows (fixed: invalid rows are
    wrong) and the predicted count per class, so it is enough to visit every feasible vector ``a``
    of invalid rows given to each class: ``sum(a) == m`` and ``a_k <= m - m_k`` (class ``k`` takes
    no invalid row of its own label), each of which some assignment achieves. The minimum over
    more free rows is over more assignments, so making a row invalid never raises it. When the
    number of vectors, at most ``comb(m + C - 1, C - 1)``, exceeds ``budget`` the result is -1, the
    lowest MCC there is; that count grows with ``m``, so the rule keeps the same monotonicity.
    """
    cm = np.asarray(cm, dtype=np.float64)
    c = cm.shape[0]
    if cm.shape[-1] == c or cm[:, c].sum() == 0:
        return mcc(cm)
    inv = np.rint(cm[:, c]).astype(np.int64)
    m = int(inv.sum())
    if math.comb(m + c - 1, c - 1) > budget:
        return -1.0
    a = _compositions(m, m - inv)  # [V, C]
    t = cm.sum(axis=1)
    p = cm[:, :c].sum(axis=0)[None, :] + a  # predicted counts per class, [V, C]
    n = cm.sum()
    correct = np.trace(cm[:, :c])
    cov_tp = correct * n - p @ t
    cov_pp = n * n - (p * p).sum(axis=1)
    cov_tt = n * n - float(t @ t)
    den = cov_tt * cov_pp
    vals = np.divide(cov_tp, np.sqrt(np.where(den > 0, den, 1.0)), out=np.zeros(cov_tp.shape), where=den > 0)
    return float(vals.min())


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
