"""Choosing the compiled segmentation kernel (numba) or the numpy path, once per process."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import numpy as np

_KERNEL: list = []  # [kernel or None] once chosen


def _fast_kernel() -> Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] | None:
    """The compiled kernel (:func:`evaluation.metrics._seg_numba.run`), or ``None`` for the pure-numpy path.

    Chosen once per process, on first use (numba is never imported by ``import evaluation``):
    ``None`` when the environment variable ``FMUIA_NO_NUMBA`` is set to a non-empty value other
    than ``0``, or when numba cannot be imported, fails to compile, or the compiled kernel fails
    its check. Loading it from numba's warm on-disk cache costs about 0.25 s per process (most of
    it ``import numba``); compiling it, where no cache holds it, about 4 s.
    """
    if not _KERNEL:
        kernel = None
        if os.environ.get("FMUIA_NO_NUMBA", "") in ("", "0"):
            try:
                with warnings.catch_warnings():  # e.g. a cache that cannot be written: compile anyway
                    warnings.simplefilter("ignore")
                    from evaluation.metrics import _seg_numba

                    kernel = _seg_numba.load()
            except Exception:  # no numba (e.g. a minimal scoring image), or it cannot compile here
                kernel = None
        _KERNEL.append(kernel)
    return _KERNEL[0]


def prepare_fast_kernel() -> bool:
    """Choose (and load or compile) the segmentation kernel now, e.g. in a parent process before
    it forks workers. True when the compiled kernel is in use."""
    return _fast_kernel() is not None
