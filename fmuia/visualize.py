"""Draw predictions (and, when the data root has them, labels) as one PNG grid per task.

``visualize(pred_path, data_root, out_dir)`` writes ``out_dir/<task_id>.png`` for every task of the
data root and an ``out_dir/index.html`` that links them (relative links, no network). Each cell is
one image with, drawn by the table :data:`DRAWERS` keyed by task kind:

- segmentation: contours of every foreground class, one colour per class; ground truth solid,
  prediction dashed; the per-case Dice (mean over foreground classes) in the title;
- classification: true and predicted label (green when right, red when wrong) and a bar of the
  predicted probabilities with the true class outlined;
- detection: ground-truth box solid, predicted box dashed, their IoU written;
- regression: ground-truth landmarks (circles) and predicted ones (crosses) joined by error lines
  labelled with the distance in pixels; the mean radial error in the title.

``worst=True`` shows, per task, the cases with the worst per-case metric of the strict scorer
(:data:`WORST_BY`), taken from ``results["per_case"]`` or computed with
``evaluation.scoring.evaluate(mode="strict")``. Without labels (a hidden test folder) only the
predictions are drawn.

Matplotlib runs on its Agg canvas only (no pyplot, no display).
"""

from __future__ import annotations

import html
import io
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from tqdm import tqdm

from evaluation.scoring import evaluate
from fmuia._atomic import ensure_dir, write_bytes, write_text
from fmuia.dataset.images import read_image
from fmuia.dataset.masks import read_mask
from fmuia.dataset.schema import DataRoot, Sample, load_root, prediction_mask_relpath
from fmuia.errors import FmuiaError
from fmuia.formats import parse_entry
from fmuia.predfolder import PredictionFolder, open_predictions
from fmuia.tasks import PREDICTION_FILES, TaskKind, TaskSpec

__all__ = ["visualize", "DRAWERS", "WORST_BY", "select_cases", "CLASS_COLORS"]

# Distinct colours for classes 1.. (class 0, the background, is never drawn).
CLASS_COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
                "#fabed4", "#469990", "#dcbeff", "#9a6324"]
GT_COLOR, PRED_COLOR = "#00e676", "#ff1744"
GT_STYLE, PRED_STYLE = "solid", "dashed"

# Per-case column of the strict scorer used by ``worst=True`` and whether larger is worse.
WORST_BY: dict[TaskKind, tuple[str, bool]] = {
    TaskKind.SEGMENTATION: ("DSC", False),
    TaskKind.CLASSIFICATION: ("prob_true", False),
    TaskKind.DETECTION: ("IoU", False),
    TaskKind.REGRESSION: ("MRE", True),
}
_FALLBACK_COLUMN = {TaskKind.CLASSIFICATION: "correct"}


@dataclass
class _Case:
    """One cell: the sample, its prediction record (or mask array) and what went wrong reading it."""

    sample: Sample
    pred: Any = None
    note: str | None = None
    metric: tuple[str, float] | None = None  # (name, value) from the per-case results


@dataclass
class _Predictions:
    records: dict[tuple[str, str], Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ---- small geometry helpers (display only; the scorer lives in evaluation/) ------------------------

def _box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _mean_dice(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> float:
    scores = []
    for c in range(1, num_classes):
        p, g = pred == c, gt == c
        denom = int(p.sum()) + int(g.sum())
        scores.append(1.0 if denom == 0 else 2.0 * int((p & g).sum()) / denom)
    return float(np.mean(scores)) if scores else float("nan")


def _read_gt_mask(sample: Sample) -> np.ndarray | None:
    return read_mask(sample.label_mask) if sample.has_label else None


# ---- drawers: one per kind -------------------------------------------------------------------------

def _title(ax, case: _Case, extra: str = "") -> None:
    name = os.path.basename(case.sample.image_path)
    if len(name) > 28:
        name = name[:12] + "…" + name[-14:]
    parts = [name]
    if case.metric is not None:
        parts.append(f"{case.metric[0]}={case.metric[1]:.3g}")
    elif extra:
        parts.append(extra)
    ax.set_title("\n".join(parts), fontsize=8)


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="white",
            bbox={"facecolor": "#b71c1c", "alpha": 0.85, "pad": 3})


def _contours(ax, mask: np.ndarray, num_classes: int, style: str) -> None:
    gt = style == GT_STYLE
    for c in range(1, num_classes):
        m = mask == c
        if m.any() and not m.all():
            # Nested classes share boundaries: later classes get thinner lines so both stay visible.
            width = max(1.0, (3.4 if gt else 2.0) - 0.6 * (c - 1))
            ax.contour(m.astype(np.float32), levels=[0.5], colors=[CLASS_COLORS[(c - 1) % len(CLASS_COLORS)]],
                       linestyles=style, linewidths=width, alpha=0.7 if gt else 1.0)


def _draw_segmentation(ax, case: _Case, spec: TaskSpec) -> None:
    gt = _read_gt_mask(case.sample)
    if gt is not None:
        _contours(ax, gt, spec.num_classes, GT_STYLE)
    pred = case.pred
    extra = ""
    h, w = ax.images[0].get_array().shape[:2]
    if pred is not None and pred.shape != (h, w):
        _note(ax, f"predicted mask {pred.shape[1]}x{pred.shape[0]}\n≠ image {w}x{h}")
    elif pred is not None:
        if pred.size and int(pred.max()) >= spec.num_classes:
            _note(ax, f"mask values up to {int(pred.max())}\n(expected < {spec.num_classes})")
        _contours(ax, pred, spec.num_classes, PRED_STYLE)
        if gt is not None and gt.shape == pred.shape:
            extra = f"DSC={_mean_dice(pred, gt, spec.num_classes):.3f}"
    _title(ax, case, extra)


def _legend_segmentation(spec: TaskSpec, labelled: bool) -> list:
    handles = [Line2D([], [], color=CLASS_COLORS[(c - 1) % len(CLASS_COLORS)], lw=3, label=f"class {c}")
               for c in range(1, spec.num_classes)]
    if labelled:
        handles.append(Line2D([], [], color="black", ls=GT_STYLE, label="ground truth"))
    handles.append(Line2D([], [], color="black", ls=PRED_STYLE, label="prediction"))
    return handles


def _draw_classification(ax, case: _Case, spec: TaskSpec) -> None:
    true = case.sample.class_index if case.sample.has_label else None
    pred = case.pred
    lines = []
    if true is not None:
        lines.append(f"true: {true}")
    if pred is not None:
        lines.append(f"pred: {pred.predicted_class}")
    colour = "#455a64"
    if true is not None and pred is not None:
        colour = "#2e7d32" if pred.predicted_class == true else "#c62828"
    if lines:
        ax.text(0.03, 0.97, "\n".join(lines), transform=ax.transAxes, ha="left", va="top", fontsize=9,
                color="white", bbox={"facecolor": colour, "alpha": 0.85, "pad": 2})
    extra = ""
    if pred is not None and pred.predicted_probs is not None:
        probs = np.asarray(pred.predicted_probs, dtype=float)
        inset = ax.inset_axes((0.05, 0.03, 0.9, 0.25))
        idx = np.arange(len(probs))
        colours = [PRED_COLOR if i == pred.predicted_class else "#90a4ae" for i in idx]
        bars = inset.bar(idx, probs, color=colours, width=0.8)
        if true is not None and 0 <= true < len(bars):
            bars[true].set_edgecolor(GT_COLOR)
            bars[true].set_linewidth(2.0)
            extra = f"p(true)={probs[true]:.2f}"
        inset.set_ylim(0, 1)
        inset.set_xticks(idx)
        inset.tick_params(labelsize=6, length=0)
        inset.set_yticks([])
        inset.patch.set_alpha(0.75)
    elif pred is not None:
        _note(ax, "no predicted_probs")
    _title(ax, case, extra)


def _legend_classification(spec: TaskSpec, labelled: bool) -> list:
    handles = [Rectangle((0, 0), 1, 1, color=PRED_COLOR, label="predicted class (prob. bar)")]
    if labelled:
        handles.append(Rectangle((0, 0), 1, 1, facecolor="#90a4ae", edgecolor=GT_COLOR, lw=2, label="true class"))
    return handles


def _rect(ax, box: tuple[float, ...], color: str, style: str) -> None:
    x0, y0, x1, y1 = box
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linestyle=style, linewidth=1.8))


def _draw_detection(ax, case: _Case, spec: TaskSpec) -> None:
    gt = case.sample.box if case.sample.has_label else None
    if gt is not None:
        _rect(ax, gt, GT_COLOR, GT_STYLE)
    extra = ""
    if case.pred is not None:
        pb = case.pred.bbox_pixels
        _rect(ax, pb, PRED_COLOR, PRED_STYLE)
        if gt is not None:
            iou = _box_iou(pb, gt)
            extra = f"IoU={iou:.3f}"
            ax.text(min(pb[0], gt[0]), min(pb[1], gt[1]) - 2, f"IoU {iou:.2f}", fontsize=8, color="white",
                    va="bottom", bbox={"facecolor": "black", "alpha": 0.6, "pad": 1})
    _title(ax, case, extra)


def _legend_boxes(spec: TaskSpec, labelled: bool) -> list:
    handles = [Line2D([], [], color=GT_COLOR, ls=GT_STYLE, lw=2, label="ground truth")] if labelled else []
    return handles + [Line2D([], [], color=PRED_COLOR, ls=PRED_STYLE, lw=2, label="prediction")]


def _draw_regression(ax, case: _Case, spec: TaskSpec) -> None:
    gt = list(case.sample.points) if case.sample.has_label else []
    pred_pts: list[tuple[float, float]] = []
    if case.pred is not None:
        flat = case.pred.points_pixels
        pred_pts = [(flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2)]
    dists = []
    for k in range(max(len(gt), len(pred_pts))):
        g = gt[k] if k < len(gt) else None
        p = pred_pts[k] if k < len(pred_pts) else None
        if g is not None:
            ax.plot([g[0]], [g[1]], "o", mfc="none", mec=GT_COLOR, ms=7, mew=1.8)
        if p is not None:
            ax.plot([p[0]], [p[1]], "x", color=PRED_COLOR, ms=7, mew=1.8)
        if g is not None and p is not None:
            d = math.hypot(p[0] - g[0], p[1] - g[1])
            dists.append(d)
            ax.plot([g[0], p[0]], [g[1], p[1]], "-", color="#ffeb3b", lw=1.2)
            ax.text((g[0] + p[0]) / 2, (g[1] + p[1]) / 2, f"{d:.1f}", fontsize=7, color="black",
                    bbox={"facecolor": "#ffeb3b", "alpha": 0.8, "pad": 1})
        label_at = g if g is not None else p
        if label_at is not None:
            ax.text(label_at[0] + 3, label_at[1] - 3, str(k + 1), fontsize=7, color="white")
    _title(ax, case, f"MRE={np.mean(dists):.1f}px" if dists else "")


def _legend_regression(spec: TaskSpec, labelled: bool) -> list:
    handles = []
    if labelled:
        handles.append(Line2D([], [], marker="o", ls="", mfc="none", mec=GT_COLOR, mew=2, label="ground truth"))
    handles.append(Line2D([], [], marker="x", ls="", color=PRED_COLOR, mew=2, label="prediction"))
    if labelled:
        handles.append(Line2D([], [], color="#ffeb3b", lw=2, label="error (px)"))
    return handles


@dataclass(frozen=True)
class Drawer:
    draw: Callable[[Any, _Case, TaskSpec], None]
    legend: Callable[[TaskSpec, bool], list]


DRAWERS: dict[TaskKind, Drawer] = {
    TaskKind.SEGMENTATION: Drawer(_draw_segmentation, _legend_segmentation),
    TaskKind.CLASSIFICATION: Drawer(_draw_classification, _legend_classification),
    TaskKind.DETECTION: Drawer(_draw_detection, _legend_boxes),
    TaskKind.REGRESSION: Drawer(_draw_regression, _legend_regression),
}


# ---- reading predictions ---------------------------------------------------------------------------

def _read_json_predictions(folder: PredictionFolder, root: DataRoot) -> _Predictions:
    out = _Predictions()
    kinds = {s.kind for s in root.samples}
    for kind, fname in PREDICTION_FILES.items():
        if kind not in kinds:
            continue
        try:
            entries = folder.read_json(kind)
        except FmuiaError as exc:
            out.notes.append(f"{fname}: {exc.message}")
            continue
        if entries is None:
            out.notes.append(f"{fname}: absent")
            continue
        bad = 0
        for entry in entries:
            try:
                rec = parse_entry(kind, entry)
            except FmuiaError:
                bad += 1
                continue
            out.records.setdefault((rec.task_id, rec.image_path), rec)
        if bad:
            out.notes.append(f"{fname}: {bad} malformed entr{'y' if bad == 1 else 'ies'} skipped")
    return out


def _load_case(case: _Case, folder: PredictionFolder, preds: _Predictions) -> None:
    s = case.sample
    if s.kind is TaskKind.SEGMENTATION:
        rel = prediction_mask_relpath(s.mask_path or "")
        try:
            case.pred = folder.read_mask(rel).array
        except FileNotFoundError:
            case.note = "no predicted mask"
        except (FmuiaError, OSError, ValueError) as exc:
            case.note = f"unreadable mask ({type(exc).__name__})"
        return
    case.pred = preds.records.get(s.key)
    if case.pred is None:
        case.note = "no prediction"


# ---- choosing cases --------------------------------------------------------------------------------

def _metric_of(row: dict, kind: TaskKind) -> tuple[str, float] | None:
    column, _ = WORST_BY[kind]
    for col in (column, _FALLBACK_COLUMN.get(kind)):
        if col is None:
            continue
        v = row.get(col)
        if isinstance(v, (bool, int, float)) and not (isinstance(v, float) and math.isnan(v)):
            return col, float(v)
    return None


def select_cases(samples: list[Sample], n: int, per_case: list[dict] | None = None,
                 worst: bool = False) -> list[tuple[Sample, tuple[str, float] | None]]:
    """Pick ``n`` samples of one task: the first ``n`` in CSV order, or the ``n`` worst by the per-case
    metric of :data:`WORST_BY` (ties keep CSV order; a row without a value counts as worst).

    Returns ``(sample, (metric name, value) or None)`` pairs.
    """
    rows = {(r.get("task_id"), r.get("image_path")): r for r in per_case or []}
    scored = []
    for i, s in enumerate(samples):
        row = rows.get(s.key)
        metric = _metric_of(row, s.kind) if row is not None else None
        scored.append((i, s, metric))
    if worst and samples:
        higher_worse = WORST_BY[samples[0].kind][1]

        def badness(item: tuple) -> tuple:
            i, _, metric = item
            if metric is None:
                return (0, 0.0, i)
            return (1, -metric[1] if higher_worse else metric[1], i)

        scored.sort(key=badness)
    return [(s, m) for _, s, m in scored[: max(0, n)]]


def _strict_per_case(pred_path: str | os.PathLike, data_root: str | os.PathLike) -> list[dict]:
    results = evaluate(pred_path, data_root, mode="strict", n_bootstrap=0)
    return list(results.get("per_case") or [])


# ---- rendering -------------------------------------------------------------------------------------

def _render_task(spec: TaskSpec, cases: list[_Case], labelled: bool, title: str) -> bytes:
    n = len(cases)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    images = []
    for c in cases:
        try:
            images.append(read_image(c.sample.image_file))
        except (OSError, ValueError, FmuiaError) as exc:  # a corrupt image: draw a grey frame and say so
            images.append(np.full((64, 64, 3), 128, np.uint8))
            c.note = f"image unreadable ({type(exc).__name__})"
    aspect = float(np.median([im.shape[0] / max(1, im.shape[1]) for im in images]))
    cell_w = 3.0
    cell_h = cell_w * min(max(aspect, 0.4), 1.6) + 0.45  # image + two title lines
    head, foot = 0.5, 0.45
    height = cell_h * rows + head + foot
    fig = Figure(figsize=(cell_w * cols, height), dpi=100)
    FigureCanvasAgg(fig)
    drawer = DRAWERS[spec.kind]
    for k, (case, image) in enumerate(zip(cases, images, strict=True)):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(image, interpolation="nearest")
        if case.note:
            _note(ax, case.note)
        drawer.draw(ax, case, spec)
        h, w = image.shape[:2]
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = drawer.legend(spec, labelled)
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - head / height, bottom=foot / height, wspace=0.05,
                        hspace=0.45 / (cell_h - 0.45))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _safe_name(task_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", task_id) or "task"


def visualize(pred_path: str | os.PathLike, data_root: str | os.PathLike, out_dir: str | os.PathLike,
              per_task: int = 8, worst: bool = False, results: dict | None = None) -> Path:
    """Draw up to ``per_task`` cases per task as ``out_dir/<task>.png``; return ``out_dir/index.html``.

    ``pred_path``: a prediction folder or zip (official layout). ``data_root``: the data root the
    predictions were made for; when it carries labels they are drawn too. ``worst``: choose the
    cases with the worst strict per-case metric, from ``results["per_case"]`` when given, otherwise
    scored now (needs labels). Example::

        visualize("preds/", "data/labels", "viz/", per_task=8, worst=True)
    """
    if per_task < 1:
        raise FmuiaError(f"per_task must be at least 1, got {per_task}")
    root = load_root(data_root)
    labelled = root.labelled
    per_case: list[dict] | None = None
    if results is not None:
        per_case = list(results.get("per_case") or [])
    elif worst:
        if not labelled:
            raise FmuiaError(f"{data_root}: --worst needs a labelled data root (this one has no labels)")
        per_case = _strict_per_case(pred_path, data_root)
    if worst and not per_case:
        raise FmuiaError("--worst needs strict-mode per-case results (results['per_case'] is empty or missing)")

    out = Path(out_dir)
    ensure_dir(out)
    entries: list[dict] = []
    with open_predictions(pred_path) as folder:
        preds = _read_json_predictions(folder, root)
        groups = root.by_task()
        for task_id, samples in tqdm(groups.items(), total=len(groups), desc="visualize", unit="task",
                                     disable=not sys.stderr.isatty()):
            spec = samples[0].task
            chosen = select_cases(samples, per_task, per_case, worst)
            cases = [_Case(s, metric=m) for s, m in chosen]
            for case in cases:
                _load_case(case, folder, preds)
            missing = sum(1 for c in cases if c.pred is None)
            how = "worst" if worst else "first"
            title = f"{task_id} ({spec.kind.value}) — {how} {len(cases)} of {len(samples)}"
            png = _render_task(spec, cases, labelled, title)
            fname = f"{_safe_name(task_id)}.png"
            write_bytes(out / fname, png)
            entries.append({"task_id": task_id, "kind": spec.kind.value, "file": fname, "shown": len(cases),
                            "total": len(samples), "missing": missing,
                            "images": [(c.sample.image_path, c.metric) for c in cases]})
    index = out / "index.html"
    write_text(index, _index_html(entries, preds.notes, str(pred_path), str(data_root), labelled, worst))
    return index


def _index_html(entries: list[dict], notes: list[str], pred_path: str, data_root: str, labelled: bool,
                worst: bool) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>fmuia visualize</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:1300px}"
        "figure{margin:1em 0;border-top:1px solid #ccc;padding-top:.5em}img{max-width:100%}"
        "nav a{margin-right:.8em}.note{color:#b71c1c}</style></head><body>",
        "<h1>Predictions drawn by <code>fmuia visualize</code></h1>",
        f"<p>Predictions: <code>{esc(pred_path)}</code><br>Data: <code>{esc(data_root)}</code> "
        f"({'with labels: ground truth solid / prediction dashed' if labelled else 'no labels: predictions only'})"
        f"<br>Cases: {'worst by the strict per-case metric' if worst else 'first in CSV order'}</p>",
    ]
    if notes:
        parts.append("<ul>" + "".join(f"<li class='note'>{esc(n)}</li>" for n in notes) + "</ul>")
    by_kind: dict[str, list[dict]] = {}
    for e in entries:
        by_kind.setdefault(e["kind"], []).append(e)
    parts.append("<nav>" + "".join(f"<a href='#{quote(e['task_id'])}'>{esc(e['task_id'])}</a>" for e in entries)
                 + "</nav>")
    for kind, items in by_kind.items():
        parts.append(f"<h2>{esc(kind)}</h2>")
        for e in items:
            href = quote(e["file"])
            miss = f" — <span class='note'>{e['missing']} without prediction</span>" if e["missing"] else ""
            shown = "".join(
                f"<li><code class='image'>{esc(path)}</code>"
                + (f" {esc(m[0])}={m[1]:.4g}" if m is not None else "") + "</li>"
                for path, m in e["images"]
            )
            parts.append(
                f"<figure id='{quote(e['task_id'])}'><figcaption><b>{esc(e['task_id'])}</b>: "
                f"{e['shown']} of {e['total']} cases{miss}</figcaption>"
                f"<a href='{href}'><img src='{href}' alt='{esc(e['task_id'])}' loading='lazy'></a>"
                f"<details><summary>images, left to right, top to bottom</summary><ol>{shown}</ol></details></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
