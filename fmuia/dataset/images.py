"""Image decoding (Pillow), with a pixel cap against decompression bombs. Masks: :mod:`fmuia.dataset.masks`."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from fmuia.errors import UnsafeInputError

# Ultrasound frames are at most a few megapixels; anything far beyond is a decompression bomb.
MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = None  # we apply our own cap, with a clear message


def _open(source: str | os.PathLike | bytes, name: str) -> Image.Image:
    img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise UnsafeInputError(f"{name}: {w}x{h} pixels exceeds the cap of {MAX_PIXELS:,} pixels")
    return img


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` from the file header, without decoding pixels."""
    with _open(path, str(path)) as img:
        return img.size


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image as ``H x W x 3`` uint8 RGB (grey, palette, 16-bit and alpha are converted)."""
    with _open(path, str(path)) as img:
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float64)
            top = arr.max() or 1.0
            arr = (arr / top * 255.0).round().astype(np.uint8)
            return np.repeat(arr[..., None], 3, axis=2)
        return np.asarray(img.convert("RGB"))
