"""Preprocessing shared by training and inference.

An image becomes a square ``img_size x img_size`` float array, normalized with the ImageNet
mean/std. The resize is a plain stretch (no letterbox), so coordinates map as
``x_norm = x_pix / W`` and ``y_norm = y_pix / H`` of the original image, in both directions.

Torch-free: numpy and Pillow only.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def resize_image(image: np.ndarray, img_size: int) -> np.ndarray:
    """Resize an ``H x W x 3`` uint8 RGB image to ``img_size x img_size x 3`` uint8 (bilinear)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image.shape} {image.dtype}")
    if image.shape[0] == img_size and image.shape[1] == img_size:
        return np.ascontiguousarray(image)
    return np.asarray(Image.fromarray(image).resize((img_size, img_size), Image.BILINEAR))


def resize_mask(mask: np.ndarray, img_size: int) -> np.ndarray:
    """Resize a 2-D class-index mask to ``img_size x img_size`` with nearest neighbour (int64)."""
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    if mask.shape == (img_size, img_size):
        return mask.astype(np.int64)
    src = mask.astype(np.int32)
    return np.asarray(Image.fromarray(src, mode="I").resize((img_size, img_size), Image.NEAREST)).astype(np.int64)


def normalize(image01: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """``H x W x 3`` floats in [0, 1] → ``3 x H x W`` float32, mean/std normalized."""
    arr = (image01.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def preprocess(image: np.ndarray, img_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """An ``H x W x 3`` uint8 RGB image → float32 ``[3, img_size, img_size]`` network input.

    >>> preprocess(np.zeros((30, 40, 3), np.uint8), 64).shape
    (3, 64, 64)
    """
    return normalize(resize_image(image, img_size).astype(np.float32) / 255.0, mean, std)
