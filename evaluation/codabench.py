"""Codabench: the scoring program entry and the competition bundle builder.

Scoring (what runs on Codabench)::

    python -m evaluation.codabench INPUT OUTPUT

reads the labels from ``INPUT/ref`` (the reference-data zip, unzipped: a labelled data root) and
the participant's unzipped upload from ``INPUT/res``, scores it with the strict scorer and writes
``OUTPUT/scores.json`` (the nine aggregate keys, numbers only), ``OUTPUT/detailed_results.html``
and ``OUTPUT/results.json``. It never uses the network. A broken submission still gets a
``scores.json``: when the strict scorer cannot score the upload at all, the upload is scored as
an empty submission (so it can never rank above one) and the HTML explains why. The HTML is the
evaluation report (:func:`evaluation.report.write_report`, pictures embedded) with the reasons
and the leaderboard scores on top; without matplotlib it falls back to tables only. Exit code 0 when
scores were written; 2 on an organizer-side error (a required package missing from the docker
image, unusable reference data): then no scores.json is written (Codabench marks the run failed,
so nothing wrong reaches the leaderboard) and the HTML says what to fix.

Bundle (what an organizer uploads): :func:`build_bundle` / ``fmuia codabench bundle``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import io
import json
import os
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evaluation import _import_graph as import_graph
from evaluation import html as H
from evaluation.aggregates import AGGREGATES, HIGHER
from fmuia._atomic import atomic_path, ensure_dir, json_safe, write_json, write_text
from fmuia.console import print_error, run
from fmuia.errors import FmuiaError
from fmuia.tasks import PREDICTION_FILES, TaskKind

# Codabench runs the scoring command with working directory /app/program (the unzipped
# scoring_program.zip), so `-m evaluation.codabench` finds the package copied there.
SCORING_COMMAND = "python3 -m evaluation.codabench /app/input /app/output"

# Third-party packages the scoring program imports (must be in the competition's docker image),
# and their import names (checked before scoring).
REQUIREMENTS = ("numpy", "scipy", "scikit-learn", "Pillow", "pycocotools", "matplotlib", "numba", "llvmlite")
REQUIRED_MODULES = ("numpy", "scipy", "sklearn", "PIL", "pycocotools")
# numba (with its llvmlite) compiles the segmentation metric kernel; without it the scorer falls
# back to the pure-numpy implementation (same numbers, about twice slower), so it is not required.
# matplotlib draws the plots of detailed_results.html; without it the page has tables only.

# The image competition.yaml names unless --docker-image says otherwise: build it from the
# scoring_image.Dockerfile shipped in the bundle and push it under this name (or pass your own).
# Codabench's stock codalab-legacy images run Python 3.9, too old for this package (3.10+).
DEFAULT_DOCKER_IMAGE = "fmuia/scoring:0.1.0"
MIN_PYTHON = (3, 10)

# Reported for an aggregate without a value (no task of its kind in the reference data).
FALLBACK_WORST = {key: (0.0 if d == HIGHER else 1e9) for key, (_k, _m, d) in AGGREGATES.items()}
FALLBACK_WORST["cls_MCC"] = -1.0

TITLES = {
    "seg_DSC": "Segmentation DSC",
    "seg_HD": "Segmentation HD",
    "cls_Accuracy": "Classification Accuracy",
    "cls_AUC": "Classification AUC",
    "cls_F1_macro": "Classification F1 macro",
    "cls_F1_weighted": "Classification F1 weighted",
    "cls_MCC": "Classification MCC",
    "det_IoU": "Detection IoU",
    "reg_MRE": "Regression MRE",
}
PRECISION = {"seg_HD": 2, "reg_MRE": 2}


# ---- scoring ---------------------------------------------------------------------------------------

def _find_prediction_root(res: Path, notes: list[str]) -> Path:
    """The folder holding the predictions: ``res`` itself, or its single sub-folder when the
    participant zipped a folder instead of its contents."""
    def has_predictions(p: Path) -> bool:
        return any((p / f).is_file() for f in PREDICTION_FILES.values()) or any(
            q.suffix.lower() == ".png" for q in p.rglob("*.png")
        )

    entries = [e for e in res.iterdir() if not e.name.startswith(".") and e.name != "__MACOSX"]
    if not any((res / f).is_file() for f in PREDICTION_FILES.values()):
        dirs = [e for e in entries if e.is_dir() and not e.is_symlink()]
        files = [e for e in entries if e.is_file()]
        if len(dirs) == 1 and not files and has_predictions(dirs[0]):
            notes.append(f"the upload holds one folder {dirs[0].name!r}: its contents were scored (zip the files, not the folder)")
            return dirs[0]
    return res


def _scores_from(results: dict) -> tuple[dict[str, float], list[str]]:
    agg = results.get("aggregates") or {}
    scores: dict[str, float] = {}
    notes: list[str] = []
    for key in AGGREGATES:
        v = agg.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"):
            scores[key] = float(v)
        else:
            scores[key] = FALLBACK_WORST[key]
            notes.append(f"{key}: no value (no task of this kind in the reference data?); reported as {FALLBACK_WORST[key]:g}")
    return scores, notes


def missing_requirements() -> list[str]:
    """What this environment lacks: a recent enough Python, the :data:`REQUIRED_MODULES`."""
    out = [] if sys.version_info >= MIN_PYTHON else [f"Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} (this is {sys.version.split()[0]})"]
    return out + [m for m in REQUIRED_MODULES if importlib.util.find_spec(m) is None]


def scoring_dockerfile(constraints: Path | None = None) -> str:
    """A Dockerfile for an image that runs the scoring program (versions pinned from constraints.txt)."""
    pins: dict[str, str] = {}
    constraints = constraints or _repo_root() / "constraints.txt"
    if constraints.is_file():
        for line in constraints.read_text().splitlines():
            name, _, version = line.strip().partition("==")
            if version and name.lower() in {r.lower() for r in REQUIREMENTS}:
                pins[name.lower()] = version
    pkgs = " ".join(f"{r}=={pins[r.lower()]}" if r.lower() in pins else r for r in REQUIREMENTS)
    return (
        "# The image that runs the fmuia scoring program on Codabench (no torch, no network needed).\n"
        f"#   docker build -t {DEFAULT_DOCKER_IMAGE} -f scoring_image.Dockerfile . && docker push {DEFAULT_DOCKER_IMAGE}\n"
        "# (or tag it under your own Docker Hub name and set docker_image in competition.yaml to match)\n"
        "FROM python:3.11-slim\n"
        f"RUN pip install --no-cache-dir {pkgs}\n"
    )


class ScoringEnvironmentError(FmuiaError):
    """The organizer's side is broken (packages missing, reference data unusable): not the submission's fault."""


def score_submission(input_dir: str | os.PathLike, output_dir: str | os.PathLike, *, n_bootstrap: int = 1000, workers: int = 1) -> dict[str, float]:
    """Score ``input_dir/res`` against ``input_dir/ref``; write scores.json, detailed_results.html, results.json.

    Returns the scores. A submission that cannot be read at all is scored as an empty one.
    Raises :class:`ScoringEnvironmentError` (after writing an explanatory HTML, and no
    scores.json) when the scoring environment or the reference data is broken.
    """
    inp, out = Path(input_dir), Path(output_dir)
    ensure_dir(out)
    ref, res = inp / "ref", inp / "res"
    problems: list[str] = []
    notes: list[str] = []
    _write_html(out, "Scoring in progress…", {}, None, [], [])
    missing = missing_requirements()
    if missing:
        msg = (
            f"the scoring environment lacks: {', '.join(missing)}; use a docker image with Python >= 3.10 and "
            + ", ".join(REQUIREMENTS) + " (see scoring_image.Dockerfile in the bundle)"
        )
        _write_html(out, "Scoring environment error (organizers: see below)", {}, None, [msg], [])
        raise ScoringEnvironmentError(msg)

    from evaluation.scoring import evaluate  # deferred: numpy and scipy, checked just above

    results: dict | None = None
    scored_as_empty = False
    if not res.is_dir():
        problems.append(f"no submission found: {res} is missing")
    else:
        try:
            pred = _find_prediction_root(res, notes)
            results = evaluate(pred, ref, mode="strict", workers=workers, n_bootstrap=n_bootstrap)
        except (ImportError, MemoryError):
            raise  # the environment, not the submission
        except Exception as exc:  # a submission must never crash the scoring program
            problems.append(_describe(exc))
    if results is None:
        scored_as_empty = True
        with tempfile.TemporaryDirectory(prefix="fmuia-empty-") as empty:
            try:
                results = evaluate(Path(empty), ref, mode="strict", workers=workers, n_bootstrap=0)
            except Exception as exc:
                msg = f"the reference data in {ref} could not be scored: {_describe(exc)}"
                _write_html(out, "Reference data error (organizers: see below)", {}, None, [*problems, msg], notes)
                raise ScoringEnvironmentError(msg) from exc
    scores, more = _scores_from(results)
    notes += more
    _write_outputs(out, scores, results, problems, notes, scored_as_empty)
    return scores


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FmuiaError):
        return " | ".join(exc.lines(limit=20))
    return f"{type(exc).__name__}: {exc}"


def _write_outputs(out: Path, scores: dict, results: dict | None, problems: list[str], notes: list[str], as_empty: bool) -> None:
    write_json(out / "scores.json", scores)
    if results is not None:
        write_json(out / "results.json", json_safe(results))
    title = "Submission scored as EMPTY (it could not be read)" if as_empty else "Detailed results"
    _write_html(out, title, scores, results, problems, notes)


def _head_parts(scores: dict, problems: list[str], notes: list[str]) -> list[str]:
    """Why a submission could not be scored, the scoring program's notes and the leaderboard scores."""
    body: list[str] = []
    if problems:
        body += ["<h2 class=\"bad\">Why this submission could not be scored</h2>", H.bullet_list(problems)]
    if notes:
        body += ["<h2>Scoring notes</h2>", H.bullet_list(notes)]
    if scores:
        rows = [[TITLES[k], k, "higher" if d == HIGHER else "lower", scores.get(k)] for k, (_kk, _m, d) in AGGREGATES.items()]
        body += ["<h2>Leaderboard scores</h2>", H.table(["Column", "Key", "Better", "Score"], rows, left=3)]
    return body


def _worst_rows_parts(results: dict) -> list[str]:
    """Rows scored with the worst value: counts per task and reason, then the first rows."""
    per_case = results.get("per_case") or []
    bad = [r for r in per_case if isinstance(r, dict) and r.get("reason")]
    if not bad:
        return []
    counts = Counter((str(r.get("task_id")), str(r.get("reason"))) for r in bad)
    return [
        "<h2 class=\"bad\">Rows scored with the worst value</h2>",
        H.paragraph(f"{len(bad)} of {len(per_case)} rows had a missing, unreadable or malformed prediction."),
        H.table(["Task", "Reason", "Rows"], [[t, r, c] for (t, r), c in counts.most_common(100)], left=2),
        "<h3>First rows</h3>",
        H.table(["Task", "Image", "Reason"], [[r.get("task_id"), r.get("image_path"), r.get("reason")] for r in bad[:50]], left=3),
    ]


def _write_html(out: Path, title: str, scores: dict, results: dict | None, problems: list[str], notes: list[str]) -> None:
    """OUTPUT/detailed_results.html: the evaluation report with plots embedded (one file) when
    there are results and matplotlib works, else the same information as tables only."""
    if results is not None:
        try:
            from evaluation.report import write_report  # deferred: matplotlib, optional in the scoring image

            write_report(results, out, title=title, embed=True, filename="detailed_results.html",
                         preamble=_head_parts(scores, problems, notes), appendix=_worst_rows_parts(results))
            return
        except Exception as exc:  # noqa: BLE001 - no matplotlib, or a drawing bug: never lose the page
            notes = [*notes, f"plots unavailable ({type(exc).__name__}: {exc}); tables only"]
    _write_plain_html(out, title, scores, results, problems, notes)


def _write_plain_html(out: Path, title: str, scores: dict, results: dict | None, problems: list[str],
                      notes: list[str]) -> None:
    scorer_notes = [str(n) for n in (results or {}).get("notes") or []]
    body = _head_parts(scores, problems, [*notes, *scorer_notes])
    if results is not None:
        for kind in TaskKind:
            tasks = results.get(kind.value) or {}
            if not tasks:
                continue
            metrics: list[str] = []
            for m in tasks.values():
                for k, v in m.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in metrics:
                        metrics.append(k)
            ci_keys = [k for _key, (kk, k, _d) in AGGREGATES.items() if kk is kind]
            ci_keys = [k for k in ci_keys if any(isinstance((m.get("ci95") or {}).get(k), list) for m in tasks.values())]
            rows = [[t, *(m.get(k) for k in metrics), *(_ci_text((m.get("ci95") or {}).get(k)) for k in ci_keys)] for t, m in tasks.items()]
            headers = ["Task", *metrics, *(f"{k} 95% CI" for k in ci_keys)]
            body += [f"<h2>{H.esc(kind.value.capitalize())}</h2>", H.table(headers, rows)]
        body += _worst_rows_parts(results)
    write_text(out / "detailed_results.html", H.page(title, body))


def _ci_text(ci: Any) -> str:
    if isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        return f"{ci[0]:.4f} – {ci[1]:.4f}"
    return "—"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evaluation.codabench INPUT OUTPUT``."""
    parser = argparse.ArgumentParser(prog="python -m evaluation.codabench", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="folder with ref/ (labels) and res/ (the unzipped submission)")
    parser.add_argument("output", help="folder for scores.json and detailed_results.html")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the per-task 95%% CIs")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="processes scoring masks (default: up to 4)")
    args = parser.parse_args(argv)
    try:
        scores = score_submission(args.input, args.output, n_bootstrap=args.bootstrap, workers=args.workers)
    except ScoringEnvironmentError as exc:  # the organizer's side: one line, exit 2 (detailed_results.html has more)
        print_error(exc)
        return 2
    print(json.dumps(scores, indent=2))
    return 0


# ---- bundle ----------------------------------------------------------------------------------------

def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _yaml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid YAML double-quoted scalar


def competition_yaml(*, title: str, docker_image: str, start: str, execution_time_limit: int = 3600) -> str:
    """The competition.yaml text: one phase, one task, one leaderboard with a column per aggregate."""
    lines = [
        "version: 2",
        f"title: {_yaml_str(title)}",
        f"description: {_yaml_str('FM_UIA 2026: foundation-model ultrasound image analysis, 27 tasks in four kinds. Scored by fmuia strict mode.')}",
        "image: logo.png",
        "terms: terms.md",
        f"docker_image: {_yaml_str(docker_image)}",
        "registration_auto_approve: False",
        "enable_detailed_results: True",
        "make_programs_available: True",
        "make_input_data_available: False",
        "pages:",
        "  - title: Overview",
        "    file: overview.md",
        "  - title: Evaluation",
        "    file: evaluation.md",
        "  - title: Terms",
        "    file: terms.md",
        "phases:",
        "  - index: 0",
        "    name: Test",
        f"    description: {_yaml_str('Upload the zip of your prediction folder (check it first with `fmuia check` / `fmuia pack`).')}",
        f"    start: {start}",
        f"    execution_time_limit: {int(execution_time_limit)}",
        "    tasks:",
        "      - 0",
        "tasks:",
        "  - index: 0",
        "    name: FM_UIA strict scoring",
        f"    description: {_yaml_str('Strict scorer: every label row scored, missing or malformed predictions get the worst value.')}",
        "    scoring_program: scoring_program.zip",
        "    reference_data: reference_data.zip",
        "leaderboards:",
        "  - index: 0",
        "    title: Results",
        "    key: main",
        "    submission_rule: Force_Last",
        "    columns:",
    ]
    for i, (key, (_k, _m, d)) in enumerate(AGGREGATES.items()):
        lines += [
            f"      - title: {_yaml_str(TITLES[key])}",
            f"        key: {key}",
            f"        index: {i}",
            f"        sorting: {'desc' if d == HIGHER else 'asc'}",
            f"        precision: {PRECISION.get(key, 4)}",
        ]
    return "\n".join(lines) + "\n"


def _pages() -> dict[str, str]:
    cols = "\n".join(
        f"| `{k}` | {TITLES[k]} | {'higher' if d == HIGHER else 'lower'} is better |" for k, (_k, _m, d) in AGGREGATES.items()
    )
    return {
        "overview.md": "# FM_UIA 2026\n\nOne model, 27 ultrasound tasks: segmentation, classification, detection, "
        "regression. Upload a zip of your prediction folder in the official layout.\n",
        "evaluation.md": "# Evaluation\n\nSubmissions are scored by the fmuia strict scorer "
        "(`python -m evaluation.codabench`). Every label row is scored; a missing, unreadable or malformed "
        "prediction gets the worst value (Dice 0, HD and MRE = image diagonal, IoU 0, classification wrong with "
        "uniform probabilities). The detailed results page lists every such row and why.\n\n"
        "| Key | Column | Direction |\n|---|---|---|\n" + cols + "\n",
        "terms.md": "# Terms\n\nBy participating you agree to the challenge rules published by the organizers.\n",
    }


def _logo_png() -> bytes:
    from PIL import (  # deferred: bundle building only; the scoring program checks Pillow first
        Image,
        ImageDraw,
    )

    img = Image.new("RGB", (240, 120), (24, 64, 112))
    ImageDraw.Draw(img).text((20, 50), "FM_UIA 2026", fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _zip_dir(zf: zipfile.ZipFile, src: Path, prefix: str = "") -> int:
    n = 0
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for f in sorted(filenames):
            full = Path(dirpath) / f
            if full.is_symlink() or not full.is_file() or f.endswith((".pyc", ".tmp")):
                continue
            zf.write(full, prefix + full.relative_to(src).as_posix())
            n += 1
    return n


def scoring_program_files(repo: Path | None = None) -> dict[str, Path]:
    """``arcname -> source file`` for the scoring program: the whole ``evaluation`` package plus
    every ``fmuia`` module it imports, directly or not (read from the source: no hand-kept list;
    ``tests/test_layers.py`` keeps that set torch-free)."""
    repo = repo or _repo_root()
    g = import_graph.graph(repo, ("fmuia", "evaluation"))
    needed = import_graph.closure(g, [m for m in g if m.split(".")[0] == "evaluation"])
    files = import_graph.module_files(repo, ("fmuia", "evaluation"))
    return {files[m].relative_to(repo).as_posix(): files[m] for m in sorted(needed)}


def build_scoring_program(out_zip: str | os.PathLike) -> Path:
    """Write scoring_program.zip: metadata.yaml (the command), the packages, a README."""
    out_zip = Path(out_zip)
    with atomic_path(out_zip) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.yaml", f"command: {SCORING_COMMAND}\n")
        zf.writestr(
            "README.txt",
            "fmuia scoring program for Codabench.\n"
            f"Entry: {SCORING_COMMAND} (run from this folder).\n"
            "Needs in the docker image: " + ", ".join(REQUIREMENTS) + " (no torch).\n",
        )
        for arc, src in scoring_program_files().items():
            zf.write(src, arc)
    return out_zip


def build_bundle(
    labels: str | os.PathLike,
    out_zip: str | os.PathLike,
    *,
    title: str = "FM_UIA 2026",
    docker_image: str = DEFAULT_DOCKER_IMAGE,
    start: str | None = None,
    execution_time_limit: int = 3600,
) -> Path:
    """Build the Codabench competition bundle (competition.yaml, pages, logo, scoring program,
    reference data) from a labelled data root; written atomically to ``out_zip``."""
    # deferred: numpy and Pillow, which the scoring program checks for before anything needs them
    from fmuia.dataset import load_root

    labels = Path(labels)
    root = load_root(labels)
    if not root.samples:
        raise FmuiaError(f"{labels}: no CSV rows: not a labelled data root")
    if not root.labelled:
        raise FmuiaError(f"{labels}: some rows have no labels (is this the hidden test root?); pass the labels root")
    start = start or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d 00:00:00")
    out_zip = Path(out_zip)
    with tempfile.TemporaryDirectory(prefix="fmuia-bundle-") as tmpd:
        tmp = Path(tmpd)
        build_scoring_program(tmp / "scoring_program.zip")
        with zipfile.ZipFile(tmp / "reference_data.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            _zip_dir(zf, labels)
        with atomic_path(out_zip) as dst, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("competition.yaml", competition_yaml(title=title, docker_image=docker_image, start=start, execution_time_limit=execution_time_limit))
            for name, text in _pages().items():
                zf.writestr(name, text)
            zf.writestr("logo.png", _logo_png())
            zf.writestr("scoring_image.Dockerfile", scoring_dockerfile())
            zf.write(tmp / "scoring_program.zip", "scoring_program.zip")
            zf.write(tmp / "reference_data.zip", "reference_data.zip")
    return out_zip


__all__ = ["SCORING_COMMAND", "scoring_program_files", "build_bundle", "build_scoring_program", "score_submission", "main"]

if __name__ == "__main__":
    run(main, exiting=True)
