"""Typed per-row scores: what a policy's row hook returns and its task hook reduces (no torch).

One type per kind. ``skipped`` rows (official mode: no usable prediction) do not count at all;
``reason`` says why a row scored the worst (strict) or was skipped (official); ``None`` when the
prediction was used as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SegScore:
    """Per-class Dice, Hausdorff and HD95 (``[C]`` arrays, background included) of one mask."""

    dice: np.ndarray | None = None
    hd: np.ndarray | None = None
    hd95: np.ndarray | None = None
    diagonal: float | None = None  # of the label mask, pixels
    reason: str | None = None
    skipped: bool = False
    label_error: str | None = None  # the label mask itself could not be read (an organizer problem)


@dataclass(frozen=True)
class ClsScore:
    """One classification row: the label, the valid predicted class (``None`` if there is none)
    and the probabilities the policy uses for AUC (``None``: not given; ``unusable``: given but
    not a list of finite numbers)."""

    label: int
    predicted: int | None = None
    probs: tuple[float, ...] | None = None
    unusable_probs: bool = False
    reason: str | None = None
    skipped: bool = False


@dataclass(frozen=True)
class DetScore:
    """One detection row: IoU with the label box, and the box and score when valid (for AP)."""

    iou: float = 0.0
    box: tuple[float, float, float, float] | None = None
    score: float | None = None
    reason: str | None = None
    skipped: bool = False


@dataclass(frozen=True)
class RegScore:
    """One landmark row: mean radial error in pixels, and the image diagonal."""

    mre: float = 0.0
    diagonal: float | None = None
    reason: str | None = None
    skipped: bool = False
    label_error: str | None = None  # the label row's image could not be read (an organizer problem)


RowScore = SegScore | ClsScore | DetScore | RegScore
