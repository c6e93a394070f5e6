"""The routed multi-head multi-task network."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import torch
import torch.nn as nn

from fmuia.errors import FmuiaError
from fmuia.model.encoder import (
    build_encoder,
    check_backbone_name,
    check_input_size,
    check_out_indices,
    feature_modules,
    format_indices,
    probe_encoder,
)
from fmuia.model.fpn import FPNDecoder
from fmuia.model.heads import HEADS
from fmuia.model.norm import TaskSelector, attach_task_norm
from fmuia.model.pyramid import PYRAMID_CHOICES, SimplePyramid
from fmuia.tasks import TaskSpec


def _head_key(task_id: str) -> str:
    """A ``ModuleDict`` key for a task id (dots and other odd characters are not allowed)."""
    return "t_" + re.sub(r"[^0-9A-Za-z_]", lambda m: f"_{ord(m.group()):x}_", task_id)


class MultiTaskNet(nn.Module):
    """timm encoder → (simple pyramid for a single-scale encoder) → FPN decoder (stride 4) → one head per task.

    Segmentation and detection heads read the fused FPN map; classification and regression heads
    read the deepest encoder map (the FPN is not computed for them). BatchNorm layers of the shared
    encoder and FPN keep running statistics per task (``task_norm``, see :mod:`fmuia.model.norm`).

    ``img_size`` reaches the families that need it (ViT, Swin, Hiera, MaxViT, ...; ``None``: timm's
    default, as checkpoints written before sizes were recorded). ``pyramid``: ``"auto"`` builds a
    ViTDet-style simple pyramid (:mod:`fmuia.model.pyramid`) for a single-scale encoder (a plain ViT)
    and none for a multi-scale one; ``"simple"`` / ``"none"`` force it. ``out_indices``: the encoder
    features taken (timm's meaning: an int takes the last n); with the simple pyramid 1 block (the
    default: the last) or 4 (one per level). ``backbone_kwargs``: more timm model arguments
    (``drop_path_rate``, or ``depth``/``embed_dim`` for small test configurations).
    ``fit_input`` (default on): a single-scale encoder takes any ``img_size``; when its patch does not divide
    the input (256 px, patch 14) the encoder resizes it up to the next multiple (266: a 19x19 grid) and the
    heads resize back to the input size (``encoder_size``: the size it runs at). Off, such a size is refused.
    ``net.config`` records every option, so a checkpoint rebuilds the same network.

    ``net(images, task_id)`` returns the head's raw output; :meth:`postprocess` turns it into
    normalized outputs. :meth:`freeze_encoder` trains the decoder and heads only.
    """

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        backbone: str = "efficientnet_b4",
        pretrained: str = "none",
        weights: str | os.PathLike | None = None,
        img_size: int | None = 256,
        fpn_channels: int = 64,
        dropout: float = 0.2,
        task_norm: bool = True,
        pyramid: str = "auto",
        out_indices: int | Sequence[int] | None = None,
        backbone_kwargs: dict | None = None,
        fit_input: bool = True,
    ):
        super().__init__()
        if not tasks:
            raise FmuiaError("the model needs at least one task")
        if pyramid not in PYRAMID_CHOICES:
            raise FmuiaError(f"--pyramid {pyramid!r}: expected one of {', '.join(PYRAMID_CHOICES)}")
        check_backbone_name(backbone)
        if out_indices is not None and not isinstance(out_indices, int):
            out_indices = [int(i) for i in out_indices]
        backbone_kwargs = dict(backbone_kwargs) if backbone_kwargs else None
        fit_input = bool(fit_input)
        check_out_indices(backbone, out_indices, img_size=img_size, backbone_kwargs=backbone_kwargs)
        enc_size = img_size
        if img_size is not None:
            enc_size = check_input_size(backbone, int(img_size), out_indices=out_indices,
                                        backbone_kwargs=backbone_kwargs, fit=fit_input)
        if pyramid != "none":
            probe = probe_encoder(backbone, enc_size, out_indices, backbone_kwargs)
            if pyramid == "auto":
                pyramid = "simple" if probe.single_scale else "none"
            elif not probe.single_scale:
                raise FmuiaError(f"--pyramid simple: backbone {backbone} is multi-scale already (strides "
                                 f"{', '.join(map(str, probe.reductions))}); use --pyramid auto or none")
            if pyramid == "simple" and out_indices is None:
                out_indices = 1  # the last block (ViTDet)
            elif pyramid == "simple" and len(probe.channels) not in (1, 4):
                n = len(feature_modules(backbone, enc_size, backbone_kwargs) or [])
                spread = f", or 4 spread over its {n} blocks: " + ",".join(
                    str(n * k // 4 - 1) for k in (1, 2, 3, 4)) if n >= 4 else ""
                raise FmuiaError(f"--out-indices {format_indices(out_indices)}: the simple pyramid takes 1 block "
                                 f"(ViTDet) or 4 (one per level); these give {len(probe.channels)}; use "
                                 f"--out-indices 1 (the last block) or 4 (the last 4){spread}")
        self.backbone = backbone
        self._encoder_frozen = False
        self.config = {
            "backbone": backbone, "img_size": None if img_size is None else int(img_size),
            "fpn_channels": int(fpn_channels), "dropout": float(dropout), "task_norm": bool(task_norm),
            "pyramid": pyramid, "out_indices": out_indices, "backbone_kwargs": backbone_kwargs,
            "fit_input": fit_input,
        }
        self.encoder_size = enc_size  # img_size, or for a plain ViT its patch does not divide, the next multiple
        self.tasks: dict[str, TaskSpec] = {t.task_id: t for t in tasks}
        self.encoder = build_encoder(backbone, pretrained, weights, img_size=enc_size, out_indices=out_indices,
                                     backbone_kwargs=backbone_kwargs, fit_input=fit_input)
        info = self.encoder.feature_info
        channels, reductions = info.channels(), info.reduction()
        if pyramid == "simple":
            self.pyramid: nn.Module | None = SimplePyramid(channels, reductions[-1])
            fpn_in, fpn_red, fuse = self.pyramid.out_channels, self.pyramid.reductions, self.pyramid.reductions[0]
        else:
            self.pyramid = None
            fpn_in, fpn_red, fuse = channels, reductions, 4
        self.fpn = FPNDecoder(fpn_in, fpn_red, fpn_channels, fuse_stride=fuse)
        self.heads = nn.ModuleDict(
            {_head_key(t.task_id): HEADS[t.kind](t, fpn_channels, channels[-1], dropout) for t in tasks}
        )
        self._task_index = {t.task_id: i for i, t in enumerate(tasks)}
        self._selector = TaskSelector()
        if task_norm:  # per-task BatchNorm statistics in the shared parts (see fmuia.model.norm)
            attach_task_norm(self.encoder, len(tasks), self._selector)
            attach_task_norm(self.fpn, len(tasks), self._selector)

    @property
    def encoder_frozen(self) -> bool:
        """Whether :meth:`freeze_encoder` froze the encoder."""
        return self._encoder_frozen

    def freeze_encoder(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) the encoder: no gradients (so AdamW keeps no state for it), and eval
        mode (BatchNorm statistics fixed, no dropout / stochastic depth) even after ``net.train()``."""
        self._encoder_frozen = bool(frozen)
        for p in self.encoder.parameters():
            p.requires_grad_(not frozen)
        self.encoder.train(self.training and not frozen)

    def train(self, mode: bool = True) -> MultiTaskNet:
        super().train(mode)
        if self._encoder_frozen:
            self.encoder.eval()
        return self

    def head(self, task_id: str) -> nn.Module:
        if task_id not in self.tasks:
            raise KeyError(f"task {task_id!r} has no head in this model; it knows {sorted(self.tasks)}")
        return self.heads[_head_key(task_id)]

    def forward(self, images: torch.Tensor, task_id: str):
        head = self.head(task_id)
        self._selector.index = self._task_index[task_id]
        feats = self.encoder(images)
        if head.route == "fpn":
            x = self.fpn(self.pyramid(feats) if self.pyramid is not None else feats)
        else:
            x = feats[-1]
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
        """Pyramid, FPN and heads: trained with the larger learning rate, never frozen."""
        pyramid = list(self.pyramid.parameters()) if self.pyramid is not None else []
        return pyramid + list(self.fpn.parameters()) + list(self.heads.parameters())


def build_model(
    tasks: Sequence[TaskSpec],
    backbone: str = "efficientnet_b4",
    pretrained: str = "none",
    weights: str | os.PathLike | None = None,
    **options,
) -> MultiTaskNet:
    """Build the network for ``tasks``; ``options`` are :class:`MultiTaskNet`'s keyword arguments
    (``img_size``, ``fpn_channels``, ``dropout``, ``task_norm``, ``pyramid``, ``out_indices``, ``backbone_kwargs``)."""
    return MultiTaskNet(tasks, backbone=backbone, pretrained=pretrained, weights=weights, **options)
