"""The ranking analysis of ``fmuia rank``: :func:`rank_analysis` (table + parameters -> :class:`RankResult`)
and :func:`write_outputs` (ranking.csv, significance.csv, method_tau.csv, consensus.csv, ranking.json and,
with a bootstrap, bootstrap_ranks.csv, bootstrap_tau.csv and the raw arrays in bootstrap.npz).

The methods, per task, as challengeR defines them (``aggregateThenRank``, ``rankThenAggregate``,
``testThenRank``):

* **aggregate-then-rank**: the mean (or median) of each algorithm's values, ranked; statistic
  ``value_mean`` / ``value_median``.
* **rank-then-aggregate**: the algorithms ranked within each case (a missing value ranks last in its case),
  each algorithm's mean (median) rank, ranked again; ``rank_mean`` / ``rank_median``.
* **test-then-rank**: a one-sided paired Wilcoxon signed-rank test for every ordered pair on the cases both
  have (:mod:`evaluation.rank.wilcoxon`), p-values adjusted over all ordered pairs of the task; the score
  is the fraction of the other algorithms an algorithm beats at ``alpha`` (``prop_significance``), ranked.

Ties by ``ties`` (R's ``min``, ``max``, ``average``; challengeR's ``rankNA2`` for missing statistics).
Missing values: ``na_treat`` a number replaces them; ``worst`` replaces them by the worst value observed in
the task; ``remove`` drops them (aggregates over what is left, tests on the cases both have, per-case ranks
among the algorithms present). Without ``na_treat`` aggregate-then-rank and test-then-rank refuse a table
with missing values (challengeR asks for ``na.treat`` too); rank-then-aggregate ranks them last, and the
other two methods, computed for comparison, then use ``remove``.

The consensus across tasks is each algorithm's mean rank over the tasks it takes part in (chosen method),
ranked with ``ties``.

A set-level metric (F1_macro, F1_weighted, MCC from strict results: ``table.attrs["set_level"]``) has one
value per algorithm and task, computed over the task's cases (:mod:`evaluation.rank.setlevel`); only
aggregate-then-rank applies (statistic ``value_set``), its bootstrap recomputing the metric on each
resample of cases; rank-then-aggregate and test-then-rank, which need per-case values, are refused.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation.rank import methods as M
from evaluation.rank import wilcoxon as W
from evaluation.rank.bootstrap import bootstrap_ranks, case_counts, consensus_rank, finish
from evaluation.rank.result import AGGREGATES, METHODS, P_ADJUST, TIES, RankParams, RankResult
from evaluation.rank.setlevel import SetLevel, set_values, set_values_batched
from evaluation.rank.table import TaskData, check_table, dense_tasks
from fmuia._atomic import atomic_path, ensure_dir, json_safe, write_json, write_text
from fmuia.errors import FmuiaError

__all__ = ["statistic_name", "check_params", "rank_analysis", "write_outputs", "OUTPUT_FILES"]

OUTPUT_FILES = ("ranking.csv", "significance.csv", "method_tau.csv", "consensus.csv", "ranking.json")
BOOTSTRAP_FILES = ("bootstrap_ranks.csv", "bootstrap_tau.csv", "bootstrap.npz")
SIG_COLUMNS = ["task", "algorithm", "other", "n_cases", "statistic", "p_value", "p_adjusted", "significant"]


def statistic_name(method: str, aggregate: str) -> str:
    """The ranking's statistic column: ``value_<agg>``, ``rank_<agg>`` or ``prop_significance``."""
    return {"aggregate-then-rank": f"value_{aggregate}", "rank-then-aggregate": f"rank_{aggregate}",
            "test-then-rank": "prop_significance"}[method]


def check_params(params: RankParams) -> None:
    """:class:`FmuiaError` for an option outside its range (the library's own check; click checks too)."""
    for name, value, allowed in (("method", params.method, METHODS), ("aggregate", params.aggregate, AGGREGATES),
                                 ("ties", params.ties, TIES), ("p_adjust", params.p_adjust, P_ADJUST)):
        if value not in allowed:
            raise FmuiaError(f"{name} {value!r}: expected one of {', '.join(allowed)}")
    na = params.na_treat
    if not (na is None or na in ("worst", "remove") or
            (isinstance(na, (int, float)) and not isinstance(na, bool) and math.isfinite(na))):
        raise FmuiaError(f"na_treat {na!r}: expected worst, remove or a finite number")
    if not 0.0 < params.alpha < 1.0:
        raise FmuiaError(f"alpha {params.alpha}: expected a level between 0 and 1")
    if params.bootstrap < 0:
        raise FmuiaError(f"bootstrap {params.bootstrap}: expected 0 (none) or a number of rounds")


def _treat(td: TaskData, params: RankParams, notes: list[str], algorithms: list[str]) -> None:
    """Apply ``na_treat`` to one task's values in place; a line in ``notes`` says what was done."""
    nan = np.isnan(td.values)
    k = int(nan.sum())
    if k == 0:
        return
    na = params.na_treat
    if na is None or na == "remove":
        return
    if na == "worst":
        seen = td.values[~nan]
        if seen.size == 0:
            raise FmuiaError(f"task {td.name!r}: no value observed, so no worst value to put in for --na-treat worst")
        fill = float(seen.max() if params.smaller_better else seen.min())
        notes.append(f"task {td.name!r}: {k} missing value(s) set to the worst observed value {fill:g}")
    else:
        fill = float(na)
        notes.append(f"task {td.name!r}: {k} missing value(s) set to {fill:g}")
    td.values[nan] = fill


def _refuse_missing(td: TaskData, method: str, algorithms: list[str], source: str) -> None:
    nan = np.isnan(td.values)
    a, c = np.argwhere(nan)[0]
    total = int(nan.sum())
    more = f" ({total} missing value(s) in the task)" if total > 1 else ""
    line = int(td.line[a, c])
    alg, case = algorithms[td.algorithms[a]], td.cases[c]
    fix = ("give --na-treat worst|remove|NUMBER, or use --method rank-then-aggregate, which ranks a missing "
           "value last in its case")
    if line:
        raise FmuiaError(f"{source}:{line}: value of algorithm {alg!r}, case {case!r} of task {td.name!r} is NA; "
                         f"{method} needs a decision about missing values: {fix}{more}")
    raise FmuiaError(f"{source}: algorithm {alg!r} has no value for case {case!r} of task {td.name!r}; "
                     f"{method} needs a decision about missing values: {fix}{more}")


def _frame(task: str, algs: list[str], stat_name: str, stat: np.ndarray, rank: np.ndarray) -> pd.DataFrame:
    df = pd.DataFrame({"task": task, "algorithm": algs, stat_name: stat, "rank": rank})
    df["_order"] = np.arange(len(algs))
    return df.sort_values(["rank", "_order"], kind="stable").drop(columns="_order")


def rank_analysis(table: pd.DataFrame, params: RankParams, source: str = "", warnings: list[str] | None = None
                  ) -> RankResult:
    """Rank the algorithms of every task of the long ``table`` (``task, algorithm, case, value``, as
    :func:`evaluation.rank.table.read_table` returns it) by all three methods, test every ordered pair,
    build the consensus and, with ``params.bootstrap``, the bootstrap. ``params.method`` is the ranking
    reported (and bootstrapped); ``warnings``: lines to carry into the result (e.g. from reading)."""
    check_params(params)
    notes = list(warnings or [])
    name = source or "table"
    set_level = table.attrs.get("set_level")
    if isinstance(set_level, SetLevel):
        return _set_level_analysis(table, set_level, params, source, notes)
    if "line" not in table.columns or table["value"].dtype != float:  # not yet checked by read_table
        table = check_table(table, name)
    tasks, algorithms, data = dense_tasks(table)
    na = params.na_treat
    missing_any = False
    for td in data:
        nan = np.isnan(td.values)
        if nan.any():
            missing_any = True
            if na is None and params.method != "rank-then-aggregate":
                _refuse_missing(td, params.method, algorithms, name)
        _treat(td, params, notes, algorithms)
    if missing_any and na is None:
        notes.append("missing values rank last in their case (rank-then-aggregate); the comparison rankings of "
                     "aggregate-then-rank and test-then-rank, and the tests, leave them out (as --na-treat remove)")
    for td in data:
        if td.values.shape[0] == 1:
            notes.append(f"task {td.name!r}: only one algorithm ({algorithms[td.algorithms[0]]!r}); it ranks 1 and "
                         "nothing is tested")
        if td.values.shape[1] == 1:
            notes.append(f"task {td.name!r}: only one case; no test can be significant and the bootstrap "
                         "resamples that case alone")
    absent = [(algorithms[a], td.name) for td in data for a in sorted(set(range(len(algorithms))) - set(td.algorithms))]
    if absent:
        alg, task = absent[0]
        notes.append(f"{len(absent)} algorithm/task combination(s) without rows (first: {alg!r} in {task!r}): not "
                     "ranked there; the consensus is the mean over the tasks an algorithm is in")

    keep_missing = na == "remove"
    frames: dict[str, list[pd.DataFrame]] = {m: [] for m in METHODS}
    sig_frames: list[pd.DataFrame] = []
    tau_rows: list[dict[str, Any]] = []
    full_rank = np.full((len(tasks), len(algorithms)), np.nan)
    names = {m: statistic_name(m, params.aggregate) for m in METHODS}
    rng = np.random.default_rng(params.seed) if params.bootstrap > 0 else None
    boot_ranks = np.full((len(tasks), params.bootstrap, len(algorithms)), np.nan)
    for t, td in enumerate(data):
        v = td.values
        algs = [algorithms[a] for a in td.algorithms]
        loss = v if params.smaller_better else -v
        cr = M.case_ranks(loss, params.ties, keep_missing)
        ranks: dict[str, np.ndarray] = {}
        s, r = M.aggregate_then_rank(v, params.smaller_better, params.aggregate, params.ties)
        ranks["aggregate-then-rank"] = r
        frames["aggregate-then-rank"].append(_frame(td.name, algs, names["aggregate-then-rank"], s, r))
        s, r = M.rank_then_aggregate(cr, params.aggregate, params.ties)
        ranks["rank-then-aggregate"] = r
        frames["rank-then-aggregate"].append(_frame(td.name, algs, names["rank-then-aggregate"], s, r))
        sp = W.sorted_pairs(v) if len(algs) > 1 else None  # sorted once: the tests and their bootstrap
        s, r, tests = M.test_then_rank(v, params.smaller_better, params.alpha, params.p_adjust, params.ties, sp)
        ranks["test-then-rank"] = r
        frames["test-then-rank"].append(_frame(td.name, algs, names["test-then-rank"], s, r))
        sig_frames.append(pd.DataFrame({
            "task": td.name, "algorithm": [algs[i] for i in tests["i"]], "other": [algs[j] for j in tests["j"]],
            "n_cases": tests["n_cases"].astype(int), "statistic": tests["statistic"], "p_value": tests["p_value"],
            "p_adjusted": tests["p_adjusted"], "significant": tests["significant"].astype(bool)}))
        full_rank[t, td.algorithms] = ranks[params.method]
        if rng is not None:
            w = case_counts(rng, params.bootstrap, v.shape[1])
            boot_ranks[t][:, td.algorithms] = bootstrap_ranks(v, cr, w, params, sp)
        del sp
        for ia, ma in enumerate(METHODS):
            for mb in METHODS[ia + 1:]:
                tau = float(M.kendall_tau_b(ranks[ma], ranks[mb])) if len(algs) > 1 else math.nan
                tau_rows.append({"task": td.name, "method_a": ma, "method_b": mb, "tau": tau})
    methods = {m: pd.concat(frames[m], ignore_index=True) for m in METHODS}
    significance = pd.concat(sig_frames, ignore_index=True) if sig_frames else pd.DataFrame(columns=SIG_COLUMNS)
    mean, cons = consensus_rank(full_rank, params.ties)
    consensus = _frame("", algorithms, "mean_rank", mean, cons).drop(columns="task").reset_index(drop=True)

    boot = None
    if rng is not None:
        boot = finish(tasks, algorithms, boot_ranks, [td.algorithms for td in data], full_rank, cons, params)

    treated = _treated_table(data, algorithms, drop_missing=keep_missing)
    return RankResult(params=params, tasks=tasks, algorithms=algorithms, table=treated,
                      statistic=names[params.method], ranking=methods[params.method], methods=methods,
                      method_tau=pd.DataFrame(tau_rows, columns=["task", "method_a", "method_b", "tau"]),
                      significance=significance, consensus=consensus, bootstrap=boot, warnings=notes,
                      source=source)


SET_STATISTIC = "value_set"


def _set_level_analysis(table: pd.DataFrame, sl: SetLevel, params: RankParams, source: str,
                        notes: list[str]) -> RankResult:
    """aggregate-then-rank of a set-level metric: per task each algorithm's metric over its cases, ranked;
    the bootstrap recomputes it on the same resampled cases for every algorithm."""
    if params.method != "aggregate-then-rank":
        raise FmuiaError(f"--method {params.method}: {sl.metric} is a set-level metric (one value per task, computed "
                         "over its cases), with no per-case values to rank or test; use --method aggregate-then-rank")
    tasks, algorithms, data = dense_tasks(table)
    t_codes = pd.Categorical(table["task"], categories=tasks).codes
    a_codes = pd.Categorical(table["algorithm"], categories=algorithms).codes
    lab_all = table["label"].to_numpy(dtype=np.int64)
    pred_all = table["predicted"].to_numpy(dtype=np.int64)
    case_all = table["case"].astype(str).to_numpy()
    frames: list[pd.DataFrame] = []
    full_rank = np.full((len(tasks), len(algorithms)), np.nan)
    rng = np.random.default_rng(params.seed) if params.bootstrap > 0 else None
    boot_ranks = np.full((len(tasks), params.bootstrap, len(algorithms)), np.nan)
    loss_sign = 1.0 if params.smaller_better else -1.0
    for t, td in enumerate(data):
        rows = np.flatnonzero(t_codes == t)
        local = np.searchsorted(td.algorithms, a_codes[rows])
        case_index = {c: i for i, c in enumerate(td.cases)}
        cols = np.array([case_index[c] for c in case_all[rows]], dtype=np.int64)
        labels = np.full(td.values.shape, -1, dtype=np.int64)  # -1: no row for this case
        preds = np.full(td.values.shape, -1, dtype=np.int64)
        labels[local, cols] = lab_all[rows]
        preds[local, cols] = pred_all[rows]
        missing = int((labels < 0).sum())
        if missing:
            notes.append(f"task {td.name!r}: {missing} algorithm/case combination(s) without a row; each algorithm's "
                         f"{sl.metric} is over the cases it has")
        c = sl.num_classes[td.name]
        stat = set_values(sl.metric, labels, preds, c)
        rank = M.rank_rows(loss_sign * stat, params.ties, M.AGG_RTOL)
        frames.append(_frame(td.name, [algorithms[a] for a in td.algorithms], SET_STATISTIC, stat, rank))
        full_rank[t, td.algorithms] = rank
        if td.values.shape[0] == 1:
            notes.append(f"task {td.name!r}: only one algorithm ({algorithms[td.algorithms[0]]!r}); it ranks 1")
        if rng is not None:
            w = case_counts(rng, params.bootstrap, td.values.shape[1])
            vals = set_values_batched(sl.metric, labels, preds, c, w)
            boot_ranks[t][:, td.algorithms] = M.rank_rows(loss_sign * vals, params.ties, M.AGG_RTOL)
    notes.append(f"{sl.metric} is a set-level metric: ranked by aggregate-then-rank on its value over each task's "
                 "cases (value_set); rank-then-aggregate and test-then-rank need per-case values, so there is no "
                 "method comparison and no significance test")
    methods = {"aggregate-then-rank": pd.concat(frames, ignore_index=True)}
    mean, cons = consensus_rank(full_rank, params.ties)
    consensus = _frame("", algorithms, "mean_rank", mean, cons).drop(columns="task").reset_index(drop=True)
    boot = None
    if rng is not None:
        boot = finish(tasks, algorithms, boot_ranks, [td.algorithms for td in data], full_rank, cons, params)
    return RankResult(params=params, tasks=tasks, algorithms=algorithms,
                      table=_treated_table(data, algorithms, drop_missing=True), statistic=SET_STATISTIC,
                      ranking=methods["aggregate-then-rank"], methods=methods,
                      method_tau=pd.DataFrame(columns=["task", "method_a", "method_b", "tau"]),
                      significance=pd.DataFrame(columns=SIG_COLUMNS), consensus=consensus, bootstrap=boot,
                      warnings=notes, source=source)


def _treated_table(data: list[TaskData], algorithms: list[str], drop_missing: bool) -> pd.DataFrame:
    parts = []
    for td in data:
        a, c = np.meshgrid(td.algorithms, np.arange(len(td.cases)), indexing="ij")
        v = td.values.ravel()
        keep = ~np.isnan(v) if drop_missing else np.ones(v.size, dtype=bool)
        parts.append(pd.DataFrame({
            "task": td.name,
            "algorithm": np.asarray(algorithms, dtype=object)[a.ravel()[keep]],
            "case": np.asarray(td.cases, dtype=object)[c.ravel()[keep]],
            "value": v[keep]}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["task", "algorithm", "case", "value"])


# ---- outputs -------------------------------------------------------------------------------------------

def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: json_safe(v) for k, v in rec.items()} for rec in df.to_dict(orient="records")]


def _csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, lineterminator="\n", float_format="%.10g")


def bootstrap_tables(result: RankResult) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(ranks, tau)`` summaries of the bootstrap: per task (and ``consensus``) and algorithm the full
    rank, mean and median bootstrap rank, 2.5 % / 97.5 % quantiles and how often it ranked first; per task
    (and ``consensus``) the mean, median and 2.5 % / 97.5 % quantiles of Kendall's tau to the full ranking."""
    b = result.bootstrap
    assert b is not None
    rank_rows: list[dict[str, Any]] = []
    tau_rows: list[dict[str, Any]] = []
    full = {(r.task, r.algorithm): r.rank for r in result.ranking.itertuples()}
    full.update({("consensus", r.algorithm): r.rank for r in result.consensus.itertuples()})
    series = [(t, b.ranks[i], b.tau[i]) for i, t in enumerate(b.tasks)] + [("consensus", b.consensus_ranks, b.consensus_tau)]
    for task, ranks, tau in series:
        for a, alg in enumerate(b.algorithms):
            x = ranks[:, a]
            x = x[~np.isnan(x)]
            if x.size == 0:
                continue
            q = np.quantile(x, [0.025, 0.5, 0.975])
            rank_rows.append({"task": task, "algorithm": alg, "rank": full.get((task, alg)), "mean_rank": x.mean(),
                              "median_rank": q[1], "q025": q[0], "q975": q[2], "p_first": float((x == 1).mean())})
        t = tau[~np.isnan(tau)]
        q = np.quantile(t, [0.025, 0.5, 0.975]) if t.size else [math.nan] * 3
        tau_rows.append({"task": task, "tau_mean": t.mean() if t.size else math.nan, "tau_median": q[1],
                         "q025": q[0], "q975": q[2], "n_defined": int(t.size)})
    return pd.DataFrame(rank_rows), pd.DataFrame(tau_rows)


def to_dict(result: RankResult) -> dict[str, Any]:
    """``ranking.json``: parameters, source, tasks, algorithms, every table (bootstrap summaries included)."""
    p = result.params
    out: dict[str, Any] = {
        "params": {"method": p.method, "aggregate": p.aggregate, "smaller_better": p.smaller_better, "ties": p.ties,
                   "na_treat": p.na_treat, "alpha": p.alpha, "p_adjust": p.p_adjust, "bootstrap": p.bootstrap,
                   "seed": p.seed},
        "source": result.source,
        "tasks": result.tasks,
        "algorithms": result.algorithms,
        "statistic": result.statistic,
        "ranking": _records(result.ranking),
        "methods": {m: _records(df) for m, df in result.methods.items()},
        "method_tau": _records(result.method_tau),
        "consensus": _records(result.consensus),
        "significance": _records(result.significance),
        "bootstrap": None,
        "warnings": list(result.warnings),
    }
    if result.bootstrap is not None:
        ranks, tau = bootstrap_tables(result)
        out["bootstrap"] = {"n": result.bootstrap.n, "seed": result.bootstrap.seed, "ranks": _records(ranks),
                            "tau": _records(tau)}
    return out


def write_outputs(result: RankResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write the analysis into ``out_dir`` (each file atomically); returns name -> path."""
    out = ensure_dir(Path(out_dir))
    paths = {name: out / name for name in OUTPUT_FILES}
    write_text(paths["ranking.csv"], _csv(result.ranking))
    write_text(paths["significance.csv"], _csv(result.significance))
    write_text(paths["method_tau.csv"], _csv(result.method_tau))
    write_text(paths["consensus.csv"], _csv(result.consensus))
    if result.bootstrap is not None:
        ranks, tau = bootstrap_tables(result)
        paths.update({name: out / name for name in BOOTSTRAP_FILES})
        write_text(paths["bootstrap_ranks.csv"], _csv(ranks))
        write_text(paths["bootstrap_tau.csv"], _csv(tau))
        b = result.bootstrap
        with atomic_path(paths["bootstrap.npz"]) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, ranks=b.ranks, tau=b.tau, consensus_ranks=b.consensus_ranks,
                                consensus_tau=b.consensus_tau, tasks=np.array(b.tasks, dtype=str),
                                algorithms=np.array(b.algorithms, dtype=str))
    else:
        for stale in BOOTSTRAP_FILES:  # from an earlier run with a bootstrap: they would contradict this one
            (out / stale).unlink(missing_ok=True)
    write_json(paths["ranking.json"], to_dict(result))
    return paths
