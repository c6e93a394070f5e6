"""``fmuia check`` and ``fmuia pack``: thin wrappers over :mod:`fmuia.check` and :mod:`fmuia.pack`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fmuia.check import CheckReport, CheckUsageError
from fmuia.console import EXIT_USAGE, print_error

_PRED = click.Path(exists=True, path_type=Path)
_DATA = click.Path(exists=True, file_okay=False, path_type=Path)


def _usage_exit(ctx: click.Context, exc: CheckUsageError) -> None:
    print_error(exc)
    ctx.exit(EXIT_USAGE)


def _print_report(report: CheckReport, max_problems: int, quiet: bool) -> None:
    if quiet:
        click.echo(report.verdict())
        return
    shown = report.problems if max_problems <= 0 else report.problems[:max_problems]
    for p in shown:
        click.echo(str(p))
    if len(shown) < len(report.problems):
        click.echo(f"... and {len(report.problems) - len(shown)} more problem(s) (see --json, or raise --max-problems)")
    if report.problems:
        click.echo("")
    click.echo(report.summary_table())


@click.command("check")
@click.argument("pred_dir", type=_PRED)
@click.option("--data", "data_dir", required=True, type=_DATA, help="Data root whose CSVs list the expected predictions (labels not needed).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write a machine-readable report (counts per task, problem list) here.")
@click.option("--max-problems", default=200, show_default=True, help="Print at most N problems (0: all). The --json report always has all.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the final verdict line.")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Threads decoding masks [default: up to 4].")
@click.pass_context
def check(ctx: click.Context, pred_dir: Path, data_dir: Path, json_out: Path | None, max_problems: int, quiet: bool, workers: int | None) -> None:
    """Validate a prediction folder (or the .zip you upload) against a data root.

    Checks every rule of the official format without needing labels: one prediction per CSV
    row, known tasks and images, types, class ranges, probabilities, boxes and landmarks
    consistent with the image size, masks as 8-bit single-channel PNGs of the image size with
    values < num_classes. Files or links pointing outside PRED_DIR are never read.

    Exit codes: 0 valid (warnings allowed), 1 problems found, 2 usage error.

    \b
    Examples:
      fmuia check preds/ --data data/test
      fmuia check predictions.zip --data data/test --json check_report.json
      fmuia check preds/ --data data/val --max-problems 20
    """
    from fmuia._atomic import write_json
    from fmuia.check import check_predictions

    try:
        report = check_predictions(pred_dir, data_dir, workers=workers, progress=sys.stderr.isatty())
    except CheckUsageError as exc:
        _usage_exit(ctx, exc)
        return
    _print_report(report, max_problems, quiet)
    if json_out is not None:
        write_json(json_out, report.to_dict())
        if not quiet:
            click.echo(f"report written to {json_out}")
    ctx.exit(0 if report.ok else 1)


@click.command("pack")
@click.argument("pred_dir", type=_PRED)
@click.option("--data", "data_dir", required=True, type=_DATA, help="Data root whose CSVs list the expected predictions.")
@click.option("-o", "--out", "out_zip", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The .zip to write (atomically).")
@click.option("--force", is_flag=True, help="Pack even if the check finds errors.")
@click.option("--max-problems", default=200, show_default=True, help="Print at most N problems (0: all).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the verdict and the archive path.")
@click.pass_context
def pack(ctx: click.Context, pred_dir: Path, data_dir: Path, out_zip: Path, force: bool, max_problems: int, quiet: bool) -> None:
    """Check a prediction folder and zip it the way Codabench expects.

    The archive holds the prediction JSON files and Segmentation/ masks at its root and
    nothing else (no enclosing folder, no __MACOSX, no stray files). An invalid folder is
    refused unless --force. Exit codes: 0 packed, 1 refused, 2 usage error.

    \b
    Examples:
      fmuia pack preds/ --data data/test -o predictions.zip
      fmuia pack preds/ --data data/test -o predictions.zip --force   # pack despite errors
    """
    from fmuia.pack import PackRefusedError, pack_predictions

    try:
        report = pack_predictions(pred_dir, data_dir, out_zip, force=force, progress=sys.stderr.isatty())
    except CheckUsageError as exc:
        _usage_exit(ctx, exc)
        return
    except PackRefusedError as exc:
        _print_report(exc.report, max_problems, quiet)
        click.echo(f"error: {exc.message}", err=True)
        ctx.exit(1)
        return
    _print_report(report, max_problems, quiet)
    note = " despite errors (--force)" if not report.ok else ""
    click.echo(f"packed {out_zip}{note}")
    ctx.exit(0)
