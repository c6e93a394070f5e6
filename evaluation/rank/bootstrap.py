"""The case bootstrap of a ranking: per task, cases resampled with replacement (one seeded draw per task
and round, shared by every algorithm: paired), the chosen method rerun on each resample.

A round is held as case counts ``w[B, C]`` (how often each case is drawn), never as copied data:

* aggregate-then-rank: weighted means / medians of the values;
* rank-then-aggregate: the ranks within a case do not change when cases are resampled, so they are
  computed once and only their weighted aggregate is redone;
* test-then-rank: each pair's ``|d|`` is sorted once and the signed-rank statistics of every round follow
  from the counts (:func:`evaluation.rank.wilcoxon.weighted_stats`); a case drawn twice counts twice (the
  test on the resampled vectors, as ``wilcox.test`` would see them).

Draws: ``numpy.random.default_rng(seed)``, tasks in order, ``integers(0, C, size=(B, C))`` per task; the
same seed gives the same rounds whichever method is chosen.
"""

from __future__ import annotations

import numpy as np

from evaluation.rank import methods as M
from evaluation.rank import wilcoxon as W
from evaluation.rank.result import BootstrapResult, RankParams

__all__ = ["case_counts", "bootstrap_ranks", "consensus_rank", "finish", "run_bootstrap"]


def case_counts(rng: np.random.Generator, n_rounds: int, n_cases: int) -> np.ndarray:
    """``[B, C]`` float: how often each case is drawn in each round (``C`` draws with replacement)."""
    idx = rng.integers(0, n_cases, size=(n_rounds, n_cases))
    flat = (np.arange(n_rounds, dtype=np.int64)[:, None] * n_cases + idx).ravel()
    return np.bincount(flat, minlength=n_rounds * n_cases).reshape(n_rounds, n_cases).astype(float)


def _test_ranks(v: np.ndarray, w: np.ndarray, params: RankParams, sp: W.SortedPairs | None) -> np.ndarray:
    a = v.shape[0]
    if a < 2:
        return np.ones((w.shape[0], a))
    sp = W.sorted_pairs(v) if sp is None else sp
    vs, n, ties = W.weighted_stats(sp, w)  # [P, B]
    if sp.has_pair.all():
        common = np.broadcast_to(w.sum(axis=1)[:, None], (w.shape[0], sp.has_pair.shape[0]))
    else:
        common = w @ sp.has_pair.T.astype(float)  # [B, P]: drawn cases both have
    i, j, u, fwd = W._ordered(a)
    total = n * (n + 1) / 2.0
    stat = np.where(fwd[None, :], vs.T[:, u], total.T[:, u] - vs.T[:, u])  # [B, ordered pairs]
    p = W.p_values(stat, n.T[:, u], ties.T[:, u], params.smaller_better)
    p = np.where(common[:, u] > 0, p, np.nan)
    sig = W.p_adjust(p, params.p_adjust) <= params.alpha
    prop = W.prop_significance(sig, i, j, a)
    return M.rank_rows(-prop, params.ties, M.AGG_RTOL)


def bootstrap_ranks(v: np.ndarray, case_rank: np.ndarray, w: np.ndarray, params: RankParams,
                    sp: W.SortedPairs | None = None) -> np.ndarray:
    """``[B, A]``: the ranks of one task's algorithms (values ``v[A, C]``, per-case ranks ``case_rank``)
    in every round ``w[B, C]``, by ``params.method`` (``sp``: the task's sorted pairs, if at hand)."""
    if params.method == "aggregate-then-rank":
        return M.aggregate_then_rank(v, params.smaller_better, params.aggregate, params.ties, w)[1]
    if params.method == "rank-then-aggregate":
        return M.rank_then_aggregate(case_rank, params.aggregate, params.ties, w)[1]
    return _test_ranks(v, w, params, sp)


def consensus_rank(ranks: np.ndarray, ties: str) -> tuple[np.ndarray, np.ndarray]:
    """``(mean rank, rank)`` across tasks of ``ranks[T, ..., A]`` (NaN where an algorithm is not in a task:
    its mean is over the tasks it is in)."""
    with np.errstate(invalid="ignore"), M._quiet():
        mean = np.nanmean(ranks, axis=0)
    return mean, M.rank_rows(mean, ties, M.AGG_RTOL)


def finish(tasks: list[str], algorithms: list[str], ranks: np.ndarray, task_algorithms: list[np.ndarray],
           full_rank: np.ndarray, full_consensus: np.ndarray, params: RankParams) -> BootstrapResult:
    """The :class:`BootstrapResult` from every task's bootstrap ranks ``ranks[T, B, A]``: Kendall's tau of
    each round to ``full_rank[T, A]`` over the task's algorithms, the consensus per round and its tau to
    ``full_consensus[A]``."""
    tau = np.full(ranks.shape[:2], np.nan)
    for t, algs in enumerate(task_algorithms):
        tau[t] = M.kendall_tau_b(full_rank[t, algs], ranks[t][:, algs])
    _, cons = consensus_rank(ranks, params.ties)
    return BootstrapResult(n=params.bootstrap, seed=params.seed, tasks=list(tasks), algorithms=list(algorithms),
                           ranks=ranks, tau=tau, consensus_ranks=cons,
                           consensus_tau=M.kendall_tau_b(full_consensus, cons))


def run_bootstrap(tasks: list[str], algorithms: list[str], task_data: list, case_rank: list[np.ndarray],
                  full_rank: np.ndarray, full_consensus: np.ndarray, params: RankParams) -> BootstrapResult:
    """The bootstrap of every task and of the consensus. ``task_data``: :class:`~evaluation.rank.table.TaskData`
    after NA treatment; ``full_rank[T, A]``: each task's ranking on all cases (NaN where absent);
    ``full_consensus[A]``: the consensus ranking on all cases. (:func:`evaluation.rank.rank_analysis` runs
    the same steps task by task, reusing each task's sorted pairs.)"""
    rng = np.random.default_rng(params.seed)
    ranks = np.full((len(tasks), params.bootstrap, len(algorithms)), np.nan)
    for t, td in enumerate(task_data):
        w = case_counts(rng, params.bootstrap, td.values.shape[1])
        ranks[t][:, td.algorithms] = bootstrap_ranks(td.values, case_rank[t], w, params)
    return finish(tasks, algorithms, ranks, [td.algorithms for td in task_data], full_rank, full_consensus, params)
