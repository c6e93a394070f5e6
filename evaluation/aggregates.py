"""The nine leaderboard aggregates of a results object (the table lives in :mod:`evaluation.schema`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evaluation.schema import AGGREGATES, HIGHER, LOWER

__all__ = ["AGGREGATES", "HIGHER", "LOWER", "compute_aggregates"]


def compute_aggregates(results: Mapping[str, Any]) -> dict[str, float | None]:
    """The nine aggregates of a results object: per key, the mean of the metric over the tasks of
    its kind. Like the official summary, tasks with ``num_samples == 0`` are left out, and so are
    ``None`` values (an AUC that is undefined in strict mode). ``None`` when nothing is left."""
    out: dict[str, float | None] = {}
    for key, (kind, metric, _direction) in AGGREGATES.items():
        tasks = results.get(kind.value) or {}
        vals = [
            float(t[metric])
            for t in tasks.values()
            if isinstance(t, Mapping) and t.get(metric) is not None and t.get("num_samples", 1) > 0
        ]
        out[key] = sum(vals) / len(vals) if vals else None
    return out
