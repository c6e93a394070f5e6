"""The speed helpers of evaluation.metrics against plain references: the grouped ordering against
np.lexsort, the non-zero box against np.nonzero, class boundaries against a per-pixel loop, and the
Hausdorff-only path against SimpleITK on many tiny random label maps (crop, boundaries, pruning)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from evaluation import metrics as M
from evaluation.metrics import _distance, _search


@pytest.mark.parametrize("seed", range(20))
def test_group_desc_order_matches_lexsort_groups_and_bounds(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    h, w = (int(v) for v in rng.integers(1, 200, 2))
    grp = rng.integers(0, 12, n)
    ub = rng.integers(0, h * h + w * w + 1, n).astype(np.float64)
    ub[rng.random(n) < 0.2] = np.inf  # no target on the probe line
    got = _search._group_desc_order(grp, ub, h * h + w * w)
    ref = np.lexsort((-ub, grp))
    assert sorted(got.tolist()) == list(range(n))  # a permutation
    np.testing.assert_array_equal(grp[got], grp[ref])  # same group order
    np.testing.assert_array_equal(ub[got], ub[ref])  # same bounds, decreasing within a group


def test_group_desc_order_falls_back_to_lexsort_for_huge_keys():
    grp = np.array([3, 1, 3, 1])
    ub = np.array([1.0, np.inf, 5.0, 2.0])
    got = _search._group_desc_order(grp, ub, 2**50)
    np.testing.assert_array_equal(got, np.lexsort((-ub, grp)))


@pytest.mark.parametrize("seed", range(10))
def test_nonzero_box_matches_nonzero(seed):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 40, 2))
    a = (rng.random((h, w)) < rng.uniform(0, 0.05)) * rng.integers(1, 256, (h, w))
    b = (rng.random((h, w)) < rng.uniform(0, 0.05)) * rng.integers(1, 256, (h, w))
    a, b = a.astype(np.uint8), b.astype(np.uint8)
    ys, xs = np.nonzero((a != 0) | (b != 0))
    ref = None if ys.size == 0 else (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
    assert _distance._nonzero_box(a, b) == ref


@pytest.mark.parametrize("seed", range(10))
def test_class_boundaries_match_pixel_loop(seed):
    rng = np.random.default_rng(50 + seed)
    h, w = (int(v) for v in rng.integers(1, 25, 2))
    c = int(rng.integers(1, 5))
    m = rng.integers(0, c + 1, (h, w)).astype(np.uint8)  # value c belongs to no class
    view = np.pad(m, 2)[2:-2, 2:-2]  # a non-contiguous view, as the scorer passes crops
    for arr in (m, view):
        got = _search._class_boundaries(arr, c)
        for k in range(c):
            ref = [(y, x) for y in range(h) for x in range(w) if m[y, x] == k and any(
                0 <= y + dy < h and 0 <= x + dx < w and m[y + dy, x + dx] != k
                for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)))]
            assert [tuple(p) for p in got[k].tolist()] == ref  # row-major order


def _sitk_hd(a: np.ndarray, b: np.ndarray) -> float:
    f = sitk.HausdorffDistanceImageFilter()
    f.Execute(sitk.GetImageFromArray(a.astype(np.uint8) * 255), sitk.GetImageFromArray(b.astype(np.uint8) * 255))
    return f.GetHausdorffDistance()


@pytest.mark.parametrize("seed", range(25))
def test_hausdorff_path_matches_simpleitk_on_tiny_maps(seed):
    """Tiny maps with blobs, specks and empty borders: every branch of the pruned search."""
    rng = np.random.default_rng(900 + seed)
    h, w = (int(v) for v in rng.integers(2, 30, 2))
    c = int(rng.integers(2, 5))
    gt = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for k in range(1, c):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(1, 8)
        gt[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = k
    pred = np.roll(gt, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))
    specks = rng.random((h, w)) < rng.uniform(0, 0.05)
    pred[specks] = rng.integers(0, c, int(specks.sum()))
    got = M.per_class_metrics(pred, gt, c)
    diag = math.hypot(h, w)
    for k in range(c):
        p, g = pred == k, gt == k
        ref = 0.0 if not p.any() and not g.any() else diag if not p.any() or not g.any() else _sitk_hd(p, g)
        assert got.hd[k] == pytest.approx(ref, abs=1e-9)
