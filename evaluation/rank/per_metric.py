"""The rank analysis of a leaderboard's results (``fmuia leaderboard --analysis``): one analysis per
leaderboard column computable from strict per-case rows, each in its own folder with its report.

Five of the nine leaderboard columns are means of per-case values — seg_DSC, seg_HD, cls_Accuracy
(per-case correctness), det_IoU, reg_MRE — analysed with the leaderboard's own method, rank-then-aggregate
(mean), which needs no decision about missing values. cls_F1_macro, cls_F1_weighted and cls_MCC are
set-level (one number per task), computed over each task's cases from the rows' labels and predictions
and analysed with aggregate-then-rank (the only method that applies). cls_AUC cannot be reproduced from
per-case rows (they keep only the true class's probability) and is left out. The bootstrap rounds and
seed are the leaderboard's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.rank.analysis import rank_analysis, write_outputs
from evaluation.rank.result import RankParams
from evaluation.rank.setlevel import SET_METRICS
from evaluation.rank.table import CASE_FIELDS, METRIC_ALIASES, table_from_results
from evaluation.schema import AGGREGATES
from fmuia.errors import FmuiaError

__all__ = ["ANALYSED_COLUMNS", "SET_LEVEL_COLUMNS", "NOT_PER_CASE", "MetricAnalyses", "write_metric_analyses"]

ANALYSED_COLUMNS = tuple(k for k in AGGREGATES if k in METRIC_ALIASES)  # seg_DSC, seg_HD, cls_Accuracy, det_IoU, reg_MRE
SET_LEVEL_COLUMNS = tuple(k for k, (kind, m, _d) in AGGREGATES.items()
                          if kind == "classification" and m in SET_METRICS)  # cls_F1_macro, cls_F1_weighted, cls_MCC
NOT_PER_CASE = tuple(k for k in AGGREGATES if k not in METRIC_ALIASES and k not in SET_LEVEL_COLUMNS)  # cls_AUC


@dataclass
class MetricAnalyses:
    """What was written: leaderboard column -> the analysis' main file (report.html, else ranking.csv);
    ``notes``: a line per column left out, and why."""

    links: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def write_metric_analyses(results: Mapping[str, dict], out_dir: str | os.PathLike, *, n_bootstrap: int = 0,
                          seed: int = 0, report: bool = True) -> MetricAnalyses:
    """Analyse every per-case leaderboard column of ``results`` (name -> strict results object) into
    ``out_dir/<column>/``; columns without per-case rows in every submission are left out with a note."""
    out = Path(out_dir)
    done = MetricAnalyses()
    used: dict[str, list[str]] = {}
    for key in ANALYSED_COLUMNS + SET_LEVEL_COLUMNS:
        set_level = key in SET_LEVEL_COLUMNS
        metric = key if set_level else METRIC_ALIASES[key]
        kind = CASE_FIELDS["Accuracy"][0] if set_level else CASE_FIELDS[metric][0]
        if not any(isinstance(r.get(kind.value), Mapping) and r.get(kind.value) for r in results.values()):
            continue  # no task of this kind in these results
        method = "aggregate-then-rank" if set_level else "rank-then-aggregate"
        try:
            table, smaller, source, warnings = table_from_results(results, metric)
            params = RankParams(method=method, aggregate="mean", smaller_better=smaller,
                                bootstrap=n_bootstrap, seed=seed)
            result = rank_analysis(table, params, source=source, warnings=warnings)
        except FmuiaError as exc:
            done.notes.append(f"rank analysis of {key} skipped: {exc.message}")
            continue
        used.setdefault(method, []).append(key)
        folder = out / key
        paths = write_outputs(result, folder)
        if report:
            # Deferred: the report imports matplotlib (about 0.3 s), which the tables never need.
            from evaluation.rank.report import write_report

            done.links[key] = write_report(result, folder)
        else:
            done.links[key] = paths["ranking.csv"]
    if done.links:
        for method, keys in used.items():
            why = ("set-level, computed over each task's cases" if method == "aggregate-then-rank"
                   else "the leaderboard's method, on per-case values")
            done.notes.append(f"rank analysis by {method} ({why}): {', '.join(keys)}")
        done.notes.append("not in the rank analysis (per-case rows keep only the true class's probability, so AUC "
                          "cannot be recomputed from them): " + ", ".join(NOT_PER_CASE))
    return done
