"""Segmentation metrics: Dice, Hausdorff and HD95 of masks and of whole label maps.

Every function documents its edge-case policy. Distances are in pixels with unit spacing and
pixel centres as points. Nothing here reads files or knows about tasks; the scorers
(:mod:`evaluation.scoring`) decide which policy applies where.

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

import math
from collections.abc import Sequence

import numpy as np

from evaluation.metrics._distance import _nonzero_box, _percentile_with_zeros, _same_shape, directed_distances
from evaluation.metrics._kernel import _fast_kernel
from evaluation.metrics._search import RING_RADIUS, _class_boundaries, _far_distances, _hausdorff_all, _rings

__all__ = ["dice", "diagonal", "hausdorff", "hd95", "directed_distances", "SegClassMetrics", "per_class_metrics",
           "foreground_mean"]


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice = 2|P∩G| / (|P| + |G|) of two boolean masks of the same shape.

    Edge case: both empty → 1.0 (the official convention).
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    _same_shape(pred, gt)
    inter = int(np.count_nonzero(pred & gt))
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(gt))
    return 1.0 if total == 0 else 2.0 * inter / total


def foreground_mean(per_class: np.ndarray) -> float | np.ndarray:
    """Mean over the foreground classes ``1..C-1`` (the last axis holds the classes, background
    first): how a task's DSC and HD come from per-class values. Edge case: no foreground class
    (``C <= 1``) → 0.0."""
    v = np.asarray(per_class, dtype=np.float64)
    if v.shape[-1] <= 1:
        return 0.0 if v.ndim == 1 else np.zeros(v.shape[:-1])
    out = v[..., 1:].mean(axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def diagonal(shape: Sequence[int]) -> float:
    """The image diagonal ``sqrt(h² + w²)`` in pixels: the worst possible distance."""
    h, w = int(shape[0]), int(shape[1])
    return float(np.sqrt(h**2 + w**2))


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
    Hausdorff distances come from the compiled kernel of :mod:`evaluation.metrics._seg_numba` instead (an
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
