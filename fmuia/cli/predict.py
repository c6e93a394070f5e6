"""``fmuia predict``: run a trained checkpoint on a data root, write the official prediction files."""

from __future__ import annotations

import time

import click


@click.command(context_settings={"max_content_width": 100})
@click.option("--data", "data", required=True, type=click.Path(exists=True, file_okay=False),
              help="Data root to predict (ROOT/csv_files/*.csv + images); labels are not needed.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Prediction folder to write (created if needed; existing files are overwritten).")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Checkpoint written by `fmuia train` (RUN_DIR/best.pt).")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1),
              help="Images per forward pass (one task per batch).")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA when available), cpu, cuda or cuda:N.")
@click.option("--tta", is_flag=True,
              help="Average each prediction with that of the horizontally mirrored image, for the tasks a "
                   "mirror keeps valid (mirror_safe in the task registry); position classes and ordered "
                   "landmarks always use the original image only.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Image-decoding worker processes [default: half the CPU cores, at most 8; 0 = main process].")
@click.option("--progress", type=click.Choice(["auto", "bars", "lines", "none"]), default="auto", show_default=True,
              help="auto: a bar on a terminal, plain lines without one (nohup, slurm, docker logs); also set by "
                   "FMUIA_PROGRESS.")
@click.option("--log-every", type=click.IntRange(min=1), default=1000, show_default=True, metavar="N",
              help="Progress lines: one every N images (and at least every 30 s), and one at the end.")
@click.option("--quiet", is_flag=True, help="No progress bar or lines.")
def predict(data: str, out: str, checkpoint: str, batch_size: int, device: str, tta: bool, workers: int | None,
            progress: str, log_every: int, quiet: bool) -> None:
    """Predict every row of a data root and write the files Codabench expects.

    \b
    Writes to OUT, exactly as the challenge specifies:
      <mask_path without '../'>.png      one class-index PNG per segmentation row, at the image's size
      classification_predictions.json    predicted_class + softmax predicted_probs
      detection_predictions.json         bbox_normalized + bbox_pixels + score
      regression_predictions.json        predicted_points_normalized + predicted_points_pixels

    An image that cannot be read is listed with its path and the command exits with status 1
    after writing every other prediction; nothing is ever predicted in its place.

    \b
    Examples:
      fmuia predict --data data/test --out preds --checkpoint runs/r1/best.pt
      fmuia predict --data data/test --out preds --checkpoint runs/r1/best.pt --device cpu --workers 2
      fmuia check preds --data data/test      # validate before uploading
    """
    from fmuia.inference import predict as run_predict

    start = time.perf_counter()
    counts = run_predict(data, out, checkpoint, batch_size=batch_size, device=device, tta=tta, workers=workers,
                         progress="none" if quiet else progress, log_every=log_every)
    seconds = time.perf_counter() - start
    total = sum(counts.values())
    width = max((len(t) for t in counts), default=4)
    for task_id in sorted(counts):
        click.echo(f"  {task_id:<{width}}  {counts[task_id]:>6}")
    rate = f" ({total / seconds:.1f} images/s)" if seconds > 0 and total else ""
    click.echo(f"wrote {total} predictions for {len(counts)} task(s) to {out} in {seconds:.1f} s{rate}")
    click.echo(f"next: fmuia check {out} --data {data}")
