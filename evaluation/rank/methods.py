"""The ranking maths of ``fmuia rank``, vectorised: ranks with ties, weighted aggregates, Kendall's tau-b,
and the three ranking methods of challengeR on one task's dense value array.

Conventions: a task's values are ``v[A, C]`` (algorithms × cases, NaN = missing); ``loss`` arrays are
oriented so that smaller is better. Bootstrap rounds are *case counts* ``w[B, C]`` (how often each case
is drawn in round ``b``): a weighted aggregate over the cases with weights ``w[b]`` is the aggregate of the
resampled cases, so nothing is copied per round.
"""

from __future__ import annotations

import numpy as np

from evaluation.rank.wilcoxon import SortedPairs, kernel_kind, pair_tests, prop_significance

__all__ = [
    "AGG_RTOL",
    "rank_rows",
    "case_ranks",
    "weighted_mean",
    "weighted_median",
    "aggregate",
    "kendall_tau_b",
    "aggregate_then_rank",
    "rank_then_aggregate",
    "test_then_rank",
]

# Aggregates computed in different orders (a mean by matrix product vs by np.mean) may differ in the last
# bits; statistics this close (relative) are ties. Raw per-case values are compared exactly, as R does.
AGG_RTOL = 1e-12


def rank_rows(loss: np.ndarray, ties: str = "min", rtol: float = 0.0) -> np.ndarray:
    """Rank along the last axis (1 = smallest ``loss``), every row at once.

    ``ties``: ``min`` | ``max`` | ``average`` (R's ``rank(ties.method=)``). NaN (missing) ranks last as
    challengeR's ``rankNA2`` does: with ``min`` every NaN gets (largest rank of the others) + 1, with
    ``average`` that largest rank + (k + 1) / 2 for k NaNs, with ``max`` the row length. ``rtol``: values
    within this relative distance of their sorted neighbour tie.
    """
    x = np.asarray(loss, dtype=float)
    shape = x.shape
    a = shape[-1] if x.ndim else 1
    x2 = x.reshape(-1, a)
    r = x2.shape[0]
    if a == 0:
        return np.zeros(shape)
    nan = np.isnan(x2)
    filled = np.where(nan, np.inf, x2)
    order = np.argsort(filled, axis=1)  # ties need no order: a tie group gets one rank
    xs = np.take_along_axis(filled, order, axis=1)
    new = np.ones((r, a), dtype=bool)
    if a > 1:
        with np.errstate(invalid="ignore"):  # inf - inf where missing values sort together
            diff = xs[:, 1:] - xs[:, :-1]
            same = (xs[:, 1:] == xs[:, :-1]) | (diff <= rtol * np.maximum(np.abs(xs[:, 1:]), np.abs(xs[:, :-1])))
        new[:, 1:] = ~same
    pos = np.broadcast_to(np.arange(1, a + 1, dtype=float), (r, a))
    # the first and last sorted position of each element's tie group
    first = np.maximum.accumulate(np.where(new, pos, 0.0), axis=1)
    end = np.ones((r, a), dtype=bool)
    end[:, :-1] = new[:, 1:]
    last = np.minimum.accumulate(np.where(end, pos, np.inf)[:, ::-1], axis=1)[:, ::-1]
    if ties == "min":
        rs = first
    elif ties == "max":
        rs = last
    elif ties == "average":
        rs = (first + last) / 2.0
    else:
        raise ValueError(f"ties must be min, max or average, got {ties!r}")
    out = np.empty((r, a))
    np.put_along_axis(out, order, rs, axis=1)
    if nan.any():
        k = nan.sum(axis=1)
        rows = np.flatnonzero(k)
        kept = np.where(nan[rows], -np.inf, out[rows])
        top = np.where(k[rows] == a, 0.0, kept.max(axis=1))
        if ties == "min":
            fill = top + 1.0
        elif ties == "average":
            fill = top + (k[rows] + 1) / 2.0
        else:
            fill = np.full(rows.size, float(a))
        sub = out[rows]
        sub[nan[rows]] = np.repeat(fill, k[rows])
        out[rows] = sub
    return out.reshape(shape)


def case_ranks(loss: np.ndarray, ties: str, keep_missing: bool) -> np.ndarray:
    """``[A, C]`` ranks of the algorithms within each case. A missing value ranks last in its case
    (``keep_missing=False``) or stays NaN (``keep_missing=True``: ``--na-treat remove``)."""
    r = rank_rows(loss.T, ties).T
    if keep_missing:
        r = np.where(np.isnan(loss), np.nan, r)
    return r


def weighted_mean(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``[B, A]``: mean of each algorithm's non-missing values ``v[A, C]`` with case weights ``w[B, C]``
    (NaN where no weighted value is left)."""
    ok = ~np.isnan(v)
    filled = np.where(ok, v, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ filled.T) / (w @ ok.T.astype(float))


def weighted_median(v: np.ndarray, w: np.ndarray, *, use_numba: bool | None = None) -> np.ndarray:
    """``[B, A]``: median (R's: the mean of the two middle values for an even count) of each algorithm's
    non-missing values ``v[A, C]``, case ``c`` counted ``w[b, c]`` times (integer weights). Compiled
    (numba, a walk to the middle of each round) where available, else numpy."""
    w = np.rint(np.asarray(w))
    a_count, c = v.shape
    order = np.zeros((a_count, c), dtype=np.int64)
    sv = np.zeros((a_count, c))
    m = np.zeros(a_count, dtype=np.int64)
    for a in range(a_count):
        ok = np.flatnonzero(~np.isnan(v[a]))
        o = ok[np.argsort(v[a, ok], kind="stable")]
        order[a, : o.size], sv[a, : o.size], m[a] = o, v[a, o], o.size
    kernel = _median_kernel() if use_numba in (None, True) and w.shape[0] > 1 else None
    if kernel is not None:
        return kernel(order, sv, m, w)
    out = np.full((w.shape[0], a_count), np.nan)
    wt = np.ascontiguousarray(w.T.astype(np.int64))  # [C, B]: gathering cases in sorted order copies rows
    for a in range(a_count):
        if m[a] == 0:
            continue
        cum = np.cumsum(wt[order[a, : m[a]]], axis=0)  # [m, B]: drawn values up to each sorted position
        n = cum[-1]
        good = n > 0
        # the value at 0-based ordinal k is at the first sorted position whose running count exceeds k
        lo = np.minimum((cum <= ((n - 1) // 2)[None, :]).sum(axis=0), m[a] - 1)
        hi = np.minimum((cum <= (n // 2)[None, :]).sum(axis=0), m[a] - 1)
        out[good, a] = (sv[a, lo[good]] + sv[a, hi[good]]) / 2.0
    return out


def _median_kernel():
    if kernel_kind() != "numba":  # the same one-time choice as the tests' bootstrap
        return None
    # Deferred like the signed-rank kernel: numba is imported only when a bootstrap needs it.
    from evaluation.rank._wilcoxon_numba import weighted_median as kernel

    return kernel


def aggregate(v: np.ndarray, how: str, w: np.ndarray | None = None) -> np.ndarray:
    """``mean`` or ``median`` of each row of ``v[A, C]`` over its non-missing values: ``[A]`` without
    weights, ``[B, A]`` with case weights ``w[B, C]``."""
    ww = np.ones((1, v.shape[1])) if w is None else w
    fn = {"mean": weighted_mean, "median": weighted_median}.get(how)
    if fn is None:
        raise ValueError(f"aggregate must be mean or median, got {how!r}")
    if how == "mean" and w is None:
        with np.errstate(invalid="ignore", divide="ignore"), _quiet():
            return np.nanmean(v, axis=1) if v.shape[1] else np.full(v.shape[0], np.nan)
    out = fn(v, ww)
    return out[0] if w is None else out


class _quiet:
    """Silence numpy's 'Mean of empty slice' (an algorithm without values: NaN, ranked last)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b between the ranking ``x[A]`` and every row of ``y[..., A]``; entries where either
    is NaN are left out; NaN where a side is constant (fewer than two distinct values)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    iu, ju = np.triu_indices(x.shape[-1], k=1)
    sx = np.sign(x[iu] - x[ju])
    sy = np.sign(y[..., iu] - y[..., ju])
    both = ~(np.isnan(sx) | np.isnan(sy))
    sx = np.where(np.isnan(sx), 0.0, sx)
    sy = np.where(both, sy, 0.0)
    sxb = np.where(both, sx, 0.0)
    num = (sxb * sy).sum(axis=-1)
    den = np.sqrt(np.abs(sxb).sum(axis=-1) * np.abs(sy).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _loss(v: np.ndarray, smaller_better: bool) -> np.ndarray:
    return v if smaller_better else -v


def aggregate_then_rank(v: np.ndarray, smaller_better: bool, how: str, ties: str,
                        w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(statistic, rank)``: each algorithm's ``how`` of its values, ranked (an algorithm with no value
    ranks last). Shapes ``[A]``, or ``[B, A]`` with case weights ``w[B, C]``."""
    stat = aggregate(v, how, w)
    return stat, rank_rows(_loss(stat, smaller_better), ties, AGG_RTOL)


def rank_then_aggregate(ranks: np.ndarray, how: str, ties: str,
                        w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(statistic, rank)`` from the per-case ranks ``ranks[A, C]`` (:func:`case_ranks`): each
    algorithm's ``how`` of its ranks, ranked again (smaller is better)."""
    stat = aggregate(ranks, how, w)
    return stat, rank_rows(stat, ties, AGG_RTOL)


def test_then_rank(v: np.ndarray, smaller_better: bool, alpha: float, p_adjust: str, ties: str,
                   sp: SortedPairs | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``(prop_significance[A], rank[A], tests)``: every ordered pair tested (:func:`pair_tests`), an
    algorithm's score the fraction of the others it beats significantly, ranked (larger is better).
    ``tests`` holds the pair arrays of :func:`evaluation.rank.wilcoxon.pair_tests` plus ``significant``;
    ``sp``: the task's :func:`~evaluation.rank.wilcoxon.sorted_pairs`, when already computed."""
    tests = pair_tests(v, smaller_better, p_adjust, sp)
    sig = tests["p_adjusted"] <= alpha  # NaN (no common case) is not significant
    tests["significant"] = sig
    prop = prop_significance(sig, tests["i"], tests["j"], v.shape[0])
    return prop, rank_rows(-prop, ties, AGG_RTOL), tests
