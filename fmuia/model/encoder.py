"""The shared encoder: any timm backbone in ``features_only`` mode. Never hand-written."""

from __future__ import annotations

import os
from pathlib import Path

import torch.nn as nn

from fmuia.errors import FmuiaError

PRETRAINED_CHOICES = ("none", "imagenet")


def build_encoder(backbone: str = "efficientnet_b4", pretrained: str = "none", weights: str | os.PathLike | None = None) -> nn.Module:
    """Create ``timm.create_model(backbone, features_only=True)``.

    ``pretrained="imagenet"`` downloads timm's default weights (an :class:`FmuiaError` suggesting
    ``--weights FILE`` when the hub is unreachable); ``weights=FILE`` loads a local timm weights
    file offline (``.pth``/``.bin``/``.safetensors``, a plain state dict of the classification model
    or of the feature extractor); ``pretrained="none"`` starts from random weights.
    """
    # Deferred: importing timm takes ~1.7 s (measured, after torch); importing the model layer
    # (checkpoint reading, predict_with_model with a custom network) stays at ~10 ms without it.
    import timm

    if pretrained not in PRETRAINED_CHOICES:
        raise FmuiaError(f"--pretrained {pretrained!r}: expected one of {', '.join(PRETRAINED_CHOICES)}")
    if not timm.is_model(backbone):
        close = timm.list_models(f"*{backbone}*")[:8]
        hint = f"; similar names: {', '.join(close)}" if close else "; see timm.list_models()"
        raise FmuiaError(f"--backbone {backbone!r}: not a timm model name{hint}")
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FmuiaError(f"--weights {path}: file not found; expected a local timm weights file for {backbone}")
        try:
            return timm.create_model(
                backbone, features_only=True, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))
            )
        except (RuntimeError, KeyError, ValueError, OSError) as exc:
            raise FmuiaError(
                f"--weights {path}: could not load it into timm model {backbone!r} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:300]}); expected that model's weights (a state dict)"
            ) from exc
    if pretrained == "imagenet":
        try:
            return timm.create_model(backbone, features_only=True, pretrained=True)
        except (OSError, RuntimeError, ValueError) as exc:  # network errors are OSError subclasses
            raise FmuiaError(
                f"--pretrained imagenet: could not fetch the pretrained weights of {backbone!r} from the timm hub "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}). Offline? Download the "
                f"weights file elsewhere and pass it with --weights FILE, or use --pretrained none."
            ) from exc
    return timm.create_model(backbone, features_only=True, pretrained=False)
