"""Losses per task kind, in a table keyed by :class:`TaskKind`.

Each loss takes the head's raw output and the batch's target dict and returns
``(total, parts)`` where ``parts`` names the terms (floats, for logging). Computed in float32.

- segmentation: cross-entropy + soft Dice (foreground classes);
- classification: cross-entropy;
- regression: SmoothL1 on normalized coordinates (missing landmarks masked out);
- detection: objectness focal loss over **all** locations (a Gaussian bump at the box centre,
  CenterNet-style: every other location is a negative) + L1 and GIoU on the boxes predicted
  near the centre, weighted by the bump.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss

from fmuia.tasks import TaskKind

LossFn = Callable[[object, dict], tuple[torch.Tensor, dict[str, float]]]


def dice_loss(logits: torch.Tensor, mask: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over foreground classes (all classes when there is only one)."""
    c = logits.shape[1]
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(mask.clamp(0, c - 1), c).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    return 1 - (dice[1:] if c > 1 else dice).mean()


def segmentation_loss(raw: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict[str, float]]:
    logits, mask = raw.float(), target["mask"]
    ce = F.cross_entropy(logits, mask)
    dl = dice_loss(logits, mask)
    return ce + dl, {"ce": ce.item(), "dice": dl.item()}


def classification_loss(raw: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict[str, float]]:
    ce = F.cross_entropy(raw.float(), target["label"])
    return ce, {"ce": ce.item()}


REG_WEIGHT = 10.0
REG_BETA = 0.02  # SmoothL1 switches to L1 beyond 2 % of the image size


def regression_loss(raw: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict[str, float]]:
    pts = raw.float().sigmoid().view(raw.shape[0], -1, 2)
    valid = target["valid"].to(pts.device)
    per = F.smooth_l1_loss(pts, target["points"], beta=REG_BETA, reduction="none").sum(-1)  # [B, K]
    loss = (per * valid).sum() / valid.sum().clamp(min=1) * REG_WEIGHT
    return loss, {"smooth_l1": loss.item() / REG_WEIGHT}


def centre_heatmap(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``[B, h, w]`` targets: a Gaussian of each box's size (sigma = side / 6, >= 0.7 cell) centred
    on the cell holding the box centre, exactly 1 at that cell."""
    b = boxes.shape[0]
    cx = ((boxes[:, 0] + boxes[:, 2]) / 2 * w).floor().clamp(0, w - 1)
    cy = ((boxes[:, 1] + boxes[:, 3]) / 2 * h).floor().clamp(0, h - 1)
    sx = ((boxes[:, 2] - boxes[:, 0]) * w / 6).clamp(min=0.7)
    sy = ((boxes[:, 3] - boxes[:, 1]) * h / 6).clamp(min=0.7)
    ys = torch.arange(h, device=boxes.device, dtype=boxes.dtype).view(1, h, 1)
    xs = torch.arange(w, device=boxes.device, dtype=boxes.dtype).view(1, 1, w)
    g = torch.exp(
        -((xs - cx.view(b, 1, 1)) ** 2) / (2 * sx.view(b, 1, 1) ** 2)
        - ((ys - cy.view(b, 1, 1)) ** 2) / (2 * sy.view(b, 1, 1) ** 2)
    )
    return g


def focal_heatmap_loss(logits: torch.Tensor, heat: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss over all locations, normalised by the number of peaks."""
    p = logits.sigmoid().clamp(1e-6, 1 - 1e-6)
    pos = heat >= 1.0 - 1e-6
    log_p, log_1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
    pos_loss = -((1 - p) ** alpha) * log_p * pos
    neg_loss = -((1 - heat) ** beta) * (p**alpha) * log_1mp * (~pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


DET_L1, DET_GIOU, DET_BOX_THRESHOLD = 5.0, 2.0, 0.3


def detection_loss(raw: dict, target: dict) -> tuple[torch.Tensor, dict[str, float]]:
    obj, box = raw["obj"].float(), raw["box"].float()
    gt = target["box"].to(obj.device)
    b, h, w = obj.shape
    heat = centre_heatmap(gt, h, w)
    focal = focal_heatmap_loss(obj, heat)
    weight = torch.where(heat >= DET_BOX_THRESHOLD, heat, torch.zeros_like(heat)).flatten()  # [B*h*w]
    pred = box.permute(0, 2, 3, 1).reshape(-1, 4)
    gt_all = gt.view(b, 1, 4).expand(b, h * w, 4).reshape(-1, 4)
    keep = weight > 0
    wk = weight[keep]
    l1 = (F.l1_loss(pred[keep], gt_all[keep], reduction="none").sum(-1) * wk).sum() / wk.sum()
    giou = (generalized_box_iou_loss(pred[keep], gt_all[keep], reduction="none") * wk).sum() / wk.sum()
    total = focal + DET_L1 * l1 + DET_GIOU * giou
    return total, {"focal": focal.item(), "l1": l1.item(), "giou": giou.item()}


LOSSES: dict[TaskKind, LossFn] = {
    TaskKind.SEGMENTATION: segmentation_loss,
    TaskKind.CLASSIFICATION: classification_loss,
    TaskKind.DETECTION: detection_loss,
    TaskKind.REGRESSION: regression_loss,
}
