"""Fast exact Hausdorff (and HD95) searches over two label maps: the numpy engine behind
:func:`evaluation.metrics.per_class_metrics` when the compiled kernel is not in use.

Everything here is exact; the speed comes from asking only the pixels where the maps disagree,
and only against the boundary pixels of the other map's class (see each function).
"""

from __future__ import annotations

import functools

import numpy as np

from evaluation.metrics._distance import _bbox, directed_distances

RING_RADIUS = 12  # local search radius (pixels) before the exact fallback


@functools.lru_cache(maxsize=64)
def _rings(radius: int, row_stride: int) -> list[tuple[float, np.ndarray]]:
    """Integer offsets with ``0 < dy² + dx² <= radius²`` grouped by distance, nearest first, as
    flat offsets into a row-major array whose rows are ``row_stride`` long."""
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    d2 = (dy * dy + dx * dx).ravel()
    flat = (dy * row_stride + dx).ravel()
    keep = (d2 > 0) & (d2 <= radius * radius)
    d2, flat = d2[keep], flat[keep]
    order = np.argsort(d2, kind="stable")
    d2, flat = d2[order], flat[order]
    cuts = np.flatnonzero(np.diff(d2)) + 1
    return [(float(np.sqrt(g[0])), f) for g, f in zip(np.split(d2, cuts), np.split(flat, cuts), strict=True)]


def _boundary_points(target: np.ndarray) -> np.ndarray:
    """``(row, col)`` of the pixels of ``target`` with a 4-neighbour outside it (image edges count
    as outside). The nearest pixel of a set to any point outside it is always such a pixel."""
    box = _bbox(target)
    assert box is not None
    r0, r1, c0, c1 = box
    t = np.pad(target[r0:r1, c0:c1], 1)
    inner = t[1:-1, 1:-1] & t[:-2, 1:-1] & t[2:, 1:-1] & t[1:-1, :-2] & t[1:-1, 2:]
    pts = np.argwhere(t[1:-1, 1:-1] & ~inner)
    pts[:, 0] += r0
    pts[:, 1] += c0
    return pts


def _far_distances(ys: np.ndarray, xs: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Exact ``d((y, x), target)`` for points outside ``target`` (the ring search's leftovers):
    a k-d tree over the target's boundary pixels for a few points, a cropped EDT for many."""
    n = ys.size
    if n * 64 < target.size:
        from scipy.spatial import cKDTree

        d, _ = cKDTree(_boundary_points(target)).query(np.c_[ys, xs].astype(np.float64), k=1)
        return np.asarray(d, dtype=np.float64)
    a = np.zeros(target.shape, dtype=bool)
    a[ys, xs] = True
    dist = np.full(target.shape, np.nan)
    dist[a] = directed_distances(a, target)  # both walk ``a`` in row-major order
    return dist[ys, xs]


def _probe(keys: np.ndarray, line: np.ndarray, pos: np.ndarray, stride: int) -> np.ndarray:
    """Steps along a line (a row, column or diagonal) from ``pos`` to the nearest key on that line;
    ``keys`` are sorted ``line * stride + position``. ``inf`` when the line holds no key."""
    m = keys.size
    k = line * stride + pos
    i = np.searchsorted(keys, k)
    right = keys[np.minimum(i, m - 1)]
    left = keys[np.maximum(i - 1, 0)]
    d_r = np.where((i < m) & (right // stride == line), right - k, np.inf)
    d_l = np.where((i > 0) & (left // stride == line), k - left, np.inf)
    return np.minimum(d_r, d_l)


def _class_boundaries(m8: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """For each class ``k``, the ``(row, col)`` (row-major order) of the pixels of ``m8 == k`` that
    have a 4-neighbour of another value: one pass over the label map for all classes."""
    h, w = m8.shape
    b = np.zeros((h, w), dtype=bool)
    dh = m8[:, 1:] != m8[:, :-1]
    b[:, 1:] |= dh
    b[:, :-1] |= dh
    dv = m8[1:, :] != m8[:-1, :]
    b[1:, :] |= dv
    b[:-1, :] |= dv
    flat = np.flatnonzero(b)
    lab = m8.ravel()[flat] if m8.flags.c_contiguous else m8[b]
    # one sort of (label, row-major index) keys groups the pixels by class, row-major within each
    # (the same order as a stable argsort of the labels, much cheaper)
    n = h * w
    keys = np.sort(lab.astype(np.int64) * n + flat)
    counts = np.bincount(lab, minlength=256)
    ends = np.cumsum(counts)
    starts = ends - counts
    yb, xb = np.divmod(keys - (keys // n) * n, w)
    pts = np.c_[yb, xb]
    return [pts[starts[k] : ends[k]] for k in range(num_classes)]


def _max_min_d2(qy: np.ndarray, qx: np.ndarray, by: np.ndarray, bx: np.ndarray, best2: int) -> int:
    """``max(best2, max_q min_b |q - b|²)`` in exact integers; ``q`` sorted by decreasing bound,
    processed in chunks (a k-d tree when the product is large)."""
    n, m = qy.size, by.size
    if n * m > 8_000_000:
        from scipy.spatial import cKDTree

        d, _ = cKDTree(np.c_[by, bx].astype(np.float64)).query(np.c_[qy, qx].astype(np.float64), k=1)
        d2 = np.rint(np.asarray(d) ** 2).astype(np.int64)  # distances are square roots of integers
        return max(best2, int(d2.max()))
    step = max(1, 1_000_000 // max(m, 1))
    for i in range(0, n, step):
        dy = qy[i : i + step, None] - by[None, :]
        dx = qx[i : i + step, None] - bx[None, :]
        best2 = max(best2, int((dy * dy + dx * dx).min(axis=1).max()))
    return best2


def _group_desc_order(grp: np.ndarray, ub: np.ndarray, diag2: int) -> np.ndarray:
    """Indices ordering queries by group, then by decreasing bound ``ub`` (squared, possibly inf).

    Same groups and order of bounds as ``np.lexsort((-ub, grp))`` (ties may come in another
    order, which nothing relies on), through one argsort of a float key: bounds are clipped to
    ``2 * diag2`` (any bound above the squared diagonal is as good as infinite) so that group
    ``g``'s keys lie in ``[g * span, (g + 1) * span)``, exact in float64 while
    ``grp.max() * span < 2**52``; larger cases use lexsort.
    """
    span = 4.0 * diag2 + 1.0
    if grp.size == 0 or (float(grp.max()) + 1.0) * span >= 2.0**52:
        return np.lexsort((-ub, grp))
    key = grp * span + (2.0 * diag2 - np.minimum(ub, 2.0 * diag2))
    return np.argsort(key)


def _hausdorff_all(ys: np.ndarray, xs: np.ndarray, pv: np.ndarray, gv: np.ndarray, scored: np.ndarray,
                   bd_g: list[np.ndarray], bd_p: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Exact Hausdorff distance of every ``scored`` class, all classes and both directions at once.

    Queries are the disagreeing pixels ``(ys, xs)`` with their values ``pv`` (prediction) and
    ``gv`` (label). Group ``k`` asks ``d(p, gt == k)`` for pixels with ``pred == k != gt``; group
    ``C + k`` asks ``d(g, pred == k)`` for pixels with ``gt == k != pred``. Targets are given by
    their boundary pixels ``bd_g`` / ``bd_p`` (the nearest pixel of a set to a point outside it is
    always on its boundary).

    Only each group's maximum is needed, so the search is pruned: the nearest boundary pixel on
    the query's own row, column and diagonals (binary searches) bounds its distance from above,
    and the exact distance of any query bounds the group's maximum from below. A query whose
    upper bound does not exceed the group's best exact distance cannot be the maximum and is
    dropped (after each probe). The rest are visited by decreasing bound, in growing chunks,
    with exact squared distances (integers, brute force over the boundary pixels), until no
    remaining bound exceeds the best.
    """
    c = len(bd_g)
    h, w = shape
    out = np.zeros(c, dtype=np.float64)
    q_p = (pv < c) & scored[np.minimum(pv, c - 1)]
    q_g = (gv < c) & scored[np.minimum(gv, c - 1)]
    qy = np.concatenate([ys[q_p], ys[q_g]]).astype(np.int64)
    qx = np.concatenate([xs[q_p], xs[q_g]]).astype(np.int64)
    qgrp = np.concatenate([pv[q_p].astype(np.int64), gv[q_g].astype(np.int64) + c])
    if qy.size == 0:
        return out
    # order the queries by (group, row, column): the row probe's needles are then sorted, which
    # makes its binary searches several times cheaper, and each group is one contiguous run
    n = h * w
    qkey = np.sort(qgrp * n + qy * w + qx)
    qgrp = qkey // n
    qy, qx = np.divmod(qkey - qgrp * n, w)
    targets = {k: bd_g[k] for k in range(c) if scored[k]} | {c + k: bd_p[k] for k in range(c) if scored[k]}
    bgrp = np.concatenate([np.full(len(b), g, dtype=np.int64) for g, b in targets.items()])
    allb = np.concatenate(list(targets.values())).astype(np.int64)
    by, bx = allb[:, 0], allb[:, 1]
    # Upper bounds: the nearest boundary pixel along the query's row, then (for the queries still
    # in the running) its column and both diagonals; squared distances.
    nd = h + w  # number of diagonals of one orientation
    probes = [
        (lambda: (bgrp * h + by) * w + bx, lambda i: (qgrp[i] * h + qy[i], qx[i]), w, 1),
        (lambda: (bgrp * w + bx) * h + by, lambda i: (qgrp[i] * w + qx[i], qy[i]), h, 1),
        (lambda: (bgrp * nd + (by - bx + w)) * h + by, lambda i: (qgrp[i] * nd + (qy[i] - qx[i] + w), qy[i]), h, 2),
        (lambda: (bgrp * nd + (by + bx)) * h + by, lambda i: (qgrp[i] * nd + (qy[i] + qx[i]), qy[i]), h, 2),
    ]
    keys, line_pos, stride, k2 = probes[0]
    line, pos = line_pos(slice(None))
    ub = k2 * _probe(np.sort(keys()), line, pos, stride) ** 2
    # the exact distance of each group's query with the largest bound starts each group's best
    starts = np.flatnonzero(np.r_[True, qgrp[1:] != qgrp[:-1]])
    top = np.repeat(np.maximum.reduceat(ub, starts), np.diff(np.r_[starts, qgrp.size]))
    hit = np.flatnonzero(ub == top)
    first = hit[np.r_[True, qgrp[hit][1:] != qgrp[hit][:-1]]]  # each group's query with the largest bound
    best2 = np.zeros(2 * c, dtype=np.int64)
    if first.size * by.size <= 2_000_000:  # all groups in one brute-force pass
        d2 = (qy[first, None] - by[None, :]) ** 2 + (qx[first, None] - bx[None, :]) ** 2
        d2 = np.where(qgrp[first, None] == bgrp[None, :], d2, np.iinfo(np.int64).max)
        best2[qgrp[first]] = d2.min(axis=1)
    else:
        for i in first:
            b = targets[int(qgrp[i])].astype(np.int64)
            best2[qgrp[i]] = _max_min_d2(qy[i : i + 1], qx[i : i + 1], b[:, 0], b[:, 1], 0)
    alive = np.flatnonzero(ub > best2[qgrp])
    for keys, line_pos, stride, k2 in probes[1:]:
        if alive.size == 0:
            break
        line, pos = line_pos(alive)
        ub[alive] = np.minimum(ub[alive], k2 * _probe(np.sort(keys()), line, pos, stride) ** 2)
        alive = alive[ub[alive] > best2[qgrp[alive]]]
    # squared distances fit in int32 (half the memory traffic of the brute force) below 32768 px a side
    coord = np.int32 if max(h, w) < 32768 else np.int64
    if alive.size:
        order = alive[_group_desc_order(qgrp[alive], ub[alive], h * h + w * w)]  # by group, largest bound first
        g_sorted = qgrp[order]
        starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
        ends = np.r_[starts[1:], g_sorted.size]
        for lo, hi in zip(starts, ends, strict=True):
            g = int(g_sorted[lo])
            idx = order[lo:hi]
            b = targets[g].astype(coord)
            tby, tbx = b[:, 0], b[:, 1]
            neg_ub = -ub[idx]  # increasing
            best, done, step = int(best2[g]), 0, 8
            while done < idx.size:
                # bounds decrease along idx: the queries that can still beat ``best`` are a prefix
                cut = int(np.searchsorted(neg_ub, -float(best), side="left"))
                if cut <= done:
                    break
                take = idx[done : min(cut, done + step)]
                best = _max_min_d2(qy[take].astype(coord), qx[take].astype(coord), tby, tbx, best)
                done += take.size
                step = min(step * 4, 4096)
            best2[g] = best
    hd2 = np.maximum(best2[:c], best2[c:])
    return np.sqrt(hd2.astype(np.float64))
