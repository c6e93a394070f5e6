"""The routed multi-head multi-task network."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import torch
import torch.nn as nn

from fmuia.errors import FmuiaError
from fmuia.model.encoder import build_encoder
from fmuia.model.fpn import FPNDecoder
from fmuia.model.heads import HEADS
from fmuia.model.norm import TaskSelector, attach_task_norm
from fmuia.tasks import TaskSpec


def _head_key(task_id: str) -> str:
    """A ``ModuleDict`` key for a task id (dots and other odd characters are not allowed)."""
    return "t_" + re.sub(r"[^0-9A-Za-z_]", lambda m: f"_{ord(m.group()):x}_", task_id)


class MultiTaskNet(nn.Module):
    """timm encoder → FPN decoder (stride 4) → one head per task.

    Segmentation and detection heads read the fused FPN map; classification and regression heads
    read the deepest encoder map (the FPN is not computed for them). BatchNorm layers of the shared
    encoder and FPN keep running statistics per task (``task_norm``, see :mod:`fmuia.model.norm`).

    ``net(images, task_id)`` returns the head's raw output; :meth:`postprocess` turns it into
    normalized outputs.
    """

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        backbone: str = "efficientnet_b4",
        pretrained: str = "none",
        weights: str | os.PathLike | None = None,
        fpn_channels: int = 64,
        dropout: float = 0.2,
        task_norm: bool = True,
    ):
        super().__init__()
        if not tasks:
            raise FmuiaError("the model needs at least one task")
        self.backbone = backbone
        self.config = {
            "backbone": backbone, "fpn_channels": int(fpn_channels), "dropout": float(dropout), "task_norm": bool(task_norm),
        }
        self.tasks: dict[str, TaskSpec] = {t.task_id: t for t in tasks}
        self.encoder = build_encoder(backbone, pretrained, weights)
        info = self.encoder.feature_info
        channels, reductions = info.channels(), info.reduction()
        self.fpn = FPNDecoder(channels, reductions, fpn_channels)
        self.heads = nn.ModuleDict(
            {_head_key(t.task_id): HEADS[t.kind](t, fpn_channels, channels[-1], dropout) for t in tasks}
        )
        self._task_index = {t.task_id: i for i, t in enumerate(tasks)}
        self._selector = TaskSelector()
        if task_norm:  # per-task BatchNorm statistics in the shared parts (see fmuia.model.norm)
            attach_task_norm(self.encoder, len(tasks), self._selector)
            attach_task_norm(self.fpn, len(tasks), self._selector)

    def head(self, task_id: str) -> nn.Module:
        if task_id not in self.tasks:
            raise KeyError(f"task {task_id!r} has no head in this model; it knows {sorted(self.tasks)}")
        return self.heads[_head_key(task_id)]

    def forward(self, images: torch.Tensor, task_id: str):
        head = self.head(task_id)
        self._selector.index = self._task_index[task_id]
        feats = self.encoder(images)
        x = self.fpn(feats) if head.route == "fpn" else feats[-1]
        return head(x, tuple(images.shape[-2:]))

    @torch.no_grad()
    def postprocess(self, task_id: str, raw) -> dict[str, torch.Tensor]:
        """Normalized outputs: segmentation ``{"probs": [B,C,H,W]}``; classification
        ``{"probs": [B,C]}``; detection ``{"box": [B,4] xyxy in [0,1], "score": [B]}``;
        regression ``{"points": [B,K,2] (x, y) in [0,1]}``. All float32."""
        return self.head(task_id).postprocess(raw)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def decoder_parameters(self) -> list[nn.Parameter]:
        """FPN and heads: trained with the larger learning rate."""
        return list(self.fpn.parameters()) + list(self.heads.parameters())


def build_model(
    tasks: Sequence[TaskSpec],
    backbone: str = "efficientnet_b4",
    pretrained: str = "none",
    weights: str | os.PathLike | None = None,
    **kwargs,
) -> MultiTaskNet:
    """Build the network for ``tasks`` (see :class:`MultiTaskNet`)."""
    return MultiTaskNet(tasks, backbone=backbone, pretrained=pretrained, weights=weights, **kwargs)
