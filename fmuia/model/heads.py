"""One head class per task kind, in a table keyed by :class:`TaskKind`.

Every head has ``route`` (which features it reads: ``"fpn"`` = the fused stride-4 decoder map,
``"deep"`` = the deepest encoder map), ``forward(x, out_size) -> raw`` and
``postprocess(raw) -> dict`` of normalized outputs (see :meth:`MultiTaskNet.postprocess`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from fmuia.tasks import TaskKind, TaskSpec


class SegmentationHead(nn.Module):
    """conv block → 1x1 conv to C logits → bilinear upsampling to the input size."""

    route = "fpn"

    def __init__(self, spec: TaskSpec, fpn_channels: int, deep_channels: int, dropout: float = 0.0):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(fpn_channels, fpn_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(fpn_channels),
            nn.ReLU(inplace=True),
        )
        self.out = nn.Conv2d(fpn_channels, spec.num_classes, 1)

    def forward(self, x: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        logits = self.out(self.block(x))
        return F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)

    @staticmethod
    def postprocess(raw: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"probs": raw.float().softmax(dim=1)}


class ClassificationHead(nn.Module):
    """Global average pool → dropout → linear to C logits."""

    route = "deep"

    def __init__(self, spec: TaskSpec, fpn_channels: int, deep_channels: int, dropout: float = 0.2):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(deep_channels, spec.num_classes)

    def forward(self, x: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        return self.fc(self.drop(x.mean(dim=(2, 3))))

    @staticmethod
    def postprocess(raw: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"probs": raw.float().softmax(dim=1)}


class RegressionHead(nn.Module):
    """Global average pool → dropout → linear to 2K logits; sigmoid bounds coordinates to [0, 1]."""

    route = "deep"

    def __init__(self, spec: TaskSpec, fpn_channels: int, deep_channels: int, dropout: float = 0.2):
        super().__init__()
        self.num_points = spec.num_classes
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(deep_channels, 2 * spec.num_classes)
        nn.init.zeros_(self.fc.bias)  # start at the image centre

    def forward(self, x: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        return self.fc(self.drop(x.mean(dim=(2, 3))))  # [B, 2K] logits, (x, y) interleaved

    def postprocess(self, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"points": raw.float().sigmoid().view(raw.shape[0], -1, 2)}


class DetectionHead(nn.Module):
    """A dense head on the FPN map: per location an objectness logit and a box.

    The box at a location is its centre minus/plus four distances (absolute values) (left, top, right,
    bottom) in units of the image size: normalized xyxy, clamped to [0, 1] by :meth:`postprocess`. Raw output:
    ``{"obj": [B, h, w] logits, "box": [B, 4, h, w]}``. Inference keeps the best-scoring location.
    """

    route = "fpn"
    PRIOR = 0.01

    def __init__(self, spec: TaskSpec, fpn_channels: int, deep_channels: int, dropout: float = 0.0):
        super().__init__()
        c = fpn_channels
        groups = 8 if c % 8 == 0 else 1
        # separate towers: early objectness gradients (large, from every location) must not wreck box features
        self.obj_tower = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.GroupNorm(groups, c), nn.ReLU(inplace=True))
        self.box_tower = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.GroupNorm(groups, c), nn.ReLU(inplace=True))
        self.obj = nn.Conv2d(c, 1, 3, padding=1)
        self.ltrb = nn.Conv2d(c, 4, 3, padding=1)
        nn.init.normal_(self.obj.weight, std=0.01)
        nn.init.constant_(self.obj.bias, -math.log((1 - self.PRIOR) / self.PRIOR))
        nn.init.normal_(self.ltrb.weight, std=0.01)
        nn.init.constant_(self.ltrb.bias, 0.15)  # distances start near 0.15 of the image

    def forward(self, x: torch.Tensor, out_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        obj = self.obj(self.obj_tower(x))[:, 0]
        # |x|: positive without a flat region, so no distance can die (a softplus/sigmoid pushed far
        # negative by one large early step stops learning: seen as boxes collapsed to a point)
        d = self.ltrb(self.box_tower(x)).float().abs()
        h, w = d.shape[-2:]
        cy = (torch.arange(h, device=d.device, dtype=d.dtype) + 0.5) / h
        cx = (torch.arange(w, device=d.device, dtype=d.dtype) + 0.5) / w
        cy, cx = cy.view(1, h, 1), cx.view(1, 1, w)
        # not clamped here: a clamped coordinate would get no gradient and could never come back
        box = torch.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], dim=1)
        return {"obj": obj, "box": box}

    @staticmethod
    def postprocess(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        obj = raw["obj"].float().flatten(1)  # [B, h*w]
        best = obj.argmax(dim=1)
        box = raw["box"].float().flatten(2)  # [B, 4, h*w]
        chosen = box.gather(2, best.view(-1, 1, 1).expand(-1, 4, 1))[..., 0].clamp(0.0, 1.0)
        score = obj.gather(1, best.view(-1, 1))[:, 0].sigmoid()
        return {"box": chosen, "score": score}


HEADS: dict[TaskKind, type[nn.Module]] = {
    TaskKind.SEGMENTATION: SegmentationHead,
    TaskKind.CLASSIFICATION: ClassificationHead,
    TaskKind.DETECTION: DetectionHead,
    TaskKind.REGRESSION: RegressionHead,
}
