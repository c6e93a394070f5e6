"""Train the MH-MTL baseline with another timm backbone, from Python.

Any name from ``timm.list_models()`` works: CNNs (``convnext_tiny``, ``resnet50``, ...) and
foundation backbones (``vit_base_patch16_224``, ``vit_base_patch14_dinov2``, ``swin_base_patch4_window12_384``,
``hiera_base_224``, ``maxvit_tiny_tf_224``, ...) at the ``img_size`` you train at, as long as the backbone
can take it (:func:`fmuia.model.encoder.check_input_size` says which sizes work). A plain ViT gets a
ViTDet-style simple pyramid, so segmentation and detection keep a stride-4 map. This example uses
timm's tiny ``test_resnet`` so it finishes in seconds on a CPU, on a small synthetic dataset made in
a temporary folder. The command-line equivalents::

    fmuia train --data DATA --out RUN --backbone convnext_tiny --pretrained imagenet
    fmuia train --data DATA --out RUN --backbone vit_base_patch14_dinov2 --img-size 448 \
        --weights dinov2_vitb14.safetensors --freeze-encoder --unfreeze-after 5 --layer-decay 0.75
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from fmuia.dataset.synth import synthesize
from fmuia.errors import FmuiaError
from fmuia.model.checkpoint import load_for_inference
from fmuia.model.encoder import check_input_size
from fmuia.training import train


def main() -> None:
    torch.set_num_threads(1)  # a tiny model: one thread is fastest on a shared CPU
    try:  # a patch-14 ViT cannot take 256 px: the error names the sizes that can
        check_input_size("vit_small_patch14_dinov2", 256)
    except FmuiaError as exc:
        print(exc.message)  # ... needs a multiple of 14 (its total stride); sizes that work near it: 252, 266
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
