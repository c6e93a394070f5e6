"""Self-contained HTML reports of evaluation results and leaderboards (no network, no external URLs).

- :func:`write_report` (``fmuia evaluate ... --report DIR``): the nine aggregates, per-task metric
  tables and bars with bootstrap 95% CIs, per-case box/strip plots per task, failed rows by reason.
- :func:`write_leaderboard_report`: the leaderboard table, the aggregates per submission and the
  rank-stability blob plot from the bootstrap rankings.

Pictures are PNG files written next to ``index.html`` (relative links) or, with ``embed=True``,
embedded as ``data:`` URIs so the page is one file (what Codabench's detailed results need).
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from evaluation import plots
from evaluation.aggregates import AGGREGATES, HIGHER, compute_aggregates
from fmuia._atomic import ensure_dir, write_bytes, write_text
from fmuia.tasks import TaskKind

__all__ = ["write_report", "write_leaderboard_report", "leaderboard_parts"]

_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1250px;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.6em 0;font-size:.9em}"
    "th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}"
    "th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}"
    "img{max-width:100%;border:1px solid #eee;margin:.4em 0}.ci{color:#777;font-size:.85em}"
    ".bad{color:#b71c1c}h2{border-bottom:2px solid #4c72b0;padding-bottom:.2em;margin-top:1.6em}"
    "td.l,th.l{text-align:left}.scroll{overflow-x:auto}.note{color:#555;font-size:.85em}"
    ".best{font-weight:bold;background:#e6f4ea}code{background:#f3f3f3;padding:0 .2em}"
)


class _Page:
    """Collects HTML parts and pictures; pictures go next to the page or inline as data: URIs."""

    def __init__(self, out_dir: Path, title: str, embed: bool, filename: str = "index.html"):
        self.out_dir, self.embed, self.filename = out_dir, embed, filename
        self.parts = [
            "<!DOCTYPE html>",
            f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{html.escape(title)}</h1>",
        ]
        self.pictures: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text)

    def picture(self, name: str, png: bytes | None, alt: str) -> None:
        if png is None:
            return
        if self.embed:
            src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        else:
            write_bytes(self.out_dir / name, png)
            self.pictures.append(name)
            src = quote(name)
        self.add(f"<figure><img src='{src}' alt='{html.escape(alt)}'></figure>")

    def write(self) -> Path:
        self.parts.append("</body></html>")
        path = self.out_dir / self.filename
        write_text(path, "\n".join(self.parts) + "\n")
        return path


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.{digits}g}"
    return "n/a" if v is None else html.escape(str(v))


def _arrow(direction: str) -> str:
    return "↑" if direction == HIGHER else "↓"


def _aggregates_table(aggs: Mapping[str, Any]) -> str:
    head = "".join(f"<th>{html.escape(k)} {_arrow(AGGREGATES[k][2])}</th>" for k in AGGREGATES)
    cells = "".join(f"<td>{_fmt(aggs.get(k))}</td>" for k in AGGREGATES)
    return f"<table><tr>{head}</tr><tr>{cells}</tr></table>"


def _task_table(tasks: Mapping[str, Mapping], kind: TaskKind) -> str:
    metrics = [m for m in plots.TASK_METRICS[kind] if any(m in t for t in tasks.values())]
    head = "<th>task</th><th>n</th>" + "".join(f"<th>{m}</th>" for m in metrics)
    body = []
    for name in sorted(tasks):
        t = tasks[name]
        cells = [f"<td>{html.escape(name)}</td>", f"<td>{_fmt(t.get('num_samples'))}</td>"]
        for m in metrics:
            ci = plots.ci_of(t, m)
            ci_text = f" <span class='ci'>[{ci[0]:.3g}, {ci[1]:.3g}]</span>" if ci else ""
            cells.append(f"<td>{_fmt(t.get(m))}{ci_text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _failures(per_case: Sequence[Mapping]) -> str:
    reasons = Counter(str(r.get("reason")) for r in per_case if r.get("reason"))
    if not reasons:
        return "<p>Every case had a valid prediction.</p>"
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in reasons.most_common(30))
    more = f"<p>… and {len(reasons) - 30} other reasons.</p>" if len(reasons) > 30 else ""
    total = sum(reasons.values())
    return (f"<p class='bad'>{total} case(s) scored at the worst value:</p>"
            f"<table><tr><th>reason</th><th>cases</th></tr>{rows}</table>{more}")


def write_report(results: Mapping, out_dir: str | os.PathLike, *, title: str = "Evaluation report",
                 embed: bool = False, filename: str = "index.html", preamble: Sequence[str] = (),
                 appendix: Sequence[str] = ()) -> Path:
    """Write ``out_dir/index.html`` (+ its PNGs) for one results object; return the page's path.

    ``embed=True`` puts the pictures inside the page as data: URIs (one file, e.g. Codabench's
    ``filename="detailed_results.html"``). ``preamble`` and ``appendix`` are extra HTML parts
    (trusted: escape their text, e.g. with :mod:`evaluation.html`) placed right after the title
    and at the end of the page.

    ``results`` is what ``evaluation.scoring.evaluate`` returns (strict mode gives CIs, per-case
    rows and the aggregates; official mode gives the per-task metrics only). Example::

        from evaluation.scoring import evaluate
        from evaluation.report import write_report
        write_report(evaluate("preds/", "data/labels"), "report/")
    """
    out = Path(out_dir)
    ensure_dir(out)
    page = _Page(out, title, embed, filename)
    for part in preamble:
        page.add(part)
    per_case = [r for r in (results.get("per_case") or []) if isinstance(r, Mapping)]
    aggs = results.get("aggregates")
    if not isinstance(aggs, Mapping):
        aggs = compute_aggregates(dict(results))
    mode = results.get("mode")
    if isinstance(mode, str):
        page.add(f"<p>Scoring mode: <b>{html.escape(mode)}</b></p>")

    page.add("<h2>Leaderboard aggregates</h2>")
    page.add("<p>Means over the tasks of each kind (↑ higher is better, ↓ lower is better).</p>")
    page.add(_aggregates_table(aggs))
    page.picture("aggregates.png", plots.plot_aggregates(aggs), "the nine aggregates")

    for kind in TaskKind:
        tasks = {t: v for t, v in (results.get(kind.value) or {}).items() if isinstance(v, Mapping)}
        if not tasks:
            continue
        page.add(f"<h2>{kind.value}</h2>")
        page.add(_task_table(tasks, kind))
        page.picture(f"metrics_{kind.value}.png", plots.plot_metric_bars(results, kind), f"{kind.value} metrics")
        page.picture(f"per_case_{kind.value}.png", plots.plot_per_case(per_case, kind), f"{kind.value} per case")

    if per_case:
        page.add("<h2>Failed predictions</h2>")
        page.add(_failures(per_case))
    notes = results.get("notes")
    if isinstance(notes, list) and notes:
        page.add("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(str(n))}</li>" for n in notes) + "</ul>")
    for part in appendix:
        page.add(part)
    return page.write()


# ---- leaderboard ------------------------------------------------------------------------------------

def _get(obj: Any, *names: str) -> Any:
    for name in names:
        if isinstance(obj, Mapping) and name in obj:
            return obj[name]
        if not isinstance(obj, Mapping) and hasattr(obj, name):
            return getattr(obj, name)
    return None


def leaderboard_parts(leaderboard: Any) -> dict:
    """Normalize a leaderboard into what the report draws.

    ``leaderboard``: an ``evaluation.leaderboard.Leaderboard`` (anything with ``to_dict()``) or its
    JSON form (``leaderboard.json``): ``rows`` with ``name``, ``rank`` and the aggregate keys (at top
    level or under ``aggregates``); ``stability.rank_samples`` as a mapping name → ranks or a
    ``[n_bootstrap][n_submissions]`` list in row order; ``stability.reference_rank`` (name → rank
    on all cases with the bootstrapped metrics).

    Returns ``{"names", "aggregates": {name: {key: value}}, "rank": {name: rank},
    "reference_rank": {name: rank}, "rank_samples": [[rank per submission] per round] or None}``.
    """
    if hasattr(leaderboard, "to_dict") and not isinstance(leaderboard, Mapping):
        leaderboard = leaderboard.to_dict()
    rows = _get(leaderboard, "rows") or []
    names: list[str] = []
    aggregates: dict[str, dict] = {}
    rank: dict[str, float] = {}
    for i, row in enumerate(rows):
        name = str(_get(row, "name", "submission") or f"submission {i + 1}")
        names.append(name)
        agg = _get(row, "aggregates")
        source = agg if isinstance(agg, Mapping) else row
        aggregates[name] = {k: source.get(k) for k in AGGREGATES}
        r = _get(row, "rank")
        if isinstance(r, (int, float)) and not isinstance(r, bool):
            rank[name] = float(r)
    stability = _get(leaderboard, "stability")
    samples = _get(leaderboard, "rank_samples", "bootstrap_ranks")
    reference: dict[str, float] = {}
    if isinstance(stability, Mapping):
        if samples is None:
            samples = _get(stability, "rank_samples", "bootstrap_ranks")
        ref = _get(stability, "reference_rank")
        if isinstance(ref, Mapping):
            reference = {str(k): float(v) for k, v in ref.items() if isinstance(v, (int, float))}
    if isinstance(samples, Mapping):
        cols = [list(samples.get(n, [])) for n in names]
        length = min((len(c) for c in cols), default=0)
        samples = [[c[b] for c in cols] for b in range(length)] if length else None
    return {"names": names, "aggregates": aggregates, "rank": rank, "reference_rank": reference,
            "rank_samples": samples}


def write_leaderboard_report(leaderboard: Any, out_dir: str | os.PathLike, *, title: str = "Leaderboard",
                             embed: bool = False, filename: str = "index.html") -> Path:
    """Write ``out_dir/index.html`` for a leaderboard: table, aggregates per submission and the
    rank-stability blob plot (when bootstrap rankings are present); return the page's path.

    ``leaderboard`` is what ``evaluation.leaderboard.build_leaderboard`` returns, or its JSON form
    (see :func:`leaderboard_parts`). Example::

        from evaluation.leaderboard import build_leaderboard, load_results
        from evaluation.report import write_leaderboard_report
        write_leaderboard_report(build_leaderboard(load_results(["a/results.json", "b/results.json"])), "lb_report/")
    """
    out = Path(out_dir)
    ensure_dir(out)
    parts = leaderboard_parts(leaderboard)
    names, aggs, rank = parts["names"], parts["aggregates"], parts["rank"]
    page = _Page(out, title, embed, filename)
    order = sorted(names, key=lambda n: (rank.get(n, math.inf), names.index(n)))
    head = "<th>submission</th><th>rank</th>" + "".join(
        f"<th>{html.escape(k)} {_arrow(AGGREGATES[k][2])}</th>" for k in AGGREGATES)
    body = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{_fmt(rank.get(n))}</td>"
        + "".join(f"<td>{_fmt(aggs[n].get(k))}</td>" for k in AGGREGATES) + "</tr>"
        for n in order
    )
    page.add("<h2>Ranking</h2>")
    page.add(f"<table><tr>{head}</tr>{body}</table>")
    page.picture("aggregates_compare.png", plots.plot_aggregates_compare({n: aggs[n] for n in order}),
                 "aggregates per submission")
    if parts["rank_samples"] is not None:
        page.add("<h2>Ranking stability</h2>")
        page.add("<p>The cases were resampled with replacement and the submissions re-ranked on the per-case "
                 "metrics; each circle's area is the fraction of bootstrap samples in which a submission took that "
                 "rank, the bar spans the middle 95% and × marks the rank on all cases with the same metrics.</p>")
        ref = parts["reference_rank"] if len(parts["reference_rank"]) == len(names) else rank
        observed = [ref[n] for n in names] if len(ref) == len(names) else None
        page.picture("rank_stability.png", plots.plot_rank_blobs(names, parts["rank_samples"], observed),
                     "rank stability blob plot")
    return page.write()
