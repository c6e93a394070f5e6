"""The HTML report of a ranking analysis (``fmuia rank --report DIR``): one self-contained page.

:func:`write_report` writes ``DIR/report.html``: CSS inline, every figure a PNG ``data:`` URI, no
script and no link outside the page. It shows

- a header: what was read, every parameter, the warnings;
- the consensus across tasks and the ranking table (algorithms × tasks), the spread of each
  algorithm's ranks over the tasks (blob plot), and how the ranking changes with the method
  (consensus per method; Kendall's τ between the methods' rankings per task);
- with bootstrap rounds: Kendall's τ of each round's ranking to the full one (violins per task and
  for the consensus) and the bootstrap ranks of the consensus (blob plot);
- per task, in a collapsible ``<details>``: its ranking, the values (dot-and-box), the podium plot, the
  ranking heatmap, the significance map, the ranks per method and (with bootstrap) the blob plot of
  its bootstrap ranks.

Every figure has a one-line caption saying how to read it. The figures are drawn by
:mod:`evaluation.rank._plots` from the arrays of :class:`~evaluation.rank.result.RankResult` only.
"""

from __future__ import annotations

import base64
import dataclasses
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation import html as h
from evaluation.rank import _plots as P
from evaluation.rank import methods as M
from evaluation.rank.result import METHODS, RankResult
from fmuia._atomic import ensure_dir, write_text

__all__ = ["write_report", "render", "case_ranks", "rank_counts", "significance_matrix", "consensus_by_method"]

REPORT_NAME = "report.html"
_WARNINGS_SHOWN = 20

_CSS = h.CSS + """
figure{margin:.4rem 0 1rem;display:table}figure img{max-width:100%;height:auto;border:1px solid #eee;display:block}
figcaption{display:table-caption;caption-side:bottom;color:#555;font-size:.85rem;margin-top:.25rem}
details.task{margin:.35rem 0;border:1px solid #ddd;border-radius:4px;padding:.35rem .7rem}
details.task[open]{padding-bottom:.8rem}
summary{cursor:pointer;font-weight:600}summary .note{font-weight:normal}
.grid{display:flex;flex-wrap:wrap;gap:0 1.2rem;align-items:flex-start}
nav{font-size:.9rem;margin-bottom:1rem}nav a{margin-right:.9rem}
.warn{color:#8a4b00}
"""


# ---- the data behind the figures (public: tested on hand-worked cases) ---------------------------------


def _rank_values(values: pd.Series, ties: str, ascending: bool = True) -> pd.Series:
    return values.rank(method=ties, ascending=ascending, na_option="keep")


def case_ranks(values: np.ndarray, smaller_better: bool, ties: str, na_treat: object = None) -> np.ndarray:
    """``ranks[case, a]``: the rank of each algorithm among all on the same case (1 = best), as the
    analysis ranks them (:func:`evaluation.rank.methods.case_ranks`): a missing value ranks last in its
    case, or stays NaN where ``na_treat == "remove"``."""
    values = np.asarray(values, dtype=float)
    loss = values if smaller_better else -values
    return M.case_ranks(loss.T, ties, keep_missing=na_treat == "remove").T


def rank_counts(ranks: np.ndarray, n_ranks: int | None = None) -> np.ndarray:
    """``counts[a, r]``: how many cases (rows of ``ranks[case, a]``) gave algorithm ``a`` rank ``r + 1``.

    Fractional ranks (``ties="average"``) count at their integer part; NaN counts nowhere.
    """
    ranks = np.asarray(ranks, dtype=float)
    n_cases, n_alg = ranks.shape
    top = n_ranks if n_ranks is not None else n_alg
    counts = np.zeros((n_alg, top), dtype=int)
    for a in range(n_alg):
        col = ranks[:, a]
        col = np.floor(col[np.isfinite(col)]).astype(int)
        counts[a] = np.bincount(np.clip(col, 1, top) - 1, minlength=top)[:top]
    return counts


def significance_matrix(significance: pd.DataFrame, task: str, algorithms: Sequence[str]) -> np.ndarray:
    """``sig[i, j]``: 1.0 if ``algorithms[i]`` is significantly better than ``algorithms[j]`` in ``task``,
    0.0 if not, NaN for a pair the table does not have (or whose ``significant`` is missing)."""
    index = {a: i for i, a in enumerate(algorithms)}
    sig = np.full((len(algorithms), len(algorithms)), np.nan)
    rows = significance[significance["task"] == task]
    for a, o, s in zip(rows["algorithm"], rows["other"], rows["significant"], strict=True):
        if a in index and o in index and not pd.isna(s):
            sig[index[a], index[o]] = 1.0 if bool(s) else 0.0
    return sig


def consensus_by_method(methods: dict[str, pd.DataFrame], algorithms: Sequence[str], ties: str) -> pd.DataFrame:
    """The consensus each method would give: per algorithm the mean of its per-task ranks (tasks where it
    has no rank left out), ranked with ``ties``. Rows ``algorithms``, one column per method."""
    out = {}
    for name, ranking in methods.items():
        mean = ranking.groupby("algorithm", sort=False)["rank"].mean().reindex(list(algorithms))
        out[name] = _rank_values(mean, ties)
    return pd.DataFrame(out, index=list(algorithms))


# ---- page pieces ---------------------------------------------------------------------------------------


def _figure(png: bytes | None, alt: str, caption: str) -> str:
    if png is None:
        return ""
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="{src}" alt="{h.esc(alt)}">'
            f"<figcaption>{h.esc(caption)}</figcaption></figure>")


def _order(ranking: pd.DataFrame, algorithms: Sequence[str]) -> list[str]:
    """Algorithms with a rank, best first; ties keep the order of first appearance."""
    first = {a: i for i, a in enumerate(algorithms)}
    ranked = ranking.dropna(subset=["rank"])
    return sorted(ranked["algorithm"].astype(str).unique(),
                  key=lambda a: (float(ranked.loc[ranked["algorithm"] == a, "rank"].iloc[0]), first.get(a, 1 << 30)))


def _direction(result: RankResult) -> str:
    return "smaller is better" if result.params.smaller_better else "larger is better"


def _header(result: RankResult) -> list[str]:
    p = result.params
    n_cases = result.table.groupby("task", sort=False)["case"].nunique()
    parts = [
        "<h2 id='setup'>Input and parameters</h2>",
        "<p>Source: <code>" + h.esc(result.source or "(not recorded)") + "</code></p>",
        h.paragraph(f"{len(result.tasks)} task(s), {len(result.algorithms)} algorithm(s), {_span(n_cases)} "
                    f"case(s) per task, {len(result.table)} value(s); {_direction(result)}."),
        h.table([f.name for f in dataclasses.fields(p)], [[_param_text(getattr(p, f.name))
                                                            for f in dataclasses.fields(p)]], left=0),
    ]
    if result.warnings:
        shown = result.warnings[:_WARNINGS_SHOWN]
        parts.append(f"<h3 class='warn'>Warnings ({len(result.warnings)})</h3>")
        parts.append(h.bullet_list(shown))
        rest = result.warnings[_WARNINGS_SHOWN:]
        if rest:
            parts.append(f"<details><summary>{len(rest)} more warning(s)</summary>{h.bullet_list(rest)}</details>")
    else:
        parts.append(h.paragraph("No warnings.", "note"))
    return parts


def _r(value: object) -> int | float | None:
    """A rank for a table cell: whole ranks as integers, NaN/None as None (shown as —)."""
    v = _num(value)
    if not np.isfinite(v):
        return None
    return int(v) if v == int(v) else v


def _span(counts: pd.Series) -> str:
    lo, hi = (int(counts.min()), int(counts.max())) if len(counts) else (0, 0)
    return str(lo) if lo == hi else f"{lo}–{hi}"


def _param_text(value: object) -> str:
    return "—" if value is None else str(value)


def _rank_table(result: RankResult, order: Sequence[str]) -> str:
    ranks = result.ranking.pivot_table(index="algorithm", columns="task", values="rank", aggfunc="first")
    cons = result.consensus.set_index("algorithm")
    headers = ["consensus rank", "algorithm", "mean rank", *result.tasks]
    rows, best = [], []
    for a in order:
        task_ranks = [_r(ranks.at[a, t]) if a in ranks.index and t in ranks.columns else None for t in result.tasks]
        rows.append([_r(cons.at[a, "rank"]), a, float(cons.at[a, "mean_rank"]), *task_ranks])
        best.append([_r(cons.at[a, "rank"]) == 1, False, False, *[r == 1 for r in task_ranks]])
    return h.table(headers, rows, left=2, highlight=best, digits=2)


def _task_ranks(result: RankResult, order: Sequence[str]) -> np.ndarray:
    """``[n_tasks, n_algorithms]`` ranks of the chosen method, columns in ``order`` (NaN: no rank)."""
    wide = result.ranking.pivot_table(index="task", columns="algorithm", values="rank", aggfunc="first")
    return wide.reindex(index=result.tasks, columns=list(order)).to_numpy(dtype=float)


def _methods_in_order(result: RankResult) -> list[str]:
    return [m for m in METHODS if m in result.methods] + [m for m in result.methods if m not in METHODS]


def _method_tau_table(result: RankResult) -> str:
    tau = result.method_tau
    if tau is None or tau.empty:
        return h.paragraph("No Kendall's τ between methods was computed.", "note")
    pairs = list(dict.fromkeys(zip(tau["method_a"], tau["method_b"], strict=True)))
    cell = {(t, a, b): v for t, a, b, v in zip(tau["task"], tau["method_a"], tau["method_b"], tau["tau"], strict=True)}
    tasks = list(dict.fromkeys(tau["task"]))
    rows = [[t, *[_num(cell.get((t, a, b))) for a, b in pairs]] for t in tasks]
    means = [np.nanmean([_num(cell.get((t, a, b))) for t in tasks]) if any(
        np.isfinite(_num(cell.get((t, a, b)))) for t in tasks) else float("nan") for a, b in pairs]
    rows.append(["mean over tasks", *means])
    return h.table(["task", *[f"{a} vs {b}" for a, b in pairs]], rows, digits=3)


def _num(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def _task_section(result: RankResult, task: str, index: int, cols: dict[str, tuple]) -> str:
    p = result.params
    ranking = result.ranking[result.ranking["task"] == task]
    order = _order(ranking, result.algorithms)
    sub = result.table[result.table["task"] == task]
    n_cases = sub["case"].nunique()
    c = [cols[a] for a in order]
    winners = ranking.loc[ranking["rank"] == ranking["rank"].min(), "algorithm"].astype(str).tolist()
    summary = (f"<summary>{h.esc(task)} <span class='note'>— {len(order)} algorithm(s), {n_cases} case(s); "
               f"rank 1: {h.esc(', '.join(winners) or '—')}</span></summary>")
    parts = [f"<details class='task' id='task-{index}'{' open' if len(result.tasks) == 1 else ''}>", summary]

    stat = result.statistic
    place = {a: i for i, a in enumerate(order)}
    rows = [[_r(r), str(a), _num(v)] for r, a, v in zip(ranking["rank"], ranking["algorithm"],
                                                        ranking[stat] if stat in ranking else [None] * len(ranking),
                                                        strict=True)]
    rows.sort(key=lambda r: place.get(r[1], len(place)))
    # the table is the grid's first item: narrow, so the first figures sit beside it
    grid = [h.table(["rank", "algorithm", stat], rows, left=2, highlight=[[r[0] == 1, False, False] for r in rows])]
    values_np = (sub.groupby(["case", "algorithm"], sort=False)["value"].first().unstack()
                 .reindex(columns=order).to_numpy(dtype=float))
    ranks_np = case_ranks(values_np, p.smaller_better, p.ties, p.na_treat)
    grid.append(_figure(
        P.dot_box([values_np[:, i] for i in range(len(order))], order, c, title=f"{task}: values per case",
                  ylabel=f"value ({_direction(result)})"),
        f"{task}: values", "Dot-and-box plot: one dot per case, the box spans the quartiles with the median as a "
        "line; algorithms from best (left) to worst by this task's ranking."))
    grid.append(_figure(
        P.podium(ranks_np, values_np, order, c, title=f"{task}: podium", ylabel="value"),
        f"{task}: podium", "Podium plot: each place (rank on a case) has one slot per algorithm, in ranking order; "
        "a dot is a case's value put at the place the algorithm took on it, grey lines join one case; "
        "the bars below count the cases per place."))
    grid.append(_figure(
        P.rank_heatmap(rank_counts(ranks_np, len(order)), order, title=f"{task}: ranks over the cases"),
        f"{task}: ranking heatmap", "Ranking heatmap: row = algorithm (best on top), column = rank on a single "
        "case (a missing value ranks last); the darker the cell, the more cases gave the algorithm that "
        "rank. A dark diagonal means a ranking the cases agree on."))
    grid.append(_figure(
        P.significance_map(significance_matrix(result.significance, task, order), order,
                           title=f"{task}: pairwise significance"),
        f"{task}: significance map", f"Significance map: yellow where the row's algorithm is significantly better "
        f"than the column's (one-sided Wilcoxon signed-rank over the cases, α = {p.alpha}, p-adjust "
        f"{p.p_adjust}); algorithms ordered by this task's ranking."))
    methods = _methods_in_order(result)
    if len(methods) > 1:
        mranks = np.array([result.methods[m][result.methods[m]["task"] == task]
                           .groupby("algorithm", sort=False)["rank"].first().reindex(order).to_numpy(dtype=float)
                           for m in methods])
        grid.append(_figure(
            P.method_lines(mranks, methods, order, c, title=f"{task}: rank by method"),
            f"{task}: rank by method", "Rank of each algorithm (one line each) under every ranking method; "
            "flat lines mean the ranking does not depend on the method, crossings mean it does."))
    bs = result.bootstrap
    if bs is not None and task in bs.tasks:
        col_of = {a: i for i, a in enumerate(bs.algorithms)}
        samples = np.stack([bs.ranks[bs.tasks.index(task), :, col_of[a]] if a in col_of else
                            np.full(bs.n, np.nan) for a in order], axis=1)
        full = ranking.groupby("algorithm", sort=False)["rank"].first().reindex(order).to_numpy(dtype=float)
        grid.append(_figure(
            P.blobs(samples, order, c, title=f"{task}: bootstrap ranks ({bs.n} rounds)", reference=full),
            f"{task}: bootstrap blob plot", "Blob plot of the bootstrap ranks: circle area ∝ how often the "
            "algorithm took that rank over the rounds; × median, black bar 95 % interval, red dot the rank "
            "on all cases."))
    parts.append("<div class='grid'>" + "".join(grid) + "</div>")
    parts.append("</details>")
    return "".join(parts)


# What the forked workers of _task_sections read: set just before the pool forks them, so the result is
# inherited, not pickled; each worker sends back one task's HTML.
_SHARED: tuple[RankResult, dict[str, tuple]] | None = None


def _section_job(index: int) -> str:
    assert _SHARED is not None
    result, cols = _SHARED
    return _task_section(result, result.tasks[index], index, cols)


def _default_workers(n_tasks: int) -> int:
    if not sys.platform.startswith("linux") or n_tasks < 4:
        return 1
    return max(1, min(8, len(os.sched_getaffinity(0)), n_tasks))


def _task_sections(result: RankResult, cols: dict[str, tuple], workers: int | None) -> list[str]:
    """One ``<details>`` per task. Drawing is most of the report's time (about 2 s of CPU per task of 50
    algorithms), so with ``workers > 1`` the tasks are drawn by forked processes; results come back in
    task order, hence the same page."""
    global _SHARED
    n = len(result.tasks)
    workers = _default_workers(n) if workers is None else max(1, min(int(workers), n))
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        _SHARED = (result, cols)
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                return list(pool.map(_section_job, range(n)))
        finally:
            _SHARED = None
    return [_task_section(result, t, i, cols) for i, t in enumerate(result.tasks)]


def _document(title: str, body: Sequence[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{h.esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{h.esc(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n")


def render(result: RankResult, *, workers: int | None = None) -> str:
    """The report's HTML text (what :func:`write_report` writes); ``workers``: see :func:`write_report`."""
    p = result.params
    palette = P.colours(len(result.algorithms))
    cols = {a: palette[i] for i, a in enumerate(result.algorithms)}
    order = _order(result.consensus, result.algorithms)
    c = [cols[a] for a in order]
    bs = result.bootstrap

    nav = ["<a href='#setup'>input</a>", "<a href='#consensus'>consensus</a>", "<a href='#methods'>methods</a>"]
    if bs is not None:
        nav.append("<a href='#bootstrap'>bootstrap</a>")
    nav.append("<a href='#tasks'>tasks</a>")
    body = [f"<nav>{''.join(nav)}</nav>", *_header(result)]

    body.append("<h2 id='consensus'>Consensus across tasks</h2>")
    body.append(h.paragraph(
        f"Method: {p.method} ({p.aggregate}); each task ranked by “{result.statistic}”, {_direction(result)}, "
        f"ties: {p.ties}. The consensus ranks the mean of an algorithm's ranks over the tasks.", "note"))
    body.append(_rank_table(result, order))
    if len(result.tasks) > 1:
        body.append(_figure(
            P.blobs(_task_ranks(result, order), order, c, title="Ranks over the tasks",
                    reference=result.consensus.set_index("algorithm")["rank"].reindex(order).to_numpy(dtype=float)),
            "ranks over the tasks", "Blob plot across tasks: circle area ∝ the number of tasks in which the "
            "algorithm took that rank; × median, black bar 95 % interval over the tasks, red dot the consensus "
            "rank."))

    body.append("<h2 id='methods'>Ranking methods compared</h2>")
    methods = _methods_in_order(result)
    if len(methods) > 1:
        by_method = consensus_by_method({m: result.methods[m] for m in methods}, order, p.ties)
        body.append(_figure(
            P.method_lines(by_method.to_numpy(dtype=float).T, methods, order, c, title="Consensus rank by method"),
            "consensus rank by method", "Consensus rank of each algorithm (one line each) when every task is "
            "ranked by each method; flat lines mean the conclusion does not depend on the method."))
    body.append(h.paragraph("Kendall's τ between the rankings the methods give, per task (1: same order, "
                            "0: unrelated, −1: reversed).", "note"))
    body.append(_method_tau_table(result))

    if bs is not None:
        body.append(f"<h2 id='bootstrap'>Bootstrap ({bs.n} rounds, seed {bs.seed})</h2>")
        body.append(h.paragraph("Each round resamples the cases of every task with replacement and reruns the "
                                "method.", "note"))
        body.append(_figure(
            P.tau_violins([bs.tau[i] for i in range(len(bs.tasks))] + [bs.consensus_tau],
                          [*bs.tasks, "consensus"], title="Kendall's τ of each round to the full ranking"),
            "bootstrap Kendall tau", "Violin plot per task (and for the consensus, rightmost): the distribution of "
            "Kendall's τ between each bootstrap round's ranking and the ranking on all cases; near 1 means "
            "a stable ranking, the bar marks the median."))
        col_of = {a: i for i, a in enumerate(bs.algorithms)}
        samples = np.stack([bs.consensus_ranks[:, col_of[a]] if a in col_of else np.full(bs.n, np.nan)
                            for a in order], axis=1)
        body.append(_figure(
            P.blobs(samples, order, c, title=f"Consensus rank over {bs.n} bootstrap rounds",
                    reference=result.consensus.set_index("algorithm")["rank"].reindex(order).to_numpy(dtype=float)),
            "bootstrap consensus blob plot", "Blob plot of the consensus rank over the bootstrap rounds: circle "
            "area ∝ how often the algorithm took that rank; × median, black bar 95 % interval, red dot the "
            "consensus on all cases."))

    body.append("<h2 id='tasks'>Per task</h2>")
    body.append(h.paragraph("Click a task to open its ranking and plots.", "note"))
    body += _task_sections(result, cols, workers)
    return _document("Ranking analysis", body)


def write_report(result: RankResult, out_dir: str | os.PathLike, *, workers: int | None = None) -> Path:
    """Write ``out_dir/report.html`` (atomically; the folder is created) and return its path.

    The per-task sections are drawn by ``workers`` processes (default: one per CPU, at most 8, on
    Linux, for 4 tasks or more; 1 draws everything in this process). The page is the same either way.

    Example::

        from evaluation.rank.analysis import rank_analysis
        from evaluation.rank.report import write_report
        write_report(rank_analysis(table, params), "rank_out/")
    """
    out = ensure_dir(out_dir)
    path = out / REPORT_NAME
    write_text(path, render(result, workers=workers))
    return path
