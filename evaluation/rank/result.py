"""Typed data of a ranking analysis (``fmuia rank``): the parameters and every stage's result.

The analysis (:mod:`evaluation.rank.analysis`) fills these; the writers (CSV/JSON) and the HTML report
(:mod:`evaluation.rank.report`) only read them. Algorithms and tasks keep the order of first appearance
in the input table; every array below is indexed in that order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

METHODS = ("aggregate-then-rank", "rank-then-aggregate", "test-then-rank")
AGGREGATES = ("mean", "median")
TIES = ("min", "max", "average")
P_ADJUST = ("none", "holm", "bonferroni")


@dataclass(frozen=True)
class RankParams:
    """Every option of one analysis (the flags of ``fmuia rank``), in one object."""

    method: str = "aggregate-then-rank"  # one of METHODS
    aggregate: str = "mean"  # mean | median: the value aggregate (aggregate-then-rank) or rank aggregate (rank-then-aggregate)
    smaller_better: bool = False  # True: a smaller value is better (e.g. HD95, MRE)
    ties: str = "min"  # one of TIES
    na_treat: str | float | None = None  # None (refuse NAs where a method needs a decision) | "worst" | "remove" | a number
    alpha: float = 0.05  # significance level of test-then-rank
    p_adjust: str = "none"  # one of P_ADJUST, within each task over all ordered pairs
    bootstrap: int = 0  # bootstrap rounds (0: none)
    seed: int = 0


@dataclass
class BootstrapResult:
    """Ranks under resampling of cases (with replacement, per task), the method rerun each round.

    ``ranks[t, b, a]``: rank of algorithm ``a`` in task ``t`` in round ``b`` (NaN where the algorithm has no
    value in that task). ``tau[t, b]``: Kendall's tau-b of round ``b``'s ranking to the full ranking of task
    ``t``. ``consensus_ranks[b, a]``: the consensus rank (rank of the mean rank over tasks) in round ``b``;
    ``consensus_tau[b]``: its Kendall's tau to the full consensus.
    """

    n: int
    seed: int
    tasks: list[str]
    algorithms: list[str]
    ranks: np.ndarray  # float64 [n_tasks, n, n_algorithms]
    tau: np.ndarray  # float64 [n_tasks, n]
    consensus_ranks: np.ndarray  # float64 [n, n_algorithms]
    consensus_tau: np.ndarray  # float64 [n]


@dataclass
class RankResult:
    """The whole analysis of one table.

    * ``table``: the long table after NA treatment (columns ``task, algorithm, case, value``).
    * ``ranking``: the chosen method's ranking, columns ``task, algorithm, <statistic>, rank`` where
      ``statistic`` is ``value_mean``, ``value_median``, ``rank_mean``, ``rank_median`` or ``prop_significance``.
    * ``methods``: the ranking every method gives (same columns as ``ranking``, keyed by method name) —
      for comparing methods; ``methods[params.method]`` is ``ranking``.
    * ``method_tau``: Kendall's tau between the methods' rankings, columns ``task, method_a, method_b, tau``.
    * ``significance``: every ordered pair of every task, columns
      ``task, algorithm, other, n_cases, statistic, p_value, p_adjusted, significant`` (one-sided: is
      ``algorithm`` better than ``other``), whatever the method (the report's significance maps need it).
    * ``consensus``: across tasks, columns ``algorithm, mean_rank, rank`` (mean of the per-task ranks of the
      chosen method, then ranked with ``params.ties``).
    * ``warnings``: one line each (one case, one algorithm, NAs replaced ...), also printed by the CLI.
    """

    params: RankParams
    tasks: list[str]
    algorithms: list[str]
    table: pd.DataFrame
    statistic: str
    ranking: pd.DataFrame
    methods: dict[str, pd.DataFrame]
    method_tau: pd.DataFrame
    significance: pd.DataFrame
    consensus: pd.DataFrame
    bootstrap: BootstrapResult | None = None
    warnings: list[str] = field(default_factory=list)
    source: str = ""  # what was read (a table path, or "N results files, metric M")
