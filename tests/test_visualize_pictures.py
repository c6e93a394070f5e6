"""Shared checks for the picture tests: PNGs that decode and are not blank, HTML with local links only."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

MIN_STD = 8.0  # grey-level standard deviation of a picture with content (a blank one is ~0)


def assert_picture(data: bytes | Path, min_std: float = MIN_STD) -> tuple[int, int]:
    """The bytes (or file) decode as an image whose pixels vary; returns (width, height)."""
    raw = data.read_bytes() if isinstance(data, Path) else data
    with Image.open(io.BytesIO(raw)) as img:
        img.load()
        assert img.format == "PNG"
        arr = np.asarray(img.convert("L"), dtype=float)
    assert arr.size > 0
    assert arr.std() > min_std, f"picture looks blank (std {arr.std():.2f})"
    return arr.shape[1], arr.shape[0]


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value is not None:
                self.refs.append(value)


def html_refs(index: Path) -> list[str]:
    parser = _Refs()
    parser.feed(index.read_text(encoding="utf-8"))
    return parser.refs


def assert_self_contained(index: Path) -> list[Path]:
    """Every href/src of the page is a same-page anchor, a data: URI, or a file next to it that exists;
    no http(s) URL appears anywhere. Returns the local files referenced."""
    text = index.read_text(encoding="utf-8")
    assert not re.search(r"https?://", text, flags=re.I), "the page mentions an http(s) URL"
    assert "//" not in "".join(r for r in html_refs(index) if not r.startswith("data:"))
    files = []
    for ref in html_refs(index):
        if ref.startswith("#"):
            continue
        if ref.startswith("data:"):
            assert ref.startswith("data:image/png;base64,")
            assert_picture(base64.b64decode(ref.split(",", 1)[1]))
            continue
        assert ":" not in ref and not ref.startswith("/"), ref
        target = (index.parent / unquote(ref)).resolve()
        assert target.is_file(), f"{ref} does not exist"
        assert index.parent.resolve() in target.parents
        files.append(target)
    return files


# ---- the checks themselves must be able to fail -----------------------------------------------------

def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_blank_picture_is_refused():
    with pytest.raises(AssertionError):
        assert_picture(_png(np.full((20, 30), 255)))
    assert assert_picture(_png(np.indices((20, 30)).sum(0) * 5)) == (30, 20)


def test_html_check_refuses_missing_files_and_urls(tmp_path):
    (tmp_path / "a.png").write_bytes(_png(np.indices((20, 30)).sum(0) * 5))
    page = tmp_path / "index.html"
    page.write_text("<a href='#x'>x</a><img src='a.png'>", encoding="utf-8")
    assert assert_self_contained(page) == [(tmp_path / "a.png").resolve()]
    for bad in ("<img src='b.png'>", "<img src='https://example.org/a.png'>", "<img src='../a.png'>",
                "<a href='/etc/passwd'>x</a>", "<p>see http://example.org</p>"):
        page.write_text(bad, encoding="utf-8")
        with pytest.raises(AssertionError):
            assert_self_contained(page)
