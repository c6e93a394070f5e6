"""Both implementations of the Hausdorff-only path of ``per_class_metrics`` — the compiled numba
kernel (evaluation.metrics._seg_numba) and the pure-numpy fallback — against SimpleITK and brute force on
many tiny random label maps (empty, single pixel, border-touching, noise, out-of-range values),
plus the selection rules (FMUIA_NO_NUMBA, lazy import, no usable cache)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.distance import cdist

from evaluation import metrics as M
from evaluation.metrics import _kernel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _numba_kernel():
    pytest.importorskip("numba")
    from evaluation.metrics import _seg_numba

    return _seg_numba.seg_kernel


@pytest.fixture(params=["numba", "numpy"])
def impl(request, monkeypatch):
    """Forces one implementation for the test (restored afterwards)."""
    kernel = _numba_kernel() if request.param == "numba" else None
    monkeypatch.setattr(_kernel, "_KERNEL", [kernel])
    return request.param


def sitk_hd(a: np.ndarray, b: np.ndarray) -> float:
    f = sitk.HausdorffDistanceImageFilter()
    f.Execute(sitk.GetImageFromArray(a.astype(np.uint8)), sitk.GetImageFromArray(b.astype(np.uint8)))
    return f.GetHausdorffDistance()


def brute_hd(a: np.ndarray, b: np.ndarray) -> float:
    d = cdist(np.argwhere(a), np.argwhere(b))
    return float(max(d.min(axis=1).max(), d.min(axis=0).max()))


def reference(pred: np.ndarray, gt: np.ndarray, c: int, oracle) -> tuple[np.ndarray, np.ndarray]:
    diag = math.hypot(*pred.shape)
    dice, hd = [], []
    for k in range(c):
        p, g = pred == k, gt == k
        s = int(p.sum() + g.sum())
        dice.append(1.0 if s == 0 else 2.0 * int((p & g).sum()) / s)
        if not p.any() and not g.any():
            hd.append(0.0)
        elif not p.any() or not g.any():
            hd.append(diag)
        else:
            hd.append(oracle(p, g))
    return np.array(dice), np.array(hd)


def _random_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    h, w = (int(v) for v in rng.integers(1, 14, 2))
    c = int(rng.integers(1, 6))
    kind = int(rng.integers(0, 6))
    if kind == 0:  # noise, values up to c (c belongs to no class)
        gt, pred = rng.integers(0, c + 1, (h, w)), rng.integers(0, c + 1, (h, w))
    elif kind == 1:  # mostly background with sparse pixels (single pixels, empty classes)
        gt = np.where(rng.random((h, w)) < 0.1, rng.integers(0, c, (h, w)), 0)
        pred = np.where(rng.random((h, w)) < 0.1, rng.integers(0, c, (h, w)), 0)
    elif kind == 2:  # blocks touching the borders, shifted
        gt = np.zeros((h, w), np.int64)
        for k in range(1, c):
            y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
            gt[y0 : y0 + int(rng.integers(1, h + 1)), x0 : x0 + int(rng.integers(1, w + 1))] = k
        pred = np.roll(gt, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))
    elif kind == 3:  # identical maps
        gt = rng.integers(0, c, (h, w))
        pred = gt.copy()
    elif kind == 4:  # one map empty of foreground, the other full of one class
        gt = np.zeros((h, w), np.int64)
        pred = np.full((h, w), c - 1)
    else:  # a single pixel each
        gt = np.zeros((h, w), np.int64)
        pred = np.zeros((h, w), np.int64)
        gt[int(rng.integers(0, h)), int(rng.integers(0, w))] = c - 1 if c > 1 else 0
        pred[int(rng.integers(0, h)), int(rng.integers(0, w))] = c - 1 if c > 1 else 0
    dtype = (np.uint8, np.int32, np.int64)[int(rng.integers(0, 3))]
    return pred.astype(dtype), gt.astype(dtype), c


@pytest.mark.parametrize("seed", range(4))
def test_tiny_random_maps_match_brute_force(impl, seed):
    rng = np.random.default_rng(1000 + seed)
    for _ in range(150):
        pred, gt, c = _random_pair(rng)
        got = M.per_class_metrics(pred, gt, c)
        d_ref, h_ref = reference(pred, gt, c, brute_hd)
        np.testing.assert_allclose(got.dice, d_ref, rtol=0, atol=1e-12)
        np.testing.assert_allclose(got.hd, h_ref, rtol=0, atol=1e-9)
        assert got.hd95 is None


def test_tiny_random_maps_match_simpleitk(impl):
    rng = np.random.default_rng(7)
    for _ in range(80):
        pred, gt, c = _random_pair(rng)
        got = M.per_class_metrics(pred, gt, c)
        d_ref, h_ref = reference(pred, gt, c, sitk_hd)
        np.testing.assert_allclose(got.dice, d_ref, rtol=0, atol=1e-12)
        np.testing.assert_allclose(got.hd, h_ref, rtol=0, atol=1e-9)


def test_structured_maps_with_far_errors_match_simpleitk(impl):
    """Shifted discs, a far false-positive blob, a missed interior, specks, a non-contiguous view."""
    rng = np.random.default_rng(5)
    h, w = 120, 170
    yy, xx = np.mgrid[:h, :w]
    gt = np.zeros((h, w), np.uint8)
    gt[(yy - 50) ** 2 + (xx - 60) ** 2 < 35**2] = 1
    gt[(yy - 95) ** 2 + (xx - 140) ** 2 < 15**2] = 2
    gt[0:6, 150:] = 3  # touches two borders
    pred = np.roll(gt, (3, -2), axis=(0, 1))
    pred[(yy - 50) ** 2 + (xx - 60) ** 2 < 30**2] = 0
    pred[100:110, 5:15] = 2
    specks = rng.random((h, w)) < 0.003
    pred[specks] = rng.integers(0, 5, int(specks.sum()))
    big_p = np.zeros((h + 4, w + 6), np.uint8)
    big_p[2:-2, 3:-3] = pred
    for p in (pred, big_p[2:-2, 3:-3]):  # the second is a non-contiguous view
        got = M.per_class_metrics(p, gt, 4)
        d_ref, h_ref = reference(pred, gt, 4, sitk_hd)
        np.testing.assert_allclose(got.dice, d_ref, rtol=0, atol=1e-12)
        np.testing.assert_allclose(got.hd, h_ref, rtol=0, atol=1e-9)
    assert got.hd.max() > 50


def test_both_implementations_agree_on_salt_and_pepper(monkeypatch):
    kernel = _numba_kernel()
    rng = np.random.default_rng(9)
    gt = rng.integers(0, 12, (90, 110)).astype(np.uint8)
    pred = rng.integers(0, 12, (90, 110)).astype(np.uint8)
    monkeypatch.setattr(_kernel, "_KERNEL", [kernel])
    a = M.per_class_metrics(pred, gt, 12)
    monkeypatch.setattr(_kernel, "_KERNEL", [None])
    b = M.per_class_metrics(pred, gt, 12)
    np.testing.assert_array_equal(a.dice, b.dice)
    np.testing.assert_allclose(a.hd, b.hd, rtol=0, atol=1e-12)
    assert a.hd[3] == pytest.approx(sitk_hd(pred == 3, gt == 3), abs=1e-9)


def _run(code: str, **env: str) -> str:
    e = {k: v for k, v in os.environ.items() if k != "FMUIA_NO_NUMBA"}
    e.update(env)
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=e, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def test_env_var_forces_the_numpy_fallback_and_import_stays_lazy():
    code = ("import sys, numpy as np; import evaluation.scoring; from evaluation import metrics as M; "
            "print('numba' in sys.modules); print(M.prepare_fast_kernel()); "
            "print(M.per_class_metrics(np.eye(4, dtype=np.uint8), np.zeros((4, 4), np.uint8), 2).hd.tolist())")
    off = _run(code, FMUIA_NO_NUMBA="1").splitlines()
    assert off[0] == "False" and off[1] == "False"
    assert off[2] == str([1.0, math.hypot(4, 4)])  # a diagonal pixel is 1 from class 0 of pred
    pytest.importorskip("numba")
    on = _run(code).splitlines()
    assert on[0] == "False"  # importing the scorer does not import numba
    assert on[1] == "True" and on[2] == off[2]


def test_jit_falls_back_without_a_usable_cache(monkeypatch):
    """numba raises at decoration time when no cache location is usable (a read-only install with
    no writable user cache): the kernel is then compiled without a cache."""
    pytest.importorskip("numba")
    import numba

    from evaluation.metrics import _seg_numba as S

    calls = []

    def fake_njit(*, cache: bool, nogil: bool):
        calls.append(cache)
        if cache:
            raise RuntimeError("cannot cache function: no locator available")
        return numba.njit(cache=False, nogil=nogil)

    monkeypatch.setattr(S, "njit", fake_njit)

    def plus_one(x):
        return x + 1

    f = S._jit(plus_one)
    assert calls == [True, False]
    assert f(41) == 42
