"""``fmuia demo``: the whole pipeline on synthetic data, in a few minutes on a laptop CPU.

synthesize (train + hidden-label test split) → train a tiny configuration → predict the test
split → check the prediction folder → evaluate it (strict mode) against the test labels →
summary. Each step is one library call; the same calls with the real data and default options
are the real baseline (see :func:`real_baseline_commands`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evaluation.aggregates import AGGREGATES
from evaluation.report import write_report
from evaluation.scoring import evaluate, write_results
from fmuia.check import check_predictions
from fmuia.dataset.synth import synthesize
from fmuia.errors import FmuiaError
from fmuia.inference import predict
from fmuia.training import train

# Two tasks per kind: with all 27 tasks, a few CPU minutes give each head only a handful of
# steps; with 8 the learning is visible. ``--tasks all`` runs every task.
DEMO_TASKS: tuple[str, ...] = (
    "fetal_head", "cardiac_multi",  # segmentation (2 and 4 classes)
    "breast_2cls", "organ_cls",  # classification (2 and 6 classes)
    "thyroid_nodule_det", "uterine_fibroid_det",  # detection
    "fetal_femur", "IUGC",  # regression (2 and 3 landmarks)
)


@dataclass(frozen=True)
class DemoConfig:
    """What the demo trains. The defaults fit ~3 minutes of training on 2 CPU cores."""

    tasks: tuple[str, ...] | None = DEMO_TASKS  # None: all registered tasks
    per_task: int = 60  # synthetic images per task, split into train and test
    backbone: str = "mobilenetv3_small_100"
    img_size: int = 64
    batch_size: int = 16
    epochs: int = 3
    steps_per_epoch: int | None = None  # None: derived from ``minutes`` (see :func:`run_demo`)
    lr: float = 1e-3
    head_lr_scale: float = 5.0
    fpn_channels: int = 64
    workers: int = 1
    seed: int = 0
    n_bootstrap: int = 200  # bootstrap resamples for the 95% intervals in results.json
    extra_train_options: dict[str, Any] = field(default_factory=dict)


# Seconds one training step of the default configuration takes on one of 2 busy CPU cores
# (measured; used only to turn --minutes into a step count).
SECONDS_PER_STEP = 0.35


def steps_for(minutes: float, cfg: DemoConfig) -> int:
    """Training steps per epoch so that training takes about ``minutes``."""
    if cfg.steps_per_epoch is not None:
        return cfg.steps_per_epoch
    return max(5, int(minutes * 60 / SECONDS_PER_STEP / cfg.epochs))


# Training may overrun --minutes by this factor before the demo stops after the current epoch.
BUDGET_SLACK = 1.25

# Options a resumed run may change (the others must match the run being resumed).
_RESUMABLE = {"epochs", "device", "workers", "progress"}


def _train_within(train: Callable[..., Path], data: Path, run: Path, options: dict[str, Any], epochs: int,
                  budget_s: float, echo: Callable[[str], None]) -> Path:
    """Train one epoch per call (resuming), and stop early when the next epoch would exceed the budget.

    On a busy or slow machine the demo then predicts with the model it has, instead of running
    for much longer than asked; the learning-rate schedule stays the one planned for ``epochs``.
    """
    start = time.perf_counter()
    checkpoint = train(data, run, **options, stop_after_epochs=1)
    for done in range(1, epochs):
        elapsed = time.perf_counter() - start
        if elapsed / done * (done + 1) > budget_s:
            echo(f"   stopping after {done}/{epochs} epochs to stay near the time budget "
                 f"({elapsed:.0f} s so far; this machine is slower or busier than planned)")
            break
        resumable = {k: v for k, v in options.items() if k in _RESUMABLE}
        checkpoint = train(data, run, resume=run, **resumable, stop_after_epochs=1)
    return checkpoint


def real_baseline_commands(data: str = "data", run: str = "runs/baseline", preds: str = "preds") -> list[str]:
    """The same pipeline on real data with the default (real baseline) options."""
    return [
        f"fmuia train --data {data}/train --out {run} --pretrained imagenet",
        f"fmuia predict --data {data}/test --out {preds} --checkpoint {run}/best.pt",
        f"fmuia check {preds} --data {data}/test",
        f"fmuia evaluate {preds} --data {data}/labels --out results.json",
    ]


def _timed(timings: dict[str, float], name: str, echo: Callable[[str], None], fn: Callable[[], Any]) -> Any:
    echo(f"== {name} ...")
    start = time.perf_counter()
    value = fn()
    timings[name] = round(time.perf_counter() - start, 2)
    echo(f"   {name} done in {timings[name]:.1f} s")
    return value


def run_demo(
    out_dir: str | os.PathLike = "fmuia-demo",
    *,
    minutes: float = 3.0,
    config: DemoConfig | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole pipeline into ``out_dir``; returns paths, timings, the check verdict and the aggregates.

    Raises :class:`FmuiaError` if the predictions fail the check (which would be a bug).
    """
    cfg = config or DemoConfig()
    out = Path(out_dir)
    data, run, preds, results_json = out / "data", out / "run", out / "predictions", out / "results.json"
    steps = steps_for(minutes, cfg)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    _timed(timings, "synthesize", echo, lambda: synthesize(
        data, per_task=cfg.per_task, seed=cfg.seed, tasks=cfg.tasks, split=True, overwrite=True))
    # No validation split: every training image is used and the last epoch is the model
    # (selecting on a handful of validation images would be noise).
    train_options = dict(
        backbone=cfg.backbone, pretrained="none", img_size=cfg.img_size, batch_size=cfg.batch_size,
        epochs=cfg.epochs, steps_per_epoch=steps, lr=cfg.lr, head_lr_scale=cfg.head_lr_scale,
        fpn_channels=cfg.fpn_channels, val_fraction=0.0, workers=cfg.workers, seed=cfg.seed, device="cpu",
        **cfg.extra_train_options,
    )
    echo(f"   training {cfg.backbone} at {cfg.img_size}² for {cfg.epochs} epochs × {steps} steps "
         f"(batch {cfg.batch_size}, CPU)")
    checkpoint = _timed(timings, "train", echo, lambda: _train_within(
        train, data / "train", run, train_options, cfg.epochs, minutes * 60 * BUDGET_SLACK, echo))
    counts = _timed(timings, "predict", echo, lambda: predict(
        data / "test", preds, checkpoint, batch_size=cfg.batch_size, device="cpu", workers=cfg.workers))
    report = _timed(timings, "check", echo, lambda: check_predictions(preds, data / "test"))
    if not report.ok:
        raise FmuiaError(f"the demo's predictions failed the check: {report.verdict()}", report.errors)
    results = _timed(timings, "evaluate", echo, lambda: evaluate(
        preds, data / "labels", mode="strict", n_bootstrap=cfg.n_bootstrap))
    write_results(results, results_json)
    report_index = _timed(timings, "report", echo, lambda: write_report(results, out / "report", title="fmuia demo"))
    timings["total"] = round(time.perf_counter() - start, 2)
    return {
        "data": str(data),
        "train": str(data / "train"),
        "test": str(data / "test"),
        "labels": str(data / "labels"),
        "run_dir": str(run),
        "checkpoint": str(checkpoint),
        "predictions": str(preds),
        "results_json": str(results_json),
        "report": str(report_index),
        "counts": counts,
        "check": report.verdict(),
        "aggregates": results.get("aggregates", {}),
        "timings": timings,
        "config": {**asdict(cfg), "steps_per_epoch": steps},
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The demo's closing text: scores, timings, where the files are, and the real-data commands."""
    directions = {key: direction for key, (_kind, _metric, direction) in AGGREGATES.items()}
    lines = ["", "Scores on the synthetic test split (strict mode):"]
    for key, value in summary["aggregates"].items():
        arrow = {"higher": "↑", "lower": "↓"}.get(str(directions.get(key, "")).lower(), "")
        text = f"{value:.4f}" if isinstance(value, (int, float)) and value is not None else str(value)
        lines.append(f"  {key:<16} {text:>10} {arrow}")
    lines.append("  (a few minutes of CPU training on random synthetic images: far from the real baseline)")
    t = summary["timings"]
    lines.append("Timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in t.items()))
    lines.append(f"Check: {summary['check']}")
    lines += [
        "Files:",
        f"  data        {summary['data']}  (train/, test/ without labels, labels/)",
        f"  run         {summary['run_dir']}  (checkpoint {summary['checkpoint']}, metrics logs)",
        f"  predictions {summary['predictions']}",
        f"  results     {summary['results_json']}",
        f"  report      {summary['report']}  (open in a browser: metrics with 95% CIs, per-case plots)",
        "Next: look at the predictions with `fmuia visualize`, or run the real baseline on the challenge data:",
    ]
    lines += [f"  {c}" for c in real_baseline_commands()]
    return "\n".join(lines)
