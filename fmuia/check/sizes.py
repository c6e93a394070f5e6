"""Image sizes for the rules, read from the data root's image headers (never decoded), cached.

Sizes follow :func:`fmuia.dataset.images.image_size`, the rule every layer uses (as OpenCV reads
the image: EXIF orientation applied), and refuse images over
:data:`fmuia.dataset.images.MAX_PIXELS`, looked up at call time (so a patched cap applies).
"""

from __future__ import annotations

from pathlib import Path

from fmuia.dataset import images as _images
from fmuia.errors import FmuiaError

__all__ = ["SizeCache"]

def _header_size(path: Path) -> tuple[int, int]:
    """Image ``(width, height)`` as the official scorer's OpenCV sees it (EXIF orientation applied),
    from the headers: the one rule of :func:`fmuia.dataset.images.image_size`."""
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
