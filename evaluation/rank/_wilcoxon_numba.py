"""Compiled (numba) kernel of the bootstrap signed-rank statistics (:func:`evaluation.rank.wilcoxon.weighted_stats`).

Imported lazily (only for a test-then-rank bootstrap, only when numba is importable and ``FMUIA_NO_NUMBA``
is not set); compiled once and cached on disk by numba (``cache=True``, a few seconds the first time).

Per unordered pair the cases are walked once in increasing ``|d|``; a block of rounds is carried along in
the inner loop (contiguous case counts ``wt[c, b0:b0+block]``, so it vectorises), and the pairs of a block
are spread over the cores. A tie group of ``|d|`` whose cases are drawn ``t`` times in all, ``g`` of them
with a positive difference, after ``s`` drawn cases of smaller ``|d|``, adds ``g * (s + (t + 1) / 2)`` to
``V`` and ``t^3 - t`` to the tie sum.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

BLOCK = 128  # rounds carried together; a compile-time trip count lets the inner loops vectorise fully (3x)


@njit(parallel=True, cache=True, fastmath=True)  # exact anyway: sums of integers and halves
def _kernel(order, positive, new, m, wt, base):  # pragma: no cover - compiled
    # base[b]: sum over all cases of w^3 - w, the tie sum if every case were its own |d| group; each pair
    # corrects it for its invalid cases and its groups of several cases, so a group of one case (the usual)
    # costs one multiply-add for V and one add for the running count, and nothing for a negative difference.
    # wt has a multiple of BLOCK columns (the caller pads with zeros).
    n_pairs = order.shape[0]
    n_cases = order.shape[1]
    n_rounds = wt.shape[1]
    v_out = np.zeros((n_pairs, n_rounds))
    n_out = np.zeros((n_pairs, n_rounds))
    t_out = np.zeros((n_pairs, n_rounds))
    for b0 in range(0, n_rounds, BLOCK):
        for p in prange(n_pairs):
            cum = np.zeros(BLOCK)
            gt = np.zeros(BLOCK)
            gp = np.zeros(BLOCK)
            v = np.zeros(BLOCK)
            t = np.zeros(BLOCK)
            mp = m[p]
            for k in range(mp):
                row = wt[order[p, k], b0:b0 + BLOCK]
                s = positive[p, k]
                ends = k + 1 >= mp or new[p, k + 1] != 0
                if ends and new[p, k] != 0:  # a group of one case
                    if s > 0.0:
                        for q in range(BLOCK):
                            x = row[q]
                            v[q] += x * (cum[q] + 0.5 * x + 0.5)
                            cum[q] += x
                    else:
                        for q in range(BLOCK):
                            cum[q] += row[q]
                else:
                    for q in range(BLOCK):
                        x = row[q]
                        gt[q] += x
                        gp[q] += s * x
                        t[q] -= x * x * x - x
                    if ends:
                        for q in range(BLOCK):
                            g = gt[q]
                            v[q] += gp[q] * (cum[q] + 0.5 * g + 0.5)
                            t[q] += g * g * g - g
                            cum[q] += g
                            gt[q] = 0.0
                            gp[q] = 0.0
            for k in range(mp, n_cases):  # zero or missing differences are not in the test
                row = wt[order[p, k], b0:b0 + BLOCK]
                for q in range(BLOCK):
                    x = row[q]
                    t[q] -= x * x * x - x
            v_out[p, b0:b0 + BLOCK] = v
            n_out[p, b0:b0 + BLOCK] = cum
            t_out[p, b0:b0 + BLOCK] = base[b0:b0 + BLOCK] + t
    return v_out, n_out, t_out


def weighted_signed_rank(order: np.ndarray, positive: np.ndarray, new: np.ndarray, m: np.ndarray,
                         wt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(V, n, tie_sum)`` ``[P, B]``; ``wt[C, B]`` the case counts of every round."""
    c, b = wt.shape
    padded = np.zeros((c, -(-b // BLOCK) * BLOCK))
    padded[:, :b] = wt
    base = (padded ** 3 - padded).sum(axis=0)
    v, n, t = _kernel(np.ascontiguousarray(order, dtype=np.int32), np.ascontiguousarray(positive, dtype=np.float64),
                      np.ascontiguousarray(new, dtype=np.uint8), np.ascontiguousarray(m, dtype=np.int64), padded, base)
    return v[:, :b], n[:, :b], t[:, :b]


@njit(parallel=True, cache=True)
def _median_kernel(order, sv, m, w, n):  # pragma: no cover - compiled
    n_alg = order.shape[0]
    n_rounds = w.shape[0]
    out = np.full((n_rounds, n_alg), np.nan)
    for a in prange(n_alg):
        for b in range(n_rounds):
            total = n[b, a]
            if total <= 0 or m[a] == 0:
                continue
            k1 = (total - 1) // 2
            k2 = total // 2
            cum = 0
            k = -1
            while cum <= k1:  # the first sorted position whose running count exceeds ordinal k1
                k += 1
                cum += w[b, order[a, k]]
            lo = k
            while cum <= k2:
                k += 1
                cum += w[b, order[a, k]]
            out[b, a] = (sv[a, lo] + sv[a, k]) / 2.0
    return out


def weighted_median(order: np.ndarray, sv: np.ndarray, m: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``[B, A]`` medians: ``order[A, C]`` each algorithm's cases by increasing value (the first ``m[a]``
    are its non-missing ones), ``sv`` those values, ``w[B, C]`` integer case counts."""
    wi = np.ascontiguousarray(w, dtype=np.int64)
    ok = np.zeros(order.shape, dtype=np.int64)
    for a in range(order.shape[0]):
        ok[a, order[a, : m[a]]] = 1
    n = wi @ ok.T  # [B, A]: how many drawn values each algorithm has
    return _median_kernel(np.ascontiguousarray(order, dtype=np.int64), np.ascontiguousarray(sv, dtype=np.float64),
                          np.ascontiguousarray(m, dtype=np.int64), wi, np.ascontiguousarray(n))
