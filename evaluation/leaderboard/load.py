"""Loading the submissions to rank: ``results.json`` files, folders holding one, a CSV manifest
(``name,results``), or results objects already in memory; and naming each submission."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from evaluation.manifest import ManifestRow, read_csv_manifest
from evaluation.schema import check_results
from fmuia.errors import FmuiaError, Problem

__all__ = ["ResultsInput", "read_results_file", "read_manifest", "load_results", "as_results_mapping"]

# name -> results dict (or path); a list of results.json paths/folders; a manifest CSV path.
ResultsInput = Mapping[str, Mapping | str | os.PathLike] | Sequence[str | os.PathLike] | str | os.PathLike


def read_results_file(path: Path) -> dict:
    """One ``results.json``: a JSON object with at least one task-kind key, else :class:`FmuiaError`."""
    try:
        size = path.stat().st_size
        if size > MAX_RESULTS_BYTES:
            raise FmuiaError(f"{path}: {size:,} bytes is over the {MAX_RESULTS_BYTES:,}-byte cap for a results file")
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh, parse_constant=_no_constant)
    except FileNotFoundError:
        raise FmuiaError(f"{path}: results file not found") from None
    except IsADirectoryError:
        raise FmuiaError(f"{path}: is a folder without a results.json") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FmuiaError(f"{path}: not valid UTF-8 JSON ({str(exc)[:200]})") from None
    check(str(path), value)
    return value


MAX_RESULTS_BYTES = 512 * 1024 * 1024  # a strict results.json of 100k rows is about 30 MB


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def check(name: str, results: object) -> None:
    """Refuse a results object that :func:`evaluation.schema.check_results` finds fault with."""
    problems = check_results(results)
    if len(problems) == 1:
        raise FmuiaError(f"{name}: not a valid results file: {problems[0]}")
    if problems:
        raise FmuiaError(f"{name}: not a valid results file ({len(problems)} problems)",
                         [Problem(name, "", p) for p in problems])


def _check_entry(row: ManifestRow) -> str | None:
    return None if row["name"] and row["results"] else "empty name or results"


def read_manifest(path: str | os.PathLike) -> dict[str, Path]:
    """``name -> results path`` from a CSV with columns ``name,results`` (paths relative to the CSV)."""
    rows = read_csv_manifest(
        path,
        ("name", "results"),
        path_columns=("results",),
        check=_check_entry,
        unique="name",
        header_message="manifest needs the columns name,results; missing {missing}",
    )
    return {r["name"]: r.paths["results"] for r in rows}  # both cells non-empty (_check_entry)


def _results_file(p: Path) -> Path:
    return p / "results.json" if p.is_dir() else p


def load_results(paths: Sequence[str | os.PathLike] = (),
                 manifest: str | os.PathLike | None = None) -> dict[str, dict]:
    """Load results files: each named by its parent folder (a ``.csv`` in ``paths`` is a manifest)."""
    named: dict[str, Path] = {}
    sources: list[tuple[str, Path]] = []
    if manifest is not None:
        sources += list(read_manifest(manifest).items())
    for raw in paths:
        p = Path(raw)
        if p.suffix.lower() == ".csv":
            sources += list(read_manifest(p).items())
            continue
        f = _results_file(p)
        sources.append((f.resolve().parent.name or str(f), f))
    for name, f in sources:
        if name in named:
            raise FmuiaError(
                f"two submissions are both named {name!r} ({named[name]} and {f}); "
                "name them with a manifest CSV (columns name,results)"
            )
        named[name] = f
    if not named:
        raise FmuiaError("no results given: pass results.json files (or their folders) or --manifest CSV")
    return {name: read_results_file(f) for name, f in named.items()}


def _checked(name: str, results: object) -> dict:
    check(name, results)
    return dict(results)  # type: ignore[call-overload]


def as_results_mapping(results: ResultsInput) -> dict[str, dict]:
    """``name -> results`` from any :data:`ResultsInput` (paths are read, mappings copied)."""
    if isinstance(results, Mapping):
        return {
            str(k): read_results_file(_results_file(Path(v)))
            if isinstance(v, (str, os.PathLike)) else _checked(str(k), v)
            for k, v in results.items()
        }
    if isinstance(results, (str, os.PathLike)):
        p = Path(results)
        return load_results(manifest=p) if p.suffix.lower() == ".csv" else load_results([p])
    return load_results(list(results))
