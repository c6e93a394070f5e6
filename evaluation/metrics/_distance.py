"""Exact point-to-set distances on pixel grids, and the percentile helper HD95 needs.

Private to :mod:`evaluation.metrics`: the building blocks of :func:`~evaluation.metrics.hausdorff`,
:func:`~evaluation.metrics.hd95` and the accelerated search in :mod:`evaluation.metrics._search`.
"""

from __future__ import annotations

import math

import numpy as np


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
    # deferred import: scipy.ndimage takes 0.45 s to import and the compiled path never needs it
    from scipy.ndimage import distance_transform_edt

    r0, r1, c0, c1 = box

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


