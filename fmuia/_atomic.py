"""Write files atomically: to a temporary sibling, then rename into place."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fmuia.errors import FmuiaError


class OutputError(FmuiaError):
    """An output path cannot be written (its parent is a file, not writable, or it is a folder)."""


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; results, checkpoints and leaderboards get the usual 0666 & ~umask instead
# (read once, at import: reading the umask means setting it, which is not thread-safe later on).
_FILE_MODE = 0o666 & ~_process_umask()


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create the output folder ``path`` (and its parents); :class:`OutputError` when it cannot be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{path}: exists and is not a folder; expected an output folder") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot create this output folder ({_why(exc)}: {exc.filename or path})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: output folder is not writable")
    return path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    The file gets the mode a plain ``open(path, "w")`` would give it (0666 less the umask).
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; expected a file path to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write here ({_why(exc)}: {exc.filename or path.parent})") from None
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            os.replace(tmp_path, path)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write here ({_why(exc)})") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf floats as ``None``, numpy scalars as Python numbers, tuples as lists and keys as strings."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):  # numpy scalars and 0-d arrays
        try:
            return json_safe(obj.item())
        except (TypeError, ValueError):
            return str(obj)
    return obj


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as UTF-8 JSON (non-ASCII kept as is, NaN refused)."""
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False) + "\n")
