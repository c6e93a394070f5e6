"""``fmuia rank``: the ranking analysis of challengeR (aggregate-then-rank, rank-then-aggregate,
test-then-rank; significance, bootstrap stability, consensus), in numpy.

Modules: :mod:`.result` (the typed results), :mod:`.table` (the long CSV and strict results as input),
:mod:`.methods` (ranks, aggregates, Kendall's tau, the three methods), :mod:`.wilcoxon` (R's paired
signed-rank test and p.adjust, vectorised), :mod:`.bootstrap`, :mod:`.analysis` (:func:`rank_analysis`,
:func:`write_outputs`), :mod:`.report` (the HTML report).
"""

from evaluation.rank.analysis import rank_analysis, write_outputs
from evaluation.rank.result import BootstrapResult, RankParams, RankResult
from evaluation.rank.table import read_table, table_from_results

__all__ = ["BootstrapResult", "RankParams", "RankResult", "rank_analysis", "read_table", "table_from_results",
           "write_outputs"]
