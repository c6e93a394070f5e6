"""Image and mask decoding (Pillow), with a pixel cap against decompression bombs."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fmuia.errors import UnsafeInputError

# Ultrasound frames are at most a few megapixels; anything far beyond is a decompression bomb.
MAX_PIXELS = 64_000_000
LOSSLESS_FORMATS = {"PNG"}
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


@dataclass(frozen=True)
class DecodedMask:
    """A decoded mask plus what the validator needs to know about the file."""

    array: np.ndarray  # H x W, integer class indices
    format: str | None  # "PNG", "JPEG", ...
    mode: str  # Pillow mode of the file: "L", "P", "RGB", "I;16", ...


def decode_mask(source: str | os.PathLike | bytes, name: str | None = None) -> DecodedMask:
    """Decode a class-index mask. Single-channel files give their values; for RGB(A) files the
    first channel is used (``mode`` tells the caller it was not single-channel)."""
    label = name or (str(source) if not isinstance(source, bytes) else "<mask>")
    with _open(source, label) as img:
        fmt, mode = img.format, img.mode
        if mode in ("L", "P", "1", "I", "I;16", "I;16B", "I;16L"):
            arr = np.asarray(img)
        elif mode == "LA":
            arr = np.asarray(img)[..., 0]
        else:
            arr = np.asarray(img.convert("RGB"))[..., 0]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    return DecodedMask(np.ascontiguousarray(arr), fmt, mode)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Decode a class-index mask file as a 2-D integer array."""
    return decode_mask(path).array


def encode_mask_png(mask: np.ndarray) -> bytes:
    """Encode a 2-D class-index array (values 0..255) as an 8-bit single-channel PNG."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError("mask values must lie in 0..255")
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8), mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_mask_png(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a class-index mask as an 8-bit PNG, atomically."""
    from fmuia._atomic import write_bytes

    write_bytes(Path(path), encode_mask_png(mask))
