"""Landmark metrics: radial errors and their mean."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["radial_errors", "mean_radial_error"]


def radial_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Euclidean distance per landmark between ``pred`` and ``gt`` (both ``[K, 2]`` or flat ``2K``)."""
    p = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    g = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
    return np.hypot(p[:, 0] - g[:, 0], p[:, 1] - g[:, 1])  # hypot: no overflow for absurd coordinates


def mean_radial_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean of :func:`radial_errors`. Edge case: no landmarks → ``nan``."""
    e = radial_errors(pred, gt)
    return float(np.mean(e)) if e.size else math.nan
