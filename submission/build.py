"""Build the baseline submission image; save it to / load it from a tar file.

The build context is made here rather than sent from the working tree: exactly the files the Dockerfile
copies (project sources, ``pyproject.toml``, ``README.md``, ``constraints.txt``) plus the checkpoint, in
sorted order with fixed owners, modes and timestamps, so the same inputs give the same image contents.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fmuia._atomic import atomic_path
from submission.engine import EngineError, SubmissionError
from submission.engine import client as _client

# What the Dockerfile copies, relative to the project root.
CONTEXT_FILES = ("Dockerfile", "pyproject.toml", "README.md", "constraints.txt")
CONTEXT_PACKAGES = ("fmuia", "evaluation", "submission")
CHECKPOINT_IN_CONTEXT = ".fmuia-build/model.pt"
DEFAULT_TAG = "fmuia-baseline:latest"
_EPOCH = 0  # mtime of every file in the context: reproducible layers


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The source tree holding the ``Dockerfile``: ``start`` if given, else the checkout ``fmuia`` runs from."""
    if start is not None:
        root = Path(start)
    else:
        import fmuia

        root = Path(fmuia.__file__).resolve().parent.parent
    missing = [f for f in (*CONTEXT_FILES, *CONTEXT_PACKAGES) if not (root / f).exists()]
    if missing:
        raise SubmissionError(
            f"{root}: not an fmuia source checkout (missing {', '.join(missing)}); "
            "build from a clone of the repository or pass --context DIR"
        )
    return root


def _package_files(root: Path, package: str) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root / package):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for name in sorted(filenames):
            if not name.endswith((".pyc", ".pyo")) and not name.startswith("."):
                yield Path(dirpath) / name


def _add(tar: tarfile.TarFile, path: Path, arcname: str) -> None:
    if not path.is_file():
        raise SubmissionError(f"{path}: expected a regular file for the build context")
    info = tarfile.TarInfo(arcname)
    info.size = path.stat().st_size
    info.mtime = _EPOCH
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    with open(path, "rb") as fh:
        tar.addfile(info, fh)


def make_context(checkpoint: str | os.PathLike, root: str | os.PathLike | None = None) -> io.BytesIO:
    """A deterministic, uncompressed tar build context (sources + checkpoint), positioned at 0."""
    src = project_root(root)
    ckpt = Path(checkpoint)
    if not ckpt.is_file():
        raise SubmissionError(f"{ckpt}: no such checkpoint file (train one with `fmuia train`)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in CONTEXT_FILES:
            _add(tar, src / name, name)
        for package in CONTEXT_PACKAGES:
            for path in _package_files(src, package):
                _add(tar, path, path.relative_to(src).as_posix())
        _add(tar, ckpt, CHECKPOINT_IN_CONTEXT)
    buf.seek(0)
    return buf


def build_image(
    checkpoint: str | os.PathLike,
    *,
    tag: str = DEFAULT_TAG,
    base_image: str | None = None,
    pip_args: str | None = None,
    network_mode: str | None = None,
    context: str | os.PathLike | None = None,
    nocache: bool = False,
    log: Callable[[str], None] | None = None,
    docker_client: Any = None,
) -> str:
    """Build the baseline image with ``checkpoint`` embedded; return the image id.

    ``base_image`` overrides the Dockerfile's ``BASE_IMAGE`` (an offline base that already holds the
    dependencies: pass ``pip_args="--no-index"``, and ``network_mode="none"`` where the engine has no
    bridge network). ``nocache`` rebuilds every step. ``log`` receives the build output line by line.
    """
    dc = docker_client or _client(timeout=3600)
    buildargs = {"CHECKPOINT": CHECKPOINT_IN_CONTEXT}
    if base_image:
        buildargs["BASE_IMAGE"] = base_image
    if pip_args:
        buildargs["PIP_ARGS"] = pip_args
    ctx = make_context(checkpoint, context)
    tail: list[str] = []
    image_id = None
    try:
        stream = dc.api.build(
            fileobj=ctx,
            custom_context=True,
            tag=tag,
            buildargs=buildargs,
            rm=True,
            forcerm=True,
            pull=False,
            nocache=nocache,
            network_mode=network_mode,
            decode=True,
        )
        for chunk in stream:
            if "error" in chunk:
                detail = chunk.get("errorDetail", {}).get("message", chunk["error"])
                raise SubmissionError(
                    f"docker build failed: {detail.strip()}", _tail_problems(tail)
                )
            text = chunk.get("stream", "")
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            for line in text.splitlines():
                tail = (tail + [line])[-30:]
                if log is not None:
                    log(line)
    except SubmissionError:
        raise
    except Exception as exc:  # APIError (bad base image, engine trouble) and connection errors
        raise EngineError(f"docker build failed: {exc}") from None
    if image_id is None:
        image_id = dc.images.get(tag).id
    return image_id


def _tail_problems(lines: list[str]) -> list:
    from fmuia.errors import Problem

    return [Problem("docker build", "", line, "info") for line in lines[-15:]]


def save_image(image: str, out: str | os.PathLike, *, docker_client: Any = None) -> Path:
    """Write ``image`` (tag or id) to a tar file that ``docker load`` / :func:`load_image` reads."""
    dc = docker_client or _client(timeout=3600)
    img = get_image(dc, image)
    out = Path(out)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        for chunk in img.save(named=bool(img.tags)):
            fh.write(chunk)
    return out


def load_image(tar_path: str | os.PathLike, *, docker_client: Any = None) -> str:
    """Load an image tar (plain or gzip-compressed); return the id of the (first) image in it.

    The id, not a tag, names the result: two participants' tars may carry the same tag.
    """
    path = Path(tar_path)
    if not path.is_file():
        raise SubmissionError(f"{path}: no such image tar file")
    dc = docker_client or _client(timeout=3600)
    try:
        with open(path, "rb") as fh:
            images = dc.images.load(fh)
    except Exception as exc:
        raise SubmissionError(f"{path}: docker could not load it as an image archive ({exc})") from None
    if not images:
        raise SubmissionError(f"{path}: the archive holds no image")
    return images[0].id


def get_image(dc: Any, image: str) -> Any:
    """The local image named ``image`` (never pulled: a challenge runner only runs what it was given)."""
    import docker.errors

    try:
        return dc.images.get(image)
    except docker.errors.ImageNotFound:
        raise SubmissionError(
            f"image {image!r} is not in the local engine (load its tar with `fmuia submission load`)"
        ) from None
    except docker.errors.APIError as exc:
        raise EngineError(f"cannot inspect image {image!r}: {exc}") from None
