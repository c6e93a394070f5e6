"""R's one-sided paired Wilcoxon signed-rank test, vectorised over every pair of algorithms, and
``p.adjust`` (none, holm, bonferroni).

What ``wilcox.test(x, y, paired=TRUE, exact=FALSE, correct=TRUE, alternative=...)`` computes, and so what
challengeR's test-then-rank uses:

* the differences ``d = x - y`` of the cases both have (NaN pairs dropped), exact zeros dropped; ``n`` the
  number left;
* ``V`` = the sum of the ranks of ``|d|`` (average ranks for ties, exact equality) over ``d > 0``;
* ``z = (V - n(n+1)/4 - c) / sigma`` with ``sigma^2 = n(n+1)(2n+1)/24 - sum(t^3 - t)/48`` over the tie
  groups, continuity correction ``c = +0.5`` for ``greater`` and ``-0.5`` for ``less``;
* ``p = 1 - Phi(z)`` (greater) or ``Phi(z)`` (less). With no non-zero difference ``sigma = 0`` and R's
  ``p`` is 1 either way; with no common case R stops — here ``p`` is NaN (never significant).

scipy's default (``method="auto"``: exact for small ``n``, zeros handled by ``zero_method="wilcox"`` but the
approximation without the correction unless asked) is not this; tests compare against a scalar loop.

For "is algorithm ``a`` better than ``b``": larger-better metrics test ``greater`` on ``x_a - x_b``,
smaller-better ones ``less``; ``V`` is always R's statistic of ``x_a - x_b``. The two orientations of a pair
share ``n`` and the ties, and ``V_ba = n(n+1)/2 - V_ab``, so each unordered pair is ranked once.

The bootstrap (:func:`weighted_stats`) reruns the test on resampled cases without resampling anything:
``|d|`` of each pair is sorted once; a round is the case counts ``w[c]``, and a case drawn ``w`` times is a
tie group of size ``w`` (plus whatever it already ties with). ``V``, ``n`` and the tie sum follow in one
pass over the sorted cases, for a block of rounds at once (numba kernel, :mod:`._wilcoxon_numba`; a numpy
path when numba is missing or ``FMUIA_NO_NUMBA=1``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

__all__ = [
    "P_ADJUST",
    "signed_rank",
    "p_values",
    "p_adjust",
    "pair_tests",
    "prop_significance",
    "SortedPairs",
    "sorted_pairs",
    "sorted_stats",
    "weighted_stats",
    "kernel_kind",
]

P_ADJUST = ("none", "holm", "bonferroni")
_CHUNK = 1 << 22  # elements of a [pairs, cases] block sorted at once (32 MB of float64)


def _groups(sorted_vals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of a sorted array: (first, last) 1-based position of each element's tie group, and the
    group-start mask."""
    r, c = sorted_vals.shape
    new = np.ones((r, c), dtype=bool)
    if c > 1:
        new[:, 1:] = sorted_vals[:, 1:] != sorted_vals[:, :-1]
    pos = np.broadcast_to(np.arange(1, c + 1, dtype=float), (r, c))
    first = np.maximum.accumulate(np.where(new, pos, 0.0), axis=1)
    end = np.ones((r, c), dtype=bool)
    end[:, :-1] = new[:, 1:]
    last = np.minimum.accumulate(np.where(end, pos, np.inf)[:, ::-1], axis=1)[:, ::-1]
    return first, last, new


def signed_rank(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(V, n, tie_sum)`` of every row of the differences ``d[P, C]`` (NaN = no pair, zeros dropped):
    R's statistic, the number of non-zero differences and ``sum(t^3 - t)`` over the tie groups of ``|d|``."""
    d = np.atleast_2d(np.asarray(d, dtype=float))
    p, c = d.shape
    v = np.zeros(p)
    n = np.zeros(p)
    ties = np.zeros(p)
    step = max(1, _CHUNK // max(c, 1))
    for s in range(0, p, step):
        dd = d[s:s + step]
        with np.errstate(invalid="ignore"):
            valid = ~np.isnan(dd) & (dd != 0)
            positive = dd > 0
        mag = np.where(valid, np.abs(dd), np.inf)
        order = np.argsort(mag, axis=1)  # ties need no order: a group is handled whole
        sv = np.take_along_axis(mag, order, axis=1)
        first, last, new = _groups(sv)
        finite = np.isfinite(sv)
        rk = (first + last) / 2.0
        v[s:s + step] = np.where(np.take_along_axis(positive, order, axis=1), rk, 0.0).sum(axis=1)
        n[s:s + step] = valid.sum(axis=1)
        t = np.where(new & finite, last - first + 1.0, 0.0)
        ties[s:s + step] = (t ** 3 - t).sum(axis=1)
    return v, n, ties


def p_values(v: np.ndarray, n: np.ndarray, ties: np.ndarray, smaller_better: bool) -> np.ndarray:
    """One-sided p-values of R's normal approximation with continuity and tie correction: ``greater`` on
    the differences when larger is better, ``less`` when smaller is better (p = 1 when ``n = 0``)."""
    v, n, ties = (np.asarray(a, dtype=float) for a in (v, n, ties))
    mu = n * (n + 1) / 4.0
    sigma = np.sqrt(np.maximum(n * (n + 1) * (2 * n + 1) / 24.0 - ties / 48.0, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        if smaller_better:
            z = (v - mu + 0.5) / sigma
            return ndtr(z)
        z = (v - mu - 0.5) / sigma
        return ndtr(-z)


def p_adjust(p: np.ndarray, method: str) -> np.ndarray:
    """R's ``p.adjust`` along the last axis; NaN entries are left out (and stay NaN), as in R."""
    p = np.asarray(p, dtype=float)
    if method == "none":
        return p.copy()
    nan = np.isnan(p)
    m = (~nan).sum(axis=-1, keepdims=True).astype(float)
    if method == "bonferroni":
        return np.minimum(1.0, m * p)
    if method != "holm":
        raise ValueError(f"p_adjust must be one of {', '.join(P_ADJUST)}, got {method!r}")
    order = np.argsort(np.where(nan, np.inf, p), axis=-1, kind="stable")
    ps = np.take_along_axis(p, order, axis=-1)
    i = np.arange(1, p.shape[-1] + 1, dtype=float)
    scaled = (m - i + 1.0) * ps
    acc = np.maximum.accumulate(np.where(np.isnan(scaled), -np.inf, scaled), axis=-1)
    adj = np.where(np.isnan(ps), np.nan, np.minimum(1.0, acc))
    out = np.empty_like(p)
    np.put_along_axis(out, order, adj, axis=-1)
    return out


def _ordered(a: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ordered pairs (i, j), i != j, row-major; the unordered pair index of each and whether i < j."""
    i, j = np.nonzero(~np.eye(a, dtype=bool))
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    u = lo * a - lo * (lo + 1) // 2 + (hi - lo - 1)  # index in np.triu_indices(a, 1) order
    return i, j, u, i < j


def pair_tests(v: np.ndarray, smaller_better: bool, p_adjust_method: str = "none",
               sp: SortedPairs | None = None) -> dict[str, np.ndarray]:
    """Every ordered pair of the rows of ``v[A, C]`` (NaN = missing): arrays ``i``, ``j`` (algorithm
    indices), ``n_cases`` (cases both have), ``statistic`` (R's V of ``x_i - x_j``), ``p_value`` (one-sided:
    is ``i`` better than ``j``), ``p_adjusted`` (over all ordered pairs). ``sp``: :func:`sorted_pairs` of
    ``v`` when already computed (the bootstrap reuses it)."""
    a = v.shape[0]
    i, j, u, fwd = _ordered(a)
    if a < 2:
        empty = np.zeros(0)
        return {"i": i, "j": j, "n_cases": empty, "statistic": empty, "p_value": empty, "p_adjusted": empty}
    sp = sorted_pairs(v) if sp is None else sp
    vs, n, ties = sorted_stats(sp)
    common = sp.has_pair.sum(axis=1)
    total = n * (n + 1) / 2.0
    stat = np.where(fwd, vs[u], total[u] - vs[u])
    p = p_values(stat, n[u], ties[u], smaller_better)
    p = np.where(common[u] > 0, p, np.nan)
    return {"i": i, "j": j, "n_cases": common[u], "statistic": stat, "p_value": p,
            "p_adjusted": p_adjust(p, p_adjust_method)}


def prop_significance(sig: np.ndarray, i: np.ndarray, j: np.ndarray, a: int) -> np.ndarray:
    """The fraction of the other ``a - 1`` algorithms each beats significantly: ``sig[..., pairs]`` over the
    ordered pairs ``(i, j)`` -> ``[..., a]`` (NaN for a single algorithm)."""
    sig = np.asarray(sig, dtype=float)
    if a < 2:
        return np.full(sig.shape[:-1] + (a,), np.nan)
    onehot = np.zeros((i.size, a))
    onehot[np.arange(i.size), i] = 1.0
    return (sig @ onehot) / (a - 1)


# ---- bootstrap ----------------------------------------------------------------------------------------

@dataclass
class SortedPairs:
    """The unordered pairs of one task, ``|d|`` sorted once for the bootstrap.

    ``order[P, C]``: case indices in increasing ``|d|`` (the first ``m[p]`` are the valid, non-zero
    differences); ``positive[P, C]``: 1.0 where that difference is positive; ``new[P, C]``: a new value of
    ``|d|`` starts there.
    """

    iu: np.ndarray
    ju: np.ndarray
    order: np.ndarray
    positive: np.ndarray
    new: np.ndarray
    m: np.ndarray
    has_pair: np.ndarray  # [P, C] bool: both values present (for n_cases per round)


def sorted_pairs(v: np.ndarray) -> SortedPairs:
    """Sort ``|x_i - x_j|`` of every unordered pair of the rows of ``v[A, C]`` once."""
    a, c = v.shape
    iu, ju = np.triu_indices(a, k=1)
    d = v[iu] - v[ju]
    with np.errstate(invalid="ignore"):
        valid = ~np.isnan(d) & (d != 0)
        positive = d > 0
    mag = np.where(valid, np.abs(d), np.inf)
    order = np.argsort(mag, axis=1)  # ties need no order: a group is handled whole
    sv = np.take_along_axis(mag, order, axis=1)
    new = np.ones(sv.shape, dtype=bool)
    if c > 1:
        new[:, 1:] = sv[:, 1:] != sv[:, :-1]
    return SortedPairs(iu, ju, order.astype(np.int32), np.take_along_axis(positive, order, axis=1).astype(float),
                       new, valid.sum(axis=1).astype(np.int64), ~np.isnan(d))


def sorted_stats(sp: SortedPairs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(V, n, tie_sum)`` of every pair on all cases, from the sorted differences (one pass over the
    tie groups: a group at 1-based positions ``s..e`` gives each of its positive differences ``(s+e)/2``)."""
    p, c = sp.order.shape
    if p == 0 or c == 0:
        z = np.zeros(p)
        return z, sp.m.astype(float), z.copy()
    valid = np.arange(c)[None, :] < sp.m[:, None]
    starts = np.flatnonzero((sp.new & valid).ravel())
    row = starts // c
    stop = np.minimum(np.append(starts[1:], p * c), row * c + sp.m[row])  # the row's invalid tail is no group
    size = (stop - starts).astype(float)
    first = (starts - row * c + 1).astype(float)
    positives = np.add.reduceat(sp.positive.ravel(), starts) if starts.size else np.zeros(0)
    v = np.bincount(row, positives * (first + (size - 1) / 2.0), minlength=p)
    t = np.bincount(row, size ** 3 - size, minlength=p)
    return v, sp.m.astype(float), t


_NUMBA: list = []  # [kernel or None], chosen once


def kernel_kind() -> str:
    """``numba`` or ``numpy``: which path :func:`weighted_stats` takes in this process."""
    return "numpy" if _kernel() is None else "numba"


def _kernel():
    if not _NUMBA:
        kernel = None
        if os.environ.get("FMUIA_NO_NUMBA", "") in ("", "0"):
            try:
                # Deferred: importing numba costs ~0.2 s; only the test-then-rank bootstrap needs it.
                from evaluation.rank._wilcoxon_numba import weighted_signed_rank as kernel
            except (ImportError, RuntimeError, OSError):  # no numba, or no folder numba may cache in
                kernel = None
        _NUMBA.append(kernel)
    return _NUMBA[0]


def _weighted_numpy(sp: SortedPairs, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p, c = sp.order.shape
    b = w.shape[0]
    vs = np.zeros((p, b))
    ns = np.zeros((p, b))
    ts = np.zeros((p, b))
    valid = np.arange(c)[None, :] < sp.m[:, None]
    gid = np.cumsum(sp.new & valid, axis=1) - 1  # group index within the row (invalid tail: last group)
    offs = np.concatenate([[0], np.cumsum(np.where(valid, sp.new, False).sum(axis=1))])
    flat_gid = np.where(valid, gid + offs[:-1, None], offs[-1]).ravel()  # invalid -> a dump bin
    g = int(offs[-1]) + 1
    group_row = np.repeat(np.arange(p), np.diff(offs))
    pos = sp.positive.ravel()
    for r in range(b):
        wr = w[r][sp.order].ravel()
        gt = np.bincount(flat_gid, wr, minlength=g)[:-1]
        gp = np.bincount(flat_gid, wr * pos, minlength=g)[:-1]
        cum = np.cumsum(gt)
        row_start = np.concatenate([[0.0], cum])[offs[:-1]]
        before = cum - gt - row_start[group_row]
        vs[:, r] = np.bincount(group_row, gp * (before + (gt + 1) / 2.0), minlength=p)
        ns[:, r] = np.bincount(group_row, gt, minlength=p)
        ts[:, r] = np.bincount(group_row, gt ** 3 - gt, minlength=p)
    return vs, ns, ts


def weighted_stats(sp: SortedPairs, w: np.ndarray, *, use_numba: bool | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(V, n, tie_sum)`` ``[P, B]`` of every unordered pair in every round, round ``b`` drawing case ``c``
    ``w[b, c]`` times (the test on the resampled cases, duplicates included)."""
    w = np.asarray(w, dtype=float)
    kernel = _kernel() if use_numba in (None, True) else None
    if use_numba and kernel is None:
        raise RuntimeError("numba kernel not available")
    if kernel is None or sp.order.shape[0] == 0:
        return _weighted_numpy(sp, w)
    wt = np.ascontiguousarray(w.T)
    return kernel(sp.order, sp.positive, sp.new.view(np.uint8), sp.m, wt)
