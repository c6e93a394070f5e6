"""``fmuia visualize``: a thin wrapper over :func:`fmuia.visualize.visualize`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from fmuia.errors import FmuiaError


@click.command("visualize")
@click.argument("pred_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Data root the predictions were made for. With labels, ground truth is drawn too.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the PNG grids (one per task) and index.html.")
@click.option("--per-task", default=8, show_default=True, type=click.IntRange(1, 64), help="Cases drawn per task.")
@click.option("--worst", is_flag=True,
              help="Draw the cases with the worst strict per-case metric (Dice, p(true class), IoU, radial error); "
                   "needs labels.")
@click.option("--results", "results_json", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A strict-mode results.json from `fmuia evaluate` to take the per-case metrics from "
                   "(otherwise --worst scores the predictions now).")
def visualize(pred_dir: Path, data_dir: Path, out_dir: Path, per_task: int, worst: bool, results_json: Path | None) -> None:
    """Draw predictions over their images, one PNG grid per task, linked from OUT/index.html.

    Segmentation: class contours (ground truth solid, prediction dashed). Classification: true and
    predicted label with a probability bar. Detection: both boxes and their IoU. Regression:
    landmarks joined by error lines labelled with the distance in pixels. PRED_DIR may be a folder
    or the .zip you upload. Without labels (a test folder) only the predictions are drawn.

    \b
    Examples:
      fmuia visualize preds/ --data data/labels --out viz/
      fmuia visualize preds/ --data data/labels --out viz_worst/ --worst --per-task 12
      fmuia visualize preds.zip --data data/test --out viz_test/     # no labels: predictions only
    """
    from fmuia.visualize import visualize as run

    results = None
    if results_json is not None:
        try:
            results = json.loads(results_json.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FmuiaError(f"{results_json}: not a readable results JSON ({exc})") from None
        if not isinstance(results, dict):
            raise FmuiaError(f"{results_json}: expected a JSON object (the output of `fmuia evaluate`)")
    index = run(pred_dir, data_dir, out_dir, per_task=per_task, worst=worst, results=results)
    click.echo(f"wrote {index}")
