"""Errors users can act on. Each carries where (file, row or entry) and what was expected.

The CLI turns a :class:`FmuiaError` into one line per problem and a non-zero exit code;
anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


def _one_line(text: str) -> str:
    """Control characters (a line break in a hostile file name) escaped: one problem, one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


@dataclass(frozen=True)
class Problem:
    """One located problem: ``file:where: message``. ``severity`` is "error" or "warning"."""

    file: str
    where: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        loc = self.file + (f":{self.where}" if self.where != "" else "")
        prefix = "" if self.severity == "error" else f"{self.severity}: "
        return _one_line(f"{loc}: {prefix}{self.message}")

    def to_dict(self) -> dict:
        return {"file": self.file, "where": self.where, "message": self.message, "severity": self.severity}


class FmuiaError(Exception):
    """Base class for every error a user can fix (bad input, bad arguments, missing files)."""

    def __init__(self, message: str, problems: list[Problem] | None = None):
        super().__init__(message)
        self.message = message
        self.problems: list[Problem] = list(problems or [])

    def lines(self, limit: int = 50) -> list[str]:
        """Human-readable lines: the message, then up to ``limit`` problems."""
        out = [_one_line(self.message)]
        out += [f"  {p}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            out.append(f"  ... and {len(self.problems) - limit} more")
        return out


class SchemaError(FmuiaError):
    """A data root (CSVs, images, labels) does not follow the official schema."""


class FormatError(FmuiaError):
    """A prediction file or entry does not follow the official prediction format."""


class UnsafeInputError(FmuiaError):
    """Input refused for safety: path escape, link, zip bomb, decompression bomb, size cap."""
