"""``fmuia rank`` (evaluation.rank): the three challengeR methods on hand-worked tables, R's Wilcoxon
against a scalar loop (and scipy where it agrees), p.adjust against brute force, the bootstrap against
rerunning the method on explicitly resampled tables, inputs, outputs and the command line."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from evaluation.rank import RankParams, rank_analysis, read_table, table_from_results, write_outputs
from evaluation.rank import bootstrap as B
from evaluation.rank import methods as M
from evaluation.rank import wilcoxon as W
from evaluation.rank.per_metric import write_metric_analyses
from evaluation.rank.table import check_table, dense_tasks, metric_field
from fmuia.cli import cli
from fmuia.errors import FmuiaError

# ---- helpers ---------------------------------------------------------------------------------------


def long_table(values: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    """``{task: {algorithm: [value per case]}}`` -> the long table (NaN -> a missing row)."""
    rows = []
    for task, algs in values.items():
        for alg, vals in algs.items():
            for c, v in enumerate(vals):
                if not (isinstance(v, float) and math.isnan(v)):
                    rows.append((task, alg, f"case{c}", v))
    return pd.DataFrame(rows, columns=["task", "algorithm", "case", "value"])


def ranks_of(result, method=None, task="T") -> dict[str, float]:
    df = result.methods[method] if method else result.ranking
    df = df[df["task"] == task]
    return dict(zip(df["algorithm"], df["rank"], strict=True))


def stat_of(result, method, task="T") -> dict[str, float]:
    df = result.methods[method]
    df = df[df["task"] == task]
    col = [c for c in df.columns if c not in ("task", "algorithm", "rank")][0]
    return dict(zip(df["algorithm"], df[col], strict=True))


# A: mean .75 median .75; B: mean .725 median .75; C: mean .675 median .70 (larger is better).
HAND = {"T": {"A": [0.9, 0.8, 0.7, 0.6], "B": [0.9, 0.6, 0.9, 0.5], "C": [0.5, 0.9, 0.4, 0.9]}}


def scalar_wilcoxon(x, y, greater: bool) -> tuple[float, float]:
    """R's wilcox.test(x, y, paired=TRUE, exact=FALSE, correct=TRUE), one-sided, written out plainly."""
    d = [a - b for a, b in zip(x, y, strict=True) if not (math.isnan(a) or math.isnan(b))]
    d = [e for e in d if e != 0]
    n = len(d)
    mags = sorted(abs(e) for e in d)

    def avg_rank(m):
        pos = [i + 1 for i, e in enumerate(mags) if e == m]
        return sum(pos) / len(pos)

    v = sum(avg_rank(abs(e)) for e in d if e > 0)
    tie = sum(t ** 3 - t for t in Counter(mags).values())
    var = n * (n + 1) * (2 * n + 1) / 24 - tie / 48
    if var == 0:
        return v, 1.0
    z = (v - n * (n + 1) / 4 - (0.5 if greater else -0.5)) / math.sqrt(var)
    upper = 0.5 * math.erfc(z / math.sqrt(2))
    return v, upper if greater else 1 - upper


def brute_holm(p: list[float]) -> list[float]:
    """Holm-adjusted p-values as the smallest level at which Holm's step-down procedure rejects each
    hypothesis (candidates: every (m - k) p_(k) and 1)."""
    idx = [i for i, x in enumerate(p) if not math.isnan(x)]
    m = len(idx)

    def rejected(alpha):
        out = set()
        for k, i in enumerate(sorted(idx, key=lambda i: p[i])):
            if p[i] <= alpha / (m - k):
                out.add(i)
            else:
                break
        return out

    cands = sorted({min(1.0, (m - k) * p[i]) for k, i in enumerate(sorted(idx, key=lambda i: p[i]))} | {1.0})
    adj = [math.nan] * len(p)
    for i in idx:
        adj[i] = next((a for a in cands if i in rejected(a * (1 + 1e-12))), 1.0)  # never rejected: 1
    return adj


# ---- ranks -----------------------------------------------------------------------------------------


def test_rank_rows_ties_and_missing_like_rankNA2():
    x = np.array([[3.0, 1.0, 3.0, 2.0]])
    assert M.rank_rows(x, "min").tolist() == [[3, 1, 3, 2]]
    assert M.rank_rows(x, "max").tolist() == [[4, 1, 4, 2]]
    assert M.rank_rows(x, "average").tolist() == [[3.5, 1, 3.5, 2]]
    # challengeR's rankNA2: NA gets (largest rank of the others) + 1 with min, + mean(1:k) with average
    y = np.array([[5.0, 5.0, np.nan], [np.nan, 1.0, np.nan], [np.nan, np.nan, np.nan]])
    assert M.rank_rows(y, "min").tolist() == [[1, 1, 2], [2, 1, 2], [1, 1, 1]]
    assert M.rank_rows(y, "average").tolist() == [[1.5, 1.5, 2.5], [2.5, 1, 2.5], [2, 2, 2]]
    assert M.rank_rows(y, "max").tolist() == [[2, 2, 3], [3, 1, 3], [3, 3, 3]]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 4), min_size=5, max_size=5), min_size=1, max_size=6),
       st.sampled_from(["min", "max", "average"]))
def test_rank_rows_matches_scipy_rankdata(rows, ties):
    x = np.array(rows, dtype=float)
    ref = np.stack([stats.rankdata(r, method=ties) for r in x])
    assert np.array_equal(M.rank_rows(x, ties), ref)


def test_kendall_tau_b_matches_scipy():
    rng = np.random.default_rng(3)
    x = stats.rankdata(rng.integers(0, 5, 9), method="min")
    ys = np.stack([stats.rankdata(rng.integers(0, 5, 9), method="min") for _ in range(20)])
    got = M.kendall_tau_b(x, ys)
    for y, t in zip(ys, got, strict=True):
        assert t == pytest.approx(stats.kendalltau(x, y).statistic)
    assert math.isnan(M.kendall_tau_b(np.ones(4), np.arange(4.0)))


def test_weighted_median_is_the_median_of_the_repeated_values():
    rng = np.random.default_rng(0)
    v = np.round(rng.normal(size=(3, 7)), 1)
    v[1, 2] = np.nan
    w = rng.integers(0, 3, size=(6, 7)).astype(float)
    for use_numba in (False, None):  # numpy, then the compiled path where numba is there
        got = M.weighted_median(v, w, use_numba=use_numba)
        for b in range(6):
            for a in range(3):
                rep = np.repeat(v[a], w[b].astype(int))
                rep = rep[~np.isnan(rep)]
                assert (math.isnan(got[b, a]) and rep.size == 0) or got[b, a] == np.median(rep)


# ---- the three methods, hand-worked ------------------------------------------------------------------


def test_aggregate_then_rank_hand_worked():
    r = rank_analysis(long_table(HAND), RankParams(method="aggregate-then-rank"))
    assert r.statistic == "value_mean" and list(r.ranking.columns) == ["task", "algorithm", "value_mean", "rank"]
    assert stat_of(r, "aggregate-then-rank") == pytest.approx({"A": 0.75, "B": 0.725, "C": 0.675})
    assert ranks_of(r) == {"A": 1, "B": 2, "C": 3}
    assert r.ranking["algorithm"].tolist() == ["A", "B", "C"]
    for ties, want in (("min", {"A": 1, "B": 1, "C": 3}), ("max", {"A": 2, "B": 2, "C": 3}),
                       ("average", {"A": 1.5, "B": 1.5, "C": 3})):
        r = rank_analysis(long_table(HAND), RankParams(aggregate="median", ties=ties))
        assert stat_of(r, "aggregate-then-rank") == pytest.approx({"A": 0.75, "B": 0.75, "C": 0.70})
        assert ranks_of(r) == want, ties
    r = rank_analysis(long_table(HAND), RankParams(smaller_better=True))
    assert ranks_of(r) == {"A": 3, "B": 2, "C": 1}


def test_rank_then_aggregate_hand_worked():
    # per-case ranks (min): case0 A1 B1 C3; case1 C1 A2 B3; case2 B1 A2 C3; case3 C1 A2 B3
    r = rank_analysis(long_table(HAND), RankParams(method="rank-then-aggregate"))
    assert r.statistic == "rank_mean"
    assert stat_of(r, "rank-then-aggregate") == pytest.approx({"A": 1.75, "B": 2.0, "C": 2.0})
    assert ranks_of(r) == {"A": 1, "B": 2, "C": 2}
    # average ties within the case change the order: A 1.875, B 2.125, C 2
    r = rank_analysis(long_table(HAND), RankParams(method="rank-then-aggregate", ties="average"))
    assert stat_of(r, "rank-then-aggregate") == pytest.approx({"A": 1.875, "B": 2.125, "C": 2.0})
    assert ranks_of(r) == {"A": 1, "C": 2, "B": 3}
    r = rank_analysis(long_table(HAND), RankParams(method="rank-then-aggregate", aggregate="median"))
    assert r.statistic == "rank_median" and ranks_of(r) == {"A": 1, "B": 1, "C": 1}


def test_rank_then_aggregate_missing_ranks_last_without_na_treat():
    data = {"T": {**HAND["T"], "B": [0.9, 0.6, math.nan, 0.5]}}
    r = rank_analysis(long_table(data), RankParams(method="rank-then-aggregate"))
    # case2: A .7 -> 1, C .4 -> 2, B missing -> 3
    assert stat_of(r, "rank-then-aggregate") == pytest.approx({"A": 1.5, "B": 2.5, "C": 1.75})
    assert ranks_of(r) == {"A": 1, "C": 2, "B": 3}
    assert any("rank last" in w for w in r.warnings)
    # --na-treat remove: B's mean rank is over the cases it has
    r = rank_analysis(long_table(data), RankParams(method="rank-then-aggregate", na_treat="remove"))
    assert stat_of(r, "rank-then-aggregate") == pytest.approx({"A": 1.5, "B": 7 / 3, "C": 1.75})
    assert len(r.table) == 11


def test_na_treat_for_aggregate_then_rank():
    data = {"T": {**HAND["T"], "B": [0.9, 0.6, math.nan, 0.5]}}
    with pytest.raises(FmuiaError, match="no value for case 'case2'.*--na-treat"):
        rank_analysis(long_table(data), RankParams())
    r = rank_analysis(long_table(data), RankParams(na_treat="remove"))
    assert stat_of(r, "aggregate-then-rank")["B"] == pytest.approx(2.0 / 3)
    r = rank_analysis(long_table(data), RankParams(na_treat="worst"))  # worst observed: 0.4
    assert stat_of(r, "aggregate-then-rank")["B"] == pytest.approx(0.6)
    assert any("worst observed value 0.4" in w for w in r.warnings)
    r = rank_analysis(long_table(data), RankParams(na_treat="worst", smaller_better=True))  # worst: 0.9
    assert stat_of(r, "aggregate-then-rank")["B"] == pytest.approx(0.725)
    r = rank_analysis(long_table(data), RankParams(na_treat=1.0))  # B = .75 ties A (as R's exact sums do)
    assert stat_of(r, "aggregate-then-rank")["B"] == pytest.approx(0.75)
    assert ranks_of(r) == {"A": 1, "B": 1, "C": 3}
    with pytest.raises(FmuiaError, match="test-then-rank needs a decision"):
        rank_analysis(long_table(data), RankParams(method="test-then-rank"))


def test_test_then_rank_hand_worked():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.5, 12)
    data = {"T": {"A": list(base + 0.4), "B": list(base + rng.normal(0, 0.01, 12)), "C": list(base)}}
    r = rank_analysis(long_table(data), RankParams(method="test-then-rank"))
    assert r.statistic == "prop_significance"
    assert stat_of(r, "test-then-rank")["A"] == 1.0  # beats both: all 12 differences positive
    sig = r.significance.set_index(["algorithm", "other"])
    assert sig.loc[("A", "B"), "statistic"] == 78.0 and sig.loc[("B", "A"), "statistic"] == 0.0
    assert sig.loc[("A", "B"), "p_value"] == pytest.approx(scalar_wilcoxon(data["T"]["A"], data["T"]["B"], True)[1])
    assert not sig.loc[("B", "A"), "significant"] and sig.loc[("A", "C"), "significant"]
    props = stat_of(r, "test-then-rank")
    assert ranks_of(r)["A"] == 1 and props["B"] in (0.0, 0.5) and props["C"] in (0.0, 0.5)
    assert len(r.significance) == 6 and set(r.significance["n_cases"]) == {12}


def test_wilcoxon_textbook_value():
    # d = 1..5, all positive: V = 15, z = (15 - 7.5 - 0.5) / sqrt(13.75); R prints p-value = 0.02953
    t = W.pair_tests(np.array([[1.0, 2, 3, 4, 5], [0, 0, 0, 0, 0]]), smaller_better=False)
    k = int(np.flatnonzero((t["i"] == 0) & (t["j"] == 1))[0])
    assert t["statistic"][k] == 15.0
    assert t["p_value"][k] == pytest.approx(0.5 * math.erfc(7 / math.sqrt(13.75) / math.sqrt(2)), rel=1e-12)
    assert round(t["p_value"][k], 5) == 0.02953


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 25), st.booleans())
def test_wilcoxon_matches_a_scalar_loop(seed, n_cases, smaller_better):
    rng = np.random.default_rng(seed)
    v = np.round(rng.normal(size=(4, n_cases)), 1)  # rounding makes ties and zero differences
    v[2, : n_cases // 3] = v[3, : n_cases // 3]
    if n_cases > 2:
        v[1, 0] = np.nan
    t = W.pair_tests(v, smaller_better)
    for k in range(t["i"].size):
        i, j = t["i"][k], t["j"][k]
        stat, p = scalar_wilcoxon(v[i], v[j], greater=not smaller_better)
        assert t["statistic"][k] == pytest.approx(stat)
        assert t["p_value"][k] == pytest.approx(p, rel=1e-9, abs=1e-15)


def test_wilcoxon_agrees_with_scipy_approx_with_correction():
    rng = np.random.default_rng(5)
    x, y = np.round(rng.normal(size=30), 1), np.round(rng.normal(size=30), 1)
    for alt, smaller in (("greater", False), ("less", True)):
        ours = W.pair_tests(np.stack([x, y]), smaller)["p_value"][0]
        ref = stats.wilcoxon(x, y, alternative=alt, method="approx", correction=True, zero_method="wilcox")
        assert ours == pytest.approx(ref.pvalue, rel=1e-9)


def test_wilcoxon_edge_cases():
    v = np.array([[1.0, 2.0, np.nan], [1.0, 2.0, np.nan], [np.nan, np.nan, 3.0]])
    t = W.pair_tests(v, False)
    p = {(int(i), int(j)): x for i, j, x in zip(t["i"], t["j"], t["p_value"], strict=True)}
    assert p[(0, 1)] == 1.0 and p[(1, 0)] == 1.0  # all differences zero: R gives 1
    assert math.isnan(p[(0, 2)]) and math.isnan(p[(2, 1)])  # no common case


def test_p_adjust_holm_against_brute_force_and_bonferroni():
    rng = np.random.default_rng(2)
    for _ in range(20):
        p = rng.uniform(0, 0.2, 7)
        p[rng.integers(0, 7)] = p[rng.integers(0, 7)]  # a tie
        if rng.uniform() < 0.5:
            p[rng.integers(0, 7)] = np.nan
        got = W.p_adjust(p, "holm")
        ref = np.array(brute_holm(list(p)))
        assert np.allclose(np.nan_to_num(got, nan=-1), np.nan_to_num(ref, nan=-1), rtol=1e-9)
        m = int((~np.isnan(p)).sum())
        assert np.allclose(np.nan_to_num(W.p_adjust(p, "bonferroni"), nan=-1),
                           np.nan_to_num(np.minimum(1, m * p), nan=-1))
    assert np.array_equal(W.p_adjust(np.array([0.01, 0.04]), "none"), [0.01, 0.04])


def test_holm_changes_the_decisions():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 8)
    data = {"T": {"A": list(base + 0.3), "B": list(base + 0.1 * (rng.uniform(size=8) - 0.2)), "C": list(base)}}
    raw = rank_analysis(long_table(data), RankParams(method="test-then-rank"))
    holm = rank_analysis(long_table(data), RankParams(method="test-then-rank", p_adjust="holm"))
    assert (holm.significance["p_adjusted"] >= holm.significance["p_value"] - 1e-15).all()
    assert holm.significance["significant"].sum() <= raw.significance["significant"].sum()
    p = raw.significance["p_value"].to_numpy()
    assert np.allclose(holm.significance["p_adjusted"], brute_holm(list(p)))


# ---- warnings: one case, one algorithm ------------------------------------------------------------


def test_one_case_and_one_algorithm_warn():
    r = rank_analysis(long_table({"T": {"A": [0.5], "B": [0.7]}}), RankParams(method="test-then-rank", bootstrap=5))
    assert any("only one case" in w for w in r.warnings)
    assert ranks_of(r) == {"A": 1, "B": 1}  # nothing can be significant with one case
    assert ranks_of(r, "aggregate-then-rank") == {"B": 1, "A": 2}
    assert (r.bootstrap.ranks[0][:, [0, 1]] == [1, 1]).all()
    r = rank_analysis(long_table({"T": {"A": [0.5, 0.6, 0.7]}}), RankParams(method="test-then-rank", bootstrap=3))
    assert any("only one algorithm" in w for w in r.warnings)
    assert ranks_of(r) == {"A": 1} and r.significance.empty
    assert math.isnan(r.method_tau["tau"].iloc[0]) and np.isnan(r.bootstrap.tau).all()


# ---- bootstrap ---------------------------------------------------------------------------------------


def _random_table(seed=0, tasks=2, algs=4, cases=9, missing=False):
    rng = np.random.default_rng(seed)
    data = {}
    for t in range(tasks):
        skill = rng.normal(0, 0.3, algs)
        data[f"T{t}"] = {f"a{a}": list(np.round(rng.normal(skill[a], 0.5, cases), 1)) for a in range(algs)}
        if missing:
            data[f"T{t}"]["a1"][2] = math.nan
    return long_table(data)


def test_weighted_signed_rank_equals_the_test_on_resampled_cases():
    rng = np.random.default_rng(4)
    v = np.round(rng.normal(size=(5, 15)), 1)
    v[1, 4] = np.nan
    w = B.case_counts(rng, 6, 15)
    sp = W.sorted_pairs(v)
    paths = [W.weighted_stats(sp, w, use_numba=False)]
    if W.kernel_kind() == "numba":
        paths.append(W.weighted_stats(sp, w, use_numba=True))
    for vs, n, ties in paths:
        for b in range(6):
            idx = np.repeat(np.arange(15), w[b].astype(int))
            ref = W.signed_rank(v[sp.iu][:, idx] - v[sp.ju][:, idx])
            assert np.allclose(vs[:, b], ref[0]) and np.allclose(n[:, b], ref[1]) and np.allclose(ties[:, b], ref[2])


@pytest.mark.parametrize("method,aggregate,na", [
    ("aggregate-then-rank", "mean", None), ("aggregate-then-rank", "median", "remove"),
    ("rank-then-aggregate", "mean", None), ("rank-then-aggregate", "median", "remove"),
    ("test-then-rank", "mean", "remove"), ("test-then-rank", "mean", "worst"),
])
def test_bootstrap_round_is_the_method_on_the_resampled_table(method, aggregate, na):
    table = _random_table(missing=na is not None or method == "rank-then-aggregate")
    params = RankParams(method=method, aggregate=aggregate, na_treat=na, bootstrap=4, seed=7,
                        p_adjust="holm" if method == "test-then-rank" else "none", alpha=0.2)
    res = rank_analysis(table, params)
    rng = np.random.default_rng(7)
    for t, task in enumerate(res.tasks):
        sub = table[table["task"] == task]
        cases = list(dict.fromkeys(sub["case"]))
        w = B.case_counts(rng, 4, len(cases))
        for b in range(4):
            parts = []
            for c, case in enumerate(cases):
                for k in range(int(w[b, c])):
                    part = sub[sub["case"] == case].copy()
                    part["case"] = f"{case}#{k}"
                    parts.append(part)
            resampled = pd.concat(parts)
            # every algorithm needs a row in the resample to keep the same algorithm set
            full = pd.MultiIndex.from_product([sorted(sub["algorithm"].unique()), resampled["case"].unique()])
            resampled = resampled.set_index(["algorithm", "case"]).reindex(full).reset_index()
            resampled.columns = ["algorithm", "case", "task", "value"]
            resampled["task"] = task
            again = rank_analysis(resampled[["task", "algorithm", "case", "value"]],
                                  RankParams(method=method, aggregate=aggregate, na_treat=na, p_adjust=params.p_adjust,
                                             alpha=params.alpha))
            want = ranks_of(again, task=task)
            got = {a: res.bootstrap.ranks[t, b, res.algorithms.index(a)] for a in want}
            assert got == want, (task, b)


def test_bootstrap_is_deterministic_by_seed_and_consensus_is_consistent():
    table = _random_table(seed=1, tasks=3, algs=5, cases=12)
    p = RankParams(method="test-then-rank", bootstrap=30, seed=3)
    a, b = rank_analysis(table, p), rank_analysis(table, p)
    c = rank_analysis(table, RankParams(method="test-then-rank", bootstrap=30, seed=4))
    for name in ("ranks", "tau", "consensus_ranks", "consensus_tau"):
        assert np.array_equal(getattr(a.bootstrap, name), getattr(b.bootstrap, name), equal_nan=True)
    assert not np.array_equal(a.bootstrap.ranks, c.bootstrap.ranks)
    bs = a.bootstrap
    assert bs.ranks.shape == (3, 30, 5) and bs.tau.shape == (3, 30) and bs.consensus_ranks.shape == (30, 5)
    assert np.nanmax(np.abs(bs.tau)) <= 1 + 1e-12
    mean = np.nanmean(bs.ranks, axis=0)
    assert np.array_equal(bs.consensus_ranks, M.rank_rows(mean, "min", M.AGG_RTOL))
    full = a.consensus.set_index("algorithm")["rank"].reindex(a.algorithms).to_numpy()
    assert np.allclose(bs.consensus_tau, M.kendall_tau_b(full, bs.consensus_ranks), equal_nan=True)


def test_run_bootstrap_matches_the_analysis():
    table = _random_table(seed=2, tasks=2, algs=4, cases=10)
    p = RankParams(method="rank-then-aggregate", bootstrap=6, seed=5)
    res = rank_analysis(table, p)
    tasks, algs, data = dense_tasks(check_table(table))
    case_rank = [M.case_ranks(-td.values, "min", False) for td in data]
    full = np.stack([res.ranking[res.ranking.task == t].set_index("algorithm")["rank"].reindex(algs).to_numpy()
                     for t in tasks])
    cons = res.consensus.set_index("algorithm")["rank"].reindex(algs).to_numpy()
    b = B.run_bootstrap(tasks, algs, data, case_rank, full, cons, p)
    for name in ("ranks", "tau", "consensus_ranks", "consensus_tau"):
        assert np.array_equal(getattr(b, name), getattr(res.bootstrap, name), equal_nan=True), name


def test_consensus_is_the_mean_rank_over_tasks():
    data = {"T1": {"A": [1.0, 2.0], "B": [0.0, 1.0], "C": [3.0, 3.0]}, "T2": {"A": [0.0, 0.0], "B": [1.0, 1.0]}}
    r = rank_analysis(long_table(data), RankParams())
    # T1: C1 A2 B3; T2: B1 A2 (C absent)
    cons = r.consensus.set_index("algorithm")
    assert cons["mean_rank"].to_dict() == {"C": 1.0, "A": 2.0, "B": 2.0}
    assert cons["rank"].to_dict() == {"C": 1, "A": 2, "B": 2}
    assert any("without rows" in w for w in r.warnings)
    tau = r.method_tau.set_index(["task", "method_a", "method_b"])["tau"]
    assert tau[("T1", "aggregate-then-rank", "rank-then-aggregate")] == pytest.approx(1.0)


# ---- the table ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,match", [
    ("task,algorithm,value\nT,A,1\n", r":1: the header lacks the column\(s\) case"),
    ("task,algorithm,case,value\nT,A,c1,0.5\nT,A,c2,abc\n", r"\.csv:3: value 'abc' is not a number"),
    ("task,algorithm,case,value\nT,A,c1,0.5\nT,B,c1,0.4\nT,A,c1,0.7\n", r"\.csv:4: duplicate row .*first at line 2"),
    ("task,algorithm,case,value\nT,A,c1,inf\n", r"\.csv:2: value is infinite"),
    ("task,algorithm,case,value\nT,,c1,1\n", r"\.csv:2: empty algorithm"),
    ("", "empty table"),
])
def test_bad_tables_are_one_line_errors_with_the_line(tmp_path, text, match):
    p = tmp_path / "t.csv"
    p.write_text(text)
    with pytest.raises(FmuiaError, match=match) as exc:
        read_table(p)
    assert "\n" not in str(exc.value)


def test_table_reads_na_and_missing_rows(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("Task, Algorithm ,case,value,extra\nT,A,c1,0.5,x\nT,A,c2,NA,x\nT,B,c1,0.25,x\n\nT,B,c2,0.75,x\n")
    df = read_table(p)
    assert df["line"].tolist() == [2, 3, 4, 6]
    assert np.isnan(df["value"].iloc[1])
    with pytest.raises(FmuiaError, match=r"t\.csv:3: value of algorithm 'A', case 'c2' of task 'T' is NA"):
        rank_analysis(df, RankParams(), source=str(p))
    p.write_text("task,algorithm,case,value\nT,A,c1,0.5\nT,A,c2,0.6\nT,B,c1,0.4\n")
    with pytest.raises(FmuiaError, match="algorithm 'B' has no value for case 'c2'"):
        rank_analysis(read_table(p), RankParams())


# ---- strict results ------------------------------------------------------------------------------------


def strict_results(task_dscs: dict[str, list[float]], correct: list[bool] | None = None, name: str | None = None) -> dict:
    rows, segs = [], {}
    for task, dscs in task_dscs.items():
        for i, d in enumerate(dscs):
            rows.append({"task_id": task, "kind": "segmentation", "image_path": f"{task}/{i}.png", "DSC": d,
                         "HD": 50 * (1 - d), "HD95": 40 * (1 - d), "reason": None})
        segs[task] = {"DSC": float(np.mean(dscs)), "HD": float(np.mean([50 * (1 - d) for d in dscs])), "num_samples": len(dscs)}
    out = {"segmentation": segs, "classification": {}, "detection": {}, "regression": {}, "per_case": rows}
    if correct is not None:
        for i, c in enumerate(correct):
            rows.append({"task_id": "lung_2cls", "kind": "classification", "image_path": f"c/{i}.png", "label": 0,
                         "predicted": 0 if c else 1, "correct": c, "prob_true": 0.9 if c else 0.2, "reason": None})
        acc = float(np.mean(correct))
        out["classification"]["lung_2cls"] = {"Accuracy": acc, "AUC": acc, "F1_macro": acc, "F1_weighted": acc, "MCC": 0.0}
    if name is not None:
        out["name"] = name
    return out


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


SUBS = {
    "good": strict_results({"lung": [0.9, 0.8, 0.95, 0.85], "cervix": [0.9, 0.7, 0.8]}, [True, True, False, True]),
    "mid": strict_results({"lung": [0.7, 0.6, 0.8, 0.75], "cervix": [0.6, 0.8, 0.5]}, [True, False, False, True]),
    "bad": strict_results({"lung": [0.1, 0.2, 0.3, 0.2], "cervix": [0.2, 0.1, 0.3]}, [False, False, False, False]),
}


def test_table_from_results_metrics_and_directions(tmp_path):
    paths = [write_json(tmp_path / n / "results.json", r) for n, r in SUBS.items()]
    df, smaller, source, warns = table_from_results(paths, "seg_HD")
    assert smaller and "metric HD" in source and warns == []
    assert sorted(df["task"].unique()) == ["cervix", "lung"] and len(df) == 3 * 7
    assert df[(df.algorithm == "mid") & (df.case == "lung/1.png")]["value"].item() == pytest.approx(20.0)
    df, smaller, _, _ = table_from_results(paths, "Accuracy")
    assert not smaller and set(df["value"]) == {0.0, 1.0} and set(df["task"]) == {"lung_2cls"}
    r = rank_analysis(df, RankParams())
    assert ranks_of(r, task="lung_2cls") == {"good": 1, "mid": 2, "bad": 3}
    for bad in ("MCC", "cls_F1_macro", "AUC"):
        with pytest.raises(FmuiaError, match="set-level"):
            metric_field(bad)
    with pytest.raises(FmuiaError, match="unknown; expected one of DSC"):
        metric_field("Dice")
    named = {"x": strict_results({"lung": [0.5]}, name="Team X"), "y": strict_results({"lung": [0.6]})}
    df, *_ = table_from_results(named, "DSC")
    assert list(df["algorithm"].unique()) == ["Team X", "y"]


def test_leaderboard_analysis_writes_one_analysis_per_per_case_column(tmp_path):
    for n, r in SUBS.items():
        write_json(tmp_path / n / "results.json", r)
    out = tmp_path / "board"
    res = CliRunner().invoke(cli, ["leaderboard", *(str(tmp_path / n) for n in SUBS), "--analysis", "--no-report",
                                   "--bootstrap", "10", "--out", str(out)])
    assert res.exit_code == 0, res.output
    for key in ("seg_DSC", "seg_HD", "cls_Accuracy"):
        ranking = pd.read_csv(out / "rank" / key / "ranking.csv")
        assert ranking["rank"].min() == 1 and set(ranking["algorithm"]) == set(SUBS)
        assert (out / "rank" / key / "bootstrap_ranks.csv").is_file()
        assert f"rank/{key}/ranking.csv" in (out / "leaderboard.md").read_text()
        assert f'href="rank/{key}/ranking.csv"' in (out / "leaderboard.html").read_text()
    assert not (out / "rank" / "det_IoU").exists()
    ranking = pd.read_csv(out / "rank" / "seg_HD" / "ranking.csv")
    assert ranking[ranking.task == "lung"].set_index("algorithm")["rank"].to_dict() == {"good": 1, "mid": 2, "bad": 3}


def test_metric_analyses_skip_a_column_some_submission_lacks(tmp_path):
    subs = {"a": strict_results({"lung": [0.9, 0.8]}, [True, False]), "b": strict_results({"lung": [0.5, 0.4]})}
    done = write_metric_analyses(subs, tmp_path, report=False)
    assert set(done.links) == {"seg_DSC", "seg_HD"}
    assert any(n.startswith("rank analysis of cls_Accuracy skipped: b: no per-case classification rows")
               for n in done.notes), done.notes


# ---- outputs and the command line ----------------------------------------------------------------------


def test_write_outputs_files_parse(tmp_path):
    r = rank_analysis(_random_table(cases=6), RankParams(method="rank-then-aggregate", bootstrap=8, seed=2))
    paths = write_outputs(r, tmp_path)
    ranking = pd.read_csv(paths["ranking.csv"])
    assert list(ranking.columns) == ["task", "algorithm", "rank_mean", "rank"]
    sig = pd.read_csv(paths["significance.csv"])
    assert list(sig.columns) == ["task", "algorithm", "other", "n_cases", "statistic", "p_value", "p_adjusted", "significant"]
    assert len(sig) == 2 * 4 * 3
    data = json.loads(paths["ranking.json"].read_text())
    assert data["params"]["method"] == "rank-then-aggregate" and data["params"]["bootstrap"] == 8
    assert len(data["significance"]) == len(sig) and data["bootstrap"]["n"] == 8
    npz = np.load(paths["bootstrap.npz"])
    assert np.array_equal(npz["ranks"], r.bootstrap.ranks)
    boot = pd.read_csv(paths["bootstrap_ranks.csv"])
    assert set(boot["task"]) == {"T0", "T1", "consensus"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(paths)  # no temporary files left
    write_outputs(rank_analysis(_random_table(cases=6), RankParams()), tmp_path)
    assert not (tmp_path / "bootstrap.npz").exists()  # a stale bootstrap is not left to contradict


def test_cli_table_and_results(tmp_path):
    p = tmp_path / "t.csv"
    _random_table().to_csv(p, index=False)
    res = CliRunner().invoke(cli, ["rank", str(p), "--out", str(tmp_path / "o"), "--method", "test-then-rank",
                                   "--p-adjust", "holm", "--bootstrap", "5"])
    assert res.exit_code == 0, res.output
    assert "consensus" in res.output and "bootstrap 5 rounds" in res.output
    assert (tmp_path / "o" / "ranking.csv").is_file()
    for n, r in SUBS.items():
        write_json(tmp_path / n / "results.json", r)
    res = CliRunner().invoke(cli, ["rank", "--results", *(str(tmp_path / n) for n in SUBS), "--metric", "HD",
                                   "--out", str(tmp_path / "h")])
    assert res.exit_code == 0, res.output
    assert "smaller is better" in res.output
    ranking = pd.read_csv(tmp_path / "h" / "ranking.csv")
    assert ranking[ranking.task == "lung"]["algorithm"].tolist() == ["good", "mid", "bad"]


@pytest.mark.parametrize("args,match", [
    (["--na-treat", "sometimes"], "expected worst, remove or a number"),
    (["--metric", "DSC"], "--metric picks a metric from results files"),
    (["--results", "--metric", "DSC"], "manifest needs the columns name,results"),  # a CSV with --results
])
def test_cli_usage_errors(tmp_path, capsys, args, match):
    from fmuia.cli import main

    p = tmp_path / "t.csv"
    _random_table().to_csv(p, index=False)
    with pytest.raises(SystemExit) as exc:
        main(["rank", str(p), "--out", str(tmp_path / "o"), *args])
    assert exc.value.code == 2
    assert match in capsys.readouterr().err


def test_cli_bad_table_is_one_line_exit_2(tmp_path, capsys):
    from fmuia.cli import main

    p = tmp_path / "t.csv"
    p.write_text("task,algorithm,case,value\nT,A,c1,x\n")
    with pytest.raises(SystemExit) as exc:
        main(["rank", str(p), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "t.csv:2: value 'x' is not a number" in err[0]


def test_cli_report(tmp_path):
    pytest.importorskip("evaluation.rank.report")
    p = tmp_path / "t.csv"
    _random_table(cases=5).to_csv(p, index=False)
    res = CliRunner().invoke(cli, ["rank", str(p), "--out", str(tmp_path / "o"), "--report", "--bootstrap", "5"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "report.html").read_text().lstrip().lower().startswith("<!doctype html>")


def test_all_ordered_pairs_once():
    i, j, u, fwd = W._ordered(4)
    pairs = list(zip(i.tolist(), j.tolist(), strict=True))
    assert pairs == [(a, b) for a, b in itertools.product(range(4), repeat=2) if a != b]
    iu, ju = np.triu_indices(4, 1)
    assert all((min(a, b), max(a, b)) == (iu[k], ju[k]) for (a, b), k in zip(pairs, u, strict=True))


# ---- set-level classification metrics (F1_macro, F1_weighted, MCC) -------------------------------------

from evaluation.metrics import classification as CLS  # noqa: E402
from evaluation.rank import setlevel as SL  # noqa: E402
from evaluation.scoring.strict import _cls_metrics  # noqa: E402


def cls_results(seed: int, tasks: dict[str, tuple[int, int]], p_invalid: float = 0.15, skill: float = 0.6) -> dict:
    """Strict-style results of one submission: per task (classes, cases) random labels and predictions,
    some invalid (predicted None); the task block's metrics from strict scoring's own ``_cls_metrics``."""
    rng = np.random.default_rng(seed)
    rows, blocks = [], {}
    for task, (c, n) in tasks.items():
        y = rng.integers(0, c, n)
        pred = np.where(rng.random(n) < skill, y, rng.integers(0, c, n))
        pred = np.where(rng.random(n) < p_invalid, -1, pred)
        probs = rng.random((n, c))
        m = _cls_metrics(y, pred, probs, c)
        blocks[task] = {**m, "num_samples": n, "per_class": {f"class_{k}": {"F1": 0.0} for k in range(c)}}
        for i in range(n):
            rows.append({"task_id": task, "kind": "classification", "image_path": f"{task}/{i}.png",
                         "label": int(y[i]), "predicted": None if pred[i] < 0 else int(pred[i]),
                         "correct": bool(pred[i] == y[i]), "prob_true": float(probs[i, y[i]]), "reason": None})
    return {"segmentation": {}, "classification": blocks, "detection": {}, "regression": {}, "per_case": rows}


CLS_TASKS = {"bin": (2, 40), "three": (3, 30), "five": (5, 25)}
CLS_SUBS = {f"s{k}": cls_results(k, CLS_TASKS, skill=0.3 + 0.15 * k) for k in range(4)}


@pytest.mark.parametrize("metric", ["F1_macro", "F1_weighted", "MCC", "cls_MCC"])
def test_set_level_full_sample_equals_results_value(metric):
    table, smaller, source, _ = table_from_results(CLS_SUBS, metric)
    assert not smaller and "computed over each task's cases" in source
    r = rank_analysis(table, RankParams())
    bare = metric.removeprefix("cls_")
    assert r.statistic == "value_set" and list(r.ranking.columns) == ["task", "algorithm", "value_set", "rank"]
    assert sum(row["predicted"] is None for s in CLS_SUBS.values() for row in s["per_case"]) > 10  # invalid rows used
    for row in r.ranking.itertuples():
        assert row.value_set == CLS_SUBS[row.algorithm]["classification"][row.task][bare]  # exactly
    for task in CLS_TASKS:  # ranks: larger is better, by the results' values
        ours = r.ranking[r.ranking.task == task].set_index("algorithm")["rank"]
        ref = M.rank_rows(-np.array([CLS_SUBS[a]["classification"][task][bare] for a in ours.index]), "min")
        assert ours.to_numpy().tolist() == ref.tolist()
    assert r.significance.empty and r.method_tau.empty and list(r.methods) == ["aggregate-then-rank"]
    assert any("set-level" in w for w in r.warnings)


def test_f1_every_class_policy_matters():
    # an invalid row makes an otherwise absent class present (F1 0): every_class, not no_class
    y, pred = np.array([0, 0, 1]), np.array([0, -1, 1])
    cm = CLS.confusion_matrix(y, pred, 3)
    got = SL.set_values("F1_macro", y[None], pred[None], 3)[0]
    assert got == CLS.f1_macro(cm, invalid="every_class") != CLS.f1_macro(cm)
    # by hand: class0 tp1 fn1 fp0 -> 2/3; class1 tp1 fp1 (the invalid row) -> 2/3; class2 fp1 -> 0
    assert got == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


@pytest.mark.parametrize("metric", ["F1_macro", "F1_weighted", "MCC"])
def test_set_level_bootstrap_round_equals_metric_on_resampled_cases(metric):
    table, *_ = table_from_results(CLS_SUBS, metric)
    params = RankParams(bootstrap=25, seed=7)
    r = rank_analysis(table, params)
    rng = np.random.default_rng(7)  # the draws the analysis makes: tasks in order, one [B, C] draw each
    for t, task in enumerate(r.tasks):
        c, n = CLS_TASKS[task]
        idx = rng.integers(0, n, size=(25, n))
        for b in (0, 11, 24):
            vals = []
            for alg in r.algorithms:
                rows = {row["image_path"]: row for row in CLS_SUBS[alg]["per_case"] if row["task_id"] == task}
                order = [rows[f"{task}/{i}.png"] for i in idx[b]]
                y = np.array([row["label"] for row in order])
                pred = np.array([-1 if row["predicted"] is None else row["predicted"] for row in order])
                vals.append(_cls_metrics(y, pred, np.ones((n, c)), c)[metric])
            ref = M.rank_rows(-np.array(vals), "min", M.AGG_RTOL)
            assert r.bootstrap.ranks[t, b].tolist() == ref.tolist(), (task, b)


def test_set_level_batched_values_equal_single(metric_cases=("F1_macro", "F1_weighted", "MCC")):
    rng = np.random.default_rng(3)
    for c in (2, 3, 4):
        y = rng.integers(0, c, (3, 20))
        pred = np.where(rng.random((3, 20)) < 0.3, -1, rng.integers(0, c, (3, 20)))
        w = B.case_counts(rng, 30, 20)
        for metric in metric_cases:
            got = SL.set_values_batched(metric, y, pred, c, w)
            for b in range(30):
                ref = SL.set_values(metric, y, pred, c, w[b])
                np.testing.assert_array_equal(got[b], ref)


@pytest.mark.parametrize("method", ["rank-then-aggregate", "test-then-rank"])
def test_set_level_refuses_per_case_methods_in_one_line(method):
    table, *_ = table_from_results(CLS_SUBS, "MCC")
    with pytest.raises(FmuiaError) as exc:
        rank_analysis(table, RankParams(method=method))
    assert "\n" not in exc.value.message and "set-level" in exc.value.message and "aggregate-then-rank" in exc.value.message


@pytest.mark.parametrize("metric", ["AUC", "cls_AUC", "AP"])
def test_auc_and_ap_refused_in_one_line(metric):
    with pytest.raises(FmuiaError) as exc:
        table_from_results(CLS_SUBS, metric)
    assert "\n" not in exc.value.message and "cannot be ranked from strict results" in exc.value.message


def test_set_level_needs_known_classes():
    sub = cls_results(0, {"mystery_task": (3, 5)})
    del sub["classification"]["mystery_task"]["per_class"]
    with pytest.raises(FmuiaError, match="number of classes unknown"):
        table_from_results({"a": sub}, "F1_macro")


def test_cli_set_level_end_to_end(tmp_path, capsys):
    from fmuia.cli import main

    for n, r in CLS_SUBS.items():
        write_json(tmp_path / n / "results.json", r)
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["rank", "--results", *(str(tmp_path / n) for n in CLS_SUBS), "--metric",
                                   "F1_weighted", "--bootstrap", "20", "--report", "--out", str(out)])
    assert res.exit_code == 0, res.output
    ranking = pd.read_csv(out / "ranking.csv")
    for row in ranking.itertuples():
        assert row.value_set == pytest.approx(CLS_SUBS[row.algorithm]["classification"][row.task]["F1_weighted"],
                                              rel=1e-9)
    assert (out / "bootstrap_ranks.csv").is_file() and (out / "report.html").is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["rank", "--results", *(str(tmp_path / n) for n in CLS_SUBS), "--metric", "MCC",
              "--method", "test-then-rank", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "set-level" in err[0] and "Traceback" not in err[0]


def test_leaderboard_analysis_covers_set_level_columns(tmp_path):
    done = write_metric_analyses(CLS_SUBS, tmp_path, n_bootstrap=5, report=False)
    assert set(done.links) == {"cls_Accuracy", "cls_F1_macro", "cls_F1_weighted", "cls_MCC"}
    ranking = pd.read_csv(tmp_path / "cls_MCC" / "ranking.csv")
    assert "value_set" in ranking.columns
    assert any(n.startswith("rank analysis by aggregate-then-rank") and "cls_MCC" in n for n in done.notes)
    assert any(n.startswith("rank analysis by rank-then-aggregate") and "cls_Accuracy" in n for n in done.notes)
    assert any("cls_AUC" in n for n in done.notes)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 5), st.lists(st.lists(st.integers(0, 6), min_size=30, max_size=30), min_size=1, max_size=4))
def test_batched_mcc_worst_case_equals_strict(c, rounds):
    cms = np.array([r[: c * (c + 1)] for r in rounds], dtype=float).reshape(-1, c, c + 1)
    cms[:, 0, c] += 1  # every round has an invalid row (the batched path's input)
    worst = SL._mcc_binary_worst if c == 2 else SL._mcc_worst
    assert worst(cms).tolist() == [CLS.mcc_worst_case(cm) for cm in cms]
    if c > 2:
        big = cms.copy()
        big[:, 0, c] = 2000  # enumeration beyond the budget: -1, as strict
        assert worst(big).tolist() == [CLS.mcc_worst_case(cm) for cm in big] == [-1.0] * len(big)
