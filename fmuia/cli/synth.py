"""``fmuia synth``: write a synthetic dataset in the official FM_UIA layout."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import click


@click.command("synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--per-task", "per_task", type=click.IntRange(min=1), default=20, show_default=True, help="Images per task.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed (same seed, same bytes).")
@click.option("--tasks", default=None, metavar="ID,ID,...", help="Only these task ids (comma-separated). Default: all 27.")
@click.option("--split", is_flag=True, help="Write OUT/train (labelled), OUT/test (no labels) and OUT/labels (test's labels).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists and is not empty.")
def synth(out: Path, per_task: int, seed: int, tasks: str | None, split: bool, overwrite: bool) -> None:
    """Write a synthetic ultrasound dataset to OUT in exactly the official layout.

    Images have speckle, a sector or linear field of view and hypo-/hyper-echoic structures;
    labels follow what is drawn (masks, classes, boxes, landmarks). Folder names carry the
    real data's quirks (spaces, commas, '+', parentheses, a non-breaking space).

    \b
    Examples:
      fmuia synth data/synth                          # all 27 tasks, 20 images each
      fmuia synth data/small --per-task 4 --tasks cervix,FUGC,organ_cls
      fmuia synth data/split --split --per-task 12    # data/split/{train,test,labels}
    """
    from fmuia.dataset import load_root
    from fmuia.dataset.synth import SPLIT_DIRS, synthesize

    start = time.perf_counter()
    root = synthesize(out, per_task=per_task, seed=seed, tasks=tasks, split=split, overwrite=overwrite, progress=sys.stderr.isatty())
    elapsed = time.perf_counter() - start
    roots = [root / d for d in SPLIT_DIRS] if split else [root]
    for r in roots:
        data = load_root(r)
        counts = Counter(s.kind.value for s in data.samples)
        parts = ", ".join(f"{counts[k]} {k}" for k in ("segmentation", "classification", "detection", "regression") if counts[k])
        label = "labelled" if data.labelled else "no labels"
        click.echo(f"{r}: {len(data.samples)} images, {len(data.tasks)} tasks ({parts}; {label})")
    click.echo(f"done in {elapsed:.1f} s")
