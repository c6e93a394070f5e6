"""Image sizes for the rules, read from the data root's image headers (never decoded), cached.

A PNG's size is parsed straight from its IHDR chunk; other formats go through Pillow's lazy
open (:func:`fmuia.dataset.images.image_size`). Both refuse images over
:data:`fmuia.dataset.images.MAX_PIXELS`, looked up at call time (so a patched cap applies).
"""

from __future__ import annotations

import struct
from pathlib import Path

from fmuia.dataset import images as _images
from fmuia.errors import FmuiaError, UnsafeInputError

__all__ = ["SizeCache"]

_PNG_HEAD = struct.Struct(">8sI4sII")  # signature, IHDR length, b"IHDR", width, height


def _header_size(path: Path) -> tuple[int, int]:
    """Image ``(width, height)``: read straight from a PNG's IHDR chunk, else from Pillow."""
    with open(path, "rb") as fh:
        head = fh.read(_PNG_HEAD.size)
    if len(head) == _PNG_HEAD.size:
        sig, _, chunk, w, h = _PNG_HEAD.unpack(head)
        if sig == b"\x89PNG\r\n\x1a\n" and chunk == b"IHDR" and w > 0 and h > 0:
            if w * h > _images.MAX_PIXELS:
                raise UnsafeInputError(f"{path}: {w}x{h} pixels exceeds the cap of {_images.MAX_PIXELS:,} pixels")
            return w, h
    return _images.image_size(path)


class SizeCache:
    """Image sizes by path, each header read once; a failure is cached and re-raised as :class:`FmuiaError`."""

    def __init__(self) -> None:
        self._sizes: dict[Path, tuple[int, int] | Exception] = {}

    def get(self, path: Path) -> tuple[int, int]:
        """``(width, height)`` of the image at ``path``; raises :class:`FmuiaError` when unreadable or over the cap."""
        v = self._sizes.get(path)
        if v is None:
            try:
                v = _header_size(path)
            except Exception as exc:  # noqa: BLE001 - any unreadable image becomes a problem
                v = exc if isinstance(exc, FmuiaError) else FmuiaError(f"{path}: cannot read the image size ({exc})")
            self._sizes[path] = v
        if isinstance(v, Exception):
            raise v
        return v
