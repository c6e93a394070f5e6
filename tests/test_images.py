"""``image_size`` / ``read_image`` follow ``cv2.imread(path, cv2.IMREAD_COLOR)``: compared with OpenCV
on images each test writes (EXIF orientation, 16-bit, palette, grey, alpha, CMYK, TIFF quirks, broken
files). OpenCV is a test dependency only; the package decodes with Pillow.
"""

from __future__ import annotations

import ast
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps, PngImagePlugin

from fmuia.dataset.images import image_orientation, image_size, read_image

cv2 = pytest.importorskip("cv2")

H, W = 30, 50  # not square: an orientation that swaps the axes shows in the size
RNG = np.random.default_rng(7)
GREY = RNG.integers(0, 256, (H, W), dtype=np.uint8)
RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
RGBA = RNG.integers(0, 256, (H, W, 4), dtype=np.uint8)
GREY16 = RNG.integers(0, 65536, (H, W), dtype=np.uint16)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def exif(orientation: int) -> bytes:
    e = Image.Exif()
    e[0x0112] = orientation
    return e.tobytes()


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, i = [], 8
    while i < len(data):
        (n,) = struct.unpack(">I", data[i : i + 4])
        out.append((data[i + 4 : i + 8], data[i + 8 : i + 8 + n]))
        i += 12 + n
    return out


def png_build(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = b"\x89PNG\r\n\x1a\n"
    for kind, body in chunks:
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    return out


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def opencv(path: Path) -> np.ndarray | None:
    """What the official tools see, as RGB."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else bgr[..., ::-1]


def assert_like_opencv(path: Path) -> np.ndarray:
    ref = opencv(path)
    assert ref is not None, f"OpenCV cannot read {path.name}"
    ours = read_image(path)
    assert ours.dtype == np.uint8 and ours.shape == ref.shape, (ours.shape, ref.shape)
    np.testing.assert_array_equal(ours, ref)
    assert image_size(path) == (ref.shape[1], ref.shape[0])
    return ref


# ---- orientation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt,ext,kw", [("JPEG", ".jpg", {"quality": 95}), ("PNG", ".png", {}),
                                        ("WEBP", ".webp", {"lossless": True})])
def test_exif_orientation_like_opencv(tmp_path, fmt, ext, kw, orientation):
    path = write(tmp_path, "img" + ext, encode(Image.fromarray(RGB), fmt, exif=exif(orientation), **kw))
    ref = assert_like_opencv(path)
    assert ref.shape[:2] == ((W, H) if orientation >= 5 else (H, W))  # 5..8 swap width and height
    assert image_orientation(path) == orientation == image_orientation(path.read_bytes())


def test_jpeg_orientation_6_swaps_width_and_height(tmp_path):
    path = write(tmp_path, "rot.jpg", encode(Image.fromarray(RGB), "JPEG", exif=exif(6), quality=95))
    with Image.open(path) as img:
        assert img.size == (W, H)  # as stored
    assert image_size(path) == (H, W) == (opencv(path).shape[1], opencv(path).shape[0])
    np.testing.assert_array_equal(read_image(path), opencv(path))


def test_png_exif_chunk_after_the_image_data_counts(tmp_path):
    chunks = png_chunks(encode(Image.fromarray(RGB), "PNG", exif=exif(6)))
    exif_chunk = next(c for c in chunks if c[0] == b"eXIf")
    rest = [c for c in chunks if c[0] != b"eXIf"]
    moved = png_build(rest[:-1] + [exif_chunk] + rest[-1:])  # eXIf between IDAT and IEND
    path = write(tmp_path, "late.png", moved)
    with Image.open(path) as img:
        assert "exif" not in img.info  # Pillow's lazy open has not seen it: headers alone are not enough
    assert assert_like_opencv(path).shape[:2] == (W, H)


def test_xmp_and_text_orientation_are_ignored_like_opencv(tmp_path):
    xmp = '<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp)
    png = write(tmp_path, "xmp.png", encode(Image.fromarray(RGB), "PNG", pnginfo=info))
    raw = exif(6)
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", f"\nexif\n{len(raw):8}\n{raw.hex()}\n", zip=True)
    text = write(tmp_path, "rawprofile.png", encode(Image.fromarray(RGB), "PNG", pnginfo=info))
    jpg = write(tmp_path, "xmp.jpg", encode(Image.fromarray(RGB), "JPEG", xmp=xmp.encode(), quality=95))
    for path in (png, text, jpg):
        with Image.open(path) as img:
            assert ImageOps.exif_transpose(img).size == (H, W)  # Pillow alone would rotate...
        assert assert_like_opencv(path).shape[:2] == (H, W)  # ...OpenCV does not, nor do we


@pytest.mark.parametrize("orientation", [0, 9, 100])
def test_invalid_orientation_is_ignored_like_opencv(tmp_path, orientation):
    path = write(tmp_path, "bad.jpg", encode(Image.fromarray(RGB), "JPEG", exif=exif(orientation), quality=95))
    assert assert_like_opencv(path).shape[:2] == (H, W)


@pytest.mark.parametrize("orientation", [1, 2, 3, 4])
def test_tiff_orientation_applied_once(tmp_path, orientation):
    # Pillow's libtiff decoder applies it itself; it must not be applied a second time
    path = write(tmp_path, "o.tif", encode(Image.fromarray(RGB), "TIFF", tiffinfo={274: orientation}))
    assert_like_opencv(path)


def test_tiff_orientation_that_opencv_imread_cannot_read_is_refused(tmp_path):
    path = write(tmp_path, "o6.tif", encode(Image.fromarray(RGB), "TIFF", tiffinfo={274: 6}))
    assert opencv(path) is None  # OpenCV 5.0: "Internal imread issue"
    with pytest.raises(OSError, match="orientation 6"):
        read_image(path)
    with pytest.raises(OSError, match="orientation 6"):
        image_size(path)


# ---- depth and channels -----------------------------------------------------------------------------

def test_16_bit_png_keeps_the_high_byte(tmp_path):
    values = np.array([[0, 255, 256, 0x01FF, 0x7F80, 0x8080, 0xFFFF, 0x0180]], np.uint16)
    path = write(tmp_path, "v16.png", encode(Image.fromarray(values), "PNG"))
    ref = assert_like_opencv(path)
    np.testing.assert_array_equal(ref[0, :, 0], values[0] >> 8)  # what OpenCV does: v >> 8 ...
    assert read_image(path)[0, :, 0].tolist() != [0, 0, 0, 0, 64, 64, 128, 255]  # ...not a min-max rescale
    dark = np.full((4, 4), 200, np.uint16)  # a dark 16-bit image stays dark (it was all white before)
    path = write(tmp_path, "dark16.png", encode(Image.fromarray(dark), "PNG"))
    assert assert_like_opencv(path).max() == 0


def test_16_bit_png_with_orientation(tmp_path):
    path = write(tmp_path, "o16.png", encode(Image.fromarray(GREY16), "PNG", exif=exif(8)))
    assert assert_like_opencv(path).shape == (W, H, 3)


def _palette() -> Image.Image:
    return Image.fromarray(RGB).quantize(16)


CASES = {
    "grey.png": lambda: encode(Image.fromarray(GREY), "PNG"),
    "rgb.png": lambda: encode(Image.fromarray(RGB), "PNG"),
    "rgba.png": lambda: encode(Image.fromarray(RGBA), "PNG"),  # alpha dropped, not composited
    "la.png": lambda: encode(Image.merge("LA", [Image.fromarray(GREY), Image.fromarray(RGBA[..., 3].copy())]), "PNG"),
    "palette.png": lambda: encode(_palette(), "PNG"),  # the palette colours, as 3 channels
    "palette_trns.png": lambda: encode(_palette(), "PNG", transparency=2),
    "one_bit.png": lambda: encode(Image.fromarray(GREY > 128), "PNG"),  # 0/255
    "two_bit.png": lambda: encode(Image.fromarray(GREY >> 6 << 6), "PNG", bits=2),
    "grey16.png": lambda: encode(Image.fromarray(GREY16), "PNG"),
    "rgb16.png": lambda: cv2.imencode(".png", RNG.integers(0, 65536, (H, W, 3), dtype=np.uint16))[1].tobytes(),
    "rgba16.png": lambda: cv2.imencode(".png", RNG.integers(0, 65536, (H, W, 4), dtype=np.uint16))[1].tobytes(),
    "grey.jpg": lambda: encode(Image.fromarray(GREY), "JPEG", quality=90),
    "rgb.jpg": lambda: encode(Image.fromarray(RGB), "JPEG", quality=90),
    "progressive.jpg": lambda: encode(Image.fromarray(RGB), "JPEG", quality=80, progressive=True),
    "cmyk.jpg": lambda: encode(Image.fromarray(RGB).convert("CMYK"), "JPEG", quality=95),
    "rgb.bmp": lambda: encode(Image.fromarray(RGB), "BMP"),
    "grey.bmp": lambda: encode(Image.fromarray(GREY), "BMP"),
    "palette.gif": lambda: encode(_palette(), "GIF"),
    "grey16.pgm": lambda: encode(Image.fromarray(GREY16), "PPM"),
    "grey16.tif": lambda: encode(Image.fromarray(GREY16), "TIFF"),
    "rgba.tif": lambda: encode(Image.fromarray(RGBA), "TIFF"),  # libtiff premultiplies the alpha
    "rgb_lossy.webp": lambda: encode(Image.fromarray(RGB), "WEBP", quality=80),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_modes_like_opencv(tmp_path, name):
    ref = assert_like_opencv(write(tmp_path, name, CASES[name]()))
    if name.startswith(("grey", "one_bit", "two_bit")):
        assert (ref == ref[..., :1]).all()  # grey: three equal channels


def test_float_tiff_is_refused_like_opencv(tmp_path):
    path = write(tmp_path, "f.tif", encode(Image.fromarray(GREY16.astype(np.float32)), "TIFF"))
    assert opencv(path) is None
    with pytest.raises(OSError, match="OpenCV cannot read it"):
        read_image(path)


# ---- broken files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("cut", [1, 13, 200])
def test_truncated_png_is_refused_like_opencv(tmp_path, cut):
    data = encode(Image.fromarray(RGB), "PNG")
    path = write(tmp_path, "cut.png", data[:-cut])
    assert opencv(path) is None
    with pytest.raises(OSError, match="truncated"):
        image_size(path)  # headers alone show it: the chunk list ends early
    with pytest.raises(OSError, match="truncated"):
        read_image(path)


def _corrupt_png(kind: bytes, crc: bool = True, rename: bytes | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "hello")
    chunks = png_chunks(encode(Image.fromarray(RGB), "PNG", pnginfo=info))
    data = bytearray(png_build(chunks))
    i = 8
    while True:  # find the chunk, then break its CRC or rename it
        (n,) = struct.unpack(">I", data[i : i + 4])
        if data[i + 4 : i + 8] == kind:
            if rename:
                data[i + 4 : i + 8] = rename
                data[i + 8 + n : i + 12 + n] = struct.pack(">I", zlib.crc32(rename + data[i + 8 : i + 8 + n]) & 0xFFFFFFFF)
            elif crc:
                data[i + 8 + n] ^= 0xFF
            return bytes(data)
        i += 12 + n


@pytest.mark.parametrize("case", ["bad IDAT CRC", "unknown critical chunk"])
def test_png_structure_like_libpng(tmp_path, case):
    data = _corrupt_png(b"IDAT") if case == "bad IDAT CRC" else _corrupt_png(b"tEXt", rename=b"TEXT")
    path = write(tmp_path, "p.png", data)
    with Image.open(path) as img:
        img.load()  # Pillow alone reads both
    assert opencv(path) is None
    with pytest.raises(OSError, match="broken PNG file"):
        read_image(path)


def test_png_with_a_bad_ancillary_crc_is_refused(tmp_path):
    # Deliberately stricter than OpenCV, which skips the chunk: Pillow refuses the file, and so do we
    path = write(tmp_path, "p.png", _corrupt_png(b"tEXt"))
    assert opencv(path) is not None
    with pytest.raises(OSError):
        read_image(path)


def test_truncated_jpeg_is_refused(tmp_path):
    # Deliberately stricter than OpenCV: cv2.imread returns the image grey-filled after the cut
    # (with a "Premature end of JPEG file" warning); a truncated label image is refused instead.
    path = write(tmp_path, "cut.jpg", encode(Image.fromarray(RGB), "JPEG", quality=90)[:-300])
    assert opencv(path) is not None
    image_size(path)  # the header is intact...
    with pytest.raises(OSError, match="truncated"):
        read_image(path)  # ...the full decode is not


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n", b"BM" + b"\x00" * 10])
def test_not_an_image_is_refused_like_opencv(tmp_path, data):
    path = write(tmp_path, "x.png", data)
    assert opencv(path) is None
    with pytest.raises(OSError):
        image_size(path)
    with pytest.raises(OSError):
        read_image(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "nope.png")  # predict reports "image file not found" for exactly this


# ---- one rule for every caller ----------------------------------------------------------------------

def _decoder_calls(tree: ast.AST) -> list[int]:
    """Lines that decode images: ``Image.open(...)``, anything on ``cv2``, imports of other decoders."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) == ("Image", "open") or node.value.id in ("cv2", "imageio", "sitk"):
                lines.append(node.lineno)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(n.split(".")[0] in ("cv2", "imageio") or n.startswith("torchvision.io") for n in names):
                lines.append(node.lineno)
    return lines


def test_no_other_module_decodes_images():
    """check, train, predict, visualize and evaluate decode images only through these two functions
    (masks have their own module, :mod:`fmuia.dataset.masks`)."""
    repo = Path(__file__).resolve().parents[1]
    allowed = {"fmuia/dataset/images.py", "fmuia/dataset/masks.py"}
    found = []
    for folder in ("fmuia", "evaluation", "submission"):
        for path in sorted((repo / folder).rglob("*.py")):
            rel = path.relative_to(repo).as_posix()
            if rel not in allowed:
                found += [f"{rel}:{n}" for n in _decoder_calls(ast.parse(path.read_text(encoding="utf-8")))]
    assert not found, found
