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

:func:`score_manifest` runs them one after another on one engine (the library's simple path);
``fmuia submission score`` runs :func:`submission.batch.score_batch`, which keeps this layout and these
rules and spreads the work over the slots of one or several engines.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.leaderboard import build_leaderboard
from evaluation.leaderboard import write_leaderboard as write_board
from evaluation.manifest import ManifestRow, read_csv_manifest
from evaluation.scoring import evaluate, write_results
from fmuia._atomic import ensure_dir, write_json, write_text
from fmuia.errors import FmuiaError
from submission.build import load_image
from submission.engine import SubmissionError
from submission.engine import client as _client
from submission.runner import OK, Limits, run_submission

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


def score_one(
    entry: Entry,
    input_dir: Path,
    labels_dir: Path,
    board: Path,
    *,
    limits: Limits,
    n_bootstrap: int,
    docker_client: Any,
) -> dict:
    """Load, run, check and evaluate one submission; return its state (never raises for its failures)."""
    sub_dir = board / "submissions" / entry.name
    ensure_dir(sub_dir)
    state: dict[str, Any] = {"name": entry.name, "source": entry.source, "status": FAILED, "reason": None}
    t0 = time.monotonic()
    try:
        image = load_image(entry.tar, docker_client=docker_client) if entry.tar else str(entry.image)
        state["image_id"] = image
        result = run_submission(
            image, input_dir, sub_dir / "output", limits=limits, overwrite=True, docker_client=docker_client
        )
        state["run"] = result.to_dict()
        if result.status != OK:
            state["reason"] = result.reason
        else:
            results = evaluate(sub_dir / "output", labels_dir, mode="strict", n_bootstrap=n_bootstrap)
            write_results(results, sub_dir / "results.json")
            state["results"] = str(sub_dir / "results.json")
            state["status"] = SCORED
    except FmuiaError as exc:
        state["reason"] = exc.message
    except Exception as exc:  # engine trouble with this image: record it, keep the batch going
        state["reason"] = f"{exc.__class__.__name__}: {exc}"
    state["seconds"] = round(time.monotonic() - t0, 3)
    state["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json(_state_path(board, entry.name), state)
    return state


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
    """Score every submission of ``manifest``; write the leaderboard into ``board_dir``.

    Returns ``{"submissions": {name: state}, "leaderboard": <what write_leaderboard returned>}``.
    """
    entries = read_manifest(manifest)
    inp, labels, board = Path(input_dir), Path(labels_dir), Path(board_dir)
    for p, what in ((inp, "test input"), (labels, "labels")):
        if not p.is_dir():
            raise SubmissionError(f"{p}: no such {what} folder")
    ensure_dir(board)
    limits = limits or Limits()
    dc = docker_client or _client()
    states: dict[str, dict] = {}
    for entry in entries:
        prev = read_state(board, entry.name)
        if prev is not None and prev.get("source") == entry.source and (
            prev.get("status") == SCORED or (prev.get("status") == FAILED and not retry_failed)
        ):
            log(f"{entry.name}: already {prev['status']}, skipped")
            states[entry.name] = prev
            continue
        log(f"{entry.name}: running {entry.source}")
        state = score_one(entry, inp, labels, board, limits=limits, n_bootstrap=n_bootstrap, docker_client=dc)
        msg = state["status"] + (f" ({state['reason']})" if state.get("reason") else "")
        log(f"{entry.name}: {msg} in {state['seconds']:.1f} s")
        states[entry.name] = state
    board_info = write_leaderboard(states, board, n_bootstrap=n_bootstrap)
    return {"submissions": states, "leaderboard": board_info}


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
