"""Image decoding, following what the official tools see: ``cv2.imread(path, cv2.IMREAD_COLOR)``.

One rule governs every reader of data-root images (schema reader, check, train, predict, visualize,
evaluate), implemented with Pillow (OpenCV is not a dependency) and verified against OpenCV by
``tests/test_images.py``:

- **Orientation.** The EXIF orientation tag (1..8) is applied, as OpenCV does for JPEG, PNG (an
  ``eXIf`` chunk anywhere in the file, also after the image data), WebP and TIFF. Sizes are
  reported *after* it, so orientations 5..8 swap width and height. Only real EXIF counts: Pillow
  also honours XMP ``tiff:Orientation`` and PNG "Raw profile type exif" text, OpenCV does not, so
  neither do we; invalid values (0, 9, ...) are ignored like OpenCV ignores them. A TIFF with
  orientation 5..8 is refused: OpenCV 5.0's ``imread`` fails on it (``imdecode`` does not).
- **Depth.** 16-bit samples keep their high byte (``v >> 8``), never a min-max rescale; 1/2/4-bit
  grey is scaled to 0..255. 32-bit integer or float TIFFs are refused (OpenCV returns ``None``).
- **Channels.** Grey, grey+alpha and palette images become three equal or palette-colour channels;
  alpha is dropped, not composited (a TIFF with unassociated alpha is premultiplied, as libtiff does
  for OpenCV); CMYK JPEGs use OpenCV's CMYK→RGB formula.
- **Completeness.** A PNG whose chunk structure libpng refuses is refused: one that ends before its
  ``IEND`` chunk, an unknown critical chunk, and (full reads) a bad CRC in IDAT/PLTE — Pillow alone
  would accept these, OpenCV returns ``None``. Deliberately stricter than OpenCV: a truncated JPEG
  (``cv2.imread`` returns it grey-filled after the cut, with a warning) and a PNG with a bad CRC in
  an ancillary chunk before the image data (OpenCV skips the chunk, Pillow refuses the file).

:func:`read_image` returns RGB (``cv2.imread(...)[..., ::-1]``). Every reader applies the pixel cap
:data:`MAX_PIXELS` against decompression bombs. Masks: :mod:`fmuia.dataset.masks`.

Known remaining difference: a 16-bit *colour* TIFF is rounded by libtiff (``round(v / 257)``) but
truncated here (``v >> 8``), which can differ by 1 grey level.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from typing import BinaryIO

import numpy as np
from PIL import Image

from fmuia.errors import UnsafeInputError

__all__ = ["MAX_PIXELS", "image_size", "read_image", "image_orientation"]

# Ultrasound frames are at most a few megapixels; anything far beyond is a decompression bomb.
MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = None  # we apply our own cap, with a clear message

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK = struct.Struct(">I4s")
_MAX_EXIF_BYTES = 1 << 20  # an eXIf chunk larger than this is not read (orientation 1)
_EXIF_ORIENTATION = 0x0112
_TIFF_ORIENTATION = 274
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def _open(source: str | os.PathLike | bytes, name: str) -> Image.Image:
    img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    w, h = img.size
    if w * h > MAX_PIXELS:
        img.close()
        raise UnsafeInputError(f"{name}: {w}x{h} pixels exceeds the cap of {MAX_PIXELS:,} pixels")
    return img


# ---- EXIF orientation ------------------------------------------------------------------------------

def _orientation_from_exif(raw: bytes | None) -> int:
    """The orientation tag of raw EXIF bytes (``Exif\\0\\0`` prefix or a bare TIFF header); 1 if absent or invalid."""
    if not raw:
        return 1
    try:
        exif = Image.Exif()
        exif.load(raw)
        value = exif.get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - malformed EXIF: OpenCV ignores it too
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _png_walk(fh: BinaryIO, name: str, verify: bool = False) -> tuple[int, int, int]:
    """``(width, height, orientation)`` of a PNG from its chunk list, without decoding pixels.

    Raises ``OSError`` where libpng (and so OpenCV's ``imread``) refuses the file's structure: a
    file that ends before its ``IEND`` chunk (truncated), a first chunk other than a valid IHDR
    (CRC checked), an invalid chunk type, an unknown critical chunk, no image data, a palette
    image without its palette. Every chunk header is visited (bodies are skipped), so an ``eXIf``
    chunk after the image data counts too, as it does for OpenCV. With ``verify`` (a full read)
    the CRCs of the chunks libpng checks strictly (IDAT, a palette image's PLTE) are verified too.
    """
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(0)
    if fh.read(8) != _PNG_SIGNATURE:
        raise OSError(f"{name}: not a PNG file")
    head = fh.read(8 + 13 + 4)
    if len(head) < 25 or head[4:8] != b"IHDR" or _CHUNK.unpack(head[:8])[0] != 13:
        raise OSError(f"{name}: broken PNG file (the first chunk is not IHDR)")
    if zlib.crc32(head[4:21]) != struct.unpack(">I", head[21:25])[0]:
        raise OSError(f"{name}: broken PNG file (bad CRC in the IHDR chunk)")
    width, height = struct.unpack(">II", head[8:16])
    colour = head[17]
    pos = 8 + 8 + 13 + 4
    orientation = None
    palette = idat = False
    while True:
        if pos + 8 > size:
            raise OSError(f"{name}: truncated PNG file (it ends before its IEND chunk)")
        fh.seek(pos)
        length, kind = _CHUNK.unpack(fh.read(8))
        end = pos + 8 + length + 4
        if not kind.isalpha() or not kind.isascii():
            raise OSError(f"{name}: broken PNG file (invalid chunk type {kind!r} at byte {pos})")
        if end > size:
            raise OSError(f"{name}: truncated PNG file (chunk {kind.decode('ascii')} runs past the end of the file)")
        if kind == b"IEND":
            if not idat:
                raise OSError(f"{name}: broken PNG file (no image data)")
            break
        critical = kind[0] < 0x61  # upper-case first letter
        if critical and kind not in (b"IDAT", b"PLTE", b"IHDR"):
            raise OSError(f"{name}: broken PNG file (unknown critical chunk {kind.decode('ascii')})")
        if kind == b"IHDR":
            raise OSError(f"{name}: broken PNG file (a second IHDR chunk)")
        if kind == b"IDAT" and colour == 3 and not palette:
            raise OSError(f"{name}: broken PNG file (a palette image without a PLTE chunk before its image data)")
        check = kind == b"eXIf" and orientation is None and length <= _MAX_EXIF_BYTES
        check_crc = check or (verify and (kind == b"IDAT" or (kind == b"PLTE" and colour == 3)))
        if check_crc:
            body = fh.read(length)
            ok = zlib.crc32(kind + body) == struct.unpack(">I", fh.read(4))[0]
            if kind == b"eXIf":
                orientation = _orientation_from_exif(body) if ok else None  # bad CRC: skipped, as libpng does
            elif not ok:
                raise OSError(f"{name}: broken PNG file (bad CRC in a {kind.decode('ascii')} chunk)")
        idat = idat or kind == b"IDAT"
        palette = palette or kind == b"PLTE"
        pos = end
    return width, height, orientation or 1


def _orientation(img: Image.Image, png_orientation: int | None, name: str) -> int:
    """The EXIF orientation OpenCV applies to an opened image (a PNG's comes from :func:`_png_walk`)."""
    if img.format == "PNG":
        return png_orientation or 1
    if img.format == "TIFF":
        value = _tiff_orientation(img)
        if value >= 5:  # imread fails ("Internal imread issue") on these in OpenCV 5.0
            raise OSError(f"{name}: TIFF with EXIF orientation {value}: OpenCV's imread cannot "
                          "read it; save it upright, without the orientation tag")
        return value
    return _orientation_from_exif(img.info.get("exif"))


def _tiff_orientation(img: Image.Image) -> int:
    tags = getattr(img, "tag_v2", None)
    value = tags.get(_TIFF_ORIENTATION, 1) if tags is not None else 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _png_header(fh: BinaryIO, name: str, verify: bool = False) -> tuple[int, int, int] | None:
    """:func:`_png_walk` for a PNG file, ``None`` for another format; ``fh`` is rewound."""
    is_png = fh.read(8) == _PNG_SIGNATURE
    out = _png_walk(fh, name, verify) if is_png else None
    fh.seek(0)
    return out


def _swaps(orientation: int) -> bool:
    return orientation >= 5


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation ``1..8`` to an ``H x W (x C)`` array (the TIFF/EXIF definition)."""
    if orientation <= 1 or orientation > 8:
        return arr
    if orientation == 2:
        out = arr[:, ::-1]
    elif orientation == 3:
        out = arr[::-1, ::-1]
    elif orientation == 4:
        out = arr[::-1]
    else:
        t = arr.swapaxes(0, 1)
        out = {5: t, 6: t[:, ::-1], 7: t[::-1, ::-1], 8: t[::-1]}[orientation]
    return np.ascontiguousarray(out)


def image_orientation(source: str | os.PathLike | bytes) -> int:
    """The EXIF orientation (1..8) OpenCV applies when it reads this file (a path, or its bytes);
    1 when there is none. Raises like :func:`image_size` for a file OpenCV cannot read."""
    name = "<image>" if isinstance(source, bytes) else str(source)
    with (io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")) as fh:
        png = _png_header(fh, name)
        with _open(fh, name) as img:
            return _orientation(img, png[2] if png else None, name)


# ---- public readers --------------------------------------------------------------------------------

def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` as ``cv2.imread`` would return the image: after EXIF orientation.

    Reads headers only (a PNG's chunk list, other formats' headers through Pillow's lazy open);
    raises ``OSError`` (``PIL.UnidentifiedImageError`` for a file that is not an image, or a
    truncated PNG) and :class:`~fmuia.errors.UnsafeInputError` over :data:`MAX_PIXELS`."""
    name = str(path)
    with open(path, "rb") as fh:
        png = _png_header(fh, name)
        if png is not None:
            w, h, orientation = png
            if w == 0 or h == 0:
                raise OSError(f"{name}: broken PNG file ({w}x{h} pixels)")
            if w * h > MAX_PIXELS:
                raise UnsafeInputError(f"{name}: {w}x{h} pixels exceeds the cap of {MAX_PIXELS:,} pixels")
        else:
            with _open(fh, name) as img:
                (w, h), orientation = img.size, _orientation(img, None, name)
    return (h, w) if _swaps(orientation) else (w, h)


def _to_rgb(img: Image.Image, name: str) -> np.ndarray:
    """Pixels as ``H x W x 3`` uint8 RGB, the way OpenCV's ``IMREAD_COLOR`` converts them (no orientation)."""
    mode, fmt = img.mode, img.format
    if mode in _SIXTEEN_BIT or (mode == "I" and fmt != "TIFF"):
        grey = (np.clip(np.asarray(img), 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("I", "F") or mode.startswith("I;"):
        raise OSError(f"{name}: {fmt} image with {mode!r} samples; OpenCV cannot read it as an 8-bit image")
    if mode == "CMYK":  # OpenCV: R = K' - (C * K' >> 8) with K' = 255 - K (Pillow's convert differs by 1)
        cmyk = np.asarray(img).astype(np.int32)
        k = 255 - cmyk[..., 3:4]
        return (k - ((cmyk[..., :3] * k) >> 8)).astype(np.uint8)
    if fmt == "TIFF" and mode == "RGBA":  # libtiff premultiplies unassociated alpha for OpenCV
        rgba = np.asarray(img).astype(np.uint32)
        return ((rgba[..., :3] * rgba[..., 3:4] + 127) // 255).astype(np.uint8)
    if mode == "RGB":
        return np.asarray(img)
    return np.asarray(img.convert("RGB"))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image as ``H x W x 3`` uint8 RGB: ``cv2.imread(path, cv2.IMREAD_COLOR)[..., ::-1]``.

    Raises ``OSError`` where OpenCV would return ``None`` (not an image, truncated, unsupported
    sample type), :class:`~fmuia.errors.UnsafeInputError` over :data:`MAX_PIXELS`; a missing file
    raises ``FileNotFoundError``."""
    name = str(path)
    with open(path, "rb") as fh:
        png = _png_header(fh, name, verify=True)  # refuses what libpng refuses: truncated, bad CRCs, ...
        with _open(fh, name) as img:
            orientation = _orientation(img, png[2] if png else None, name)
            img.load()
            if img.format == "TIFF" and _tiff_orientation(img) != orientation:
                orientation = 1  # Pillow's libtiff decoder has applied it already (and dropped the tag)
            arr = _to_rgb(img, name)
    return _orient(arr, orientation)
