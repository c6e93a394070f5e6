"""Compiled (numba) kernel for per-class Dice counts and exact Hausdorff distances of two label maps.

Imported lazily by :mod:`evaluation.metrics._kernel` (never at ``import evaluation``), only when numba is
importable and ``FMUIA_NO_NUMBA`` is not set. Importing this module compiles nothing: :func:`load`
makes the kernel ready (from numba's on-disk cache, by a fast path that skips numba's ~0.3 s
per-process registry set-up, or else compiled and cached once, ~4 s) and returns :func:`run`, which
calls it through a single specialisation (read-only C-contiguous uint8 maps, int64 class count).

The search is exact, in integer squared distances:

- Only pixels where the two maps disagree can be at a non-zero distance from the other map's set
  of the same class, so they are the only queries.
- The nearest pixel of a set ``B`` to a point ``q`` outside it has a 4-neighbour outside ``B``
  (step from it one pixel towards ``q``: that pixel is closer to ``q`` and still inside the maps),
  so only such boundary pixels are candidates; pixels on the edge of the maps are added too
  (harmless: any pixel of ``B`` is a valid candidate, and it spares bounds checks).
- Candidates are stored per class and per row with sorted columns, plus the list of each class's
  non-empty rows. A query visits those rows in order of increasing ``|dy|`` from its own, takes in
  each the nearest candidate column by binary search, and stops once ``dy²`` reaches its best
  squared distance so far, or — the early break of Taha & Hanbury (2015) — once its best is no
  larger than the class's running maximum (it cannot raise the Hausdorff distance). One running
  maximum per class covers both directions. Each (direction, class) remembers the last candidate
  found: for neighbouring queries it is usually already within the running maximum.
- Counts for Dice come from branch-free per-class loops in the same kernel.
"""

from __future__ import annotations

import glob
import os
import stat
import tempfile
import warnings
from collections.abc import Callable

import numpy as np
from numba import njit


def _private_temp_cache() -> str | None:
    """A cache folder under the temporary directory that only this user can write (numba's cache
    is unpickled when loaded, so a folder others could write to must never be used), or ``None``."""
    try:
        uid = os.getuid()
    except AttributeError:  # Windows: no uid to check ownership against
        return None
    path = os.path.join(tempfile.gettempdir(), f"fmuia-numba-{uid}")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None
    return path if os.access(path, os.W_OK | os.X_OK) else None


def _jit(fn):  # type: ignore[no-untyped-def]
    """``njit(cache=True)``. Where numba finds no writable cache location (a read-only install with
    no writable user cache directory, e.g. in a container), a private folder under the temporary
    directory is used instead, so that later processes still load the kernel rather than compile it
    (about 4 s); only where that fails too is it compiled without a cache."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return njit(cache=True, nogil=True)(fn)
    except Exception:  # numba raises RuntimeError when no cache locator applies
        pass
    folder = _private_temp_cache()
    if folder is not None:
        from numba.core import config

        saved = config.CACHE_DIR
        config.CACHE_DIR = folder  # read by numba's locators at decoration time only: restored below
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return njit(cache=True, nogil=True)(fn)
        except Exception:
            pass
        finally:
            config.CACHE_DIR = saved
    return njit(cache=False, nogil=True)(fn)


def _row_nearest_py(cols, lo, hi, qx):  # type: ignore[no-untyped-def]
    """The column in sorted ``cols[lo:hi]`` (not empty) nearest to ``qx``."""
    a, b = lo, hi  # first index in [lo, hi) with cols >= qx
    while a < b:
        m = (a + b) >> 1
        if cols[m] < qx:
            a = m + 1
        else:
            b = m
    if a == hi:
        return np.int64(cols[hi - 1])
    if a == lo:
        return np.int64(cols[lo])
    right = np.int64(cols[a])
    left = np.int64(cols[a - 1])
    return right if right - qx < qx - left else left


_row_nearest = _jit(_row_nearest_py)


def _nearest_py(ptr, cols, rptr, rows, k, h, qy, qx, cmax, best, by, bx):  # type: ignore[no-untyped-def]
    """``(d2, ty, tx)``: the squared distance from ``(qy, qx)`` to the nearest boundary pixel of
    class ``k`` and that pixel, starting from a known candidate ``(by, bx)`` at ``best``; or, as
    soon as a candidate at ``<= cmax`` is known, that candidate (the early break). Visits only the
    class's non-empty rows ``rows[rptr[k]:rptr[k + 1]]``, nearest to ``qy`` first."""
    base = k * h
    r_lo = rptr[k]
    r_hi = rptr[k + 1]
    a, b = r_lo, r_hi  # first non-empty row >= qy
    while a < b:
        m = (a + b) >> 1
        if rows[m] < qy:
            a = m + 1
        else:
            b = m
    down = a  # rows[down], rows[down + 1], ... >= qy
    up = a - 1  # rows[up], rows[up - 1], ... < qy
    while best > cmax and (down < r_hi or up >= r_lo):
        if up < r_lo or (down < r_hi and rows[down] - qy <= qy - rows[up]):
            y = np.int64(rows[down])
            down += 1
        else:
            y = np.int64(rows[up])
            up -= 1
        dy = y - qy
        r2 = dy * dy
        if r2 >= best:
            break
        x = _row_nearest(cols, ptr[base + y], ptr[base + y + 1], qx)
        dx = x - qx
        d2 = r2 + dx * dx
        if d2 < best:
            best, by, bx = d2, y, x
    return best, by, bx


_nearest = _jit(_nearest_py)


def _seg_kernel_py(p8, g8, c):  # type: ignore[no-untyped-def]
    """Per class ``k < c``: ``(n_pred, n_gt, inter, hd2)`` where ``hd2[k]`` is the squared Hausdorff
    distance of ``p8 == k`` vs ``g8 == k`` when both are non-empty (else 0)."""
    h, w = p8.shape
    n_pred = np.zeros(c, dtype=np.int64)
    n_gt = np.zeros(c, dtype=np.int64)
    inter = np.zeros(c, dtype=np.int64)
    hd2 = np.zeros(c, dtype=np.int64)
    # buffers for the disagreeing pixels and the boundary pixels of both maps (row-major), where a
    # boundary pixel has a 4-neighbour of another value inside the maps or lies on their edge
    dis = np.empty(h * w, dtype=np.int64)
    nd = 0
    bg = np.empty(h * w, dtype=np.int32)  # columns and classes of the boundary pixels of g8 (then p8)
    bgk = np.empty(h * w, dtype=np.uint8)
    bp = np.empty(h * w, dtype=np.int32)
    bpk = np.empty(h * w, dtype=np.uint8)
    ng = 0
    npb = 0
    cnt_g = np.zeros(c * h + 1, dtype=np.int64)
    cnt_p = np.zeros(c * h + 1, dtype=np.int64)
    # counts: branch-free loops the compiler vectorises (one per class)
    for y in range(h):
        for k in range(c):
            kk = np.uint8(k)
            sp = 0
            sg = 0
            sb = 0
            for x in range(w):
                a = p8[y, x] == kk
                b = g8[y, x] == kk
                sp += a
                sg += b
                sb += a & b
            n_pred[k] += sp
            n_gt[k] += sg
            inter[k] += sb
    # flag[x] != 0 marks the pixels of row y that disagree or may be boundary pixels (a 4-neighbour
    # of another value in either map); pixels on the edge of the maps are taken as candidates too:
    # harmless (any pixel of a set is a valid candidate), and it spares bounds checks
    wpad = (w + 7) // 8 * 8
    flag = np.zeros(wpad, dtype=np.uint8)
    flag64 = flag.view(np.uint64)
    for y in range(h):
        edge_row = y == 0 or y == h - 1
        if edge_row or w < 3:
            flag[:w] = 1
        else:
            flag[0] = 1
            flag[w - 1] = 1
            for x in range(1, w - 1):
                gv = g8[y, x]
                pv = p8[y, x]
                f = ((pv != gv) | (g8[y, x - 1] != gv) | (g8[y, x + 1] != gv) | (g8[y - 1, x] != gv)
                     | (g8[y + 1, x] != gv) | (p8[y, x - 1] != pv) | (p8[y, x + 1] != pv)
                     | (p8[y - 1, x] != pv) | (p8[y + 1, x] != pv))
                flag[x] = f
        for j in range(wpad // 8):
            if flag64[j] == 0:
                continue
            for x in range(j * 8, min(j * 8 + 8, w)):
                if flag[x] == 0:
                    continue
                pv = p8[y, x]
                gv = g8[y, x]
                if pv != gv:
                    dis[nd] = y * w + x
                    nd += 1
                edge = edge_row or x == 0 or x == w - 1
                if gv < c and (edge or g8[y, x - 1] != gv or g8[y, x + 1] != gv
                               or g8[y - 1, x] != gv or g8[y + 1, x] != gv):
                    bg[ng] = x
                    bgk[ng] = gv
                    ng += 1
                    cnt_g[gv * h + y + 1] += 1
                if pv < c and (edge or p8[y, x - 1] != pv or p8[y, x + 1] != pv
                               or p8[y - 1, x] != pv or p8[y + 1, x] != pv):
                    bp[npb] = x
                    bpk[npb] = pv
                    npb += 1
                    cnt_p[pv * h + y + 1] += 1
    scored = np.zeros(c, dtype=np.bool_)
    any_scored = False
    for k in range(c):
        if n_pred[k] > 0 and n_gt[k] > 0 and (n_pred[k] > inter[k] or n_gt[k] > inter[k]):
            scored[k] = True
            any_scored = True
    if not any_scored or nd == 0:
        return n_pred, n_gt, inter, hd2
    ptr_g, cols_g, rptr_g, rows_g = _bucket(bg, bgk, ng, cnt_g, h, c)
    ptr_p, cols_p, rptr_p, rows_p = _bucket(bp, bpk, npb, cnt_p, h, c)
    # the last nearest target pixel per (direction, class): often still within the running maximum
    ly = np.full((2, c), -1, dtype=np.int64)
    lx = np.zeros((2, c), dtype=np.int64)
    big = np.int64(1) << 62
    for i in range(nd):
        pos = dis[i]
        y = np.int64(pos // w)
        x = np.int64(pos - y * w)
        pv = p8[y, x]
        gv = g8[y, x]
        for t in range(2):  # t = 0: a prediction pixel outside gt == pv; t = 1: a label pixel outside pred == gv
            k = np.int64(pv) if t == 0 else np.int64(gv)
            if k >= c or not scored[k]:
                continue
            cmax = hd2[k]
            best = big
            by = np.int64(-1)
            bx = np.int64(0)
            if ly[t, k] >= 0:
                dy = y - ly[t, k]
                dx = x - lx[t, k]
                best = dy * dy + dx * dx
                by = ly[t, k]
                bx = lx[t, k]
                if best <= cmax:
                    continue
            if t == 0:
                best, by, bx = _nearest(ptr_g, cols_g, rptr_g, rows_g, k, h, y, x, cmax, best, by, bx)
            else:
                best, by, bx = _nearest(ptr_p, cols_p, rptr_p, rows_p, k, h, y, x, cmax, best, by, bx)
            ly[t, k] = by
            lx[t, k] = bx
            if best > cmax:
                hd2[k] = best
    return n_pred, n_gt, inter, hd2


def _bucket_py(bx, bk, nb, cnt, h, c):  # type: ignore[no-untyped-def]
    """Row-major boundary columns ``bx[:nb]`` with classes ``bk`` and per ``(class, row)`` counts
    ``cnt`` (at ``k * h + y + 1``) → ``(ptr, cols, rptr, rows)``: the sorted columns of class
    ``k``'s boundary pixels in row ``y`` are ``cols[ptr[k * h + y] : ptr[k * h + y + 1]]``, and
    the rows holding any are ``rows[rptr[k] : rptr[k + 1]]`` (increasing)."""
    for i in range(1, c * h + 1):
        cnt[i] += cnt[i - 1]
    # each class's pixels come in row-major order, so filling its block in order sorts it by row
    fill = np.zeros(c, dtype=np.int64)  # how many of class k placed so far
    cols = np.empty(nb, dtype=np.int32)
    for i in range(nb):
        k = bk[i]
        cols[cnt[k * h] + fill[k]] = bx[i]
        fill[k] += 1
    rptr = np.zeros(c + 1, dtype=np.int64)
    rows = np.empty(min(nb, c * h), dtype=np.int32)
    n = 0
    for k in range(c):
        for y in range(h):
            if cnt[k * h + y + 1] > cnt[k * h + y]:
                rows[n] = y
                n += 1
        rptr[k + 1] = n
    return cnt, cols, rptr, rows

_bucket = _jit(_bucket_py)
seg_kernel = _jit(_seg_kernel_py)


# ---- loading the kernel --------------------------------------------------------------------------
#
# One signature only: both maps are passed as read-only C-contiguous uint8 arrays (decoded masks are
# read-only, resized ones are not; each mix would otherwise be its own specialisation, each loaded
# from the cache or, with a cold cache, compiled: ~4 s apiece) and ``c`` as an int64.

_LOADED: list[str] = []  # how the kernel was made ready: "cache (fast path)", "numba" (cache or compile)


def _read_only(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def run(p8: np.ndarray, g8: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`seg_kernel` on two uint8 label maps, always through its one specialisation."""
    return seg_kernel(_read_only(p8), _read_only(g8), int(c))


# numba releases [from, to) whose cache-hit path is Dispatcher.compile -> FunctionCache.load_overload
# -> target refresh (rtsys.initialize + registries) -> _load_overload, which the fast path follows
FAST_PATH_NUMBA = ((0, 59), (0, 70))


def _load_cached_fast(dispatcher, args: tuple) -> bool:  # type: ignore[no-untyped-def]
    """Add the specialisation of ``dispatcher`` for ``args`` from numba's on-disk cache, as
    ``Dispatcher.compile`` does on a cache hit, but without refreshing the target context first:
    that refresh imports and installs every implementation registry numba has (and probes scipy
    for BLAS), ~0.3 s per process, none of which running already-compiled code needs. Running it
    needs only the runtime (NRT) initialised, which is done here. False, having changed nothing,
    on a cache miss, where numba's internals are not the expected ones, or for a numba release
    outside :data:`FAST_PATH_NUMBA` (the ones whose load path matches, checked on 0.68); the caller
    then goes through numba's ordinary path."""
    try:
        import numba
        from numba import typeof

        version = tuple(int(v) for v in numba.__version__.split(".")[:2])
        if not FAST_PATH_NUMBA[0] <= version < FAST_PATH_NUMBA[1]:
            return False
        from numba.core.compiler_lock import global_compiler_lock
        from numba.core.runtime import rtsys

        cache = dispatcher._cache
        sig = tuple(typeof(a) for a in args)
        with global_compiler_lock:
            if sig in dispatcher.overloads:
                return True
            ctx = dispatcher.targetctx
            rtsys.initialize(ctx)
            with cache._guard_against_spurious_io_errors():
                cres = cache._load_overload(sig, ctx)
            if cres is None or cres.objectmode:
                return False
            dispatcher._cache_hits[sig] += 1
            ctx.insert_user_function(cres.entry_point, cres.fndesc, [cres.library])
            dispatcher.add_overload(cres)
        return True
    except Exception:  # noqa: BLE001 - anything unexpected: numba's ordinary path instead
        return False


def load() -> Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Make the kernel ready (from numba's on-disk cache by the fast path when it holds it,
    otherwise through numba, which compiles and caches it) and check it on a tiny pair of maps;
    returns :func:`run`. Raises where the kernel cannot be made to work."""
    a = np.zeros((3, 3), dtype=np.uint8)
    b = a.copy()
    b[1, 1] = 1
    args = (_read_only(a), _read_only(b), 2)
    if not _LOADED:
        fast = _load_cached_fast(seg_kernel, args)
        _LOADED.append("cache (fast path)" if fast else "numba")
    got = run(*args)
    expected = ([9, 0], [8, 1], [8, 0], [1, 0])  # n_pred, n_gt, inter, squared Hausdorff per class
    if [x.tolist() for x in got] != [list(e) for e in expected]:
        raise RuntimeError(f"the compiled segmentation kernel gives {got} on its check pair")
    return run


def how_loaded() -> str | None:
    """How :func:`load` made the kernel ready in this process (``None`` before it ran)."""
    return _LOADED[0] if _LOADED else None


def warm_up() -> None:
    """Make the kernel ready now (see :func:`load`)."""
    load()


# ---- ahead of time --------------------------------------------------------------------------------

AOT_SIGNATURE = "UniTuple(i8[::1], 4)(u1[:, ::1], u1[:, ::1], i8)"


def build_aot(path: str) -> None:
    """Compile :func:`seg_kernel` ahead of time with ``numba.pycc``, for this machine's CPU, into the
    extension module file ``path`` (written atomically). Loading it later takes well under a
    millisecond and no numba (see :func:`evaluation.metrics._kernel.build_aot` and ``--build-aot``
    below). Needs a C compiler; raises where the build fails."""
    from evaluation.metrics._kernel import AOT_MODULE  # here: _kernel imports this module

    folder = os.path.dirname(os.path.abspath(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba.pycc is "pending deprecation"
        from numba.pycc import CC

        with tempfile.TemporaryDirectory(prefix=".build-", dir=folder) as tmp:
            cc = CC(AOT_MODULE)
            cc.output_dir = tmp
            cc.target_cpu = "host"  # as fast as the JIT (a generic CPU is ~2x slower); the path is keyed by CPU
            cc.export("seg_kernel", AOT_SIGNATURE)(_seg_kernel_py)
            cc.compile()
            built = glob.glob(os.path.join(tmp, AOT_MODULE + "*"))
            if len(built) != 1:
                raise RuntimeError(f"numba.pycc left {built} in {tmp}")
            os.replace(built[0], path)


if __name__ == "__main__":  # python -m evaluation.metrics._seg_numba --build-aot
    import argparse
    import sys
    import time

    from evaluation.metrics import _kernel

    ap = argparse.ArgumentParser(prog="python -m evaluation.metrics._seg_numba",
                                 description="Build the segmentation kernel ahead of time for this machine (numba "
                                             "and a C compiler needed); later processes load it without numba.")
    ap.add_argument("--build-aot", action="store_true",
                    help="build it (into FMUIA_AOT_DIR, else this package's __pycache__ where writable, else the "
                         "user's cache folder)")
    ap.add_argument("--into", default=None, help="build it into this folder instead")
    ap.add_argument("--where", action="store_true", help="print the module this machine would load (or None)")
    args = ap.parse_args()
    if args.build_aot:
        t0 = time.perf_counter()
        try:
            built = _kernel.build_aot(args.into)
        except Exception as exc:  # noqa: BLE001 - one line, non-zero exit
            sys.exit(f"error: the ahead-of-time kernel could not be built: {type(exc).__name__}: {exc}")
        print(f"built {built} in {time.perf_counter() - t0:.1f} s")
    if args.where:
        print(_kernel.aot_path())
    if not (args.where or args.build_aot):
        ap.print_help()
