"""A small FPN decoder whose pyramid is fused into one feature map at stride 4."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FPNDecoder(nn.Module):
    """Top-down FPN over the encoder levels at stride >= ``fuse_stride``, fused at that stride.

    Each pyramid level is lateral 1x1 conv + upsampled coarser level, smoothed by a 3x3 conv,
    then upsampled to the finest used level and summed; one more conv block gives the output.
    When the backbone has no level at ``fuse_stride`` the finest available level is used.
    """

    def __init__(self, in_channels: Sequence[int], reductions: Sequence[float], channels: int = 64,
                 fuse_stride: float = 4):
        super().__init__()
        use = [i for i, r in enumerate(reductions) if r >= fuse_stride]
        if not use:
            use = [len(reductions) - 1]
        self.use = use
        r = reductions[use[0]]
        self.stride = int(r) if float(r).is_integer() else float(r)  # 3.5 for a patch-14 pyramid
        self.out_channels = channels
        self.lateral = nn.ModuleList(nn.Conv2d(in_channels[i], channels, 1) for i in use)
        self.smooth = nn.ModuleList(_conv_bn_relu(channels, channels) for _ in use)
        self.fuse = _conv_bn_relu(channels, channels)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        xs = [feats[i] for i in self.use]
        lat = [conv(x) for conv, x in zip(self.lateral, xs, strict=True)]
        for i in range(len(lat) - 2, -1, -1):
            lat[i] = lat[i] + F.interpolate(lat[i + 1], size=lat[i].shape[-2:], mode="nearest")
        outs = [sm(x) for sm, x in zip(self.smooth, lat, strict=True)]
        size = outs[0].shape[-2:]
        fused = outs[0]
        for o in outs[1:]:
            fused = fused + F.interpolate(o, size=size, mode="bilinear", align_corners=False)
        return self.fuse(fused)
