"""Seeded case-resampling 95% intervals for task blocks (strict mode)."""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np


def task_rng(seed: int, task_id: str) -> np.random.Generator:
    """The generator of one task's resamples: the same seed gives the same intervals per task,
    whatever other tasks are scored."""
    return np.random.default_rng([int(seed), zlib.crc32(task_id.encode("utf-8"))])


def interval(samples: np.ndarray) -> list[float] | None:
    """Percentile ``[2.5, 97.5]`` of the finite resampled values; ``None`` when there are none."""
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [float(lo), float(hi)]


def mean_intervals(values: dict[str, np.ndarray], n_bootstrap: int, rng: np.random.Generator) -> dict:
    """95% intervals of the mean of each per-case column, all columns resampled together."""
    n = len(next(iter(values.values())))
    if n_bootstrap <= 0 or n == 0:
        return {}
    out: dict[str, list[np.ndarray]] = {k: [] for k in values}
    chunk = max(1, min(n_bootstrap, 2_000_000 // max(n, 1)))
    done = 0
    while done < n_bootstrap:
        b = min(chunk, n_bootstrap - done)
        idx = rng.integers(0, n, size=(b, n))
        for k, v in values.items():
            out[k].append(v[idx].mean(axis=1))
        done += b
    return {k: interval(np.concatenate(v)) for k, v in out.items()}


def statistic_intervals(n: int, n_bootstrap: int, rng: np.random.Generator,
                        statistic: Callable[[np.ndarray | None], dict[str, float]]) -> dict:
    """95% intervals of statistics that need the whole resample (AUC, F1, MCC): ``statistic``
    gets per-case weights (how often each case was drawn)."""
    if n_bootstrap <= 0 or n == 0:
        return {}
    boots = [statistic(np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64))
             for _ in range(n_bootstrap)]
    return {k: interval(np.array([b[k] for b in boots], dtype=np.float64)) for k in boots[0]}
