"""Train the MH-MTL baseline with another timm backbone, from Python.

Any name from ``timm.list_models()`` works (``convnext_tiny``, ``resnet50``, ...); this example
uses timm's tiny ``test_resnet`` so it finishes in seconds on a CPU, on a small synthetic
dataset made in a temporary folder. The command-line equivalent::

    fmuia train --data DATA --out RUN --backbone convnext_tiny --pretrained imagenet
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from fmuia.dataset.synth import synthesize
from fmuia.model.checkpoint import load_for_inference
from fmuia.training import train


def main() -> None:
    torch.set_num_threads(1)  # a tiny model: one thread is fastest on a shared CPU
    work = Path(tempfile.mkdtemp(prefix="fmuia-train-example-"))
    data = synthesize(work / "data", per_task=3, seed=0, tasks=["cervix", "organ_cls", "thyroid_nodule_det", "FUGC"])
    best = train(
        data,
        work / "run",
        backbone="test_resnet",  # any timm model name
        pretrained="none",  # "imagenet" downloads timm's weights; weights="file.pth" loads them offline
        img_size=64,
        epochs=1,
        steps_per_epoch=4,
        batch_size=2,
        lr=1e-3,
        workers=0,
        device="cpu",
        progress=False,
    )
    net, meta = load_for_inference(best)
    print(f"backbone: {meta['backbone']} ({sum(p.numel() for p in net.parameters()):,} parameters)")
    print(f"tasks: {', '.join(t['task_id'] for t in meta['tasks'])}")
    print(f"best checkpoint: {best}")
    print(f"training log: {best.parent / 'metrics.csv'}")


if __name__ == "__main__":
    main()
