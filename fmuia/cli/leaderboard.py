"""``fmuia leaderboard``: a thin wrapper over :mod:`evaluation.leaderboard`."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("leaderboard")
@click.argument("results", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for leaderboard.{csv,json,md,html} and report/ (plots).")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="CSV with columns name,results (paths relative to the CSV) naming each submission.")
@click.option("--bootstrap", "n_bootstrap", type=click.IntRange(0, 100_000), default=1000, show_default=True, help="Bootstrap rounds for ranking stability (0: skip). Needs strict-mode per-case results.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the case bootstrap.")
@click.option("--no-report", "no_report", is_flag=True, help="Skip the picture report (report/index.html: aggregates per submission, rank-stability blob plot).")
@click.option("--analysis", is_flag=True, help="Also write the rank analysis (`fmuia rank`: challengeR's three methods, Wilcoxon tests, bootstrap) of every leaderboard column with per-case values (seg_DSC, seg_HD, cls_Accuracy, det_IoU, reg_MRE) to --out/rank/<column>/, linked from the leaderboard.")
@click.option("--labels", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Labelled root the results were scored on: its image diagonals normalise HD and MRE in the composite where the results record none (strict mode records them) [default: 1000 px].")
def leaderboard(results: tuple[Path, ...], out_dir: Path, manifest: Path | None, n_bootstrap: int, seed: int, labels: Path | None,
                no_report: bool, analysis: bool) -> None:
    """Rank submissions from their results.json files (from `fmuia evaluate`).

    Each RESULTS is a results.json (named after its folder) or a folder holding one; or
    name them with --manifest. Writes leaderboard.csv, .json, .md and a self-contained .html
    to --out, plus report/index.html with plots (the aggregates per submission and the
    rank-stability blob plot from the bootstrap rankings), and prints the ranked table.

    \b
    Rankings:
      rank      rank-then-aggregate: per task and metric, rank the submissions (ties share
                the best rank, missing = worst), average the ranks, rank again
      composite 0-100: metrics mapped to [0,1] (MCC as (m+1)/2, HD and MRE as
                1 - d/diagonal), averaged per aggregate, then over the nine aggregates
      rank 95%  bootstrap of the cases (strict mode's per-case rows): each submission's 95%
                rank interval, and Kendall's tau of the bootstrap rankings to the full one

    \b
    Examples:
      fmuia leaderboard runs/*/results.json --out board/
      fmuia leaderboard --manifest submissions.csv --out board/ --bootstrap 2000 --seed 1
      fmuia leaderboard runs/*/results.json --labels data/labels --out board/
      fmuia leaderboard runs/*/results.json --analysis --out board/   # + board/rank/<column>/report.html
    """
    # Deferred: numpy, scipy.stats and pandas (about 0.9 s) would slow `fmuia leaderboard --help`.
    from evaluation.leaderboard import build_leaderboard, load_results, write_leaderboard
    from evaluation.rank.per_metric import write_metric_analyses

    subs = load_results(list(results), manifest=manifest)
    lb = build_leaderboard(subs, n_bootstrap=n_bootstrap, seed=seed, labels=labels)
    links = None
    if analysis:
        done = write_metric_analyses(subs, out_dir / "rank", n_bootstrap=n_bootstrap, seed=seed, report=not no_report)
        lb.notes.extend(done.notes)
        links = done.links
    paths = write_leaderboard(lb, out_dir, report=not no_report, analysis=links)
    paths.update({f"rank/{key}": path for key, path in (links or {}).items()})
    click.echo(lb.format_table())
    click.echo("")
    click.echo("written: " + ", ".join(str(p) for p in paths.values()))
