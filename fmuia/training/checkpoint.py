"""Writing checkpoints: everything needed to predict (and, for ``last.pt``, to resume exactly).

The file format and reading it back (:func:`read_checkpoint`, :func:`load_for_inference`) belong
to the model layer, :mod:`fmuia.model.checkpoint`, so that inference never imports training; they
are re-exported here for existing callers. This module adds what only training needs: the
``meta`` block of a trained network and :func:`save_checkpoint` with the resume state
(optimizer, scheduler, scaler, RNG, epoch, history) in ``train_state``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import timm
import torch

from fmuia import __version__
from fmuia._atomic import atomic_path
from fmuia.model.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    build_from_meta,
    load_for_inference,
    read_checkpoint,
)
from fmuia.model.net import MultiTaskNet
from fmuia.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "FORMAT", "FORMAT_VERSION", "make_meta", "save_checkpoint", "read_checkpoint", "build_from_meta",
    "load_for_inference",
]


def make_meta(net: MultiTaskNet, img_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, **extra: Any) -> dict[str, Any]:
    """The ``meta`` block for ``net`` (a :class:`~fmuia.model.MultiTaskNet`, unwrapped)."""
    meta = {
        "backbone": net.backbone,
        "img_size": int(img_size),
        "tasks": [t.to_dict() for t in net.tasks.values()],
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "fmuia_version": __version__,
        "model_config": dict(net.config),
        "timm_version": str(timm.__version__),
        "torch_version": str(torch.__version__),
        "encoder_frozen": bool(getattr(net, "encoder_frozen", False)),  # when this checkpoint was written
    }
    meta.update(extra)
    return meta


def save_checkpoint(path: str | os.PathLike, net: torch.nn.Module, meta: dict[str, Any],
                    train_state: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically. ``net`` may be wrapped in DDP; its weights are saved unwrapped."""
    net = getattr(net, "module", net)
    obj = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": meta,
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "train_state": train_state,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path
