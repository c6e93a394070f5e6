"""CSV manifests: a header naming the columns, then one row per submission.

One reader for every manifest of the project: the leaderboard's (``name,results``,
:func:`evaluation.leaderboard.read_manifest`) and the batch scorer's (``name,image,tar``,
:func:`submission.score.read_manifest`). It reads the file, checks the header has the required
columns, strips every cell, resolves path columns relative to the manifest's folder, and reports
every bad row as a :class:`~fmuia.errors.Problem` (file, row, message) in one error.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fmuia.errors import FmuiaError, Problem

__all__ = ["ManifestRow", "read_csv_manifest"]


@dataclass(frozen=True)
class ManifestRow:
    """One data row of a manifest.

    ``line``: its line in the file (1-based; comments and blank lines count). ``values``: the cells by
    (lower-case) column name, stripped. ``paths``: each path column resolved to an absolute path,
    ``None`` where the cell is empty.
    """

    line: int
    values: dict[str, str]
    paths: dict[str, Path | None]

    def __getitem__(self, column: str) -> str:
        """The stripped cell of ``column``; ``""`` when the row or the header lacks it."""
        return self.values.get(column, "")


def _columns(required: Sequence[str | tuple[str, ...]]) -> list[str]:
    return [c for spec in required for c in ((spec,) if isinstance(spec, str) else spec)]


def read_csv_manifest(
    path: str | os.PathLike,
    required: Sequence[str | tuple[str, ...]],
    *,
    path_columns: Sequence[str] = (),
    check: Callable[[ManifestRow], str | None] | None = None,
    unique: str | None = None,
    comments: bool = False,
    header_message: str = "manifest needs the columns {columns}; missing {missing}",
    where: str = "{}",
    error: type[FmuiaError] = FmuiaError,
) -> list[ManifestRow]:
    """The data rows of the CSV manifest ``path`` (UTF-8, a BOM allowed), in file order.

    ``required``: the columns the header must have; a tuple stands for alternatives of which at least
    one must be present. Header names are compared stripped and lower-cased. Blank lines are skipped,
    and with ``comments`` so are lines starting with ``#``. Each line is one row (a stray quote spoils
    only its own line).

    Per row, ``check`` returns why the row is unusable (or ``None``); then, when ``unique`` names a
    column, a value seen on an earlier good row is reported as a duplicate. Bad rows are left out and
    reported together: one ``error`` with a :class:`~fmuia.errors.Problem` per row, located by
    ``where.format(line)``. ``header_message`` is formatted with ``columns`` (e.g. ``name,results``),
    ``missing`` (sorted list of the missing columns) and ``header`` (the header's cells as read).
    """
    path = Path(path)
    columns = _columns(required)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise error(f"{path}: manifest not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: the manifest is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    numbered = [(i, ln) for i, ln in enumerate(text.splitlines(), start=1)
                if ln.strip() and not (comments and ln.lstrip().startswith("#"))]
    if not numbered:
        raise error(
            f"{path}: empty manifest (expected a header `{','.join(columns)}` and one row per submission)"
        )
    raw_header = next(csv.reader([numbered[0][1]]))
    header = [h.strip().lower() for h in raw_header]
    missing = [spec if isinstance(spec, str) else "|".join(spec) for spec in required
               if not ({spec} if isinstance(spec, str) else set(spec)) & set(header)]
    if missing:
        msg = header_message.format(columns=",".join(columns), missing=sorted(missing), header=raw_header)
        raise error(f"{path}: {msg}")
    problems: list[Problem] = []
    rows: list[ManifestRow] = []
    seen: set[str] = set()
    for line, text_line in numbered[1:]:
        cells = next(csv.reader([text_line]))
        values = {h: (cells[j].strip() if j < len(cells) else "") for j, h in enumerate(header)}
        paths = {c: Path(os.path.abspath(path.parent / values[c])) if values.get(c) else None
                 for c in path_columns}
        row = ManifestRow(line, values, paths)
        message = check(row) if check is not None else None
        if message is None and unique is not None:
            if row[unique] in seen:
                message = f"duplicate {unique} {row[unique]!r}"
            seen.add(row[unique])
        if message is not None:
            problems.append(Problem(str(path), where.format(line), message))
            continue
        rows.append(row)
    if problems:
        raise error(f"{path}: {len(problems)} problem(s) in the manifest", problems)
    return rows
