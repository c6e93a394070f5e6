"""Write a results object: the JSON, a per-case CSV (strict mode) and a readable summary."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from evaluation.aggregates import compute_aggregates
from evaluation.schema import AGGREGATES, CASE_COLUMNS, TASK_METRICS
from fmuia._atomic import json_safe, write_json, write_text

__all__ = ["write_results", "summary_text", "per_case_csv"]

def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def summary_text(results: dict) -> str:
    """A plain-text table: per task the main metrics, then the nine aggregates."""
    lines: list[str] = []
    for kind_enum, cols in TASK_METRICS.items():
        kind = kind_enum.value
        tasks = results.get(kind)
        if tasks is None:
            continue
        lines.append(f"[{kind}]")
        if not tasks:
            lines.append("  (no prediction file: no results)")
            continue
        shown = [c for c in cols if any(c in t for t in tasks.values())]
        width = max(len(t) for t in tasks) + 2
        head = "  " + "task".ljust(width) + "".join(c.rjust(12) for c in shown) + "n".rjust(7)
        if any("num_failed" in t for t in tasks.values()):
            head += "failed".rjust(8)
        lines.append(head)
        for task_id, t in tasks.items():
            row = "  " + task_id.ljust(width) + "".join(_fmt(t.get(c)).rjust(12) for c in shown)
            row += str(t.get("num_samples", "")).rjust(7)
            if "num_failed" in t:
                row += str(t["num_failed"]).rjust(8)
            lines.append(row)
        lines.append("")
    agg = results.get("aggregates") or compute_aggregates(results)
    lines.append("[aggregates]")
    for key, (_, _, direction) in AGGREGATES.items():
        lines.append(f"  {key:<16}{_fmt(agg.get(key)):>10}  ({direction} is better)")
    notes = results.get("notes") or []
    if notes:
        lines.append("")
        lines.append(f"[notes] {len(notes)}")
        lines += [f"  {n}" for n in notes[:50]]
        if len(notes) > 50:
            lines.append(f"  ... and {len(notes) - 50} more")
    return "\n".join(lines) + "\n"


def per_case_csv(per_case: list[dict]) -> str:
    """The per-case rows as CSV text (one column per metric; empty where it does not apply)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CASE_COLUMNS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in per_case:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CASE_COLUMNS})
    return buf.getvalue()


def write_results(results: dict, out_json: str | os.PathLike) -> dict[str, Path]:
    """Write ``results`` to ``out_json`` atomically, plus ``<stem>_per_case.csv`` (when the results
    have per-case rows) and ``<stem>_summary.txt`` beside it. Returns the paths written."""
    out = Path(out_json)
    paths = {"json": out}
    write_json(out, json_safe(results))
    if results.get("per_case"):
        paths["per_case"] = out.with_name(out.stem + "_per_case.csv")
        write_text(paths["per_case"], per_case_csv(results["per_case"]))
    paths["summary"] = out.with_name(out.stem + "_summary.txt")
    write_text(paths["summary"], summary_text(results))
    return paths
