"""``fmuia demo``: synthesize, train, predict, check and evaluate in a few minutes on CPU."""

from __future__ import annotations

from dataclasses import replace

import click


@click.command(context_settings={"max_content_width": 100})
@click.option("--out", "out", default="fmuia-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for everything the demo writes (data, run, predictions, results.json).")
@click.option("--minutes", default=3.0, show_default=True, type=click.FloatRange(min=0.1),
              help="About how long to train (the whole demo takes ~1-2 minutes more).")
# Hidden knobs for tests and quick smoke runs.
@click.option("--per-task", type=click.IntRange(min=4), default=None, hidden=True)
@click.option("--steps", type=click.IntRange(min=1), default=None, hidden=True)
@click.option("--epochs", type=click.IntRange(min=1), default=None, hidden=True)
@click.option("--backbone", default=None, hidden=True)
@click.option("--img-size", type=click.IntRange(min=32), default=None, hidden=True)
@click.option("--tasks", default=None, hidden=True, help="comma-separated task ids, or 'all'")
def demo(out: str, minutes: float, per_task: int | None, steps: int | None, epochs: int | None,
         backbone: str | None, img_size: int | None, tasks: str | None) -> None:
    """Run the whole pipeline on synthetic data: no downloads, CPU only, about 5 minutes on 2 cores.

    \b
    1. synthesize a small dataset: OUT/data/{train,test,labels}
    2. train a tiny multi-task network on train/          -> OUT/run/best.pt
    3. predict the test split (no labels)                 -> OUT/predictions/
    4. check the predictions, as a participant would before uploading
    5. evaluate them against labels/ (strict mode)        -> OUT/results.json
    6. write the HTML report (metrics, CIs, per-case plots) -> OUT/report/index.html

    \b
    Examples:
      fmuia demo
      fmuia demo --out /tmp/demo --minutes 1

    On real data the same steps with default options are the real baseline; the commands are
    printed at the end.
    """
    from fmuia.demo import DemoConfig, format_summary, run_demo

    cfg = DemoConfig()
    overrides: dict = {"per_task": per_task, "steps_per_epoch": steps, "epochs": epochs, "backbone": backbone, "img_size": img_size}
    if tasks is not None:
        overrides["tasks"] = None if tasks == "all" else tuple(t.strip() for t in tasks.split(",") if t.strip())
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None or k == "tasks"})
    summary = run_demo(out, minutes=minutes, config=cfg, echo=click.echo)
    click.echo(format_summary(summary))
