"""Reading checkpoints and rebuilding their network: what inference needs (no training code).

A checkpoint is a ``torch.save`` dict holding only plain types and tensors, so it loads with
``weights_only=True``::

    {"format": "fmuia-checkpoint", "format_version": 1,
     "meta": {"backbone", "img_size", "tasks": [TaskSpec.to_dict()...], "mean", "std",
              "fmuia_version", "model_config", "timm_version", "torch_version", ...},
     "model": state_dict,
     "train_state": {...} | None}      # only fmuia.training reads it (resume)

Writing checkpoints and the training state live in :mod:`fmuia.training.checkpoint`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from fmuia import __version__
from fmuia.errors import FmuiaError
from fmuia.model.net import MultiTaskNet, build_model
from fmuia.tasks import TaskSpec

__all__ = ["FORMAT", "FORMAT_VERSION", "read_checkpoint", "build_from_meta", "load_for_inference"]

FORMAT = "fmuia-checkpoint"
FORMAT_VERSION = 1


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint dict (``weights_only``: no code runs from the file)."""
    path = Path(path)
    if not path.is_file():
        raise FmuiaError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise FmuiaError(f"{path}: not a readable fmuia checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise FmuiaError(f"{path}: not an fmuia checkpoint (expected a file written by `fmuia train`)")
    if obj.get("format_version", 0) > FORMAT_VERSION:
        raise FmuiaError(f"{path}: checkpoint format {obj['format_version']} is newer than this fmuia supports ({FORMAT_VERSION})")
    return obj


def build_from_meta(meta: dict[str, Any]) -> MultiTaskNet:
    """A fresh, randomly initialised network shaped like the checkpoint's (no download)."""
    tasks = [TaskSpec.from_dict(d) for d in meta["tasks"]]
    cfg = dict(meta.get("model_config") or {})
    cfg.pop("backbone", None)
    return build_model(tasks, backbone=meta["backbone"], pretrained="none", **cfg)


def load_for_inference(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[MultiTaskNet, dict[str, Any]]:
    """``(net, meta)``: the network in eval mode on ``device`` and the checkpoint's meta."""
    obj = read_checkpoint(path)
    meta = obj["meta"]
    net = build_from_meta(meta)
    try:
        net.load_state_dict(obj["model"])
    except RuntimeError as exc:  # parameter names or shapes differ: written by another fmuia model version
        first = str(exc).strip().splitlines()[0]
        raise FmuiaError(
            f"{path}: checkpoint does not fit this version's model (written by fmuia "
            f"{meta.get('fmuia_version', '?')}, this is {__version__}): {first}; "
            "retrain, or predict with the fmuia version that wrote it"
        ) from None
    net.to(device).eval()
    return net, meta
