"""A multi-scale input for the FPN from a single-scale encoder (a plain ViT): a ViTDet-style simple pyramid.

A plain ViT gives maps at one stride ``p`` (16, or 14 for DINOv2-style models). The pyramid makes
four levels at strides ``p/4, p/2, p, 2p``: two 2x2 transposed convolutions up (with a channel
LayerNorm and GELU between), one up, the map itself, and 2x2 max pooling down (Li et al., "Exploring
Plain Vision Transformer Backbones for Object Detection", 2022). Either all four levels come from the
last block taken (one input, ViTDet), or level ``i`` from the ``i``-th of four blocks taken (four inputs,
e.g. blocks 2, 5, 8, 11 of a 12-block ViT). With patch 14 the finest level is at stride 3.5: the FPN
fuses there and the heads resize to the input (they take the output size).

The pyramid belongs to the decoder: it is trained from scratch at the head learning rate and is
never frozen with the encoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

PYRAMID_CHOICES = ("auto", "none", "simple")


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (no batch statistics, so nothing per task)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


def _up(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)


class SimplePyramid(nn.Module):
    """Single-stride maps → four levels at strides ``stride/4, stride/2, stride, 2*stride``.

    ``in_channels``: the channels of the one (ViTDet) or four (one per level) input maps.
    ``out_channels`` / ``reductions``: what the FPN receives.
    """

    def __init__(self, in_channels: Sequence[int], stride: float):
        super().__init__()
        if len(in_channels) not in (1, 4):
            raise ValueError(f"the simple pyramid takes 1 or 4 maps, got {len(in_channels)}")
        c = [int(v) for v in in_channels] * (4 if len(in_channels) == 1 else 1)
        c4, c8 = max(8, c[0] // 4), max(8, c[1] // 2)
        self.inputs = len(in_channels)
        self.levels = nn.ModuleList([
            nn.Sequential(_up(c[0], c[0] // 2), LayerNorm2d(c[0] // 2), nn.GELU(), _up(c[0] // 2, c4)),
            _up(c[1], c8),
            nn.Identity(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        ])
        self.out_channels = [c4, c8, c[2], c[3]]
        s = float(stride)
        self.reductions = [s / 4, s / 2, s, 2 * s]

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        xs = [feats[-1]] * 4 if self.inputs == 1 else list(feats[-4:])
        return [level(x) for level, x in zip(self.levels, xs, strict=True)]
