"""The scorer's command line: ``fmuia evaluate`` and ``python -m evaluation`` are this one command.

It parses, calls :func:`evaluation.scoring.evaluate`, writes the results and prints the summary.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import click

from evaluation.results import summary_text, write_results
from evaluation.scoring import MODES
from evaluation.scoring import evaluate as run_evaluate
from fmuia.console import EXIT_CODES_HELP, run_click


@click.command("evaluate", epilog=EXIT_CODES_HELP)
@click.argument("pred_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--data", "data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Labelled data root (csv_files/ with labels, images, masks).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Results JSON to write; a _summary.txt (and in strict mode a _per_case.csv) goes beside it.")
@click.option("--mode", type=click.Choice(list(MODES)), default="strict", show_default=True,
              help="official: the challenge's published scorer, quirks included; strict: every row scored, worst value for bad rows.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes scoring segmentation masks in parallel.  [default: the usable CPUs]")
@click.option("--bootstrap", "n_bootstrap", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap resamples for the 95% intervals (strict mode; 0 = none).")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed (strict mode).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write an HTML report with plots (metric bars with 95% CIs, per-case distributions, "
                   "the nine aggregates) to this folder: REPORT/index.html and its PNGs.")
@click.option("--quiet", "-q", is_flag=True, help="Do not print the summary table.")
def evaluate(pred_dir: Path, data: Path, out: Path, mode: str, workers: int | None, n_bootstrap: int, seed: int,
             report_dir: Path | None, quiet: bool) -> None:
    """Score the predictions in PRED_DIR (a folder or the .zip uploaded to Codabench) against the
    labels in --data and write the results.

    \b
    official  reproduces the challenge scorer exactly (same JSON shape): missing or
              unreadable masks and unmatched rows are skipped, masks of another size are
              resized, a task with nothing matched scores 0.
    strict    (default) scores every label row: anything missing or malformed gets the worst
              value with a reason per row; adds HD95, COCO AP, 95% bootstrap intervals, a
              per-case CSV and the nine leaderboard aggregates.

    \b
    Examples:
      fmuia evaluate preds/ --data data/labels --out results.json
      fmuia evaluate submission.zip --data data/labels --out r.json --mode official
      fmuia evaluate preds/ --data data/labels --out r.json --workers 8 --bootstrap 2000 --seed 1
      fmuia evaluate preds/ --data data/labels --out r.json --report report/   # + plots
      python -m evaluation preds/ --data data/labels --out results.json
    """
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s", stream=sys.stderr)
    start = time.perf_counter()
    results = run_evaluate(pred_dir, data, mode=mode, workers=workers, n_bootstrap=n_bootstrap, seed=seed,
                           progress=sys.stderr.isatty())
    paths = write_results(results, out)
    if not quiet:
        click.echo(summary_text(results), nl=False)
    if report_dir is not None:
        from evaluation.report import write_report  # deferred: matplotlib, only with --report

        paths["report"] = write_report(results, report_dir)
    written = ", ".join(str(p) for p in paths.values())
    click.echo(f"{mode} mode: wrote {written} in {time.perf_counter() - start:.1f} s")
    if report_dir is not None:
        click.echo(f"report: {paths['report']}")


def main(argv: Sequence[str] | None = None, *, exiting: bool = False) -> None:
    """``python -m evaluation``: the same command as ``fmuia evaluate`` (``exiting``: see
    :func:`fmuia.console.run`)."""
    run_click(evaluate, argv, prog_name="python -m evaluation", exiting=exiting)
