"""Every implementation of the Hausdorff-only path of ``per_class_metrics`` — the numba JIT kernel
(evaluation.metrics._seg_numba), the same kernel compiled ahead of time (numba.pycc), and the
pure-numpy fallback — against SimpleITK and brute force on many tiny random label maps (empty,
single pixel, border-touching, noise, out-of-range values), plus the selection rules
(FMUIA_NO_NUMBA, FMUIA_NO_AOT, lazy import, no usable cache) and how the kernel is loaded (one
specialisation, the fast cache path, the check pair, which ahead-of-time module is trusted)."""

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
    """The compiled kernel exactly as production gets it (through ``_seg_numba.load``)."""
    pytest.importorskip("numba")
    from evaluation.metrics import _seg_numba

    return _seg_numba.load()


@pytest.fixture(scope="session")
def aot_cache(tmp_path_factory):
    """A cache folder holding this machine's ahead-of-time kernel, built once per session (~10 s;
    skipped where numba.pycc or a C compiler is missing)."""
    pytest.importorskip("numba")
    folder = tmp_path_factory.mktemp("aot")
    env = dict(os.environ, FMUIA_AOT_DIR=str(folder))
    p = subprocess.run([sys.executable, "-m", "evaluation.metrics._seg_numba", "--build-aot"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    if p.returncode:
        pytest.skip(f"no ahead-of-time kernel here: {p.stderr.strip().splitlines()[-1:]}")
    return folder


def _aot_kernel(aot_cache, monkeypatch):
    monkeypatch.setenv("FMUIA_AOT_DIR", str(aot_cache))
    kernel = _kernel._load_aot()
    assert kernel is not None
    return kernel


@pytest.fixture(params=["numba", "aot", "numpy"])
def impl(request, monkeypatch):
    """Forces one implementation for the test (restored afterwards)."""
    kernel = None
    if request.param == "numba":
        kernel = _numba_kernel()
    elif request.param == "aot":
        kernel = _aot_kernel(request.getfixturevalue("aot_cache"), monkeypatch)
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


def test_all_implementations_agree_on_salt_and_pepper(monkeypatch, aot_cache):
    rng = np.random.default_rng(9)
    gt = rng.integers(0, 12, (90, 110)).astype(np.uint8)
    pred = rng.integers(0, 12, (90, 110)).astype(np.uint8)
    got = []
    for kernel in (_numba_kernel(), _aot_kernel(aot_cache, monkeypatch), None):
        monkeypatch.setattr(_kernel, "_KERNEL", [kernel])
        got.append(M.per_class_metrics(pred, gt, 12))
    for other in got[1:]:
        np.testing.assert_array_equal(got[0].dice, other.dice)
        np.testing.assert_array_equal(got[0].hd, other.hd)
    assert got[0].hd[3] == pytest.approx(sitk_hd(pred == 3, gt == 3), abs=1e-9)


def test_aot_and_jit_kernels_give_identical_counts_on_larger_maps(monkeypatch, aot_cache):
    """Shifted ellipses with specks, 2-6 classes, up to 400 px: the raw counts and squared
    distances of both compiled kernels are identical (same source, compiled twice)."""
    jit = _numba_kernel()
    aot = _aot_kernel(aot_cache, monkeypatch)
    rng = np.random.default_rng(11)
    for _ in range(40):
        h, w, c = int(rng.integers(20, 400)), int(rng.integers(20, 400)), int(rng.integers(2, 7))
        yy, xx = np.ogrid[:h, :w]
        gt = np.zeros((h, w), np.uint8)
        for k in range(1, c):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, max(4, min(h, w) / 3))
            gt[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
        pred = np.roll(gt, (int(rng.integers(-5, 6)), int(rng.integers(-5, 6))), axis=(0, 1))
        specks = rng.random((h, w)) < 0.002
        pred[specks] = rng.integers(0, c + 1, int(specks.sum()))
        for a, b in zip(jit(pred, gt, c), aot(pred, gt, c), strict=True):
            np.testing.assert_array_equal(a, b)


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
    no writable user cache): a private temporary cache folder is tried next, and only where that
    fails too is the kernel compiled without a cache."""
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
    assert calls == [True, True, False]
    assert f(41) == 42


def test_jit_uses_a_private_temp_cache_when_numba_has_none(monkeypatch, tmp_path):
    pytest.importorskip("numba")
    import numba
    from numba.core import config

    from evaluation.metrics import _seg_numba as S

    monkeypatch.setattr(S.tempfile, "gettempdir", lambda: str(tmp_path))
    saved = config.CACHE_DIR
    seen = []

    def fake_njit(*, cache: bool, nogil: bool):
        seen.append(config.CACHE_DIR)
        if cache and not config.CACHE_DIR:
            raise RuntimeError("cannot cache function: no locator available")
        return numba.njit(cache=cache, nogil=nogil)

    monkeypatch.setattr(S, "njit", fake_njit)

    def plus_two(x):
        return x + 2

    f = S._jit(plus_two)
    folder = tmp_path / f"fmuia-numba-{os.getuid()}"
    assert seen == [saved, str(folder)]
    assert config.CACHE_DIR == saved  # only for that decoration
    assert f(40) == 42
    assert f.stats.cache_path.startswith(str(folder))


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="ownership is checked by uid")
def test_private_temp_cache_refuses_a_folder_others_can_write(monkeypatch, tmp_path):
    from evaluation.metrics import _seg_numba as S

    monkeypatch.setattr(S.tempfile, "gettempdir", lambda: str(tmp_path))
    folder = tmp_path / f"fmuia-numba-{os.getuid()}"
    assert S._private_temp_cache() == str(folder)
    assert folder.stat().st_mode & 0o777 == 0o700
    folder.chmod(0o777)
    assert S._private_temp_cache() is None
    folder.rmdir()
    (tmp_path / "elsewhere").mkdir()
    folder.symlink_to(tmp_path / "elsewhere")
    assert S._private_temp_cache() is None


def test_fast_cache_load_misses_cleanly_then_hits(monkeypatch, tmp_path):
    """The fast path changes nothing on a cache miss, and on a hit adds the cached
    specialisation without compiling (and calls give the right answer)."""
    pytest.importorskip("numba")
    import numba
    from numba.core import config

    from evaluation.metrics import _seg_numba as S

    def times_three(x):
        return x * 3

    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path))
    first = numba.njit(cache=True)(times_three)
    assert S._load_cached_fast(first, (7,)) is False
    assert not first.overloads
    assert first(7) == 21  # compiled and written to the cache
    second = numba.njit(cache=True)(times_three)
    assert S._load_cached_fast(second, (7,)) is True
    assert second(5) == 15
    assert sum(second.stats.cache_hits.values()) == 1 and not second.stats.cache_misses
    assert len(second.signatures) == 1


def test_fast_cache_load_only_for_the_numba_releases_it_was_checked_on(monkeypatch, tmp_path):
    pytest.importorskip("numba")
    import numba
    from numba.core import config

    from evaluation.metrics import _seg_numba as S

    def times_four(x):
        return x * 4

    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path))
    assert numba.njit(cache=True)(times_four)(2) == 8  # now in the cache
    monkeypatch.setattr(numba, "__version__", "0.99.0")
    fresh = numba.njit(cache=True)(times_four)
    assert S._load_cached_fast(fresh, (2,)) is False and not fresh.overloads
    assert fresh(3) == 12  # numba's ordinary path still works


def test_a_kernel_failing_its_check_pair_is_not_used(monkeypatch):
    pytest.importorskip("numba")
    from evaluation.metrics import _seg_numba as S

    monkeypatch.setenv("FMUIA_NO_AOT", "1")
    monkeypatch.setattr(S, "run", lambda p, g, c: tuple(np.zeros(c, np.int64) for _ in range(4)))
    monkeypatch.setattr(_kernel, "_KERNEL", [])
    assert _kernel._fast_kernel() is None
    gt = np.zeros((5, 5), np.uint8)
    pred = gt.copy()
    pred[2, 2] = 1
    assert M.per_class_metrics(pred, gt, 2).hd.tolist() == [1.0, math.hypot(5, 5)]


def test_one_specialisation_and_the_fast_cache_path_in_a_fresh_process():
    """Read-only decoded masks, writeable resized ones, any class count: one specialisation; on
    a warm cache it is loaded without numba's registry refresh (numba.np.arraymath stays unimported)."""
    pytest.importorskip("numba")
    code = ("import sys, numpy as np; from evaluation import metrics as M; "
            "from evaluation.metrics import _seg_numba as S; "
            "g = np.zeros((30, 40), np.uint8); g[5:20, 5:30] = 1; g[8:12, 8:12] = 2; "
            "p = np.roll(g, 2, axis=1); r = g.copy(); g.flags.writeable = False; "
            "[M.per_class_metrics(a, b, c) for a, b in ((p, g), (g, g), (r, p), (p, r)) for c in (2, 3, np.int32(4))]; "
            "print(M.prepare_fast_kernel(), len(S.seg_kernel.signatures), S.how_loaded(), "
            "'numba.np.arraymath' in sys.modules)")
    _run(code, FMUIA_NO_AOT="1")  # fills the cache if it is cold
    assert _run(code, FMUIA_NO_AOT="1").split() == ["True", "1", "cache", "(fast", "path)", "False"]


def test_the_aot_kernel_is_chosen_first_and_imports_no_numba(aot_cache):
    code = ("import sys, numpy as np; from evaluation import metrics as M; from evaluation.metrics import _kernel; "
            "print(M.prepare_fast_kernel(), _kernel.kernel_kind(), 'numba' in sys.modules, "
            "M.per_class_metrics(np.eye(4, dtype=np.uint8), np.zeros((4, 4), np.uint8), 2).hd.tolist())")
    assert _run(code, FMUIA_AOT_DIR=str(aot_cache)).split(" ", 3) == [
        "True", "aot", "False", str([1.0, math.hypot(4, 4)])]
    assert _run(code, FMUIA_AOT_DIR=str(aot_cache), FMUIA_NO_AOT="1").split(" ", 3)[1:3] == ["jit,", "cache"]
    assert _run(code, FMUIA_AOT_DIR=str(aot_cache), FMUIA_NO_NUMBA="1").split(" ", 3)[:3] == [
        "False", "numpy", "False"]


def test_an_aot_module_that_is_not_trusted_or_not_valid_is_not_loaded(monkeypatch, tmp_path):
    if not hasattr(os, "getuid"):
        pytest.skip("ownership is checked by uid")
    folder = tmp_path / "aot"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("FMUIA_AOT_DIR", str(folder))
    name = _kernel.aot_name()
    if name is None:
        pytest.skip("no CPU identity here")
    path = folder / name
    path.write_bytes(b"not an extension module")
    path.chmod(0o700)
    assert _kernel.aot_path() == str(path)
    with pytest.raises(ImportError):
        _kernel._load_aot()  # _fast_kernel catches this and takes the JIT kernel
    path.chmod(0o720)  # group-writable: never executed
    assert _kernel.aot_path() is None and _kernel._load_aot() is None
    path.chmod(0o700)
    folder.chmod(0o777)  # in a folder others can write to: likewise
    assert _kernel.aot_path() is None
    folder.chmod(0o700)
    monkeypatch.setattr(_kernel, "_KERNEL", [])
    monkeypatch.setattr(_kernel, "_KIND", [])
    if _kernel._fast_kernel() is not None:
        assert _kernel.kernel_kind().startswith("jit")


def test_the_aot_module_is_named_by_source_and_cpu(monkeypatch):
    monkeypatch.setattr(_kernel, "_cpu_identity", lambda: b"model name: a\nflags: x y")
    a = _kernel.aot_name()
    monkeypatch.setattr(_kernel, "_cpu_identity", lambda: b"model name: a\nflags: x y z")
    b = _kernel.aot_name()
    assert a != b and a.startswith("seg_kernel-")
    monkeypatch.setattr(_kernel, "_cpu_identity", lambda: None)
    assert _kernel.aot_name() is None


def test_build_aot_prefers_the_package_cache_then_the_user_cache(monkeypatch, tmp_path):
    """Without FMUIA_AOT_DIR the module is looked for in the package's __pycache__, then in the
    user's cache folder; it is built into the first of those that is writable."""
    monkeypatch.delenv("FMUIA_AOT_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folders = _kernel._aot_folders()
    assert folders == [os.path.join(os.path.dirname(_kernel.__file__), "__pycache__"), str(tmp_path / "fmuia")]
    monkeypatch.setenv("FMUIA_AOT_DIR", str(tmp_path / "x"))
    assert _kernel._aot_folders() == [str(tmp_path / "x")]
