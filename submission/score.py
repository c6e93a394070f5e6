"""Score a manifest of submissions: for each one load, run, check, evaluate (strict); then the leaderboard.

The manifest is a CSV file with a header: ``name`` and ``image`` (a local image tag or id) and/or ``tar``
(an image tar file, relative to the manifest's folder unless absolute). Lines starting with ``#`` are
comments::

    name,image,tar
    team-a,teama/model:v3,
    team-b,,submissions/team-b.tar

Layout of the board folder::

    BOARD/submissions/<name>/state.json    status (scored | failed), reason, run details, timings
    BOARD/submissions/<name>/output/       the container's predictions
    BOARD/submissions/<name>/output.log    the container's stdout/stderr
    BOARD/submissions/<name>/results.json  strict evaluation (scored submissions)
    BOARD/leaderboard.*                    written by :mod:`evaluation.leaderboard`

A failing submission is recorded with its reason and the batch goes on. Re-running skips every
submission that has a ``state.json`` (scored or failed); ``retry_failed`` runs the failed ones again.

Both :func:`score_manifest` (one engine, one submission at a time: the library's simple call) and
``fmuia submission score`` run :func:`submission.batch.score_batch`, which spreads the work over the
slots of one or several engines.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.leaderboard import build_leaderboard
from evaluation.leaderboard import write_leaderboard as write_board
from evaluation.manifest import ManifestRow, read_csv_manifest
from fmuia._atomic import write_text
from submission.engine import SubmissionError
from submission.runner import Limits

SCORED = "scored"
FAILED = "failed"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class Entry:
    """One manifest row: a submission's name, where its image comes from, and its line in the file."""

    name: str
    image: str | None
    tar: Path | None
    row: int

    @property
    def source(self) -> str:
        return str(self.tar) if self.tar is not None else str(self.image)


def _check_entry(row: ManifestRow) -> str | None:
    """Why a manifest row cannot be used (``None`` when it can)."""
    name = row["name"]
    if not _NAME.match(name):
        return f"name {name!r}: expected letters, digits, '.', '_' or '-' (it names a folder)"
    if bool(row["image"]) == bool(row["tar"]):
        return f"{name}: give exactly one of `image` or `tar`"
    return None


def read_manifest(path: str | os.PathLike) -> list[Entry]:
    """Parse and validate a manifest; every problem is reported with its row, all at once."""
    rows = read_csv_manifest(
        path,
        ("name", ("image", "tar")),
        path_columns=("tar",),  # absolute: the same string whatever the cwd
        check=_check_entry,
        unique="name",
        comments=True,
        header_message="header must have `name` and `image` and/or `tar` columns, got {header}",
        where="line {}",
        error=SubmissionError,
    )
    if not rows:
        raise SubmissionError(f"{path}: the manifest lists no submission")
    return [Entry(r["name"], r["image"] or None, r.paths["tar"], r.line) for r in rows]


def _state_path(board: Path, name: str) -> Path:
    return board / "submissions" / name / "state.json"


def read_state(board: str | os.PathLike, name: str) -> dict | None:
    """A submission's recorded state, or ``None`` when it has not finished."""
    p = _state_path(Path(board), name)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def score_manifest(
    manifest: str | os.PathLike,
    input_dir: str | os.PathLike,
    labels_dir: str | os.PathLike,
    board_dir: str | os.PathLike,
    *,
    limits: Limits | None = None,
    retry_failed: bool = False,
    n_bootstrap: int = 1000,
    log: Callable[[str], None] = lambda _msg: None,
    docker_client: Any = None,
) -> dict:
    """Score every submission of ``manifest`` on one engine, one at a time; write the leaderboard into
    ``board_dir``. :func:`submission.batch.score_batch` with the local engine (``docker_client``, else the
    one ``DOCKER_HOST`` names) as its one host and one slot.

    Returns ``{"submissions": {name: state}, "leaderboard": <what write_leaderboard returned>}``.
    """
    from submission.batch import BatchOptions, score_batch  # batch imports this module

    out = score_batch(manifest, input_dir, labels_dir, board_dir, limits=limits,
                      options=BatchOptions(slots=1, progress=False), retry_failed=retry_failed,
                      n_bootstrap=n_bootstrap, log=log, docker_client=docker_client)
    return {"submissions": out["submissions"], "leaderboard": out["leaderboard"]}


def write_leaderboard(states: dict[str, dict], board: Path, *, n_bootstrap: int = 1000) -> dict:
    """Rank the scored submissions with :mod:`evaluation.leaderboard` (``leaderboard.{csv,json,md,html}``),
    each failed one listed in its notes with the reason; plus ``submissions.csv``, one row per manifest
    entry (status, reason, rank, seconds). Returns ``{"files": {...}, "ranked": [...], "failed": {...}}``.
    """
    scored = {name: Path(s["results"]) for name, s in states.items() if s.get("status") == SCORED}
    failed = {name: str(s.get("reason") or "unknown failure") for name, s in states.items() if s.get("status") != SCORED}
    files: dict[str, Path] = {}
    ranks: dict[str, int] = {}
    ranked: list[str] = []
    if scored:
        lb = build_leaderboard(scored, n_bootstrap=n_bootstrap)
        lb.notes.extend(f"{name}: not ranked ({reason})" for name, reason in failed.items())
        files = write_board(lb, board)
        ranked = list(lb.names)
        ranks = {n: int(r) for n, r in zip(lb.names, lb.rank, strict=True)}
    rows = [["name", "status", "rank", "reason", "seconds", "source"]]
    for name, s in states.items():
        rows.append([name, s.get("status", ""), ranks.get(name, ""), s.get("reason") or "", s.get("seconds", ""),
                     s.get("source", "")])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    files["submissions"] = board / "submissions.csv"
    write_text(files["submissions"], buf.getvalue())
    return {"files": {k: str(v) for k, v in files.items()}, "ranked": ranked, "failed": failed}
