"""Test helper: read a CSV the way the official scorer does (``pandas.read_csv`` with defaults) and
check that every row :func:`fmuia.dataset.load_root` accepted carries the values pandas reads.

The comparison is on what the scorer *uses* of each cell: ``image_path`` / ``task_id`` /
``task_name`` / ``mask_path`` as strings, ``int(num_classes)``, ``int(mask)``, ``float(x_min)``...,
``json.loads(point_K_xy)`` where ``pd.notna``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from fmuia.dataset.schema import BOX_COLUMNS, DataRoot
from fmuia.tasks import TaskKind


def official_rows(csv_file: Path) -> list[dict]:
    """The rows of one CSV as the official scorer sees them (``pandas.read_csv(path)``, defaults)."""
    df = pd.read_csv(csv_file)
    return [dict(row) for _, row in df.iterrows()]


def _text(value) -> str:
    assert isinstance(value, str), f"pandas reads {value!r} ({type(value).__name__}), not text"
    return value


def _na(row: dict, column: str) -> bool:
    return column not in row or not pd.notna(row[column])


def disagreements(data: DataRoot, csv_file: Path) -> list[str]:
    """Where the accepted samples of ``csv_file`` differ from what pandas reads; ``[]`` when they agree."""
    try:
        rows = official_rows(csv_file)
    except Exception as exc:  # noqa: BLE001 - pandas refusing a file we accepted is a disagreement
        return [f"pandas cannot read the file we accepted: {type(exc).__name__}: {exc}"]
    ours = [s for s in data.samples if s.csv_file == csv_file]
    if len(ours) != len(rows):
        return [f"{len(ours)} accepted rows, pandas reads {len(rows)}"]
    out = []
    for s, row in zip(ours, rows, strict=True):
        try:
            _compare(s, row)
        except (AssertionError, KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            out.append(f"{s.where}: {type(exc).__name__}: {exc}")
    return out


def _compare(s, row: dict) -> None:
    assert _text(row["image_path"]) == s.image_path, (row["image_path"], s.image_path)
    assert _text(row["task_id"]) == s.task_id, (row["task_id"], s.task_id)
    name = _text(row["task_name"])
    assert TaskKind.from_csv_name(name) is s.kind and name == name.strip(), name
    assert int(row["num_classes"]) == s.task.num_classes, (row["num_classes"], s.task.num_classes)
    if s.kind is TaskKind.SEGMENTATION:
        assert _text(row["mask_path"]) == s.mask_path
    elif s.kind is TaskKind.CLASSIFICATION:
        if s.label is None:
            assert _na(row, "mask"), row.get("mask")
        else:
            assert float(row["mask"]) == s.label and int(row["mask"]) == s.label, (row["mask"], s.label)
    elif s.kind is TaskKind.DETECTION:
        if s.label is None:
            assert all(_na(row, c) for c in BOX_COLUMNS)
        else:
            assert [float(row[c]) for c in BOX_COLUMNS] == list(s.label), ([row[c] for c in BOX_COLUMNS], s.label)
    else:
        points = s.label or (None,) * s.task.num_classes
        for k, ours in enumerate(points, start=1):
            col = f"point_{k}_xy"
            if ours is None:
                assert _na(row, col), (col, row.get(col))
            else:
                theirs = json.loads(_text(row[col]))
                assert len(theirs) == 2 and all(math.isclose(float(a), b, rel_tol=0, abs_tol=0)
                                                for a, b in zip(theirs, ours, strict=True)), (theirs, ours)
