"""Safe, read-only access to a prediction folder or the ``.zip`` uploaded to Codabench.

Nothing outside the folder is ever read: a path or symlink that resolves outside it is refused,
a symlinked folder is not followed (nor read through), and so are zip-slip names, links inside
archives, archives that inflate past a cap, JSON files over a size cap (checked on the file's
size, or the member's ``file_size``, before a byte is read) and images over a pixel cap.

A zip is read in place, member by member, as the platform sees it once ``zipfile`` has extracted
it on Linux: a name keeps its backslashes (``seg\\x.png`` is a file of that name at the root, not
``seg/x.png``), ``./`` and empty parts are dropped, and two members that extract to one path
(the last would win on disk) make that path unreadable. A member that cannot be extracted (bad
CRC, corrupt data, encryption, an unknown compression method) raises :class:`FormatError` when
read. :meth:`PredictionFolder.as_extracted` is the platform's view itself (the last duplicate
wins, links are plain files): the official scorer reads through it.

The readers every consumer shares (check, strict and official scoring, the visualisation):
:meth:`~PredictionFolder.read_json` / :meth:`~PredictionFolder.read_json_file` (one JSON reader:
:func:`fmuia.formats.load_prediction_json`) and :meth:`~PredictionFolder.read_prediction_mask`
(one mask reader: :func:`fmuia.dataset.masks.read_prediction_mask`).
"""

from __future__ import annotations

import os
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from fmuia import formats
from fmuia.dataset.masks import DecodedMask, PredictionMask, read_prediction_mask
from fmuia.errors import FormatError, UnsafeInputError
from fmuia.formats import PredictionJson, load_prediction_json
from fmuia.tasks import PREDICTION_FILES, TaskKind

MAX_JSON_BYTES = 32 * 1024 * 1024  # a real 10k-entry prediction file is ~2 MB
MAX_MASK_BYTES = 64 * 1024 * 1024
MAX_ZIP_INFLATED_BYTES = 16 * 1024 * 1024 * 1024
MAX_ZIP_RATIO = 200  # inflated / compressed for one member over 1 MiB; JSON reaches ~10, PNG ~1

# what reading a zip member raises when it cannot be extracted
_ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError, OSError)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n:,} bytes"


def _cap_message(where: str, size: int, cap: int) -> str:
    return f"{where}: {size:,} bytes exceeds the cap of {cap:,} bytes ({_mib(cap)}); not read"


class PredictionFolder:
    """Base class: a prediction folder addressed by relative POSIX paths."""

    name: str

    def files(self) -> list[str]:
        """Relative paths of the regular files inside (links and unsafe names excluded)."""
        raise NotImplementedError

    def refused(self) -> list[tuple[str, str]]:
        """``(name, reason)`` for each entry that will never be read (links, escapes, duplicates)."""
        return []

    def refusal(self, rel: str) -> str | None:
        """Why ``rel`` is never read (a refused entry, or under a symlinked folder); ``None`` otherwise."""
        return dict(self.refused()).get(rel)

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def read_bytes(self, rel: str, cap: int) -> bytes:
        """Contents of ``rel``; ``FileNotFoundError`` if absent, :class:`UnsafeInputError` if refused
        or over ``cap`` (checked before reading), :class:`FormatError` if it cannot be extracted."""
        raise NotImplementedError

    def as_extracted(self) -> PredictionFolder:
        """The folder as the platform's scorer sees it (a zip: extracted by ``zipfile`` on Linux)."""
        return self

    def close(self) -> None:
        pass

    def __enter__(self) -> PredictionFolder:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # Shared readers -------------------------------------------------------------------------
    def read_json_file(self, kind: TaskKind, *, nesting_limit: bool = True,
                       duplicate_keys: bool = True) -> PredictionJson | None:
        """A kind's prediction JSON, read by :func:`fmuia.formats.load_prediction_json`; ``None`` if
        the file is absent. Raises :class:`FormatError` when it is unreadable (for the official
        scorer's ``json.load`` too), :class:`UnsafeInputError` when refused or over
        :data:`MAX_JSON_BYTES` (checked before it is read). ``nesting_limit``: refuse nesting deeper
        than :data:`fmuia.formats.MAX_JSON_DEPTH` (without it, only as deep as ``json.load`` manages,
        as in the official scorer); ``duplicate_keys``: report keys repeated in one object."""
        rel = PREDICTION_FILES[TaskKind(kind)]
        reason = self.refusal(rel)
        if reason is not None:
            raise UnsafeInputError(f"{rel}: not read: {reason}")
        if not self.exists(rel):
            return None
        data = self.read_bytes(rel, MAX_JSON_BYTES)
        return load_prediction_json(data, rel, max_depth=formats.MAX_JSON_DEPTH if nesting_limit else None,
                                    duplicate_keys=duplicate_keys)

    def read_json(self, kind: TaskKind) -> list | None:
        """The entries of a kind's prediction JSON; ``None`` if the file is absent (see :meth:`read_json_file`)."""
        f = self.read_json_file(kind)
        return None if f is None else f.entries

    def read_prediction_mask(self, rel: str) -> PredictionMask:
        """A prediction mask as both Pillow and the official scorer's OpenCV read it
        (:func:`fmuia.dataset.masks.read_prediction_mask`: ``error`` set when the stricter fails).
        Raises ``FileNotFoundError``, :class:`UnsafeInputError` (refused, over a cap) or
        :class:`FormatError` (cannot be extracted)."""
        return read_prediction_mask(self.read_bytes(rel, MAX_MASK_BYTES), name=f"{self.name}/{rel}")

    def read_mask(self, rel: str) -> DecodedMask:
        """Decode a mask file (the class indices); raises ``FileNotFoundError``, :class:`UnsafeInputError`
        or :class:`FormatError` (also when Pillow or the official scorer's OpenCV cannot read it)."""
        m = self.read_prediction_mask(rel)
        if m.error is not None or m.array is None:
            raise FormatError(f"{self.name}/{rel}: cannot decode the mask ({m.error})")
        return DecodedMask(m.array, m.format, m.mode or "")


class DirPredictionFolder(PredictionFolder):
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.name = str(self.path)
        self._real = os.path.realpath(self.path)
        self._files: list[str] | None = None
        self._refused: list[tuple[str, str]] = []
        self._linked_dirs: dict[str, bool] = {}

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

    def _linked_parent(self, rel: str) -> str | None:
        """The first folder of ``rel`` (inside the prediction folder) that is a symbolic link."""
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            hit = self._linked_dirs.get(prefix)
            if hit is None:
                hit = self._linked_dirs[prefix] = os.path.islink(os.path.join(self.path, prefix))
            if hit:
                return prefix
        return None

    def refusal(self, rel: str) -> str | None:
        reason = super().refusal(rel)
        if reason is not None:
            return reason
        link = self._linked_parent(rel)
        return None if link is None else f"inside {link!r}, a symbolic link to a folder: not followed"

    def exists(self, rel: str) -> bool:
        real = self._inside(rel)
        return real is not None and self._linked_parent(rel) is None and os.path.isfile(real)

    def read_bytes(self, rel: str, cap: int) -> bytes:
        link = self._linked_parent(rel)
        if link is not None:
            raise UnsafeInputError(f"{self.name}/{rel}: inside {link!r}, a symbolic link to a folder: not followed")
        real = self._inside(rel)
        if real is None:
            raise UnsafeInputError(f"{self.name}/{rel}: resolves outside the prediction folder; not read")
        st = os.stat(real)  # FileNotFoundError propagates
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeInputError(f"{self.name}/{rel}: not a regular file")
        if st.st_size > cap:
            raise UnsafeInputError(_cap_message(f"{self.name}/{rel}", st.st_size, cap))
        with open(real, "rb") as fh:
            data = fh.read(cap + 1)  # the file may grow after the stat: never read past the cap
        if len(data) > cap:
            raise UnsafeInputError(_cap_message(f"{self.name}/{rel}", len(data), cap))
        return data


def extracted_name(name: str) -> str:
    """Where ``zipfile`` extracts a member on Linux (``ZipFile._extract_member``): empty, ``.``
    and ``..`` parts dropped; backslashes, colons and every other character kept as they are."""
    return "/".join(p for p in name.split("/") if p not in ("", ".", ".."))


class ZipPredictionFolder(PredictionFolder):
    """A Codabench upload: the files at the archive root, read in place."""

    def __init__(self, path: str | os.PathLike, max_inflated: int = MAX_ZIP_INFLATED_BYTES):
        self.path = Path(path)
        self.name = str(self.path)
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            raise FormatError(f"{self.path}: not a valid zip archive ({exc})") from None
        self._members: dict[str, zipfile.ZipInfo] = {}  # path -> the one safe member extracted there
        self._extracted: dict[str, zipfile.ZipInfo] = {}  # path -> the member the platform's extraction leaves there
        self._refused: list[tuple[str, str]] = []
        self._why: dict[str, str] = {}
        by_path: dict[str, list[tuple[zipfile.ZipInfo, str | None]]] = {}
        dirs: set[str] = set()
        total = 0
        for info in infos:
            name = info.filename
            disk = extracted_name(name)
            if info.is_dir():
                if disk:
                    dirs.add(disk)
                continue
            pure = PurePosixPath(name)
            mode = info.external_attr >> 16
            unsafe = None
            if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
                unsafe = "unsafe path (zip-slip): refused"
            elif stat.S_ISLNK(mode):
                unsafe = "symbolic link inside the archive: refused"
            elif info.flag_bits & 0x1:
                unsafe = "encrypted (password-protected) member: the platform's unzip cannot extract it (and stops there)"
            if unsafe is not None:
                self._refused.append((name, unsafe))
                self._why.setdefault(name, unsafe)
                if info.flag_bits & 0x1 and unsafe.startswith("encrypted"):
                    self._why.setdefault(disk, unsafe)
            if info.compress_size and info.file_size / info.compress_size > MAX_ZIP_RATIO and info.file_size > 1 << 20:
                raise UnsafeInputError(f"{self.path}: member {name!r} inflates {info.file_size / info.compress_size:.0f}x (zip bomb?)")
            total += info.file_size
            if disk:
                by_path.setdefault(disk, []).append((info, unsafe))
        if total > max_inflated:
            raise UnsafeInputError(f"{self.path}: inflates to {total:,} bytes, over the cap of {max_inflated:,} bytes")
        folders = set(dirs)  # every path the extraction must make a folder
        for disk in by_path:
            parts = disk.split("/")
            folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
        for disk, members in by_path.items():
            parents = ["/".join(disk.split("/")[:i]) for i in range(1, disk.count("/") + 1)]
            clash = disk if disk in folders else next((q for q in parents if q in by_path), None)
            if clash is not None:
                self._refuse(disk, f"{clash!r} is both a file and a folder in the archive: the platform's unzip "
                                   "fails on it (and stops there)")
                continue
            self._extracted[disk] = members[-1][0]
            if len(members) > 1:
                if any(u is None for _, u in members):  # colliding with refused members only: reported as those
                    self._refuse(disk, f"{len(members)} members of the archive extract to this path: on the platform "
                                       "the last one overwrites the others; keep exactly one")
                continue
            info, unsafe = members[0]
            if unsafe is None:
                self._members[disk] = info

    def _refuse(self, rel: str, reason: str) -> None:
        self._refused.append((rel, reason))
        self._why.setdefault(rel, reason)

    def files(self) -> list[str]:
        return sorted(self._members)

    def refused(self) -> list[tuple[str, str]]:
        return list(self._refused)

    def refusal(self, rel: str) -> str | None:
        return self._why.get(rel) or self._why.get(extracted_name(rel))

    def exists(self, rel: str) -> bool:
        return extracted_name(rel) in self._members

    def _read(self, info: zipfile.ZipInfo, rel: str, cap: int) -> bytes:
        if info.file_size > cap:
            raise UnsafeInputError(_cap_message(f"{self.name}/{rel}", info.file_size, cap))
        if info.flag_bits & 0x1:
            raise FormatError(f"{rel}: cannot read the file (encrypted member); the platform's unzip cannot extract it")
        try:
            with self._zip.open(info) as fh:
                data = fh.read(cap + 1)  # the header's size can lie; never inflate past the cap
        except _ZIP_READ_ERRORS as exc:
            raise FormatError(f"{rel}: cannot read the file ({type(exc).__name__}: {exc}); "
                              "the platform's unzip fails on it too (and stops there)") from None
        if len(data) > cap:
            raise UnsafeInputError(f"{self.name}/{rel}: inflates past the cap of {cap:,} bytes ({_mib(cap)}); not read")
        return data

    def read_bytes(self, rel: str, cap: int) -> bytes:
        key = extracted_name(rel)
        info = self._members.get(key)
        if info is None:
            reason = self.refusal(rel)
            if reason is not None:
                raise UnsafeInputError(f"{self.name}/{rel}: not read: {reason}")
            raise FileNotFoundError(f"{self.name}: no member {rel!r}")
        return self._read(info, rel, cap)

    def verify(self, rel: str) -> str | None:
        """Read a member through to its end (checking its CRC) without keeping it; why it cannot be
        extracted, or ``None``."""
        info = self._members.get(extracted_name(rel))
        if info is None:
            return None
        try:
            with self._zip.open(info) as fh:
                while fh.read(1 << 20):
                    pass
        except _ZIP_READ_ERRORS as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def as_extracted(self) -> PredictionFolder:
        return _ExtractedZip(self)

    def close(self) -> None:
        self._zip.close()


class _ExtractedZip(PredictionFolder):
    """A zip as the platform's ``zipfile.extractall`` leaves it on disk, read in place: every path
    holds the last member extracted there, a link member is a plain file holding its target's
    name; a path that is both a file and a folder, or an encrypted member, is unreadable."""

    def __init__(self, z: ZipPredictionFolder):
        self._z, self.name = z, z.name

    def files(self) -> list[str]:
        return sorted(self._z._extracted)

    def refusal(self, rel: str) -> str | None:
        return None if extracted_name(rel) in self._z._extracted else self._z.refusal(rel)

    def exists(self, rel: str) -> bool:
        return extracted_name(rel) in self._z._extracted

    def read_bytes(self, rel: str, cap: int) -> bytes:
        info = self._z._extracted.get(extracted_name(rel))
        if info is None:
            reason = self._z.refusal(rel)
            if reason is not None:
                raise UnsafeInputError(f"{self.name}/{rel}: not read: {reason}")
            raise FileNotFoundError(f"{self.name}: no member {rel!r}")
        return self._z._read(info, rel, cap)


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
