"""Mask files: one module for every way a mask is read or written (no torch, no OpenCV).

- :func:`decode_mask` — class indices as Pillow gives them (palette masks by index): labels.
- :func:`read_prediction_mask` — THE reader of prediction mask bytes, shared by ``fmuia check``,
  strict and official scoring and the visualisation: Pillow's full decode (the class indices as
  stored) and what the official scorer's ``cv2.imread(path, cv2.IMREAD_GRAYSCALE)`` returns,
  emulated without OpenCV (a PNG chunk walk decides whether libpng reads the file at all: a
  missing IEND, a bad CRC in a critical chunk, an unknown critical chunk... make ``imread`` return
  ``None``; then 8-bit grey as is; 1/2/4-bit grey scaled to 0..255, so a 1-bit mask becomes
  0/255; 16-bit grey → high byte; RGB(A) and palette PNGs → libpng's grey conversion
  ``(9797 R + 19234 G + 3737 B) >> 15``, so a palette mask gives the *colour's* grey level, not
  the index; EXIF orientation applied; colour JPEG → its luma channel; other colour formats →
  OpenCV's ``cvtColor`` weights). A file either reader refuses is unreadable: the stricter decides.
- :func:`prediction_mask_problems` — the one rule set a prediction mask must pass (check: each
  problem an error; strict scoring: any problem scores the row the worst, with it as the reason).
- :func:`read_mask_like_opencv` — the OpenCV view alone (official scoring); ``None`` where
  ``imread`` would return ``None``.
- :func:`encode_mask_png` / :func:`write_mask_png` — the writer every prediction mask goes through.

Every reader applies the pixel cap of :data:`fmuia.dataset.images.MAX_PIXELS` before decoding.
"""

from __future__ import annotations

import io
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fmuia._atomic import write_bytes
from fmuia.dataset import images as _images  # the module, so that its pixel cap is read at call time
from fmuia.dataset.images import _open
from fmuia.errors import UnsafeInputError

__all__ = ["DecodedMask", "decode_mask", "read_mask", "read_mask_like_opencv", "MaskInfo", "inspect_mask",
           "PredictionMask", "read_prediction_mask", "prediction_mask_problems",
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


# ---- prediction masks: one reader, the stricter of Pillow and OpenCV decides ---------------------

_LIBPNG = (9797, 19234, 3737)  # png_set_rgb_to_gray(0.299, 0.587) in 1/32768, truncating
_CVT = (4899, 9617, 1868)  # cv::cvtColor RGB2GRAY in 1/16384, rounding
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # colour type -> bit depths
# EXIF orientation -> the transpose that undoes it (what OpenCV's imread applies, PNG included)
_EXIF_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                   5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                   8: Image.Transpose.ROTATE_90}


def _reciprocal(g: int) -> int:
    return int(math.floor(1e10 / g + 0.5))  # png_reciprocal, in 1/100000 units


def _gamma_table(g: int) -> np.ndarray:
    """png_build_8bit_table: ``floor(255 (i/255)^(g/1e5) + .5)``, 0 and 255 kept."""
    i = np.arange(256, dtype=np.float64)
    t = np.floor(255.0 * (i / 255.0) ** (g * 1e-5) + 0.5)
    t[0], t[255] = 0, 255
    return t.astype(np.int64)


def _gray_libpng(rgb: np.ndarray, gamma: int | None = None) -> np.ndarray:
    """libpng's ``png_do_rgb_to_gray`` with OpenCV's weights: truncating integer weights, or, when
    the file declares a significant gamma (gAMA, sRGB), in linear light through libpng's 8-bit
    gamma tables, rounded. Equal channels are kept as they are."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    if gamma is None:
        out = ((_LIBPNG[0] * r + _LIBPNG[1] * g + _LIBPNG[2] * b) >> 15).astype(np.uint8)
    else:
        to_1, from_1 = _gamma_table(_reciprocal(gamma)), _gamma_table(_reciprocal(_reciprocal(gamma)))
        out = from_1[(_LIBPNG[0] * to_1[r] + _LIBPNG[1] * to_1[g] + _LIBPNG[2] * to_1[b] + 16384) >> 15].astype(np.uint8)
    equal = (r == g) & (g == b)
    return np.where(equal, rgb[..., 0], out)


def _gray_cvt(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((_CVT[0] * r + _CVT[1] * g + _CVT[2] * b + 8192) >> 14).astype(np.uint8)


@dataclass(frozen=True)
class _PngLayout:
    """What libpng (as OpenCV drives it) makes of a PNG's chunk structure, before any pixel is decoded."""

    error: str | None  # why OpenCV's imread would return None; None when the structure is fine
    size: tuple[int, int] | None = None  # (width, height) from IHDR
    bit_depth: int | None = None
    palette: bytes | None = None  # PLTE of a palette image
    kept: tuple[tuple[int, int], ...] = ()  # byte ranges of the chunks OpenCV's read depends on
    gamma: int | None = None  # the file's gamma (1/100000) where libpng's colour-to-grey then works in linear light
    orientation: int = 1  # EXIF orientation of the first valid eXIf chunk, wherever it stands (OpenCV applies it)

    def essential(self, data: bytes) -> bytes:
        """The PNG reduced to what OpenCV's greyscale read depends on: IHDR, a palette image's
        PLTE, eXIf (orientation), the first run of IDAT chunks (libpng decodes no other), IEND."""
        return _PNG_SIGNATURE + b"".join(data[a:b] for a, b in self.kept)


def _png_layout(data: bytes) -> _PngLayout:
    """Walk a PNG's chunks as libpng does when OpenCV reads it (checked against ``cv2.imdecode``
    in ``tests/test_hostile_predictions.py``).

    OpenCV returns ``None`` for: a missing or incomplete IEND chunk (a truncated file), a first
    chunk other than IHDR, an invalid IHDR, a bad CRC in IHDR, in any IDAT or (palette images) in
    PLTE, an unknown critical chunk, an invalid chunk type, no image data, a palette image
    without a valid PLTE before its image data. Ancillary chunks never stop it (one with a bad
    CRC or bad contents is skipped with a warning), nor a bad IEND CRC or anything after IEND.
    Whether the pixels decode (zlib stream, filters, enough data in the first run of IDAT
    chunks) is left to the decoder.
    """
    view = memoryview(data)
    n, pos = len(data), len(_PNG_SIGNATURE)
    size = depth = colour = None
    palette: bytes | None = None
    kept: list[tuple[int, int]] = []
    idat = 0  # 0: none yet; 1: in the first run of IDAT chunks; 2: after it
    gamma = srgb = plte = None  # gAMA and sRGB count before PLTE and IDAT only ("out of place" after)
    orientation = None  # the rule of fmuia.dataset.images.image_orientation: the first eXIf with a good CRC

    def fail(msg: str) -> _PngLayout:
        return _PngLayout(msg, size, depth, palette)

    while True:
        if pos + 8 > n:
            return fail("the file ends before its IEND chunk (truncated)")
        length = int.from_bytes(data[pos : pos + 4], "big")
        ctype = data[pos + 4 : pos + 8]
        name = ctype.decode("latin-1")
        if not ctype.isalpha():
            return fail(f"invalid chunk type {name!r} at byte {pos}")
        if length > 0x7FFFFFFF:
            return fail(f"chunk {name} has an invalid length {length}")
        end = pos + 12 + length
        if end > n:
            return fail(f"the file ends inside its {name} chunk, before IEND (truncated)")
        crc_ok = zlib.crc32(view[pos + 4 : end - 4]) == int.from_bytes(data[end - 4 : end], "big")
        if ctype == b"eXIf" and crc_ok and orientation is None and length <= _images._MAX_EXIF_BYTES:
            orientation = _images._orientation_from_exif(bytes(view[pos + 8 : end - 4]))
        if idat == 1 and ctype != b"IDAT":
            idat = 2
        if size is None:
            if ctype != b"IHDR":
                return fail(f"the first chunk is {name}, not IHDR")
            if length != 13:
                return fail(f"the IHDR chunk has {length} bytes, not 13")
            if not crc_ok:
                return fail("bad CRC in the IHDR chunk")
            w, h = int.from_bytes(data[pos + 8 : pos + 12], "big"), int.from_bytes(data[pos + 12 : pos + 16], "big")
            depth, colour, comp, filt, inter = data[pos + 16 : pos + 21]
            if not (0 < w <= 0x7FFFFFFF and 0 < h <= 0x7FFFFFFF) or depth not in _PNG_DEPTHS.get(colour, ()) \
                    or comp != 0 or filt != 0 or inter not in (0, 1):
                return fail(f"invalid IHDR ({w}x{h}, bit depth {depth}, colour type {colour}, "
                            f"compression {comp}, filter {filt}, interlace {inter})")
            size = (w, h)
            kept.append((pos, end))
        elif ctype == b"IHDR":
            return fail("a second IHDR chunk")
        elif ctype == b"IEND":
            if not idat:
                return fail("no IDAT chunk (no image data)")
            problem = _inflate_problem(view, [(a + 8, b - 4) for a, b in kept if data[a + 4 : a + 8] == b"IDAT"],
                                       _raw_size(size, depth, colour, inter))
            if problem is not None:
                return fail(problem)
            kept.append((pos, end))
            g = 45455 if srgb else gamma  # an sRGB chunk means gamma 1/2.2 whatever gAMA says
            if g is not None and 95000 <= g <= 105000:
                g = None  # png_gamma_significant: no gamma tables, the plain weights
            return _PngLayout(None, size, depth, palette, tuple(kept), g, orientation or 1)
        elif ctype == b"IDAT":
            if not crc_ok:
                return fail("bad CRC in an IDAT chunk")
            if colour == 3 and palette is None:
                return fail("a palette image without a PLTE chunk before its image data")
            if idat < 2:
                idat = 1
                kept.append((pos, end))
        elif ctype == b"PLTE" and colour == 3:
            if not crc_ok:
                return fail("bad CRC in the PLTE chunk")
            if idat or palette is not None:
                return fail("a PLTE chunk after the image data, or a second one")
            if length % 3 or not 3 <= length <= 768:
                return fail(f"a PLTE chunk of {length} bytes (expected 3 per entry, 1 to 256 entries)")
            palette = bytes(view[pos + 8 : pos + 8 + length])
            kept.append((pos, end))
        elif ctype[0] < 0x61 and ctype != b"PLTE":  # an upper-case first letter: a critical chunk
            return fail(f"unknown critical chunk {name!r}")
        elif ctype == b"eXIf" and crc_ok and not idat:
            kept.append((pos, end))
        elif ctype == b"gAMA" and crc_ok and not idat and not plte and length == 4 and gamma is None:
            gamma = int.from_bytes(data[pos + 8 : pos + 12], "big") or None
        elif ctype == b"sRGB" and crc_ok and not idat and not plte and length == 1:
            srgb = True
        if ctype == b"PLTE":
            plte = True
        pos = end


_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples per pixel by PNG colour type
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _raw_size(size: tuple[int, int], depth: int, colour: int, interlace: int) -> int:
    """Bytes of filtered image data (a filter byte per row) a PNG's IHDR asks for."""
    w, h = size
    bits = depth * _CHANNELS[colour]
    if not interlace:
        return h * (1 + (w * bits + 7) // 8)
    total = 0
    for x0, y0, dx, dy in _ADAM7:
        cols, rows = max(0, (w - x0 + dx - 1) // dx), max(0, (h - y0 + dy - 1) // dy)
        if cols and rows:
            total += rows * (1 + (cols * bits + 7) // 8)
    return total


_IDAT_READ_SIZE = 8192  # libpng's PNG_IDAT_READ_SIZE: how much of an IDAT chunk it hands zlib at once


def _inflates_cleanly(view: memoryview, idat: list[tuple[int, int]], expected: int) -> bool:
    """The common case in one call: the IDAT data inflates without error to exactly the rows and
    the stream ends there. libpng accepts such data however it feeds it to zlib, so the piecewise
    emulation below is needed only otherwise. Output is bounded by ``expected + 1`` (no bomb)."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(b"".join(view[a:b] for a, b in idat), expected + 1)
    except zlib.error:
        return False
    return d.eof and len(out) == expected


def _inflate_problem(view: memoryview, idat: list[tuple[int, int]], expected: int) -> str | None:
    """Inflate the first run of IDAT chunks as libpng's sequential reader does
    (``png_read_IDAT_data``: input in pieces of at most 8 KiB, the rows first, then a check of
    what follows); ``None`` when libpng accepts it. The inflated data is not kept.

    While the rows are read, a zlib error, a stream that ends early or a run of IDAT chunks that
    ends first is fatal ("Not enough image data"). Once they are complete, libpng goes on
    inflating: a zlib error there is only a warning, and so is extra data followed by the end of
    the stream; but needing more input when the run of IDAT chunks is over is fatal.
    """
    if _inflates_cleanly(view, idat, expected):
        return None

    def pieces():
        for a, b in idat:
            for i in range(a, b, _IDAT_READ_SIZE):
                yield view[i : min(b, i + _IDAT_READ_SIZE)]

    d = zlib.decompressobj()
    produced = 0
    feed = pieces()
    buf: bytes | memoryview = b""
    while produced < expected:  # the rows
        if not buf:
            buf = next(feed, b"")
            if not buf:
                return "not enough image data (the IDAT chunks end before the image does)"
        try:
            out = d.decompress(buf, min(expected - produced, 1 << 20))
        except zlib.error as exc:
            return f"the image data does not inflate ({exc})"
        produced += len(out)
        buf = d.unconsumed_tail
        if d.eof:
            return None if produced >= expected else "not enough image data (the zlib stream ends early)"
    extra = 0
    while True:  # the check after the rows (png_read_finish_IDAT)
        if not buf:
            buf = next(feed, b"")
            if not buf:
                return "the IDAT chunks end before their zlib stream does"
        try:
            out = d.decompress(buf, 1024)
        except zlib.error:
            return None  # a warning once the rows are complete
        buf = d.unconsumed_tail
        extra += len(out)
        if d.eof or not extra:
            return None  # the end of the stream (extra data before it: a warning), or nothing more to inflate


def _reason(exc: BaseException) -> str:
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image file Pillow can identify"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _orientation_of(layout: _PngLayout | None, data: bytes) -> int:
    """A PNG's orientation (one Pillow has opened) from the chunk walk already done, or, where that
    walk stopped early, from :func:`_png_orientation`: the same rule, without walking twice."""
    if layout is not None and layout.error is None:
        return layout.orientation
    return _png_orientation(data)


def _png_orientation(data: bytes) -> int:
    """The EXIF orientation OpenCV applies to this PNG: the one rule of
    :func:`fmuia.dataset.images.image_orientation` (an eXIf chunk wherever it stands; XMP and text
    profiles ignored); 1 when there is none or the structure is unreadable (reported elsewhere)."""
    try:
        return _images.image_orientation(data)
    except Exception:  # noqa: BLE001 - a broken file: its read error is what gets reported
        return 1


def _indices(img: Image.Image) -> np.ndarray:
    """Class indices as Pillow decodes them: single-channel files give their values; for RGB(A)
    files the first channel (the mode tells the caller it was not single-channel)."""
    if img.mode in SINGLE_CHANNEL_MODES:
        arr = np.asarray(img)
    elif img.mode == "LA":
        arr = np.asarray(img)[..., 0]
    else:
        arr = np.asarray(img.convert("RGB"))[..., 0]
    return np.ascontiguousarray(arr.astype(np.uint8) if arr.dtype == bool else arr)


def _palette_lut(palette: bytes, gamma: int | None = None) -> np.ndarray:
    """Index -> grey level as libpng gives it to OpenCV (entries past the PLTE are black)."""
    lut = np.zeros((256, 3), np.uint8)
    entries = np.frombuffer(palette, np.uint8).reshape(-1, 3)
    lut[: len(entries)] = entries
    return _gray_libpng(lut, gamma)


def _as_opencv(img: Image.Image, arr: np.ndarray, palette: bytes | None, gamma: int | None = None) -> np.ndarray:
    """``cv2.imdecode(..., IMREAD_GRAYSCALE)`` of a loaded Pillow image that is not a JPEG (``arr``:
    its :func:`_indices`), before EXIF orientation."""
    mode, fmt = img.mode, img.format
    if mode == "1":
        return arr * np.uint8(255)
    if mode == "L":
        return arr
    if mode in ("LA", "La"):
        return arr
    if mode.startswith("I;16"):
        return (np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8)
    if mode in ("I", "F"):
        return np.clip(np.asarray(img), 0, 255).astype(np.uint8)
    if mode == "P" and palette is not None:
        return _palette_lut(palette, gamma)[arr]
    rgb = np.asarray(img.convert("RGB"))
    return _gray_libpng(rgb, gamma) if fmt == "PNG" else _gray_cvt(rgb)


def _opencv_jpeg(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        if img.mode != "L":
            img.draft("L", img.size)  # libjpeg's own greyscale output: the Y channel
        img = ImageOps.exif_transpose(img)
        return np.ascontiguousarray(np.asarray(img.convert("L") if img.mode != "L" else img))


def _oriented(arr: np.ndarray, orientation: int) -> np.ndarray:
    if orientation == 1:
        return arr
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr)).transpose(_EXIF_TRANSPOSE[orientation]))


def _cap(name: str, size: tuple[int, int]) -> None:
    w, h = size
    if w * h > _images.MAX_PIXELS:
        raise UnsafeInputError(f"{name}: {w}x{h} pixels exceeds the cap of {_images.MAX_PIXELS:,} pixels")


@dataclass(frozen=True)
class PredictionMask:
    """A prediction mask file as both readers see it: Pillow (the class indices as stored) and the
    official scorer's ``cv2.imread(path, IMREAD_GRAYSCALE)`` (emulated; cv2 is not needed).

    ``error`` is set when the stricter of the two cannot read the file; ``array`` (Pillow) and
    ``opencv`` are then whatever each reader still gave (``None`` where it fails).
    """

    error: str | None  # why the stricter reader fails: "Pillow: ...", "OpenCV: ..." or both
    format: str | None = None  # "PNG", "JPEG", ...
    mode: str | None = None  # Pillow mode: "L", "P", "RGB", "I;16", ...
    size: tuple[int, int] | None = None  # (width, height)
    array: np.ndarray | None = None  # H x W class indices as Pillow decodes them
    opencv: np.ndarray | None = None  # H x W uint8: what cv2.imdecode(IMREAD_GRAYSCALE) returns; None where it fails
    bit_depth: int | None = None  # a PNG's bits per sample
    orientation: int = 1  # a PNG's EXIF orientation (OpenCV applies it)
    palette_grey: bool = True  # mode P: OpenCV's grey level of every index used is the index itself

    @property
    def max_value(self) -> int | None:
        """Largest class index (8-bit single-channel masks only)."""
        if self.array is None or self.mode not in _INDEX_MODES or not self.array.size:
            return None
        return int(self.array.max())

    @property
    def opencv_agrees(self) -> bool:
        """Whether the official scorer's read gives exactly the class indices Pillow reads."""
        a, b = self.array, self.opencv
        if a is None or b is None or a.shape != b.shape:
            return False
        return a is b or bool(np.array_equal(a, b))


def read_prediction_mask(data: bytes, name: str = "<mask>") -> PredictionMask:
    """The one reader of prediction mask bytes: ``fmuia check``, strict and official scoring and
    the visualisation all go through it.

    Pillow decodes the file in full (``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay ``False``: a
    truncated file is an error); for a PNG, a chunk walk (:func:`_png_layout`) says whether OpenCV
    would read it at all, and ``opencv`` is the greyscale image it would return. A file either
    reader refuses has ``error`` set. Raises :class:`UnsafeInputError` over the pixel cap of
    :data:`fmuia.dataset.images.MAX_PIXELS` (before decoding); never for undecodable bytes.
    """
    layout = _png_layout(data) if data.startswith(_PNG_SIGNATURE) else None
    palette = layout.palette if layout is not None else None
    gamma = layout.gamma if layout is not None else None
    if layout is not None and layout.size is not None:
        _cap(name, layout.size)
    fmt = mode = size = arr = opencv = None
    orientation, grey, pil_error = 1, True, None
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, mode, size = img.format, img.mode, img.size
            _cap(name, size)
            img.load()  # full decode: a truncated or corrupt file fails here
            arr = _indices(img)
            if fmt == "PNG":
                orientation = _orientation_of(layout, data)
            if fmt != "JPEG" and (layout is None or layout.error is None):
                opencv = _as_opencv(img, arr, palette, gamma)
    except UnsafeInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - undecodable input is a finding, never a crash
        pil_error, arr = _reason(exc), None
    cv_error = layout.error if layout is not None else None
    if cv_error is None and opencv is None:
        try:
            if fmt == "JPEG":
                opencv = _opencv_jpeg(data)
            else:  # Pillow failed on the file as it is: decode only what libpng decodes of it
                with Image.open(io.BytesIO(layout.essential(data) if layout is not None else data)) as img:
                    _cap(name, img.size)
                    img.load()
                    if img.format == "PNG":
                        orientation = _png_orientation(data)
                    opencv = _as_opencv(img, _indices(img), palette, gamma)
        except UnsafeInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - where the decoder fails, imread returns None
            cv_error = _reason(exc)
    if opencv is not None and fmt != "JPEG":
        opencv = _oriented(opencv, orientation)
    if mode == "P" and arr is not None and palette is not None and arr.size:
        used = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
        grey = bool(np.array_equal(_palette_lut(palette, gamma)[used], used))
    errors = [f"Pillow: {pil_error}"] if pil_error else []
    errors += [f"OpenCV: {cv_error}"] if cv_error else []
    return PredictionMask("; ".join(errors) or None, fmt, mode, size, arr, opencv,
                          layout.bit_depth if layout is not None else None, orientation, grey)


def read_mask_like_opencv(data: bytes) -> np.ndarray | None:
    """Decode mask bytes the way ``cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)`` would.

    Returns a 2-D uint8 array, or ``None`` when the data does not decode (as OpenCV returns
    ``None``) or exceeds the pixel cap of :data:`fmuia.dataset.images.MAX_PIXELS`.
    """
    try:
        return read_prediction_mask(data).opencv
    except UnsafeInputError:
        return None


def prediction_mask_problems(m: PredictionMask, size: tuple[int, int], num_classes: int) -> list[str]:
    """Why a prediction mask cannot be scored as the class indices it holds; ``[]`` when it can.

    The one rule set of ``fmuia check`` (each problem an error) and of strict scoring (any problem:
    the row scores the worst, the problems are its reason). ``size`` is the image's ``(width, height)``.
    """
    if m.error is not None:
        return [f"cannot decode the mask: unreadable ({m.error}); expected an 8-bit PNG"]
    out: list[str] = []
    if m.format != "PNG":
        out.append(f"mask is {m.format or 'an unknown format'}; expected a lossless PNG (JPEG compression alters class indices)")
    if m.mode not in _INDEX_MODES:
        out.append(f"mask has mode {m.mode}; expected an 8-bit single-channel image (mode L or P) of class indices")
    elif m.format == "PNG" and m.bit_depth is not None and m.bit_depth != 8 and m.mode == "L":
        out.append(f"mask is a {m.bit_depth}-bit greyscale PNG, which both readers scale to 0..255; expected 8 bits per pixel")
    if m.mode == "P" and not m.palette_grey:
        out.append("palette PNG whose colours are not the grey levels of its indices; the official scorer reads "
                   "masks as greyscale, so it would see the colours, not the classes: save as mode L")
    if m.size != tuple(size):
        w, h = m.size or (0, 0)
        out.append(f"mask is {w}x{h}, expected {size[0]}x{size[1]}: the image size (width x height)")
    top = m.max_value
    if top is not None and top >= num_classes:
        out.append(f"mask value {top} out of range; expected class indices 0..{num_classes - 1}")
    if not out and m.orientation != 1:
        out.append(f"mask has EXIF orientation {m.orientation}, which the official scorer (OpenCV) applies: it would "
                   "see the mask rotated or flipped; save it without EXIF orientation")
    elif not out and not m.opencv_agrees:
        out.append("the official scorer's greyscale read (OpenCV) gives other values than the class indices stored")
    return out


# ---- what the validator needs ---------------------------------------------------------------------

MaskInfo = PredictionMask  # the summary the rules take (kept under its old name)


def inspect_mask(data: bytes, name: str) -> PredictionMask:
    """:func:`read_prediction_mask`, raising ``OSError`` (with the reason) when the mask cannot be read."""
    m = read_prediction_mask(data, name)
    if m.error is not None:
        raise OSError(m.error)
    return m
