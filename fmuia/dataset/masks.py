"""Mask files: one module for every way a mask is read or written (no torch).

- :func:`decode_mask` — class indices as Pillow gives them (palette masks by index): labels,
  strict scoring, visualisation.
- :func:`read_mask_like_opencv` — what the official scorer sees: ``cv2.imread(path,
  cv2.IMREAD_GRAYSCALE)`` emulated with Pillow (8-bit grey as is; 1/2/4-bit grey scaled to 0..255,
  so a 1-bit mask becomes 0/255; 16-bit grey → high byte; RGB(A) and palette PNGs → libpng's grey
  conversion ``(9797 R + 19234 G + 3737 B) >> 15``, so a palette mask gives the *colour's* grey
  level, not the index; colour JPEG → its luma channel; other colour formats → OpenCV's
  ``cvtColor`` weights). ``None`` where ``imread`` would return ``None``.
- :func:`inspect_mask` — the summary ``fmuia check`` rules need (format, mode, size, largest value,
  whether a palette is the grey identity).
- :func:`encode_mask_png` / :func:`write_mask_png` — the writer every prediction mask goes through.

Every reader applies the pixel cap of :data:`fmuia.dataset.images.MAX_PIXELS` before decoding.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fmuia._atomic import write_bytes
from fmuia.dataset import images as _images  # the module, so that its pixel cap is read at call time
from fmuia.dataset.images import _open
from fmuia.errors import UnsafeInputError

__all__ = ["DecodedMask", "decode_mask", "read_mask", "read_mask_like_opencv", "MaskInfo", "inspect_mask",
           "encode_mask_png", "write_mask_png", "SINGLE_CHANNEL_MODES"]

# Pillow modes of single-channel masks (class indices as stored); RGB(A) and others are not.
SINGLE_CHANNEL_MODES = frozenset({"L", "P", "1", "I;16", "I;16B", "I;16L", "I"})
_INDEX_MODES = {"L", "P"}  # 8-bit single channel: grey levels or palette indices


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
        if mode in SINGLE_CHANNEL_MODES:
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
    write_bytes(Path(path), encode_mask_png(mask))


# ---- what the official scorer sees ---------------------------------------------------------------

_LIBPNG = (9797, 19234, 3737)  # png_set_rgb_to_gray(0.299, 0.587) in 1/32768, truncating
_CVT = (4899, 9617, 1868)  # cv::cvtColor RGB2GRAY in 1/16384, rounding


def _gray_libpng(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    out = ((_LIBPNG[0] * r + _LIBPNG[1] * g + _LIBPNG[2] * b) >> 15).astype(np.uint8)
    equal = (r == g) & (g == b)
    return np.where(equal, rgb[..., 0], out)


def _gray_cvt(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((_CVT[0] * r + _CVT[1] * g + _CVT[2] * b + 8192) >> 14).astype(np.uint8)


def read_mask_like_opencv(data: bytes) -> np.ndarray | None:
    """Decode mask bytes the way ``cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)`` would.

    Returns a 2-D uint8 array, or ``None`` when the data does not decode (as OpenCV returns
    ``None``) or exceeds the pixel cap of :data:`fmuia.dataset.images.MAX_PIXELS`.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > _images.MAX_PIXELS:
                return None
            fmt = img.format
            if fmt == "JPEG":
                if img.mode != "L":
                    img.draft("L", img.size)  # libjpeg's own greyscale output: the Y channel
                img = ImageOps.exif_transpose(img)
                arr = np.asarray(img.convert("L") if img.mode != "L" else img)
                return np.ascontiguousarray(arr)
            img.load()
            mode = img.mode
            if mode == "1":
                return np.asarray(img, dtype=np.uint8) * np.uint8(255)
            if mode == "L":
                return np.ascontiguousarray(np.asarray(img))
            if mode in ("LA", "La"):
                return np.ascontiguousarray(np.asarray(img)[..., 0])
            if mode.startswith("I;16"):
                return (np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8)
            if mode in ("I", "F"):
                return np.clip(np.asarray(img), 0, 255).astype(np.uint8)
            rgb = np.asarray(img.convert("RGB"))
            return _gray_libpng(rgb) if fmt == "PNG" else _gray_cvt(rgb)
    except Exception:  # noqa: BLE001 - anything that fails to decode is "unreadable", like imread
        return None


# ---- what the validator needs ---------------------------------------------------------------------

@dataclass(frozen=True)
class MaskInfo:
    """What the rules need from a decoded mask file (the pixels are decoded, then dropped)."""

    format: str | None  # "PNG", "JPEG", ...
    mode: str  # Pillow mode: "L", "P", "RGB", "I;16", ...
    size: tuple[int, int]  # (width, height)
    max_value: int | None  # largest class index (single-channel 8-bit masks only)
    palette_grey: bool = True  # mode P: palette entry i is grey level i for every index up to max_value


def inspect_mask(data: bytes, name: str) -> MaskInfo:
    """Decode a mask once and summarise it; raises :class:`UnsafeInputError` over the pixel cap,
    and whatever Pillow raises for an undecodable file."""
    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        if w * h > _images.MAX_PIXELS:
            raise UnsafeInputError(f"{name}: {w}x{h} pixels exceeds the cap of {_images.MAX_PIXELS:,} pixels")
        img.load()  # full decode: catches truncated or corrupt files
        top = None
        if img.mode in _INDEX_MODES and w * h:
            top = int(np.frombuffer(img.tobytes(), np.uint8).max())  # P: palette indices; faster than getextrema
        grey = True
        if img.mode == "P" and top is not None:
            grey = _palette_is_identity_grey(img.getpalette() or [], top)
        return MaskInfo(img.format, img.mode, (w, h), top, grey)


def _palette_is_identity_grey(palette: list[int], top: int) -> bool:
    """True when a greyscale read of the palette gives back the indices 0..top.

    The official scorer reads masks with ``cv2.imread(..., IMREAD_GRAYSCALE)``, which maps a
    palette PNG through its colours; only a grey identity palette keeps the class indices."""
    rgb = np.zeros((256, 3), np.float64)
    entries = np.asarray(palette[: 3 * 256], np.float64).reshape(-1, 3)
    rgb[: len(entries)] = entries
    lum = np.rint(rgb @ np.array([0.299, 0.587, 0.114]))
    return bool(np.array_equal(lum[: top + 1], np.arange(top + 1)))
