"""Training data: a sample record → (image tensor, target dict), per kind through a table.

Images are decoded with :func:`fmuia.dataset.images.read_image`, stretched to
``img_size x img_size`` exactly as :func:`fmuia.transforms.preprocess` does, then lightly
augmented. Labels move with the pixels: every geometric augmentation is one affine map in
normalized ``[0, 1]`` image coordinates applied to the image, the mask, the box corners and the
landmarks alike; when it would push a box or landmark out of the image it is not applied. Horizontal
flips happen only for tasks whose spec is ``mirror_safe`` (see :mod:`fmuia.tasks`: off for position
classes such as "left occiput anterior", which a mirror would silently relabel, and for ordered
landmarks whose order can be side-specific).

Each item is requested as ``(index, seed)``: augmentation draws from its own generator, so a run
is repeatable whatever the number of loader workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fmuia.dataset.images import read_image
from fmuia.dataset.masks import read_mask
from fmuia.dataset.schema import Sample
from fmuia.errors import SchemaError
from fmuia.tasks import TaskKind, TaskSpec
from fmuia.transforms import IMAGENET_MEAN, IMAGENET_STD, resize_image, resize_mask


@dataclass(frozen=True)
class AugmentConfig:
    """Light augmentation.

    Left-right flips (probability ``p_flip`` within a geometric augmentation) apply to samples of
    ``mirror_safe`` tasks only; ``flip_kinds``, when given, narrows them to those kinds (an empty
    set: no flips at all).
    """

    enabled: bool = True
    p_geometric: float = 0.5
    p_flip: float = 0.5
    scale: float = 0.1  # zoom factor drawn from [1 - scale, 1 + scale]
    translate: float = 0.05  # shift drawn from [-translate, translate] of the image size
    p_photometric: float = 0.8
    brightness: float = 0.1
    contrast: float = 0.15
    gamma: float = 0.2
    flip_kinds: frozenset[TaskKind] | None = None

    def may_flip(self, spec: TaskSpec) -> bool:
        """Whether samples of ``spec`` may be mirrored: the task is mirror-safe and its kind allowed."""
        return bool(spec.mirror_safe) and (self.flip_kinds is None or spec.kind in self.flip_kinds)


# An affine map of normalized coordinates: p_out = M @ p_in + c, with M diagonal (mx, my).
Affine = tuple[float, float, float, float]  # (mx, my, cx, cy)
IDENTITY: Affine = (1.0, 1.0, 0.0, 0.0)


def _apply_points(a: Affine, xy: np.ndarray) -> np.ndarray:
    mx, my, cx, cy = a
    return np.stack([mx * xy[..., 0] + cx, my * xy[..., 1] + cy], axis=-1)


def _inside(xy: np.ndarray) -> bool:
    return bool(np.all((xy >= 0.0) & (xy <= 1.0)))


def _grid(a: Affine, size: int) -> torch.Tensor:
    """The sampling grid of ``a`` for ``F.grid_sample`` (coordinates in [-1, 1], align_corners=False)."""
    mx, my, cx, cy = a
    # u = 2p - 1:  u_out = M u_in + (M·1 + 2c - 1)  →  u_in = (u_out - b) / M
    bx, by = mx + 2 * cx - 1, my + 2 * cy - 1
    theta = torch.tensor([[[1 / mx, 0.0, -bx / mx], [0.0, 1 / my, -by / my]]], dtype=torch.float32)
    return F.affine_grid(theta, [1, 1, size, size], align_corners=False)


def _warp(t: torch.Tensor, a: Affine, mode: str) -> torch.Tensor:
    """Warp ``[C, S, S]`` with ``a`` (zeros outside)."""
    grid = _grid(a, t.shape[-1])
    return F.grid_sample(t[None], grid, mode=mode, padding_mode="zeros", align_corners=False)[0]


# ---- labels per kind: load (normalized / resized), warp (None = the map would break the label), tensors


def _seg_load(s: Sample, size: int, hw: tuple[int, int]) -> np.ndarray:
    mask = read_mask(s.label_mask)
    if mask.shape != hw:
        raise SchemaError(f"{s.where}: mask {s.mask_path} is {mask.shape[1]}x{mask.shape[0]} but the image is {hw[1]}x{hw[0]}; expected the same size")
    top = int(mask.max()) if mask.size else 0
    if top >= s.task.num_classes or (mask.size and int(mask.min()) < 0):
        raise SchemaError(f"{s.where}: mask {s.mask_path} holds value {top}; expected class indices 0..{s.task.num_classes - 1}")
    return resize_mask(mask, size)


def _seg_warp(label: np.ndarray, a: Affine):
    t = torch.from_numpy(label.astype(np.float32))[None]
    return _warp(t, a, "nearest")[0].round().long().numpy()


def _seg_tensors(label: np.ndarray) -> dict[str, torch.Tensor]:
    return {"mask": torch.from_numpy(np.ascontiguousarray(label)).long()}


def _cls_load(s: Sample, size: int, hw: tuple[int, int]) -> int:
    return s.class_index


def _cls_tensors(label: int) -> dict[str, torch.Tensor]:
    return {"label": torch.tensor(label, dtype=torch.long)}


def _det_load(s: Sample, size: int, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    x0, y0, x1, y1 = s.box
    box = np.array([x0 / w, y0 / h, x1 / w, y1 / h], dtype=np.float64)
    return np.clip(box, 0.0, 1.0)


def _det_warp(label: np.ndarray, a: Affine):
    corners = _apply_points(a, label.reshape(2, 2))
    if not _inside(corners):
        return None
    lo, hi = corners.min(axis=0), corners.max(axis=0)  # a flip swaps x_min and x_max
    return np.concatenate([lo, hi])


def _det_tensors(label: np.ndarray) -> dict[str, torch.Tensor]:
    return {"box": torch.tensor(label, dtype=torch.float32)}


def _reg_load(s: Sample, size: int, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = hw
    pts = np.zeros((len(s.points), 2), dtype=np.float64)
    valid = np.zeros(len(s.points), dtype=bool)
    for i, p in enumerate(s.points):
        if p is not None:
            pts[i] = (p[0] / w, p[1] / h)
            valid[i] = True
    return np.clip(pts, 0.0, 1.0), valid


def _reg_warp(label, a: Affine):
    pts, valid = label
    out = _apply_points(a, pts)
    if not _inside(out[valid]):
        return None
    return np.where(valid[:, None], out, 0.0), valid


def _reg_tensors(label) -> dict[str, torch.Tensor]:
    pts, valid = label
    return {"points": torch.tensor(pts, dtype=torch.float32), "valid": torch.tensor(valid)}


@dataclass(frozen=True)
class KindData:
    load: Callable  # (sample, img_size, (H, W)) -> label in resized/normalized coordinates
    warp: Callable | None  # (label, affine) -> label | None; None = geometry-invariant label
    tensors: Callable  # label -> dict of tensors


KIND_DATA: dict[TaskKind, KindData] = {
    TaskKind.SEGMENTATION: KindData(_seg_load, _seg_warp, _seg_tensors),
    TaskKind.CLASSIFICATION: KindData(_cls_load, None, _cls_tensors),
    TaskKind.DETECTION: KindData(_det_load, _det_warp, _det_tensors),
    TaskKind.REGRESSION: KindData(_reg_load, _reg_warp, _reg_tensors),
}


def _photometric(img: torch.Tensor, cfg: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """Brightness, contrast and gamma on an image in [0, 1]."""
    gamma = float(np.exp(rng.uniform(-cfg.gamma, cfg.gamma)))
    img = img.clamp(0, 1) ** gamma
    mean = img.mean()
    img = (img - mean) * float(rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)) + mean
    img = img + float(rng.uniform(-cfg.brightness, cfg.brightness))
    return img.clamp(0, 1)


class TaskDataset(torch.utils.data.Dataset):
    """Labelled samples → ``(task_id, image [3,S,S] float32 normalized, target dict)``.

    Index with ``(i, seed)``; ``seed=None`` (or ``augment=None``) gives the plain preprocessing.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        img_size: int,
        augment: AugmentConfig | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        self.samples = list(samples)
        self.img_size = int(img_size)
        self.augment = augment if (augment is not None and augment.enabled) else None
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, None)
        s = self.samples[index]
        kd = KIND_DATA[s.kind]
        rgb = read_image(s.image_file)
        label = kd.load(s, self.img_size, rgb.shape[:2])
        img = torch.from_numpy(np.array(resize_image(rgb, self.img_size))).permute(2, 0, 1).float().div_(255.0)
        if self.augment is not None and seed is not None:
            img, label = self._augment(img, label, s.task, kd, np.random.default_rng(seed))
        img = (img - self.mean) / self.std
        return s.task_id, img.contiguous(), kd.tensors(label)

    def _augment(self, img, label, spec: TaskSpec, kd: KindData, rng: np.random.Generator):
        cfg = self.augment
        if rng.random() < cfg.p_geometric:
            flip = -1.0 if (cfg.may_flip(spec) and rng.random() < cfg.p_flip) else 1.0
            s = float(rng.uniform(1 - cfg.scale, 1 + cfg.scale))
            tx, ty = (float(v) for v in rng.uniform(-cfg.translate, cfg.translate, size=2))
            a: Affine = (s * flip, s, 0.5 - 0.5 * s * flip + tx, 0.5 - 0.5 * s + ty)
            new = kd.warp(label, a) if kd.warp is not None else label
            if new is not None:
                img, label = _warp(img, a, "bilinear"), new
        if rng.random() < cfg.p_photometric:
            img = _photometric(img, cfg, rng)
        return img, label


def collate(batch):
    """Stack one task's items: ``(task_id, images [B,3,S,S], {name: [B,...]})``."""
    task_ids = {b[0] for b in batch}
    if len(task_ids) != 1:
        raise RuntimeError(f"a batch must hold one task, got {sorted(task_ids)}")
    images = torch.stack([b[1] for b in batch])
    targets = {k: torch.stack([b[2][k] for b in batch]) for k in batch[0][2]}
    return batch[0][0], images, targets
