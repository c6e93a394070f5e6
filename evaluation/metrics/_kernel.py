"""Choosing the compiled segmentation kernel or the numpy path, once per process.

Three ways to the same numbers, tried in this order on first use:

1. The kernel compiled ahead of time (an extension module built once with
   ``python -m evaluation.metrics._seg_numba --build-aot``, for this machine): loading it takes well
   under a millisecond and does not import numba.
2. numba's JIT kernel of :mod:`evaluation.metrics._seg_numba`, loaded from numba's on-disk cache
   (~0.2 s per process, most of it ``import numba``) or compiled and cached (~4 s, once).
3. ``None``: the pure-numpy path of :mod:`evaluation.metrics.segmentation`.

``FMUIA_NO_NUMBA=1`` forces the numpy path; ``FMUIA_NO_AOT=1`` skips the ahead-of-time module;
``FMUIA_AOT_DIR`` names the one folder it is looked for (and built) in.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import stat
import sys
import warnings
from collections.abc import Callable

import numpy as np

_KERNEL: list = []  # [kernel or None] once chosen
_KIND: list[str] = []  # how it was chosen (see kernel_kind)

AOT_MODULE = "_fmuia_seg_aot"  # the extension's module name (its PyInit symbol)

Kernel = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


# ---- the ahead-of-time module ---------------------------------------------------------------------
#
# Where it lives: FMUIA_AOT_DIR when set (e.g. a folder baked into a container image); otherwise the
# package's own __pycache__ folder (as numba's in-tree cache: written where the install is writable,
# e.g. at image build time) and then the user's cache folder ($XDG_CACHE_HOME/fmuia or
# ~/.cache/fmuia). It is executed when loaded, so a module (and its folder) is only trusted when
# owned by this user or root and writable by no one else.

def _cpu_identity() -> bytes | None:
    """The first processor's model and feature flags (Linux): the AOT module is built for this
    CPU's instruction set, so it is only loaded on a CPU that reports the same."""
    try:
        with open("/proc/cpuinfo", "rb") as fh:
            keep = []
            for line in fh:
                if not line.strip():
                    break  # the end of the first processor's block
                if line.split(b":")[0].strip() in (b"model name", b"flags", b"Features", b"CPU implementer",
                                                   b"CPU part", b"vendor_id"):
                    keep.append(line.strip())
    except OSError:
        return None
    return b"\n".join(keep) or None


def _aot_folders() -> list[str]:
    forced = os.environ.get("FMUIA_AOT_DIR")
    if forced:
        return [forced]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__"), os.path.join(base, "fmuia")]


def aot_name() -> str | None:
    """The file name of this machine's ahead-of-time kernel: a hash of the kernel's source, the
    interpreter, numpy and the CPU, so that a stale or foreign module is never picked up. ``None``
    where it is not supported (no CPU identity to key it by)."""
    cpu = _cpu_identity()
    if cpu is None:
        return None
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_seg_numba.py")
    try:
        with open(source, "rb") as fh:
            code = fh.read()
    except OSError:
        return None
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    h = hashlib.sha256()
    for part in (code, cpu, sys.version.encode(), suffix.encode(), np.__version__.encode(), os.uname().machine.encode()):
        h.update(len(part).to_bytes(8, "little") + part)
    return f"seg_kernel-{h.hexdigest()[:24]}{suffix}"


def _trusted(path: str, *, folder: bool) -> bool:
    """Owned by this user or root, and writable by no one else."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    kind_ok = stat.S_ISDIR(st.st_mode) if folder else stat.S_ISREG(st.st_mode)
    return kind_ok and st.st_uid in (os.getuid(), 0) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def aot_path() -> str | None:
    """The ahead-of-time kernel this process would load (the first trusted one), else ``None``."""
    name = aot_name() if hasattr(os, "getuid") else None
    if name is None:
        return None
    for folder in _aot_folders():
        path = os.path.join(folder, name)
        if _trusted(path, folder=False) and _trusted(folder, folder=True):
            return path
    return None


def _check(kernel: Kernel) -> Kernel:
    """``kernel`` once it gives the right answer on a tiny pair of maps; raises otherwise."""
    a = np.zeros((3, 3), dtype=np.uint8)
    b = a.copy()
    b[1, 1] = 1
    got = kernel(a, b, 2)
    if [np.asarray(x).tolist() for x in got] != [[9, 0], [8, 1], [8, 0], [1, 0]]:
        raise RuntimeError(f"the compiled segmentation kernel gives {got} on its check pair")
    return kernel


def _load_aot() -> Kernel | None:
    """The ahead-of-time kernel when a trusted module for this machine exists, else ``None``;
    raises when one exists but does not load or fails its check."""
    path = aot_path()
    if path is None:
        return None
    spec = importlib.util.spec_from_file_location(AOT_MODULE, path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    compiled = module.seg_kernel

    def kernel(p8: np.ndarray, g8: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return compiled(np.ascontiguousarray(p8), np.ascontiguousarray(g8), int(c))

    return _check(kernel)


def build_aot(folder: str | None = None) -> str:
    """Build this machine's ahead-of-time kernel (numba and a C compiler needed, ~10 s); returns
    its path. Into ``folder``, else ``FMUIA_AOT_DIR``, else the package's ``__pycache__`` where it
    is writable, else the user's cache folder (created private). Later processes load it instead
    of numba's JIT kernel."""
    name = aot_name() if hasattr(os, "getuid") else None
    if name is None:
        raise RuntimeError("no CPU identity (/proc/cpuinfo) to key an ahead-of-time kernel by")
    if folder is None:
        candidates = _aot_folders()
        folder = candidates[-1]
        for cand in candidates[:-1]:
            parent = os.path.dirname(cand)
            if (os.path.isdir(cand) and os.access(cand, os.W_OK)) or (not os.path.exists(cand)
                                                                       and os.access(parent, os.W_OK)):
                folder = cand
                break
    os.makedirs(folder, mode=0o700, exist_ok=True)
    if not _trusted(folder, folder=True):
        raise RuntimeError(f"{folder}: not a folder only this user (or root) can write to")
    from evaluation.metrics import _seg_numba

    path = os.path.join(folder, name)
    _seg_numba.build_aot(path)
    os.chmod(path, 0o755)
    return path


# ---- choosing -------------------------------------------------------------------------------------

def _fast_kernel() -> Kernel | None:
    """The compiled kernel (see the module docstring), or ``None`` for the pure-numpy path.

    Chosen once per process, on first use (numba is never imported by ``import evaluation``):
    ``None`` when ``FMUIA_NO_NUMBA`` is set to a non-empty value other than ``0``, or when no
    compiled kernel can be loaded, compiled, or passes its check.
    """
    if not _KERNEL:
        kernel, kind = None, "numpy"
        if not _flag("FMUIA_NO_NUMBA"):
            if not _flag("FMUIA_NO_AOT"):
                try:
                    kernel = _load_aot()
                except Exception:  # noqa: BLE001 - unloadable or wrong: numba's JIT kernel instead
                    kernel = None
                kind = "aot" if kernel is not None else kind
            if kernel is None:
                try:
                    with warnings.catch_warnings():  # e.g. a cache that cannot be written: compile anyway
                        warnings.simplefilter("ignore")
                        from evaluation.metrics import _seg_numba

                        kernel = _seg_numba.load()
                        kind = f"jit, {_seg_numba.how_loaded()}"
                except Exception:  # no numba (e.g. a minimal scoring image), or it cannot compile here
                    kernel = None
        _KERNEL.append(kernel)
        _KIND.append(kind if kernel is not None else "numpy")
    return _KERNEL[0]


def prepare_fast_kernel() -> bool:
    """Choose (and load or compile) the segmentation kernel now, e.g. in a parent process before
    it forks workers. True when a compiled kernel is in use."""
    return _fast_kernel() is not None


def kernel_kind() -> str | None:
    """Which kernel this process chose: ``"aot"``, ``"jit, cache (fast path)"``, ``"jit, numba"``
    (numba's ordinary load or a compile) or ``"numpy"``; ``None`` before the choice."""
    return _KIND[0] if _KIND else None

