"""The rank analysis of a leaderboard's results (``fmuia leaderboard --analysis``): one analysis per
leaderboard column that has per-case values, each in its own folder with its report.

Of the nine leaderboard columns, five are means of per-case values in strict results — seg_DSC, seg_HD,
cls_Accuracy (per-case correctness), det_IoU, reg_MRE — and are analysed here over the tasks of their kind;
cls_AUC, cls_F1_macro, cls_F1_weighted and cls_MCC are one number per task and have no per-case values.
The method is the leaderboard's own, rank-then-aggregate (mean), which needs no decision about missing
values; the bootstrap rounds and seed are the leaderboard's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.rank.analysis import rank_analysis, write_outputs
from evaluation.rank.result import RankParams
from evaluation.rank.table import CASE_FIELDS, METRIC_ALIASES, table_from_results
from evaluation.schema import AGGREGATES
from fmuia.errors import FmuiaError

__all__ = ["ANALYSED_COLUMNS", "NOT_PER_CASE", "MetricAnalyses", "write_metric_analyses"]

ANALYSED_COLUMNS = tuple(k for k in AGGREGATES if k in METRIC_ALIASES)  # seg_DSC, seg_HD, cls_Accuracy, det_IoU, reg_MRE
NOT_PER_CASE = tuple(k for k in AGGREGATES if k not in METRIC_ALIASES)


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
    for key in ANALYSED_COLUMNS:
        metric = METRIC_ALIASES[key]
        kind = CASE_FIELDS[metric][0]
        if not any(isinstance(r.get(kind.value), Mapping) and r.get(kind.value) for r in results.values()):
            continue  # no task of this kind in these results
        try:
            table, smaller, source, warnings = table_from_results(results, metric)
        except FmuiaError as exc:
            done.notes.append(f"rank analysis of {key} skipped: {exc.message}")
            continue
        params = RankParams(method="rank-then-aggregate", aggregate="mean", smaller_better=smaller,
                            bootstrap=n_bootstrap, seed=seed)
        result = rank_analysis(table, params, source=source, warnings=warnings)
        folder = out / key
        paths = write_outputs(result, folder)
        if report:
            # Deferred: the report imports matplotlib (about 0.3 s), which the tables never need.
            from evaluation.rank.report import write_report

            done.links[key] = write_report(result, folder)
        else:
            done.links[key] = paths["ranking.csv"]
    if done.links:
        done.notes.append("not in the rank analysis (one number per task, no per-case values): "
                          + ", ".join(NOT_PER_CASE))
    return done
