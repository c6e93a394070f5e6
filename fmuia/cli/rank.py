"""``fmuia rank``: a thin wrapper over :mod:`evaluation.rank` (challengeR's ranking analysis)."""

from __future__ import annotations

import math
from pathlib import Path

import click

_METHODS = ("aggregate-then-rank", "rank-then-aggregate", "test-then-rank")
_METRICS = "DSC, HD, HD95, IoU, MRE, Accuracy, prob_true, F1_macro, F1_weighted, MCC"


def _na_treat(value: str | None) -> str | float | None:
    if value is None:
        return None
    v = value.strip().lower()
    if v in ("worst", "remove"):
        return v
    try:
        f = float(v)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected worst, remove or a number") from None
    if not math.isfinite(f):
        raise click.BadParameter(f"{value!r}: expected a finite number")
    return f


@click.command("rank")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path), metavar="TABLE | RESULTS...")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for ranking.csv, significance.csv, method_tau.csv, consensus.csv, ranking.json (and bootstrap_*.csv, report.html).")
@click.option("--results", "from_results", is_flag=True,
              help="The arguments are strict results.json files (or folders holding one, or a manifest CSV name,results), not a table; needs --metric.")
@click.option("--metric", default=None, metavar="NAME",
              help=f"With --results: the metric to rank: {_METRICS} (or the leaderboard keys seg_DSC, seg_HD, cls_Accuracy, det_IoU, reg_MRE, "
              "cls_F1_macro, cls_F1_weighted, cls_MCC). Classification per case: Accuracy (correctness 0/1), prob_true (probability of the true class). "
              "F1_macro, F1_weighted and MCC are set-level: computed over each task's cases as strict scoring does (the results' value), "
              "ranked by aggregate-then-rank only (statistic value_set), the bootstrap recomputing them on resampled cases. "
              "AUC is refused (per-case rows keep only prob_true).")
@click.option("--method", type=click.Choice(_METHODS), default="aggregate-then-rank", show_default=True, help="The ranking reported and bootstrapped (all three are computed and compared).")
@click.option("--aggregate", type=click.Choice(("mean", "median")), default="mean", show_default=True, help="Aggregate of the values (aggregate-then-rank) or of the per-case ranks (rank-then-aggregate).")
@click.option("--smaller-better/--larger-better", "smaller_better", default=None,
              help="Direction of the metric [table: larger is better; results: the metric's own (HD, HD95, MRE smaller)].")
@click.option("--ties", type=click.Choice(("min", "max", "average")), default="min", show_default=True, help="Rank given to ties (R's ties.method).")
@click.option("--na-treat", "na_treat", default=None, metavar="worst|remove|NUMBER",
              help="Missing values: the task's worst observed value, left out, or this number. Without it aggregate-then-rank and test-then-rank refuse missing values; rank-then-aggregate ranks them last.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05, show_default=True, help="Significance level of the tests.")
@click.option("--p-adjust", "p_adjust", type=click.Choice(("none", "holm", "bonferroni")), default="none", show_default=True, help="Adjustment over all ordered pairs of a task.")
@click.option("--bootstrap", type=click.IntRange(0, 100_000), default=0, show_default=True, help="Bootstrap rounds (cases resampled per task) for rank stability; 0: none.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--report", is_flag=True, help="Also write DIR/report.html (plots: rank distributions, significance maps, method comparison).")
def rank(inputs: tuple[Path, ...], out_dir: Path, from_results: bool, metric: str | None, method: str, aggregate: str,
         smaller_better: bool | None, ties: str, na_treat: str | None, alpha: float, p_adjust: str, bootstrap: int,
         seed: int, report: bool) -> None:
    """Rank algorithms per task the way challengeR does, test them pairwise, and measure how stable it is.

    TABLE is a long CSV with columns task,algorithm,case,value (one metric, one row per
    algorithm and case; an empty or NA value is missing). With --results the arguments are
    strict results.json files instead (`fmuia evaluate --mode strict`): each submission's
    per-case rows of --metric, named after the folder (or a "name" in the file).

    \b
    Methods (per task; all three are computed, --method picks the one reported):
      aggregate-then-rank  mean (median) of each algorithm's values, ranked
      rank-then-aggregate  rank within each case (missing = last), mean (median) rank, ranked
      test-then-rank       one-sided paired Wilcoxon signed-rank test for every ordered pair
                           (R's wilcox.test(paired=TRUE, exact=FALSE): normal approximation,
                           continuity and tie correction, zero differences dropped), adjusted
                           with --p-adjust; score = fraction of the others beaten at --alpha
    Set-level metrics (--results --metric F1_macro|F1_weighted|MCC): one value per algorithm
    and task, over its cases (statistic value_set); aggregate-then-rank only, no tests.
    Across tasks: the consensus (mean rank over the tasks), and Kendall's tau between the
    three methods' rankings. --bootstrap N reruns the method on resampled cases: each
    algorithm's rank distribution and Kendall's tau to the full ranking, per task and for
    the consensus.

    \b
    Examples:
      fmuia rank scores.csv --out rank/
      fmuia rank scores.csv --out rank/ --method test-then-rank --p-adjust holm --na-treat worst
      fmuia rank hd.csv --smaller-better --method rank-then-aggregate --bootstrap 1000 --report --out rank/
      fmuia rank --results runs/*/results.json --metric DSC --bootstrap 1000 --out rank_dsc/
      fmuia rank --results submissions.csv --metric Accuracy --method test-then-rank --out rank_acc/
      fmuia rank --results runs/*/results.json --metric MCC --bootstrap 1000 --out rank_mcc/
    """
    # Deferred: numpy, scipy and pandas (about 0.9 s) would slow `fmuia rank --help`.
    from evaluation.rank import RankParams, rank_analysis, read_table, table_from_results, write_outputs
    from fmuia.errors import FmuiaError

    na = _na_treat(na_treat)
    warnings: list[str] = []
    if from_results:
        if metric is None:
            raise FmuiaError(f"--results needs --metric (one of {_METRICS})")
        table, default_smaller, source, warnings = table_from_results(list(inputs), metric)
    else:
        if metric is not None:
            raise FmuiaError("--metric picks a metric from results files: add --results, or leave it out for a table")
        if len(inputs) != 1:
            raise FmuiaError(f"expected one TABLE, got {len(inputs)} arguments (results files need --results)")
        table, default_smaller, source = read_table(inputs[0]), False, str(inputs[0])
    params = RankParams(method=method, aggregate=aggregate,
                        smaller_better=default_smaller if smaller_better is None else smaller_better, ties=ties,
                        na_treat=na, alpha=alpha, p_adjust=p_adjust, bootstrap=bootstrap, seed=seed)
    result = rank_analysis(table, params, source=source, warnings=warnings)
    paths = write_outputs(result, out_dir)
    if report:
        # Deferred: the report imports matplotlib (about 0.3 s), which the tables never need.
        from evaluation.rank.report import write_report

        paths["report.html"] = write_report(result, out_dir)
    click.echo(summary(result))
    click.echo("")
    click.echo("written: " + ", ".join(str(p) for p in paths.values()))


def summary(result) -> str:
    """The terminal text: per task the top of the ranking, the consensus, stability, the warnings."""
    import numpy as np

    p = result.params
    direction = "smaller" if p.smaller_better else "larger"
    lines = [f"{result.source}: {len(result.tasks)} task(s), {len(result.algorithms)} algorithm(s); "
             f"{p.method} ({result.statistic}), {direction} is better, ties {p.ties}"]
    for task, df in result.ranking.groupby("task", sort=False):
        top = [f"{int(r['rank']) if float(r['rank']).is_integer() else r['rank']}. {r['algorithm']} "
               f"({r[result.statistic]:.4g})" for _, r in df.head(5).iterrows()]
        more = f", ... ({len(df)} ranked)" if len(df) > 5 else ""
        lines.append(f"  {task}: " + ", ".join(top) + more)
    lines.append("consensus (mean rank over tasks):")
    for _, r in result.consensus.iterrows():
        lines.append(f"  {r['rank']:>4g}  {r['algorithm']}  {r['mean_rank']:.3f}")
    b = result.bootstrap
    if b is not None:
        tau = b.tau[~np.isnan(b.tau)]
        ct = b.consensus_tau[~np.isnan(b.consensus_tau)]
        lines.append(f"bootstrap {b.n} rounds (seed {b.seed}): Kendall's tau to the full ranking, median over tasks "
                     f"and rounds {np.median(tau):.3f}" if tau.size else f"bootstrap {b.n} rounds: tau undefined")
        if ct.size:
            lines.append(f"  consensus: median tau {np.median(ct):.3f} (2.5%-97.5%: {np.quantile(ct, 0.025):.3f}-"
                         f"{np.quantile(ct, 0.975):.3f})")
    for w in result.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines)
