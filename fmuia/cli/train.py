"""``fmuia train``: thin wrapper over :func:`fmuia.training.train`."""

from __future__ import annotations

import os

import click

from fmuia.training.config import PYRAMID_CHOICES


@click.command("train")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A YAML or JSON file of training options (data, out and any option below, with underscores: "
                   "img_size, layer_decay, ...; and backbone_kwargs, a mapping of more timm model arguments such "
                   "as drop_path_rate: 0.1); flags given here override it. Every run keeps its own as "
                   "RUN_DIR/config.yaml.")
@click.option("--data", "data", type=click.Path(exists=True, file_okay=False), help="Labelled data root (ROOT/csv_files/*.csv).")
@click.option("--out", "out", type=click.Path(file_okay=False),
              help="Run folder: best.pt, last.pt, metrics.csv, metrics.json, config.yaml.")
@click.option("--backbone", default=None, help="Any timm model name.  [default: efficientnet_b4]")
@click.option("--pretrained", type=click.Choice(["imagenet", "none"]), default=None,
              help="Encoder start: timm's ImageNet weights (needs the hub) or random.  [default: imagenet]")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A local timm weights file for the backbone (offline alternative to --pretrained imagenet).")
@click.option("--img-size", type=int, default=None,
              help="Square input size; the backbone sets the rule (a multiple of 32 for CNNs).  [default: 256]")
@click.option("--epochs", type=int, default=None, help="[default: 20]")
@click.option("--steps-per-epoch", type=int, default=None, help="[default: one pass over the training samples]")
@click.option("--batch-size", type=int, default=None, help="Per process.  [default: 8]")
@click.option("--lr", type=float, default=None, help="Encoder learning rate.  [default: 1e-4]")
@click.option("--head-lr-scale", type=float, default=None, help="Decoder and heads learn this many times faster.  [default: 10]")
@click.option("--freeze-encoder/--no-freeze-encoder", default=None,
              help="Train the FPN and heads only: the encoder stays in eval mode, without gradients or optimizer state.  "
                   "[default: no]")
@click.option("--unfreeze-after", type=int, default=None, metavar="EPOCHS",
              help="With --freeze-encoder: train the encoder too after this many epochs.")
@click.option("--layer-decay", type=float, default=None, metavar="FLOAT",
              help="Layer-wise learning-rate decay for the encoder, in (0, 1] (e.g. 0.75 for ViTs).  [default: none]")
@click.option("--pyramid", type=click.Choice(PYRAMID_CHOICES), default=None,
              help="Multi-scale input for the FPN: auto builds a ViTDet simple pyramid for a single-scale encoder "
                   "(a plain ViT) and none for a multi-scale one (CNNs, Swin, ...); simple / none force it.  "
                   "[default: auto]")
@click.option("--out-indices", default=None, metavar="INDICES",
              help="Encoder features that feed the pyramid / FPN: block or stage indices, 0-based, negative from "
                   "the end (2,5,8,11: four blocks of a 12-block ViT, one per pyramid level; 11,: that block "
                   "alone), or one integer N for the last N.  [default: the backbone's; the last block with "
                   "the simple pyramid]")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "none"]), default=None,
              help="Mixed precision on CUDA (auto: bf16 where supported, else fp16).  [default: auto]")
@click.option("--channels-last/--no-channels-last", default=None, help="Memory format.  [default: on CUDA only]")
@click.option("--val", type=click.Path(exists=True, file_okay=False), default=None,
              help="A labelled validation root.  [default: hold out 10% of each task]")
@click.option("--resume", type=click.Path(exists=True), default=None, help="A run folder (or its last.pt) to continue exactly.")
@click.option("--seed", type=int, default=None, help="[default: 0]")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N.  [default: auto]")
@click.option("--workers", type=int, default=None, help="Data-loading worker processes.  [default: 2]")
@click.option("--task-weights", default=None,
              help="Task sampling: uniform, size, sqrt, or KEY=W,... with task ids or kinds (segmentation=2,organ_cls=0.5).")
@click.option("--tasks", default=None, help="Train only these comma-separated task ids.")
@click.option("--no-augment", is_flag=True, help="Turn augmentation off.")
@click.option("--progress", type=click.Choice(["auto", "bars", "lines", "none"]), default=None,
              help="auto: bars on a terminal, plain lines without one (nohup, slurm, docker logs); "
                   "also set by FMUIA_PROGRESS.  [default: auto]")
@click.option("--log-every", type=int, default=None, metavar="N",
              help="Progress lines: one every N steps (and at least every 30 s) and one per epoch.  [default: 50]")
@click.option("--quiet", is_flag=True, help="No progress bars or lines.")
def train(config, data, out, backbone, pretrained, weights, img_size, epochs, steps_per_epoch, batch_size, lr,
          head_lr_scale, freeze_encoder, unfreeze_after, layer_decay, pyramid, out_indices, amp, channels_last, val,
          resume, seed, device, workers, task_weights, tasks, no_augment, progress, log_every, quiet) -> None:
    """Train the MH-MTL baseline: a timm encoder shared by all tasks, an FPN decoder, one head per task.

    Each step trains one task (tasks drawn uniformly, or per --task-weights); validation each epoch
    uses the challenge metrics and keeps the best checkpoint by a composite of all four kinds.
    Without a terminal, progress is one line every --log-every steps and one per epoch, on stderr.

    \b
    Examples:
      fmuia train --data data/train --out runs/b4                       # the baseline
      fmuia train --data data/train --out runs/b4 --pretrained none --weights effb4.pth
      fmuia train --data data/train --out runs/cnx --backbone convnext_tiny --img-size 320
      fmuia train --data data/train --out runs/vit --backbone vit_small_patch16_224 --img-size 224 \\
          --freeze-encoder --unfreeze-after 5 --layer-decay 0.75
      fmuia train --data data/train --out runs/vit4 --backbone vit_base_patch16_224 --img-size 384 \\
          --out-indices 2,5,8,11                                          # pyramid from four blocks
      fmuia train --resume runs/b4 --epochs 40                           # continue (longer)
      fmuia train --config runs/b4/config.yaml --out runs/b4-again       # the same run again
      nohup fmuia train --data data/train --out runs/b4 > runs/b4.log 2>&1 &
      torchrun --nproc-per-node 4 -m fmuia train --data data/train --out runs/ddp
    """
    from fmuia.training import train as run
    from fmuia.training.config import options_from_config

    options = dict(
        data=data, out=out, backbone=backbone, pretrained=pretrained, weights=weights, img_size=img_size, epochs=epochs,
        steps_per_epoch=steps_per_epoch, batch_size=batch_size, lr=lr, head_lr_scale=head_lr_scale,
        freeze_encoder=freeze_encoder, unfreeze_after=unfreeze_after, layer_decay=layer_decay, pyramid=pyramid,
        out_indices=out_indices, amp=amp,
        channels_last=channels_last, val=val, resume=resume, seed=seed, device=device, workers=workers,
        task_weights=task_weights, tasks=tasks, augment=False if no_augment else None,
        progress="none" if quiet else progress, log_every=log_every,
    )
    if config is not None:
        options = options_from_config(config, options)
    data, out = options.pop("data", None), options.pop("out", None)
    if options.get("resume") is None and (data is None or out is None):
        raise click.UsageError("--data and --out are required (as flags or in --config FILE), unless --resume RUN_DIR")
    best = run(data, out, **options)
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"best checkpoint: {best}")
        click.echo(f"last checkpoint: {best.parent / 'last.pt'}")
        click.echo(f"metrics: {best.parent / 'metrics.csv'}")
        click.echo(f"options: {best.parent / 'config.yaml'}")
