"""Challenge metrics as pure numpy functions: arrays in, floats out.

Every function documents its edge-case policy. Distances are in pixels with unit spacing and
pixel centres as points. Nothing here reads files or knows about tasks; the scorers
(:mod:`evaluation.official`, :mod:`evaluation.strict`) decide which policy applies where.

Definitions used throughout:

- A mask is a 2-D boolean array; a *set* is its ``True`` pixels.
- ``d(p, S)`` is the Euclidean distance from pixel ``p`` to the nearest pixel of ``S``.
- Hausdorff distance (all pixels, not only boundaries):
  ``HD(P, G) = max(max_{p in P} d(p, G), max_{g in G} d(g, P))`` — equal to SimpleITK's
  ``HausdorffDistanceImageFilter`` with unit spacing.
- HD95: ``max(q95({d(p, G): p in P}), q95({d(g, P): g in G}))`` where ``q95`` is numpy's
  default (linear-interpolated) 95th percentile over **all** pixels of each set (pixels shared
  by both sets contribute distance 0). This is the per-direction percentile, then the max.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "dice",
    "hausdorff",
    "hd95",
    "directed_distances",
    "SegClassMetrics",
    "per_class_metrics",
    "resize_nearest",
    "diagonal",
    "iou_xyxy",
    "radial_errors",
    "mean_radial_error",
    "confusion_matrix",
    "accuracy",
    "f1_per_class",
    "f1_macro",
    "f1_weighted",
    "mcc",
    "auc_binary",
    "auc_ovr_macro",
]


# ---- segmentation -----------------------------------------------------------------------------

def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice = 2|P∩G| / (|P| + |G|) of two boolean masks of the same shape.

    Edge case: both empty → 1.0 (the official convention).
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    _same_shape(pred, gt)
    inter = int(np.count_nonzero(pred & gt))
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(gt))
    return 1.0 if total == 0 else 2.0 * inter / total


def diagonal(shape: Sequence[int]) -> float:
    """The image diagonal ``sqrt(h² + w²)`` in pixels: the worst possible distance."""
    h, w = int(shape[0]), int(shape[1])
    return float(np.sqrt(h**2 + w**2))


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected two 2-D masks of the same shape, got {a.shape} and {b.shape}")


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(r0, r1, c0, c1)`` (half-open) of the True pixels, or None when there are none."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _nonzero_box(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(r0, r1, c0, c1)`` (half-open) of the pixels where ``a`` or ``b`` (uint8) is non-zero, or None.

    Max-reductions of ``max(a, b)`` (vectorised for uint8) instead of ``any`` (which first casts to bool).
    """
    m = np.maximum(a, b)
    rows = np.flatnonzero(m.max(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.max(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _edt_values(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Distances from the pixels of ``a`` to the pixels of ``b``, both restricted to ``box``."""
    r0, r1, c0, c1 = box
    from scipy.ndimage import distance_transform_edt  # lazy: keeps `import evaluation` fast

    a_c, b_c = a[r0:r1, c0:c1], b[r0:r1, c0:c1]
    dist = distance_transform_edt(~b_c)
    return dist[a_c]


def directed_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``d(p, b)`` for every pixel ``p`` of ``a`` that is **not** in ``b`` (1-D float64 array).

    Pixels of ``a`` that are also in ``b`` have distance 0 and are left out; the caller knows
    how many there are. Raises ``ValueError`` if ``b`` is empty while ``a \\ b`` is not.

    Exact, yet computed on a crop: the Euclidean distance transform of ``~b`` is evaluated on the
    bounding box of ``a \\ b`` grown by a margin. A pixel whose distance found in the crop is
    ``v`` has its true nearest ``b`` pixel within ``v``; if the margin is at least ``v`` on every
    side that is not the image border, that pixel lies inside the crop, so the value is exact.
    Otherwise one more pass with margin ``ceil(max v)`` (or the box of ``a ∪ b``, which holds
    every pixel of ``b``) is exact by the same argument.
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    _same_shape(a, b)
    only_a = a & ~b
    core = _bbox(only_a)
    if core is None:
        return np.zeros(0, dtype=np.float64)
    h, w = a.shape
    b_box = _bbox(b)
    if b_box is None:
        raise ValueError("distance to an empty set is undefined")
    r0, r1, c0, c1 = core
    union_box = (min(r0, b_box[0]), max(r1, b_box[1]), min(c0, b_box[2]), max(c1, b_box[3]))

    def grow(m: int) -> tuple[int, int, int, int]:
        return max(0, r0 - m), min(h, r1 + m), max(0, c0 - m), min(w, c1 + m)

    def area(box: tuple[int, int, int, int]) -> int:
        return (box[1] - box[0]) * (box[3] - box[2])

    margin = 16
    box = grow(margin)
    if area(union_box) <= area(box):
        return _edt_values(only_a, b, union_box)
    r0g, r1g, c0g, c1g = box
    if b[r0g:r1g, c0g:c1g].any():
        vals = _edt_values(only_a, b, box)
        vmax = float(vals.max())
        # exact when, on every side, the crop reaches the border or extends at least vmax
        sides = [r0 - r0g if r0g > 0 else math.inf, r1g - r1 if r1g < h else math.inf,
                 c0 - c0g if c0g > 0 else math.inf, c1g - c1 if c1g < w else math.inf]
        if min(sides) >= vmax:
            return vals
        box2 = grow(int(math.ceil(vmax)))
        return _edt_values(only_a, b, box2 if area(box2) < area(union_box) else union_box)
    return _edt_values(only_a, b, union_box)


def hausdorff(pred: np.ndarray, gt: np.ndarray, *, empty_value: float = math.inf) -> float:
    """Symmetric Hausdorff distance over all pixels (see the module docstring).

    Edge cases: both empty → 0.0; exactly one empty → ``empty_value`` (``inf`` by default; the
    challenge scorers pass the image diagonal).
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    _same_shape(pred, gt)
    np_, ng = bool(pred.any()), bool(gt.any())
    if not np_ and not ng:
        return 0.0
    if not np_ or not ng:
        return float(empty_value)
    d1, d2 = directed_distances(pred, gt), directed_distances(gt, pred)
    return float(max(d1.max(initial=0.0), d2.max(initial=0.0)))


def _percentile_with_zeros(nonzero: np.ndarray, n_zero: int, q: float) -> float:
    """numpy's linear ``percentile(concat(zeros(n_zero), nonzero), q)`` without building it."""
    n = n_zero + nonzero.size
    if n == 0:
        raise ValueError("percentile of an empty set")
    pos = q / 100.0 * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    need = sorted({lo, hi})
    ks = [k - n_zero for k in need if k >= n_zero]
    part = np.partition(nonzero, ks) if ks else nonzero

    def at(k: int) -> float:
        return 0.0 if k < n_zero else float(part[k - n_zero])

    a, b = at(lo), at(hi)
    t = pos - lo
    # the same lerp numpy uses (exact at t = 0 and t = 1)
    return float(b - (b - a) * (1 - t)) if t >= 0.5 else float(a + (b - a) * t)


def hd95(pred: np.ndarray, gt: np.ndarray, *, empty_value: float = math.inf) -> float:
    """95th-percentile Hausdorff distance (per-direction 95th percentile over all pixels, then max).

    Edge cases: both empty → 0.0; exactly one empty → ``empty_value``.
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    _same_shape(pred, gt)
    n_p, n_g = int(np.count_nonzero(pred)), int(np.count_nonzero(gt))
    if n_p == 0 and n_g == 0:
        return 0.0
    if n_p == 0 or n_g == 0:
        return float(empty_value)
    n_both = int(np.count_nonzero(pred & gt))
    d1, d2 = directed_distances(pred, gt), directed_distances(gt, pred)
    return max(_percentile_with_zeros(d1, n_both, 95.0), _percentile_with_zeros(d2, n_both, 95.0))


class SegClassMetrics:
    """Per-class results for one image: arrays of length ``num_classes`` (float64)."""

    __slots__ = ("dice", "hd", "hd95")

    def __init__(self, dice: np.ndarray, hd: np.ndarray, hd95: np.ndarray | None):
        self.dice, self.hd, self.hd95 = dice, hd, hd95


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


_KERNEL: list = []  # [kernel or None] once chosen


def _fast_kernel() -> Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] | None:
    """The compiled kernel of :mod:`evaluation._seg_numba`, or ``None`` for the pure-numpy path.

    Chosen once per process, on first use (numba is never imported by ``import evaluation``):
    ``None`` when the environment variable ``FMUIA_NO_NUMBA`` is set to a non-empty value other
    than ``0``, or when numba cannot be imported or fails to compile.
    """
    if not _KERNEL:
        kernel = None
        if os.environ.get("FMUIA_NO_NUMBA", "") in ("", "0"):
            try:
                import warnings

                with warnings.catch_warnings():  # e.g. a cache that cannot be written: compile anyway
                    warnings.simplefilter("ignore")
                    from evaluation import _seg_numba

                    _seg_numba.warm_up()
                kernel = _seg_numba.seg_kernel
            except Exception:  # no numba (e.g. a minimal scoring image), or it cannot compile here
                kernel = None
        _KERNEL.append(kernel)
    return _KERNEL[0]


def prepare_fast_kernel() -> bool:
    """Choose (and compile) the segmentation kernel now, e.g. in a parent process before it
    forks workers. True when the compiled kernel is in use."""
    return _fast_kernel() is not None


def per_class_metrics(
    pred: np.ndarray, gt: np.ndarray, num_classes: int, *, with_hd95: bool = False
) -> SegClassMetrics:
    """Dice, Hausdorff (and HD95) of ``pred == c`` vs ``gt == c`` for every class ``c`` in
    ``0..num_classes-1`` (background included) of two integer label maps of the same shape.

    Edge cases per class: Dice 1.0 when both are empty; HD and HD95 0.0 when both are empty and
    the image diagonal when exactly one is. Pixel values outside ``0..num_classes-1`` belong to
    no class.

    How it is fast yet exact: only pixels where the maps disagree can have a non-zero distance,
    so they are the only queries. A pixel with ``pred == c != gt`` needs ``d(p, gt == c)`` and one
    with ``gt == c != pred`` needs ``d(g, pred == c)``, and the nearest pixel of a set to a point
    outside it lies on the set's boundary. Hausdorff alone (the maximum) uses the pruned search of
    :func:`_hausdorff_all` on the box of the non-zero pixels. With HD95 every distance is needed:
    all queries are answered together by scanning integer offsets in order of increasing distance
    up to :data:`RING_RADIUS` (the first offset that lands on the target class gives the exact
    distance); the few left are answered exactly by a k-d tree over the target's boundary pixels
    or a cropped Euclidean distance transform.

    Without HD95, when numba is available (see :func:`_fast_kernel`), the counts and the exact
    Hausdorff distances come from the compiled kernel of :mod:`evaluation._seg_numba` instead (an
    early-break nearest-boundary search; same numbers, same policies).
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"expected two 2-D label maps of the same shape, got {pred.shape} and {gt.shape}")
    c = int(num_classes)
    if not 1 <= c <= 255:
        raise ValueError(f"num_classes must be in 1..255, got {c}")
    h, w = pred.shape
    p8 = pred if pred.dtype == np.uint8 else np.where((pred >= 0) & (pred < c), pred, 255).astype(np.uint8)
    g8 = gt if gt.dtype == np.uint8 else np.where((gt >= 0) & (gt < c), gt, 255).astype(np.uint8)
    kernel = None if with_hd95 else _fast_kernel()
    if kernel is not None:  # compiled: counts and exact Hausdorff in one pass (same policies)
        n_pred, n_gt, inter, hd2 = kernel(np.ascontiguousarray(p8), np.ascontiguousarray(g8), c)
        total = n_pred + n_gt
        dice_arr = np.ones(c, dtype=np.float64)
        nz = total > 0
        dice_arr[nz] = (2.0 * inter[nz]) / total[nz]
        hd_arr = np.sqrt(hd2.astype(np.float64))
        hd_arr[(n_pred == 0) ^ (n_gt == 0)] = diagonal(pred.shape)
        return SegClassMetrics(dice_arr, hd_arr, None)
    outside = 0
    if not with_hd95:
        # Everything happens inside the box of the non-zero pixels of either map grown by one
        # pixel: outside it both maps are 0, so it holds no disagreement and no class boundary.
        box = _nonzero_box(p8, g8)
        r0, r1, c0, c1 = box if box is not None else (0, 0, 0, 0)
        r0, r1, c0, c1 = max(r0 - 1, 0), min(r1 + 1, h), max(c0 - 1, 0), min(c1 + 1, w)
        outside = h * w - (r1 - r0) * (c1 - c0)
        p8, g8 = p8[r0:r1, c0:c1], g8[r0:r1, c0:c1]
    ys, xs = np.divmod(np.flatnonzero(p8 != g8), p8.shape[1])  # 1-D flatnonzero: far cheaper than 2-D nonzero
    pv, gv = p8[ys, xs], g8[ys, xs]
    fp = np.bincount(pv[pv < c], minlength=c)[:c].astype(np.int64)  # pred == k, gt != k
    fn = np.bincount(gv[gv < c], minlength=c)[:c].astype(np.int64)  # gt == k, pred != k
    n_gt = np.array([np.count_nonzero(g8 == k) for k in range(c)], dtype=np.int64)
    n_gt[0] += outside
    inter = n_gt - fn
    n_pred = inter + fp
    total = n_pred + n_gt
    dice_arr = np.ones(c, dtype=np.float64)
    nz = total > 0
    dice_arr[nz] = (2.0 * inter[nz]) / total[nz]

    diag = diagonal(pred.shape)
    hd_arr = np.zeros(c, dtype=np.float64)
    hd95_arr = np.zeros(c, dtype=np.float64) if with_hd95 else None
    one_empty = (n_pred == 0) ^ (n_gt == 0)
    hd_arr[one_empty] = diag
    if hd95_arr is not None:
        hd95_arr[one_empty] = diag
    scored = (n_pred > 0) & (n_gt > 0) & ((fp > 0) | (fn > 0))
    if not scored.any():
        return SegClassMetrics(dice_arr, hd_arr, hd95_arr)

    if hd95_arr is None:  # Hausdorff only: pruned, all classes at once
        hd = _hausdorff_all(ys, xs, pv, gv, scored, _class_boundaries(g8, c), _class_boundaries(p8, c), g8.shape)
        hd_arr[scored] = hd[scored]
        return SegClassMetrics(dice_arr, hd_arr, hd95_arr)

    # queries: direction 0 = pred pixel -> gt map, direction 1 = gt pixel -> pred map
    q_p = np.flatnonzero((pv < c) & scored[np.minimum(pv, c - 1)])
    q_g = np.flatnonzero((gv < c) & scored[np.minimum(gv, c - 1)])
    qy = np.concatenate([ys[q_p], ys[q_g]])
    qx = np.concatenate([xs[q_p], xs[q_g]])
    qc = np.concatenate([pv[q_p], gv[q_g]])
    qt = np.concatenate([np.zeros(q_p.size, np.intp), np.ones(q_g.size, np.intp)])
    r = RING_RADIUS
    wp, hp = w + 2 * r, h + 2 * r
    maps = np.full((2, hp, wp), 255, dtype=np.uint8)
    maps[0, r : r + h, r : r + w] = g8
    maps[1, r : r + h, r : r + w] = p8
    flat_maps = maps.ravel()
    base = qt * (hp * wp) + (qy + r) * wp + (qx + r)
    dist = np.empty(qy.size, dtype=np.float64)
    todo = np.arange(qy.size)
    for d, offs in _rings(r, wp):
        if todo.size == 0:
            break
        hit = (flat_maps[base[todo, None] + offs[None, :]] == qc[todo, None]).any(axis=1)
        dist[todo[hit]] = d
        todo = todo[~hit]
    if todo.size:
        maps_full = (g8, p8)
        for t in (0, 1):
            for k in np.unique(qc[todo[qt[todo] == t]]):
                sel = todo[(qt[todo] == t) & (qc[todo] == k)]
                dist[sel] = _far_distances(qy[sel], qx[sel], maps_full[t] == k)

    n_both = inter
    split = q_p.size
    for k in np.flatnonzero(scored):
        d1 = dist[:split][qc[:split] == k]
        d2 = dist[split:][qc[split:] == k]
        hd_arr[k] = max(d1.max(initial=0.0), d2.max(initial=0.0))
        if hd95_arr is not None:
            hd95_arr[k] = max(_percentile_with_zeros(d1, int(n_both[k]), 95.0),
                              _percentile_with_zeros(d2, int(n_both[k]), 95.0))
    return SegClassMetrics(dice_arr, hd_arr, hd95_arr)


def resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize with OpenCV ``INTER_NEAREST`` semantics.

    Destination pixel ``(y, x)`` takes source pixel ``(min(floor(y * sy), H-1),
    min(floor(x * sx), W-1))`` with ``sx = 1 / (width / W)`` computed in float64 as OpenCV does.
    """
    mask = np.asarray(mask)
    src_h, src_w = mask.shape[:2]
    if (src_h, src_w) == (height, width):
        return mask

    def index(dst: int, src: int) -> np.ndarray:
        inv = 1.0 / (dst / src)
        return np.minimum(np.floor(np.arange(dst) * inv).astype(np.intp), src - 1)

    return mask[index(height, src_h)[:, None], index(width, src_w)[None, :]]


# ---- detection and regression -------------------------------------------------------------------

def iou_xyxy(pred: Sequence[float], gt: Sequence[float]) -> float:
    """IoU of two ``[x_min, y_min, x_max, y_max]`` boxes, the official formula.

    Intersection ``max(0, Δx) · max(0, Δy)``; areas ``(x_max - x_min)(y_max - y_min)`` taken as
    they come (an inverted box has a negative or flipped area; validation is the caller's);
    union 0 → 0.0.
    """
    px0, py0, px1, py1 = (float(v) for v in pred)
    gx0, gy0, gx1, gy1 = (float(v) for v in gt)
    inter = max(0.0, min(px1, gx1) - max(px0, gx0)) * max(0.0, min(py1, gy1) - max(py0, gy0))
    union = (px1 - px0) * (py1 - py0) + (gx1 - gx0) * (gy1 - gy0) - inter
    return 0.0 if union == 0 else inter / union


def radial_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Euclidean distance per landmark between ``pred`` and ``gt`` (both ``[K, 2]`` or flat ``2K``)."""
    p = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    g = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
    return np.sqrt(np.sum((p - g) ** 2, axis=1))


def mean_radial_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean of :func:`radial_errors`. Edge case: no landmarks → ``nan``."""
    e = radial_errors(pred, gt)
    return float(np.mean(e)) if e.size else math.nan


# ---- classification (confusion-matrix based; strict mode and bootstrap) -------------------------

def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int,
                     weights: np.ndarray | None = None) -> np.ndarray:
    """``cm[t, p]`` counts (or summed ``weights``) for classes ``0..num_classes-1``.

    A prediction outside ``0..num_classes-1`` (e.g. -1 for "no valid prediction") lands in an extra
    last column: it is wrong for its row and a false positive for no class.
    """
    c = int(num_classes)
    yt = np.asarray(y_true, dtype=np.intp)
    yp = np.asarray(y_pred, dtype=np.intp)
    yp = np.where((yp < 0) | (yp >= c), c, yp)
    return np.bincount(yt * (c + 1) + yp, weights=weights, minlength=c * (c + 1)).reshape(c, c + 1)


def accuracy(cm: np.ndarray) -> float:
    """Fraction on the diagonal. Edge case: no samples → 0.0."""
    total = cm.sum()
    return float(np.trace(cm[:, : cm.shape[0]]) / total) if total else 0.0


def f1_per_class(cm: np.ndarray) -> np.ndarray:
    """F1 of each class (row) with ``zero_division = 0``: 0.0 when ``2TP + FP + FN == 0``."""
    c = cm.shape[0]
    tp = np.diagonal(cm[:, :c]).astype(np.float64)
    fp = cm[:, :c].sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros(c), where=den > 0)


def _present(cm: np.ndarray) -> np.ndarray:
    """Classes that occur in the labels or among valid predictions (sklearn's default label set)."""
    c = cm.shape[0]
    return (cm.sum(axis=1) > 0) | (cm[:, :c].sum(axis=0) > 0)


def f1_macro(cm: np.ndarray) -> float:
    """Unweighted mean F1 over the classes present in labels or valid predictions; none → 0.0."""
    present = _present(cm)
    return float(f1_per_class(cm)[present].mean()) if present.any() else 0.0


def f1_weighted(cm: np.ndarray) -> float:
    """Support-weighted mean F1 (support = label count); no samples → 0.0."""
    support = cm.sum(axis=1).astype(np.float64)
    total = support.sum()
    return float((f1_per_class(cm) * support).sum() / total) if total else 0.0


def mcc(cm: np.ndarray) -> float:
    """Multi-class Matthews correlation (Gorodkin's R_K), as sklearn. Undefined (0/0) → 0.0.

    Invalid predictions (the extra column) count in the totals but for no class.
    """
    c = cm.shape[0]
    cmf = cm.astype(np.float64)
    t = cmf.sum(axis=1)  # true counts per class
    p = cmf[:, :c].sum(axis=0)  # predicted counts per class
    n = cmf.sum()
    correct = np.trace(cmf[:, :c])
    # an invalid-prediction pseudo class: predicted (extra column) but never true
    p_extra = cmf[:, c].sum()
    cov_ytyp = correct * n - float(np.dot(t, p))
    cov_ypyp = n * n - float(np.dot(p, p)) - p_extra * p_extra
    cov_ytyt = n * n - float(np.dot(t, t))
    den = cov_ytyt * cov_ypyp
    return 0.0 if den == 0 else float(cov_ytyp / math.sqrt(den))


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
    # group ties: for each distinct score, positives x (negatives strictly below + half of equal)
    uniq_idx = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    neg_w = np.add.reduceat(np.where(y_sorted, 0.0, w_sorted), uniq_idx)
    pos_w = np.add.reduceat(np.where(y_sorted, w_sorted, 0.0), uniq_idx)
    neg_below = np.cumsum(neg_w) - neg_w
    return float(np.sum(pos_w * (neg_below + 0.5 * neg_w)) / (wp * wn))


def auc_ovr_macro(y: np.ndarray, probs: np.ndarray, num_classes: int,
                  weights: np.ndarray | None = None) -> float:
    """One-vs-rest macro AUC over the classes for which it is defined (present and not alone).

    Unlike sklearn, classes absent from ``y`` are skipped instead of failing the whole metric,
    and probabilities need not sum to one. No class defined → ``nan``.
    """
    y = np.asarray(y)
    probs = np.asarray(probs, dtype=np.float64)
    vals = [auc_binary(y == c, probs[:, c], weights) for c in range(int(num_classes))]
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan
