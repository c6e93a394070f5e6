"""Safe, read-only access to a prediction folder or the ``.zip`` uploaded to Codabench.

Nothing outside the folder is ever read: a path or symlink that resolves outside it is refused,
and so are zip-slip names, links inside archives, archives that inflate past a cap, JSON files
over a size cap and images over a pixel cap.
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from fmuia.dataset.masks import DecodedMask, decode_mask
from fmuia.errors import FormatError, UnsafeInputError
from fmuia.tasks import PREDICTION_FILES, TaskKind

MAX_JSON_BYTES = 256 * 1024 * 1024
MAX_MASK_BYTES = 64 * 1024 * 1024
MAX_ZIP_INFLATED_BYTES = 16 * 1024 * 1024 * 1024
MAX_ZIP_RATIO = 200  # inflated / compressed for one member over 1 MiB; JSON reaches ~10, PNG ~1


class PredictionFolder:
    """Base class: a prediction folder addressed by relative POSIX paths."""

    name: str

    def files(self) -> list[str]:
        """Relative paths of the regular files inside (links and unsafe names excluded)."""
        raise NotImplementedError

    def refused(self) -> list[tuple[str, str]]:
        """``(name, reason)`` for each entry that will never be read (links, escapes)."""
        return []

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def read_bytes(self, rel: str, cap: int) -> bytes:
        """Contents of ``rel``; ``FileNotFoundError`` if absent, :class:`UnsafeInputError` if refused."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> PredictionFolder:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # Shared readers -------------------------------------------------------------------------
    def read_json(self, kind: TaskKind) -> list | None:
        """The entries of a kind's prediction JSON; ``None`` if the file is absent."""
        rel = PREDICTION_FILES[TaskKind(kind)]
        if not self.exists(rel):
            return None
        data = self.read_bytes(rel, MAX_JSON_BYTES)
        try:
            value = json.loads(data.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"{rel}: not valid UTF-8 JSON ({exc})") from None
        if not isinstance(value, list):
            raise FormatError(f"{rel}: expected a JSON list of entries, got {type(value).__name__}")
        return value

    def read_mask(self, rel: str) -> DecodedMask:
        """Decode a mask file; raises ``FileNotFoundError``, :class:`UnsafeInputError` or ``OSError``."""
        return decode_mask(self.read_bytes(rel, MAX_MASK_BYTES), name=f"{self.name}/{rel}")


class DirPredictionFolder(PredictionFolder):
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.name = str(self.path)
        self._real = os.path.realpath(self.path)
        self._files: list[str] | None = None
        self._refused: list[tuple[str, str]] = []

    def _inside(self, rel: str) -> str | None:
        if rel.startswith("/") or "\x00" in rel:
            return None
        real = os.path.realpath(os.path.join(self._real, rel))
        return real if os.path.commonpath([self._real, real]) == self._real else None

    def files(self) -> list[str]:
        if self._files is None:
            out: list[str] = []
            for dirpath, dirnames, filenames in os.walk(self.path, followlinks=False):
                for d in list(dirnames):
                    full = os.path.join(dirpath, d)
                    if os.path.islink(full):
                        dirnames.remove(d)
                        rel = os.path.relpath(full, self.path).replace(os.sep, "/")
                        self._refused.append((rel, "symbolic link to a folder: not followed"))
                for f in filenames:
                    full = os.path.join(dirpath, f)
                    rel = os.path.relpath(full, self.path).replace(os.sep, "/")
                    if os.path.islink(full) and self._inside(rel) is None:
                        self._refused.append((rel, "symbolic link pointing outside the prediction folder"))
                        continue
                    out.append(rel)
            self._files = sorted(out)
        return self._files

    def refused(self) -> list[tuple[str, str]]:
        self.files()
        return list(self._refused)

    def exists(self, rel: str) -> bool:
        real = self._inside(rel)
        return real is not None and os.path.isfile(real)

    def read_bytes(self, rel: str, cap: int) -> bytes:
        real = self._inside(rel)
        if real is None:
            raise UnsafeInputError(f"{self.name}/{rel}: resolves outside the prediction folder; not read")
        st = os.stat(real)  # FileNotFoundError propagates
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeInputError(f"{self.name}/{rel}: not a regular file")
        if st.st_size > cap:
            raise UnsafeInputError(f"{self.name}/{rel}: {st.st_size:,} bytes exceeds the cap of {cap:,} bytes")
        with open(real, "rb") as fh:
            return fh.read()


class ZipPredictionFolder(PredictionFolder):
    """A Codabench upload: the files at the archive root, read in place."""

    def __init__(self, path: str | os.PathLike, max_inflated: int = MAX_ZIP_INFLATED_BYTES):
        self.path = Path(path)
        self.name = str(self.path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except zipfile.BadZipFile as exc:
            raise FormatError(f"{self.path}: not a valid zip archive ({exc})") from None
        self._members: dict[str, zipfile.ZipInfo] = {}
        self._refused: list[tuple[str, str]] = []
        total = 0
        for info in self._zip.infolist():
            name = info.filename
            if info.is_dir():
                continue
            pure = PurePosixPath(name.replace("\\", "/"))
            mode = info.external_attr >> 16
            if pure.is_absolute() or ".." in pure.parts or ":" in pure.parts[0]:
                self._refused.append((name, "unsafe path (zip-slip): refused"))
                continue
            if stat.S_ISLNK(mode):
                self._refused.append((name, "symbolic link inside the archive: refused"))
                continue
            if info.compress_size and info.file_size / info.compress_size > MAX_ZIP_RATIO and info.file_size > 1 << 20:
                raise UnsafeInputError(f"{self.path}: member {name!r} inflates {info.file_size / info.compress_size:.0f}x (zip bomb?)")
            total += info.file_size
            self._members[str(pure)] = info
        if total > max_inflated:
            raise UnsafeInputError(f"{self.path}: inflates to {total:,} bytes, over the cap of {max_inflated:,} bytes")

    def files(self) -> list[str]:
        return sorted(self._members)

    def refused(self) -> list[tuple[str, str]]:
        return list(self._refused)

    def exists(self, rel: str) -> bool:
        return rel in self._members

    def read_bytes(self, rel: str, cap: int) -> bytes:
        info = self._members.get(rel)
        if info is None:
            raise FileNotFoundError(f"{self.name}: no member {rel!r}")
        if info.file_size > cap:
            raise UnsafeInputError(f"{self.name}/{rel}: {info.file_size:,} bytes exceeds the cap of {cap:,} bytes")
        with self._zip.open(info) as fh:
            data = fh.read(cap + 1)  # the header's size can lie; never inflate past the cap
        if len(data) > cap:
            raise UnsafeInputError(f"{self.name}/{rel}: inflates past the cap of {cap:,} bytes")
        return data

    def close(self) -> None:
        self._zip.close()


def open_predictions(path: str | os.PathLike) -> PredictionFolder:
    """Open a prediction folder or a ``.zip`` of one."""
    p = Path(path)
    if p.is_dir():
        return DirPredictionFolder(p)
    if p.is_file() and zipfile.is_zipfile(p):
        return ZipPredictionFolder(p)
    if not p.exists():
        raise FormatError(f"{p}: no such prediction folder or zip")
    raise FormatError(f"{p}: expected a folder or a .zip archive")
