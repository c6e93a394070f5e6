"""Safe prediction folder access: links, zip-slip, caps."""

from __future__ import annotations

import io
import os
import stat
import zipfile

import numpy as np
import pytest

from fmuia.dataset.masks import encode_mask_png
from fmuia.errors import FormatError, UnsafeInputError
from fmuia.predfolder import DirPredictionFolder, ZipPredictionFolder, open_predictions
from fmuia.tasks import TaskKind


def _zip(path, members: dict[str, bytes], links: dict[str, str] | None = None):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def test_dir_reads_json_and_masks(tmp_path):
    (tmp_path / "Segmentation/Two/d").mkdir(parents=True)
    (tmp_path / "Segmentation/Two/d/1.png").write_bytes(encode_mask_png(np.eye(3, dtype=np.uint8)))
    (tmp_path / "classification_predictions.json").write_text('[{"a": 1}]')
    with open_predictions(tmp_path) as pf:
        assert isinstance(pf, DirPredictionFolder)
        assert pf.files() == ["Segmentation/Two/d/1.png", "classification_predictions.json"]
        assert pf.read_json(TaskKind.CLASSIFICATION) == [{"a": 1}]
        assert pf.read_json(TaskKind.DETECTION) is None
        m = pf.read_mask("Segmentation/Two/d/1.png")
        assert m.format == "PNG" and m.mode == "L" and np.array_equal(m.array, np.eye(3))


def test_dir_never_reads_through_links_outside(tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text("[1]")
    pred = tmp_path / "pred"
    pred.mkdir()
    os.symlink(secret, pred / "classification_predictions.json")
    os.symlink(tmp_path, pred / "up")
    pf = open_predictions(pred)
    assert pf.files() == []
    reasons = dict(pf.refused())
    assert "outside" in reasons["classification_predictions.json"] and "up" in reasons
    assert not pf.exists("classification_predictions.json")
    with pytest.raises(UnsafeInputError):
        pf.read_bytes("classification_predictions.json", 100)
    with pytest.raises(UnsafeInputError):
        pf.read_bytes("../secret.json", 100)


def test_json_errors_are_format_errors(tmp_path):
    (tmp_path / "detection_predictions.json").write_text("{not json")
    (tmp_path / "regression_predictions.json").write_text('{"a": 1}')
    pf = open_predictions(tmp_path)
    with pytest.raises(FormatError, match="not valid UTF-8 JSON"):
        pf.read_json(TaskKind.DETECTION)
    with pytest.raises(FormatError, match="expected a JSON list"):
        pf.read_json(TaskKind.REGRESSION)


def test_json_size_cap(tmp_path, monkeypatch):
    import fmuia.predfolder as m

    (tmp_path / "detection_predictions.json").write_text("[" + ",".join(["1"] * 100) + "]")
    monkeypatch.setattr(m, "MAX_JSON_BYTES", 50)
    with pytest.raises(UnsafeInputError, match="exceeds the cap"):
        open_predictions(tmp_path).read_json(TaskKind.DETECTION)


def test_zip_reads_in_place_and_refuses_slip_and_links(tmp_path):
    z = _zip(
        tmp_path / "p.zip",
        {"classification_predictions.json": b"[]", "../evil.txt": b"x", "/abs.txt": b"y", "Segmentation/a.png": b"z"},
        links={"link.json": "/etc/passwd"},
    )
    pf = open_predictions(z)
    assert isinstance(pf, ZipPredictionFolder)
    assert pf.files() == ["Segmentation/a.png", "classification_predictions.json"]
    refused = dict(pf.refused())
    assert set(refused) == {"../evil.txt", "/abs.txt", "link.json"}
    assert pf.read_json(TaskKind.CLASSIFICATION) == []
    with pytest.raises(UnsafeInputError, match="zip-slip"):  # refused: never read, and said so
        pf.read_bytes("../evil.txt", 10)
    with pytest.raises(FileNotFoundError):
        pf.read_bytes("nothing.txt", 10)


def test_zip_inflation_caps(tmp_path):
    big = b"\0" * (4 << 20)
    z = _zip(tmp_path / "bomb.zip", {"classification_predictions.json": big})
    with pytest.raises(UnsafeInputError, match="zip bomb"):
        ZipPredictionFolder(z)
    z2 = _zip(tmp_path / "big.zip", {"a.bin": os.urandom(5000)})
    with pytest.raises(UnsafeInputError, match="over the cap"):
        ZipPredictionFolder(z2, max_inflated=1000)
    pf = ZipPredictionFolder(z2)
    with pytest.raises(UnsafeInputError, match="exceeds the cap"):
        pf.read_bytes("a.bin", 100)


def test_not_a_folder_or_zip(tmp_path):
    with pytest.raises(FormatError, match="no such"):
        open_predictions(tmp_path / "missing")
    f = tmp_path / "x.txt"
    f.write_text("hi")
    with pytest.raises(FormatError, match="expected a folder"):
        open_predictions(f)


def test_mask_pixel_cap(tmp_path, monkeypatch):
    import fmuia.dataset.images as images

    buf = io.BytesIO()
    from PIL import Image

    Image.new("L", (100, 100)).save(buf, format="PNG")
    (tmp_path / "m.png").write_bytes(buf.getvalue())
    monkeypatch.setattr(images, "MAX_PIXELS", 5000)
    with pytest.raises(UnsafeInputError, match="exceeds the cap"):
        open_predictions(tmp_path).read_mask("m.png")


def test_zip_paths_as_the_platform_extracts_them(tmp_path):
    """Members are addressed by the path zipfile extracts them to on Linux; two at one path, a path
    that is a file and a folder, an encrypted member: refused (and said why); ``as_extracted`` is
    the platform's view (the last duplicate wins)."""
    import warnings

    z = tmp_path / "p.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(z, "w") as zf:
            zf.writestr("./a.json", b"[1]")
            zf.writestr("a.json", b"[2]")  # the same path on disk: the last wins there
            zf.writestr("seg\\x.png", b"x")  # a backslash is part of the name on Linux
            zf.writestr("S", b"file")
            zf.writestr("S/y.png", b"y")  # 'S' is both a file and a folder: extraction fails
            zf.writestr("b//c.json", b"[3]")
    pf = ZipPredictionFolder(z)
    assert pf.files() == ["b/c.json", "seg\\x.png"]
    assert pf.read_bytes("b/c.json", 10) == b"[3]" and not pf.exists("seg/x.png")
    reasons = dict(pf.refused())
    assert "2 members" in reasons["a.json"] and "both a file and a folder" in reasons["S"] and "S/y.png" in reasons
    with pytest.raises(UnsafeInputError, match="2 members of the archive extract to this path"):
        pf.read_bytes("a.json", 10)
    view = pf.as_extracted()
    assert view.read_bytes("a.json", 10) == b"[2]"
    with pytest.raises(UnsafeInputError, match="both a file and a folder"):
        view.read_bytes("S", 10)


def test_dir_never_reads_through_a_symlinked_folder_even_inside(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "m.png").write_bytes(encode_mask_png(np.zeros((2, 2), np.uint8)))
    os.symlink(tmp_path / "real", tmp_path / "link")
    pf = open_predictions(tmp_path)
    assert pf.files() == ["real/m.png"] and not pf.exists("link/m.png")
    assert "not followed" in pf.refusal("link/m.png")
    with pytest.raises(UnsafeInputError, match="a symbolic link to a folder: not followed"):
        pf.read_bytes("link/m.png", 1000)
