"""Detection metric: intersection over union of two axis-aligned boxes."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["iou_xyxy"]


def iou_xyxy(pred: Sequence[float], gt: Sequence[float]) -> float:
    """IoU of two ``[x_min, y_min, x_max, y_max]`` boxes, the official formula.

    Intersection ``max(0, Δx) · max(0, Δy)``; areas ``(x_max - x_min)(y_max - y_min)`` taken as
    they come (an inverted box has a negative or flipped area; validation is the caller's);
    union 0 → 0.0.
    """
    px0, py0, px1, py1 = (float(v) for v in pred)
    gx0, gy0, gx1, gy1 = (float(v) for v in gt)
    inter = max(0.0, min(px1, gx1) - max(px0, gx0)) * max(0.0, min(py1, gy1) - max(py0, gy0))
    union = (px1 - px0) * (py1 - py0) + (gx1 - gx0) * (gy1 - gy0) - inter
    return 0.0 if union == 0 else inter / union
