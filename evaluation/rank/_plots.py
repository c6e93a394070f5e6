"""The figures of the ``fmuia rank`` report, rendered to PNG bytes (the plots challengeR users know).

Like :mod:`evaluation.plots`, matplotlib runs on its Agg canvas only (a ``Figure`` with a
``FigureCanvasAgg``; pyplot is never imported, so no figure is kept by a global registry) and every
figure is cleared once saved. Inputs are plain arrays already put in display order by the report;
every function returns PNG bytes, or ``None`` when there is nothing to draw. Sizes grow with the
number of algorithms (about 0.3 inch each) so that 50 algorithms stay legible.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from PIL import Image

DPI = 90
_SIG, _NOT_SIG, _UNTESTED = "#f0b429", "#2f5d9e", "#d9d9d9"
_MAX_LABEL = 28


def label(name: object) -> str:
    """A name as matplotlib should print it: dollar signs escaped (no mathtext), long names shortened."""
    text = str(name)
    if len(text) > _MAX_LABEL:
        text = text[: _MAX_LABEL - 1] + "…"
    return text.replace("$", r"\$")


def text(value: object) -> str:
    """A title as matplotlib should print it: dollar signs escaped (no mathtext)."""
    return str(value).replace("$", r"\$")


def colours(n: int) -> list:
    """One distinct colour per algorithm: tab10/tab20 while they last, then evenly spaced on turbo."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, n)]


def _size(n: int, per: float = 0.3, base: float = 1.8, least: float = 5.0) -> float:
    return max(least, per * n + base)


def _rank_ticks(max_rank: int) -> list[int]:
    """Ranks to label on an axis: all up to 20, else 1 and every 5th (each tick label costs draw time)."""
    if max_rank <= 20:
        return list(range(1, max_rank + 1))
    return [1, *range(5, max_rank + 1, 5)]


def _fontsize(n: int) -> float:
    return 8.0 if n <= 20 else 7.0 if n <= 35 else 6.0


@contextmanager
def _figure(width: float, height: float) -> Iterator[tuple[Figure, list[bytes]]]:
    """A figure on the Agg canvas; what the body appends to the list is replaced by the PNG on exit."""
    fig = Figure(figsize=(min(width, 40.0), min(height, 40.0)), dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    out: list[bytes] = []
    try:
        yield fig, out
        canvas.draw()
        out[:] = [_palette_png(np.asarray(canvas.buffer_rgba()))]
    finally:
        fig.clear()


def _palette_png(rgba: np.ndarray) -> bytes:
    """PNG bytes of an opaque RGBA frame, reduced to 256 colours: a third of the size of matplotlib's RGBA
    PNG (the 27 × 50 report: ~7 MB instead of ~21 MB) for ~30 ms a figure; only anti-aliased edges change."""
    img = Image.fromarray(np.ascontiguousarray(rgba[..., :3])).quantize(256, method=Image.Quantize.FASTOCTREE)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _algorithm_axis(ax, names: Sequence[str], axis: str = "x") -> None:
    n = len(names)
    fs = _fontsize(n)
    if axis == "x":
        ax.set_xticks(np.arange(n))
        ax.set_xticklabels([label(a) for a in names], rotation=55 if n > 6 else 30, ha="right", fontsize=fs)
        ax.set_xlim(-0.7, n - 0.3)
    else:
        ax.set_yticks(np.arange(n))
        ax.set_yticklabels([label(a) for a in names], fontsize=fs)


def _box_stats(d: np.ndarray) -> tuple[float, float, float, float, float]:
    """(low whisker, q1, median, q3, high whisker): whiskers at the extreme values within 1.5 IQR."""
    q1, med, q3 = np.percentile(d, [25, 50, 75])
    iqr = q3 - q1
    inside = d[(d >= q1 - 1.5 * iqr) & (d <= q3 + 1.5 * iqr)]
    return float(inside.min()), float(q1), float(med), float(q3), float(inside.max())


def dot_box(values: Sequence[np.ndarray], names: Sequence[str], cols: Sequence, *, title: str,
            ylabel: str) -> bytes | None:
    """Per algorithm (in the given order) a box of its per-case values with the cases as jittered dots.

    The box spans the quartiles, the black line is the median, the whiskers reach the extreme values
    within 1.5 interquartile ranges. (Drawn as a few collections: ``Axes.boxplot`` makes ~10 artists per
    box, which is slow for 50 algorithms.)
    """
    if not names:
        return None
    rng = np.random.default_rng(0)
    n = len(names)
    with _figure(_size(n), 3.9) as (fig, out):
        ax = fig.add_subplot(1, 1, 1)
        boxes, lines, medians, xs, ys, cs = [], [], [], [], [], []
        for i, v in enumerate(values):
            d = np.asarray(v, dtype=float)
            d = d[np.isfinite(d)]
            if d.size == 0:
                continue
            lo, q1, med, q3, hi = _box_stats(d)
            boxes.append([(i - 0.3, q1), (i - 0.3, q3), (i + 0.3, q3), (i + 0.3, q1)])
            medians.append([(i - 0.3, med), (i + 0.3, med)])
            lines += [[(i, q3), (i, hi)], [(i, q1), (i, lo)], [(i - 0.15, hi), (i + 0.15, hi)],
                      [(i - 0.15, lo), (i + 0.15, lo)]]
            xs.append(i + rng.uniform(-0.22, 0.22, d.size))
            ys.append(d)
            cs += [cols[i]] * d.size
        if not boxes:
            return None
        ax.add_collection(PolyCollection(boxes, facecolors="none", edgecolors="#555", linewidths=0.8, zorder=2))
        ax.add_collection(LineCollection(lines, colors="#555", linewidths=0.8, zorder=2))
        ax.add_collection(LineCollection(medians, colors="black", linewidths=1.5, zorder=4))
        ax.scatter(np.concatenate(xs), np.concatenate(ys), s=8, c=cs, alpha=0.65, zorder=3, linewidths=0)
        ax.autoscale_view()
        _algorithm_axis(ax, names)
        ax.set_ylabel(text(ylabel), fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(text(title), fontsize=9)
        fig.tight_layout()
    return out[0]


def podium(case_ranks: np.ndarray, values: np.ndarray, names: Sequence[str], cols: Sequence, *,
           title: str, ylabel: str) -> bytes | None:
    """challengeR's podium plot.

    ``case_ranks``/``values``: ``[n_cases, n_algorithms]`` (columns in display order, NaN: no value).
    Top: each podium place p (1 = best) has one slot per algorithm; a case's value for algorithm a is
    a dot in a's slot of the place a took on that case, and the dots of one case are joined by a grey
    line. Bottom: per place and algorithm, a bar of how many cases it took that place.
    """
    n = len(names)
    if n == 0 or case_ranks.size == 0:
        return None
    places = int(np.nanmax(np.floor(case_ranks))) if np.isfinite(case_ranks).any() else 0
    if places == 0:
        return None
    slot = 0.8 / n
    offset = -0.4 + slot * (np.arange(n) + 0.5)
    with _figure(_size(places, 0.32, 2.0, 6.0), 5.6) as (fig, out):
        grid = fig.add_gridspec(2, 1, height_ratios=[2.2, 1], hspace=0.08)
        top = fig.add_subplot(grid[0])
        bottom = fig.add_subplot(grid[1], sharex=top)
        x = np.floor(case_ranks) + offset[None, :]
        bars, bar_cols, tallest = [], [], 0
        for c in range(case_ranks.shape[0]):
            ok = np.isfinite(case_ranks[c]) & np.isfinite(values[c])
            if ok.sum() > 1:
                order = np.argsort(x[c, ok])
                top.plot(x[c, ok][order], values[c, ok][order], color="#999", lw=0.4, alpha=0.5, zorder=1)
        for a in range(n):
            ok = np.isfinite(case_ranks[:, a]) & np.isfinite(values[:, a])
            top.scatter(x[ok, a], values[ok, a], s=10, color=cols[a], zorder=3, linewidths=0)
            ranks = np.floor(case_ranks[np.isfinite(case_ranks[:, a]), a]).astype(int)
            counts = np.bincount(ranks, minlength=places + 1)[1:]
            for p in np.flatnonzero(counts):
                left = p + 1 + offset[a] - slot / 2
                bars.append([(left, 0), (left, counts[p]), (left + slot, counts[p]), (left + slot, 0)])
                bar_cols.append(cols[a])
                tallest = max(tallest, int(counts[p]))
        # one collection for all bars: thousands of separate Rectangle patches take seconds to draw
        bottom.add_collection(PolyCollection(bars, facecolors=bar_cols, linewidths=0))
        bottom.set_ylim(0, tallest * 1.08 + 0.1)
        top.set_ylabel(text(ylabel), fontsize=8)
        top.set_title(text(title), fontsize=9)
        top.grid(axis="y", alpha=0.3)
        top.tick_params(labelbottom=False, labelsize=7)
        bottom.set_ylabel("cases", fontsize=8)
        bottom.set_xlabel("podium place (rank on the case)", fontsize=8)
        bottom.set_xticks(_rank_ticks(places))
        bottom.tick_params(labelsize=7)
        bottom.set_xlim(0.5, places + 0.5)
        if n <= 12:
            top.legend(handles=[Patch(color=cols[a], label=label(names[a])) for a in range(n)], fontsize=6,
                       loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        fig.subplots_adjust(left=0.08, right=0.82 if n <= 12 else 0.98, top=0.92, bottom=0.1)
    return out[0]


def rank_heatmap(counts: np.ndarray, names: Sequence[str], *, title: str) -> bytes | None:
    """``counts[a, r]``: how many cases algorithm ``a`` (rows in display order) took rank ``r + 1``."""
    if counts.size == 0:
        return None
    n, ranks = counts.shape
    side = _size(max(n, ranks), 0.22, 2.4, 4.5)
    with _figure(side + 1.0, side) as (fig, out):
        ax = fig.add_subplot(1, 1, 1)
        img = ax.imshow(counts, cmap="Blues", aspect="auto", vmin=0, interpolation="nearest")
        _algorithm_axis(ax, names, "y")
        shown = _rank_ticks(ranks)
        ax.set_xticks(np.asarray(shown) - 1)
        ax.set_xticklabels([str(r) for r in shown], fontsize=7)
        ax.set_xlabel("rank on a case", fontsize=8)
        if n * ranks <= 225:
            top = counts.max() if counts.size else 0
            for a in range(n):
                for r in range(ranks):
                    if counts[a, r]:
                        ax.text(r, a, str(int(counts[a, r])), ha="center", va="center", fontsize=7,
                                color="white" if counts[a, r] > 0.6 * top else "black")
        cbar = fig.colorbar(img, ax=ax, fraction=0.04, pad=0.02)
        cbar.ax.tick_params(labelsize=7)
        cbar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        cbar.set_label("cases", fontsize=8)
        ax.set_title(text(title), fontsize=9)
        fig.tight_layout()
    return out[0]


def significance_map(sig: np.ndarray, names: Sequence[str], *, title: str) -> bytes | None:
    """``sig[i, j]``: 1 if algorithm i is significantly better than j, 0 if not, NaN if not tested."""
    n = len(names)
    if n == 0:
        return None
    codes = np.where(np.isnan(sig), 2, sig).astype(int)
    np.fill_diagonal(codes, 3)
    cmap = ListedColormap([_NOT_SIG, _SIG, _UNTESTED, "#ffffff"])
    side = _size(n, 0.22, 2.6, 4.5)
    with _figure(side + 1.6, side) as (fig, out):
        ax = fig.add_subplot(1, 1, 1)
        ax.imshow(codes, cmap=cmap, vmin=-0.5, vmax=3.5, interpolation="nearest", aspect="auto")
        _algorithm_axis(ax, names, "y")
        ax.set_xticks(np.arange(n))
        ax.set_xticklabels([label(a) for a in names], rotation=90, fontsize=_fontsize(n))
        ax.set_xlabel("… than this algorithm", fontsize=8)
        ax.set_ylabel("this algorithm is better …", fontsize=8)
        edges = np.arange(n + 1) - 0.5  # white cell borders (one collection; minor ticks are slower)
        ax.add_collection(LineCollection([[(e, -0.5), (e, n - 0.5)] for e in edges]
                                         + [[(-0.5, e), (n - 0.5, e)] for e in edges], colors="white", linewidths=0.5))
        handles = [Patch(color=_SIG, label="significantly better"), Patch(color=_NOT_SIG, label="not significant")]
        if (codes == 2).any():
            handles.append(Patch(color=_UNTESTED, label="not tested"))
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.set_title(text(title), fontsize=9)
        fig.tight_layout()
    return out[0]


def blobs(samples: np.ndarray, names: Sequence[str], cols: Sequence, *, title: str,
          reference: np.ndarray | None = None) -> bytes | None:
    """Blob plot: ``samples[k, a]`` are ranks of algorithm ``a`` (columns in display order).

    A circle at (a, r) with area proportional to the share of the samples in which ``a`` had rank r;
    a black cross marks the median, a black bar the 2.5–97.5 % interval, a red dot the ``reference``
    rank (the full-data rank) where given.
    """
    samples = np.asarray(samples, dtype=float)
    n = len(names)
    if samples.ndim != 2 or samples.shape[1] != n or n == 0 or not np.isfinite(samples).any():
        return None
    max_rank = int(np.ceil(max(n, np.nanmax(samples))))
    with _figure(_size(n), _size(max_rank, 0.2, 1.8, 3.8)) as (fig, out):
        ax = fig.add_subplot(1, 1, 1)
        scale = 420.0 if n <= 20 else 260.0
        bx, by, bs, bc, spans, med_x, med_y = [], [], [], [], [], [], []
        for a in range(n):
            col = samples[:, a]
            col = col[np.isfinite(col)]
            if col.size == 0:
                continue
            ranks, counts = np.unique(col, return_counts=True)
            bx.append(np.full(ranks.shape, a))
            by.append(ranks)
            bs.append(scale * counts / col.size)
            bc += [cols[a]] * ranks.size
            lo, med, hi = np.percentile(col, [2.5, 50, 97.5])
            spans.append([(a, lo), (a, hi)])
            med_x.append(a)
            med_y.append(med)
        ax.scatter(np.concatenate(bx), np.concatenate(by), s=np.concatenate(bs), c=bc, alpha=0.8, linewidths=0,
                   zorder=2)
        ax.add_collection(LineCollection(spans, colors="black", linewidths=1.0, zorder=3))
        ax.plot(med_x, med_y, ls="none", marker="x", color="black", ms=6, mew=1.3, zorder=4)
        if reference is not None:
            ok = np.isfinite(reference)
            ax.plot(np.flatnonzero(ok), reference[ok], ls="none", marker="o", color="#d62728", ms=3, zorder=5)
        _algorithm_axis(ax, names)
        ax.set_yticks(_rank_ticks(max_rank))
        ax.set_ylim(max_rank + 0.7, 0.3)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylabel("rank (1 = best)", fontsize=8)
        ax.grid(alpha=0.25)
        ax.set_title(text(title), fontsize=9)
        fig.tight_layout()
    return out[0]


def tau_violins(taus: Sequence[np.ndarray], labels: Sequence[str], *, title: str) -> bytes | None:
    """One violin per entry of Kendall's tau values (NaNs dropped); a constant set is drawn as a bar."""
    if not taus:
        return None
    n = len(taus)
    with _figure(_size(n, 0.38, 2.0, 5.0), 3.8) as (fig, out):
        ax = fig.add_subplot(1, 1, 1)
        for i, t in enumerate(taus):
            t = t[np.isfinite(t)]
            if t.size == 0:
                ax.text(i, 0, "n/a", ha="center", va="center", fontsize=7)
                continue
            if t.size > 1 and np.ptp(t) > 1e-12:
                parts = ax.violinplot([t], positions=[i], widths=0.8, showextrema=False)
                for body in parts["bodies"]:
                    body.set_facecolor("#4c72b0")
                    body.set_alpha(0.6)
            else:
                ax.plot([i - 0.3, i + 0.3], [t[0], t[0]], color="#4c72b0", lw=2)
            ax.plot([i], [np.median(t)], marker="_", color="black", ms=12, mew=1.5)
        ax.set_xticks(np.arange(n))
        ax.set_xticklabels([label(s) for s in labels], rotation=55 if n > 5 else 0,
                           ha="right" if n > 5 else "center", fontsize=_fontsize(n))
        ax.set_xlim(-0.7, n - 0.3)
        ax.set_ylim(min(-0.05, min((np.nanmin(t) for t in taus if np.isfinite(t).any()), default=0.0) - 0.05), 1.05)
        ax.axhline(1.0, color="#999", lw=0.6, ls="--")
        ax.set_ylabel("Kendall's τ to the full ranking", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(text(title), fontsize=9)
        fig.tight_layout()
    return out[0]


def method_lines(ranks: np.ndarray, methods: Sequence[str], names: Sequence[str], cols: Sequence, *,
                 title: str) -> bytes | None:
    """``ranks[m, a]``: rank of algorithm ``a`` by method ``m``; one line per algorithm across the methods."""
    n = len(names)
    if n == 0 or ranks.size == 0:
        return None
    k = len(methods)
    max_rank = int(np.ceil(np.nanmax(ranks))) if np.isfinite(ranks).any() else n
    with _figure(max(6.5, 2.0 * k + 3.0), _size(max(n, max_rank), 0.2, 1.6, 3.8)) as (fig, out):
        ax = fig.add_subplot(1, 1, 1)
        x = np.arange(k)
        fs = _fontsize(n)
        for a in range(n):
            ok = np.isfinite(ranks[:, a])
            ax.plot(x[ok], ranks[ok, a], marker="o", ms=3, lw=1.1, color=cols[a], alpha=0.9)
        for m, xpos, ha in ((0, -0.06, "right"), (k - 1, k - 1 + 0.06, "left")):
            # tied algorithms share one label ("a, b") instead of printing over each other
            at: dict[float, list[int]] = {}
            for a in np.flatnonzero(np.isfinite(ranks[m])):
                at.setdefault(float(ranks[m, a]), []).append(int(a))
            for r, group in at.items():
                words = ", ".join(label(names[a]) for a in group[:3]) + (f" +{len(group) - 3}" if len(group) > 3 else "")
                ax.text(xpos, r, words, ha=ha, va="center", fontsize=fs, color=cols[group[0]] if len(group) == 1
                        else "#333")
        ax.set_xticks(x)
        ax.set_xticklabels([label(m) for m in methods], fontsize=8)
        ax.set_xlim(-0.9, k - 1 + 0.9)
        ax.set_ylim(max_rank + 0.6, 0.4)
        ax.set_yticks(_rank_ticks(max_rank))
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylabel("rank (1 = best)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(text(title), fontsize=9)
        fig.tight_layout()
    return out[0]
