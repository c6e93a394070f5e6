"""The leaderboard's outputs: a pandas table (CSV), a JSON object, a plain-text table for the terminal,
Markdown, a self-contained HTML page, and :func:`write_leaderboard`, which writes them all."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pandas as pd

from evaluation import html as H
from evaluation.leaderboard.ranking import DEFAULT_DIAGONAL, RANKED_METRICS
from evaluation.schema import AGGREGATES, HIGHER, LOWER
from fmuia._atomic import ensure_dir, json_safe, write_json, write_text

if TYPE_CHECKING:
    from evaluation.leaderboard.build import Leaderboard

__all__ = [
    "ARROWS",
    "METHOD_TEXT",
    "REPORT_DIR",
    "table",
    "to_dict",
    "format_table",
    "to_markdown",
    "to_html",
    "write_leaderboard",
]

ARROWS = {HIGHER: "↑", LOWER: "↓"}
REPORT_DIR = "report"
ANALYSIS_TEXT = ("Ranking analysis per leaderboard column with per-case values (challengeR's three methods, "
                 "pairwise Wilcoxon tests, bootstrap stability)")

METHOD_TEXT = [
    "Rank then aggregate: for every task and ranked metric (DSC, HD; Accuracy, AUC, F1_macro, F1_weighted, "
    "MCC; IoU; MRE) the submissions are ranked (ties share the best rank, missing = worst); the mean of a "
    "submission's ranks is ranked again. Ties in the final rank are listed by composite score.",
    "Composite (0-100): DSC, IoU, Accuracy, AUC, F1 in [0,1]; MCC as (MCC+1)/2; HD and MRE as "
    "1 - d/diagonal (the task's mean image diagonal) clipped to [0,1]; missing = 0; mean over tasks per "
    "aggregate (tasks where no submission has the metric left out), mean of the aggregates, x100.",
    "Rank 95% CI: the cases of every task are bootstrapped (paired across submissions) and the ranking "
    "redone on the metrics that per-case rows give (DSC, HD, Accuracy, F1_macro, F1_weighted, MCC, IoU, MRE; "
    "not AUC, whose per-case probabilities are not kept); 2.5% and 97.5% quantiles of each submission's "
    "rank.",
]


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


# ---- table, JSON, terminal ---------------------------------------------------------------------------

def table(lb: Leaderboard, per_task: bool = True) -> pd.DataFrame:
    """The leaderboard as a DataFrame, one row per submission in ranked order (the CSV's content)."""
    rows = []
    intervals = lb.stability.rank_intervals() if lb.stability is not None else None
    composite_rank = lb.composite_rank
    for i, name in enumerate(lb.names):
        row: dict[str, Any] = {"rank": int(lb.rank[i]), "name": name, "mean_rank": float(lb.mean_rank[i])}
        row["composite"] = float(lb.composite[i])
        row["composite_rank"] = int(composite_rank[i])
        if intervals is not None:
            row["rank_ci_low"], row["rank_ci_high"] = int(intervals[i, 0]), int(intervals[i, 1])
        for key in AGGREGATES:
            row[key] = lb.aggregates[name].get(key)
        if per_task:
            for col in lb.metric_columns:
                row[col] = lb.task_metrics[name].get(col)
        rows.append(row)
    return pd.DataFrame(rows)


def to_dict(lb: Leaderboard) -> dict:
    """JSON-ready: rows, column descriptions, rankings, stability (with the bootstrap rank samples)."""
    df = table(lb)
    rows = [{k: json_safe(v) for k, v in rec.items()} for rec in df.to_dict(orient="records")]
    out: dict[str, Any] = {
        "submissions": list(lb.names),
        "rows": rows,
        "aggregates": {k: {"kind": kind.value, "metric": m, "direction": d}
                       for k, (kind, m, d) in AGGREGATES.items()},
        "metric_columns": list(lb.metric_columns),
        "ranking": {
            "method": "rank-then-aggregate: per task and ranked metric, rank with ties sharing the lowest "
            "rank (missing = worst), mean rank per submission, rank again",
            "pairs": [f"{t}/{m}" for t, m in lb.ranked_pairs],
        },
        "composite": {
            "normalization": "DSC, IoU, Accuracy, AUC, F1 clipped to [0,1]; MCC -> (MCC+1)/2; HD, MRE -> "
            "clip(1 - d/diagonal, 0, 1); missing -> 0; mean over tasks per aggregate, mean over aggregates, "
            "x100",
            "diagonals": lb.diagonals,
            "default_diagonal": DEFAULT_DIAGONAL,
            "parts": {n: {k: json_safe(v) for k, v in p.items()} for n, p in lb.composite_parts.items()},
        },
        "stability": None,
        "notes": list(lb.notes),
    }
    st = lb.stability
    if st is not None:
        iv = st.rank_intervals()
        out["stability"] = {
            "n_bootstrap": st.n_bootstrap,
            "seed": st.seed,
            "metrics": st.metrics,
            "reference_rank": {n: int(r) for n, r in zip(lb.names, st.reference_rank, strict=True)},
            "kendall_tau": {k: json_safe(v) for k, v in st.tau_summary().items()},
            "rank_interval_95": {n: [int(iv[i, 0]), int(iv[i, 1])] for i, n in enumerate(lb.names)},
            "rank_samples": {n: st.rank_samples[:, i].astype(int).tolist() for i, n in enumerate(lb.names)},
            "tau_samples": [json_safe(float(t)) for t in st.tau],
        }
    return out


def _main_rows(lb: Leaderboard, *, plain: bool = False) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the ranked table; ``plain`` for the terminal, else for Markdown/HTML."""
    if plain:
        headers = ["rank", "name", "composite", "mean_rank"]
    else:
        headers = ["Rank", "Submission", "Composite ↑", "Mean rank ↓"]
    iv = lb.stability.rank_intervals() if lb.stability is not None else None
    if iv is not None:
        headers.append("rank 95%" if plain else "Rank 95% CI")
    headers += [f"{k}{ARROWS[d]}" if plain else f"{k} {ARROWS[d]}" for k, (_, _, d) in AGGREGATES.items()]
    dash = "-" if plain else "–"
    rows = []
    for i, n in enumerate(lb.names):
        r = [str(int(lb.rank[i])), n, f"{lb.composite[i]:.2f}", f"{lb.mean_rank[i]:.3f}"]
        if iv is not None:
            r.append(f"{int(iv[i, 0])}{dash}{int(iv[i, 1])}")
        r += [_fmt(lb.aggregates[n].get(k)) for k in AGGREGATES]
        rows.append(r)
    return headers, rows


def format_table(lb: Leaderboard) -> str:
    """A plain-text ranked table (rank, name, composite, mean rank, rank interval, nine aggregates), then
    the notes."""
    headers, body = _main_rows(lb, plain=True)
    widths = [max(len(h), *(len(r[j]) for r in body)) if body else len(h) for j, h in enumerate(headers)]

    def line(cells: list[str]) -> str:  # the name column left-aligned, the others right-aligned
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if j == 1 else c.rjust(w) for j, (c, w) in pairs)

    lines = [line(headers), *(line(r) for r in body)]
    if lb.notes:
        lines += ["", *(f"note: {n}" for n in lb.notes)]
    return "\n".join(lines)


# ---- Markdown and HTML -------------------------------------------------------------------------------

def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _direction_of(col: str) -> str:
    metric = col.rsplit("/", 1)[-1]
    for dirs in RANKED_METRICS.values():
        if metric in dirs:
            return ARROWS[dirs[metric]]
    return ARROWS[LOWER] if metric.startswith("HD") else ""


def _stability_lines(lb: Leaderboard) -> list[str]:
    st = lb.stability
    if st is None:
        return []
    ts = st.tau_summary()
    return [
        f"Bootstrap: {st.n_bootstrap} rounds (seed {st.seed}), cases resampled per task, "
        f"metrics: {', '.join(st.metrics)}.",
        "Kendall's tau_b to the all-cases ranking: mean {}, median {}, 95% interval [{}, {}].".format(
            _fmt(ts["mean"], 3), _fmt(ts["median"], 3), _fmt(ts["q025"], 3), _fmt(ts["q975"], 3)
        ),
    ]


def to_markdown(lb: Leaderboard, analysis_links: Mapping[str, str] | None = None) -> str:
    """The leaderboard as Markdown: ranked table, method, stability, per-task metrics; ``analysis_links``:
    leaderboard column -> relative path of its rank analysis (``fmuia leaderboard --analysis``)."""
    headers, rows = _main_rows(lb)
    parts = ["# Leaderboard", "", _md_table(headers, rows), "", "## Method", ""]
    parts += [f"- {t}" for t in METHOD_TEXT]
    if analysis_links:
        parts += ["", "## Ranking analysis", "", ANALYSIS_TEXT, ""]
        parts += [f"- [{k}]({quote(v)})" for k, v in analysis_links.items()]
    if lb.stability is not None:
        parts += ["", "## Ranking stability", ""] + [f"- {t}" for t in _stability_lines(lb)]
    if lb.notes:
        parts += ["", "## Notes", ""] + [f"- {n}" for n in lb.notes]
    parts += ["", "## Per-task metrics", ""]
    ph = ["Task / metric", *lb.names]
    pr = [[f"{c} {_direction_of(c)}".strip(), *(_fmt(lb.task_metrics[n].get(c)) for n in lb.names)]
          for c in lb.metric_columns]
    parts += [_md_table(ph, pr), ""]
    return "\n".join(parts)


def to_html(lb: Leaderboard, report_link: str | None = None,
            analysis_links: Mapping[str, str] | None = None) -> str:
    """The leaderboard as one self-contained HTML page (inline CSS, no scripts, no external resources);
    ``report_link``: relative path of the picture report to link to; ``analysis_links``: leaderboard
    column -> relative path of its rank analysis."""
    headers, rows = _main_rows(lb)
    # Bold the best value of each aggregate column.
    hl = [[False] * len(headers) for _ in rows]
    first_agg = len(headers) - len(AGGREGATES)
    for j, (key, (_, _, d)) in enumerate(AGGREGATES.items()):
        vals = [lb.aggregates[n].get(key) for n in lb.names]
        finite = [v for v in vals if v is not None]
        if finite:
            best = max(finite) if d == HIGHER else min(finite)
            for i, v in enumerate(vals):
                hl[i][first_agg + j] = v is not None and v == best
    body = [H.table(headers, rows, left=2, highlight=hl)]
    if report_link is not None:
        body.append("<p>Plots (aggregates per submission, rank stability): "
                    f'<a href="{H.esc(quote(report_link))}">{H.esc(report_link)}</a></p>')
    if analysis_links:
        items = ", ".join(f'<a href="{H.esc(quote(v))}">{H.esc(k)}</a>' for k, v in analysis_links.items())
        body.append(f"<p>{H.esc(ANALYSIS_TEXT)}: {items}</p>")
    body += ["<h2>Method</h2>", H.bullet_list(METHOD_TEXT)]
    if lb.stability is not None:
        body += ["<h2>Ranking stability</h2>", H.bullet_list(_stability_lines(lb))]
    if lb.notes:
        body += ["<h2>Notes</h2>", H.bullet_list(lb.notes)]
    body.append("<h2>Per-task metrics</h2>")
    pr = [[f"{c} {_direction_of(c)}".strip(), *(lb.task_metrics[n].get(c) for n in lb.names)]
          for c in lb.metric_columns]
    body.append(H.table(["Task / metric", *lb.names], pr, left=1))
    return H.page("Leaderboard", body)


# ---- files -------------------------------------------------------------------------------------------

def write_leaderboard(lb: Leaderboard, out_dir: str | os.PathLike, *,
                      report: bool = False, analysis: Mapping[str, Path] | None = None) -> dict[str, Path]:
    """Write ``leaderboard.{csv,json,md,html}`` into ``out_dir`` (each atomically); returns their paths.

    ``report=True`` also writes the picture report (aggregates per submission and the rank-stability
    blob plot, :func:`evaluation.report.write_leaderboard_report`) to ``out_dir/report/index.html``
    (key ``"report"``) and links it from ``leaderboard.html``. It needs matplotlib. ``analysis``: column ->
    file of its rank analysis (:func:`evaluation.rank.per_metric.write_metric_analyses`), linked from the
    HTML and Markdown.
    """
    out = Path(out_dir)
    ensure_dir(out)
    paths = {ext: out / f"leaderboard.{ext}" for ext in ("csv", "json", "md", "html")}
    write_text(paths["csv"], table(lb).to_csv(index=False, lineterminator="\n"))
    write_json(paths["json"], to_dict(lb))
    links = {k: Path(os.path.relpath(p, out)).as_posix() for k, p in (analysis or {}).items()}
    write_text(paths["md"], to_markdown(lb, links))
    link = None
    if report:
        # Deferred: evaluation.report imports matplotlib (about 0.25 s), which the tables never need.
        from evaluation.report import write_leaderboard_report

        paths["report"] = write_leaderboard_report(lb, out / REPORT_DIR)
        link = paths["report"].relative_to(out).as_posix()
    write_text(paths["html"], to_html(lb, report_link=link, analysis_links=links))
    return paths
