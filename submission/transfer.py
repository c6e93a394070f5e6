"""Moving files to and from an engine through its API only (``put_archive`` / ``get_archive``).

* :func:`input_tar` packs the hidden test set for a data volume on a remote host;
* :func:`safe_extract` unpacks a container's ``/output`` pulled with ``get_archive``: regular files and
  folders only (links, devices, fifos are listed, never created), no absolute or ``..`` names, the total
  size capped while reading (the stream is abandoned past the cap).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from fmuia._atomic import ensure_dir


class OutputTooLarge(Exception):
    """The pulled output went past the size cap."""


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def input_digest(root: str | os.PathLike) -> str:
    """A short id of a folder's contents as listed (paths, sizes, mtimes): names its data volume."""
    h = hashlib.sha256()
    base = Path(root)
    for p in _walk(base):
        st = os.lstat(p)
        h.update(f"{p.relative_to(base).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def input_tar(root: str | os.PathLike, prefix: str) -> IO[bytes]:
    """A tar (in a temporary file, positioned at 0) of the folder ``root`` under ``prefix/``, owned by
    root, every entry readable by any UID (the container's user is the image's choice) and none
    writable but by root. Symlinks are kept as links."""
    fh = tempfile.TemporaryFile()
    base = Path(root)

    def readable(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = (info.mode | 0o444 | (0o111 if info.isdir() else 0)) & 0o755
        return info

    with tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(base, arcname=prefix, filter=readable)
    fh.seek(0)
    return fh


def dir_tar(name: str, mode: int) -> bytes:
    """A tar holding one empty folder ``name`` with ``mode`` (to set a volume root's permissions)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = mode
        tar.addfile(info)
    return buf.getvalue()


class _Capped(io.RawIOBase):
    """A read-only file over an iterable of byte chunks that refuses to deliver more than ``cap`` bytes."""

    def __init__(self, chunks: Iterable[bytes], cap: int):
        self._it = iter(chunks)
        self._buf = b""
        self._cap = cap
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        self.read_bytes += n
        if self.read_bytes > self._cap:
            raise OutputTooLarge(f"more than {self._cap} bytes")
        return n


def _safe_name(name: str, strip: str | None) -> str | None:
    """The relative POSIX path to extract ``name`` to, or ``None`` when it is unsafe."""
    if name.startswith("/") or "\\" in name:
        return None
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if strip is not None:
        if not parts or parts[0] != strip:
            return None
        parts = parts[1:]
    if any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def safe_extract(chunks: Iterable[bytes], dest: str | os.PathLike, *, max_bytes: int, strip: str | None = None) -> list[str]:
    """Extract a tar stream into the (empty) folder ``dest``; return the entries left out, as
    ``"path (why)"``. ``strip``: the top folder every name must start with (``output`` for
    ``get_archive("/output")``), removed. Raises :class:`OutputTooLarge` past ``max_bytes`` of file data
    (the stream itself is capped a little above it, for the tar headers)."""
    root = Path(dest)
    ensure_dir(root)
    skipped: list[str] = []
    total = 0
    stream = _Capped(chunks, max_bytes + (64 << 20))
    with tarfile.open(fileobj=io.BufferedReader(stream, 1 << 20), mode="r|") as tar:
        for m in tar:
            rel = _safe_name(m.name, strip)
            if rel is None:
                skipped.append(f"{m.name} (unsafe name)")
                continue
            if rel == "":
                continue  # the top folder itself
            if not (m.isfile() or m.isdir()):
                kind = "symlink" if m.issym() else "hard link" if m.islnk() else "special file"
                skipped.append(f"{rel} ({kind})")
                continue
            target = root / rel
            # every parent must be a folder that this extraction made (never a link: none is ever made)
            parent_ok = all(
                (root / "/".join(rel.split("/")[:i])).is_dir() for i in range(1, rel.count("/") + 1)
            )
            if not parent_ok:
                skipped.append(f"{rel} (parent is not a folder)")
                continue
            if m.isdir():
                if target.exists() and not target.is_dir():
                    skipped.append(f"{rel} (clashes with a file)")
                    continue
                target.mkdir(exist_ok=True)
                continue
            total += m.size
            if total > max_bytes:
                raise OutputTooLarge(f"more than {max_bytes} bytes of files")
            if target.exists():
                skipped.append(f"{rel} (duplicate entry)")
                continue
            src = tar.extractfile(m)
            with open(target, "xb") as fh:
                while True:
                    block = src.read(1 << 20)
                    if not block:
                        break
                    fh.write(block)
    return sorted(skipped)
