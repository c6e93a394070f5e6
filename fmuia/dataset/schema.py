"""Read an official FM_UIA data root into typed records.

A data root looks like ``ROOT/csv_files/*.csv`` plus image folders. Every CSV row becomes a
:class:`Sample`. Paths in the CSV (``image_path``, ``mask_path``) are identities: they are kept
verbatim and resolved once, relative to ``csv_files/``; a path that escapes the root is refused.

Every problem is collected with its CSV file and row (the spreadsheet line number, header = 1)
and raised together as one :class:`~fmuia.errors.SchemaError`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fmuia.errors import Problem, SchemaError
from fmuia.tasks import TaskKind, TaskSpec, get_task, has_task

CSV_DIR = "csv_files"
BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")
REQUIRED_COLUMNS = ("image_path", "task_id", "task_name", "num_classes")

Box = tuple[float, float, float, float]
Point = tuple[float, float] | None  # None: the landmark is missing in the CSV


@dataclass(frozen=True)
class Sample:
    """One CSV row.

    ``label`` depends on the kind: segmentation → the resolved mask file (``Path``);
    classification → ``int``; detection → ``(x_min, y_min, x_max, y_max)`` in pixels;
    regression → a tuple of ``(x, y)`` pixel points (``None`` for a missing point).
    It is ``None`` in a root without labels (a hidden test folder).
    """

    task: TaskSpec
    image_path: str
    image_file: Path
    csv_file: Path
    row: int
    mask_path: str | None = None
    mask_file: Path | None = None
    label: object = None

    @property
    def task_id(self) -> str:
        return self.task.task_id

    @property
    def kind(self) -> TaskKind:
        return self.task.kind

    @property
    def has_label(self) -> bool:
        return self.label is not None

    @property
    def key(self) -> tuple[str, str]:
        """How predictions are matched to rows: ``(task_id, image_path)``."""
        return (self.task.task_id, self.image_path)

    @property
    def where(self) -> str:
        return f"{self.csv_file.name}:{self.row}"


@dataclass
class DataRoot:
    """A loaded data root: its samples in CSV order and the tasks they use."""

    root: Path
    samples: list[Sample]
    tasks: dict[str, TaskSpec]
    warnings: list[Problem] = field(default_factory=list)

    @property
    def csv_dir(self) -> Path:
        return self.root / CSV_DIR

    @property
    def labelled(self) -> bool:
        return bool(self.samples) and all(s.has_label for s in self.samples)

    def by_task(self) -> dict[str, list[Sample]]:
        out: dict[str, list[Sample]] = {}
        for s in self.samples:
            out.setdefault(s.task_id, []).append(s)
        return out

    def of_kind(self, kind: TaskKind | str) -> list[Sample]:
        k = TaskKind(kind)
        return [s for s in self.samples if s.kind is k]


def prediction_mask_relpath(mask_path: str) -> str:
    """Where a segmentation prediction lives inside a prediction folder: every ``../`` removed.

    This is the official rule (``mask_path.replace('../', '')``), kept verbatim.
    """
    return mask_path.replace("../", "")


def resolve_in_root(root: Path, csv_dir: Path, rel: str, _real_dirs: dict[str, str] | None = None) -> Path:
    """Resolve a CSV path string relative to ``csv_dir``; ``ValueError`` if it leaves ``root``.

    Symlinks are followed for the test, so a link pointing outside the root is refused too.
    ``_real_dirs`` caches resolved folders across the rows of one load (one ``lstat`` per row
    instead of one per path component).
    """
    if rel == "" or os.path.isabs(rel) or "\x00" in rel:
        raise ValueError(f"path {rel!r} must be a non-empty path relative to {CSV_DIR}/")
    resolved = Path(os.path.normpath(csv_dir / rel))
    cache = {} if _real_dirs is None else _real_dirs
    root_key = "\x00root:" + str(root)
    if root_key not in cache:
        cache[root_key] = os.path.realpath(root)
    root_real = cache[root_key]
    parent, name = os.path.split(str(resolved))
    if parent not in cache:
        cache[parent] = os.path.realpath(parent)
    real = os.path.join(cache[parent], name)
    if os.path.islink(real):
        real = os.path.realpath(real)
    if os.path.commonpath([root_real, real]) != root_real:
        raise ValueError(f"path {rel!r} escapes the data root {root}")
    return resolved


def _parse_int(text: str) -> int:
    value = float(text)  # accepts "3" and "3.0" as written by pandas; refuses "abc"
    if not math.isfinite(value) or value != int(value):
        raise ValueError
    return int(value)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError
    return value


def _parse_point(text: str) -> Point:
    if text.strip() == "" or text.strip().lower() == "nan":
        return None
    value = json.loads(text)
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        or not all(math.isfinite(v) for v in value)
    ):
        raise ValueError
    return (float(value[0]), float(value[1]))


def _point_columns(fieldnames: Iterable[str]) -> dict[int, str]:
    out = {}
    for name in fieldnames:
        if name.startswith("point_") and name.endswith("_xy"):
            middle = name[len("point_") : -len("_xy")]
            if middle.isdigit():
                out[int(middle)] = name
    return out


class _RowReader:
    """Parses rows of one CSV; appends problems instead of raising."""

    def __init__(self, root: Path, csv_file: Path, problems: list[Problem], check_files: bool):
        self.root, self.csv_file, self.problems, self.check_files = root, csv_file, problems, check_files
        self.csv_dir = csv_file.parent
        self.real_dirs: dict[str, str] = {}

    def error(self, row: int, message: str) -> None:
        self.problems.append(Problem(str(self.csv_file), str(row), message))

    def path(self, row: int, column: str, text: str, must_exist: bool) -> Path | None:
        try:
            resolved = resolve_in_root(self.root, self.csv_dir, text, self.real_dirs)
        except ValueError as exc:
            self.error(row, f"{column}: {exc}")
            return None
        if must_exist and self.check_files and not resolved.is_file():
            self.error(row, f"{column}: file not found: {resolved}")
            return None
        return resolved


def _read_label(reader: _RowReader, rec: dict, spec: TaskSpec, row: int, fields: set[str]) -> tuple:
    """Returns (mask_path, mask_file, label) for one row; problems go to ``reader``."""
    kind = spec.kind
    if kind is TaskKind.SEGMENTATION:
        mask_path = (rec.get("mask_path") or "").strip() and rec.get("mask_path")
        if not mask_path:
            reader.error(row, "mask_path: missing; segmentation rows need the mask (or prediction) path")
            return None, None, None
        mask_file = reader.path(row, "mask_path", mask_path, must_exist=False)
        label = mask_file if mask_file is not None and mask_file.is_file() else None
        return mask_path, mask_file, label
    if kind is TaskKind.CLASSIFICATION:
        text = (rec.get("mask") or "").strip() if "mask" in fields else ""
        if text == "":
            return None, None, None
        try:
            value = _parse_int(text)
        except ValueError:
            reader.error(row, f"mask: {text!r} is not an integer class label")
            return None, None, None
        if not 0 <= value < spec.num_classes:
            reader.error(row, f"mask: class {value} out of range; expected 0..{spec.num_classes - 1}")
            return None, None, None
        return None, None, value
    if kind is TaskKind.DETECTION:
        texts = [(rec.get(c) or "").strip() if c in fields else "" for c in BOX_COLUMNS]
        if all(t == "" for t in texts):
            return None, None, None
        try:
            box = tuple(_parse_float(t) for t in texts)
        except ValueError:
            reader.error(row, f"{','.join(BOX_COLUMNS)}: {texts} are not four finite numbers")
            return None, None, None
        if box[2] <= box[0] or box[3] <= box[1]:
            reader.error(row, f"box {list(box)}: expected x_min < x_max and y_min < y_max")
            return None, None, None
        return None, None, box
    # regression
    columns = _point_columns(fields)
    if not columns:
        return None, None, None
    points: list[Point] = []
    ok = True
    absent = [f"point_{k}_xy" for k in range(1, spec.num_classes + 1) if k not in columns]
    if absent:
        reader.error(row, f"missing column(s) {absent}; task {spec.task_id!r} has {spec.num_classes} landmarks")
        return None, None, None
    for k in range(1, spec.num_classes + 1):
        name = f"point_{k}_xy"
        text = rec.get(name) or ""
        try:
            points.append(_parse_point(text))
        except (ValueError, json.JSONDecodeError):
            reader.error(row, f"{name}: {text!r} is not a point; expected JSON text like \"[x, y]\"")
            ok = False
    if not ok:
        return None, None, None
    if all(p is None for p in points):
        return None, None, None
    return None, None, tuple(points)


def load_root(root: str | os.PathLike, *, check_files: bool = True) -> DataRoot:
    """Load every CSV under ``root/csv_files`` into :class:`Sample` records.

    ``check_files`` verifies that every image exists (and, in a labelled root, every mask).
    Tasks the registry lacks are accepted from the CSV with a warning; a CSV that contradicts the
    registry (kind or class count) is an error. Raises :class:`SchemaError` listing all problems.
    """
    root = Path(root)
    csv_dir = root / CSV_DIR
    if not csv_dir.is_dir():
        raise SchemaError(f"{root}: not a data root: no {CSV_DIR}/ folder")
    csv_files = sorted(p for p in csv_dir.iterdir() if p.suffix.lower() == ".csv" and p.is_file())
    if not csv_files:
        raise SchemaError(f"{csv_dir}: no .csv files")

    problems: list[Problem] = []
    notes: list[Problem] = []
    tasks: dict[str, TaskSpec] = {}
    samples: list[Sample] = []
    seen: dict[tuple[str, str], str] = {}
    for csv_file in csv_files:
        reader = _RowReader(root, csv_file, problems, check_files)
        try:
            records = _read_csv(csv_file)
        except (csv.Error, UnicodeDecodeError) as exc:
            problems.append(Problem(str(csv_file), "", f"unreadable CSV ({exc}); expected UTF-8 comma-separated text"))
            continue
        if records is None:
            problems.append(Problem(str(csv_file), "1", f"empty file; expected a header with {list(REQUIRED_COLUMNS)}"))
            continue
        header, rows = records
        fields = set(header)
        missing = [c for c in REQUIRED_COLUMNS if c not in fields]
        if missing:
            problems.append(
                Problem(str(csv_file), "1", f"missing column(s) {missing}; expected {list(REQUIRED_COLUMNS)}")
            )
            continue
        for row, rec in enumerate(rows, start=2):
            before = len(problems)
            spec = _row_task(reader, rec, row, tasks, notes)
            if spec is None:
                continue
            image_path = rec.get("image_path") or ""
            image_file = reader.path(row, "image_path", image_path, must_exist=True)
            mask_path, mask_file, label = _read_label(reader, rec, spec, row, fields)
            if image_file is None or len(problems) > before:  # reported once; no sample from a bad row
                continue
            key = (spec.task_id, image_path)
            if key in seen:
                reader.error(row, f"duplicate row for task {spec.task_id!r}, image {image_path!r} (first at {seen[key]})")
                continue
            seen[key] = f"{csv_file.name}:{row}"
            samples.append(Sample(spec, image_path, image_file, csv_file, row, mask_path, mask_file, label))
        _check_partial_labels([s for s in samples if s.csv_file == csv_file], problems)
    if problems:
        raise SchemaError(f"{root}: {len(problems)} schema problem(s)", problems)
    for note in notes:
        warnings.warn(str(note), stacklevel=2)
    return DataRoot(root, samples, tasks, notes)


def _read_csv(csv_file: Path) -> tuple[list[str], list[dict]] | None:
    """Header and rows of one CSV (BOM tolerated); ``None`` for an empty file."""
    with open(csv_file, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            return None
        header = [str(name).strip() for name in reader.fieldnames]
        rows = []
        for rec in reader:
            rows.append({str(k).strip(): v for k, v in rec.items() if k is not None})
        return header, rows


def _check_partial_labels(rows: list[Sample], problems: list[Problem]) -> None:
    """Within one CSV, either every row has its label or none does (a hidden test CSV)."""
    if not any(s.has_label for s in rows):
        return
    for s in rows:
        if not s.has_label:
            what = f"mask file not found: {s.mask_file}" if s.kind is TaskKind.SEGMENTATION else "label missing"
            problems.append(Problem(str(s.csv_file), str(s.row), f"{what} (other rows of this CSV are labelled)"))


def _row_task(reader: _RowReader, rec: dict, row: int, tasks: dict[str, TaskSpec], notes: list[Problem]) -> TaskSpec | None:
    task_id = (rec.get("task_id") or "").strip()
    if not task_id:
        reader.error(row, "task_id: empty")
        return None
    try:
        kind = TaskKind.from_csv_name(rec.get("task_name") or "")
    except ValueError as exc:
        reader.error(row, f"task_name: {exc}")
        return None
    try:
        n = _parse_int(rec.get("num_classes") or "")
        if n < 1:
            raise ValueError
    except ValueError:
        reader.error(row, f"num_classes: {rec.get('num_classes')!r} is not a positive integer")
        return None
    spec = TaskSpec(task_id, kind, n)
    known = tasks.get(task_id)
    if known is None:
        if has_task(task_id):
            known = get_task(task_id)
        else:
            notes.append(
                Problem(str(reader.csv_file), str(row), f"task {task_id!r} is not in the registry; using the CSV's definition ({kind.value}, {n})", "warning")
            )
            known = spec
        tasks[task_id] = known
    if known != spec:
        reader.error(
            row,
            f"task {task_id!r} is {spec.kind.csv_name} with num_classes={spec.num_classes} here, "
            f"but {known.kind.csv_name} with num_classes={known.num_classes} in the registry/earlier rows",
        )
        return None
    return known
