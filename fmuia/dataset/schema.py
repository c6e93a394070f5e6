"""Read an official FM_UIA data root into typed records.

A data root looks like ``ROOT/csv_files/*.csv`` plus image folders. Every CSV row becomes a
:class:`Sample`. Paths in the CSV (``image_path``, ``mask_path``) are identities: they are kept
verbatim and resolved once, relative to ``csv_files/``; a path that escapes the root is refused.

Every problem is collected with its CSV file and row (the line of the file where the record
starts, header = 1 in a file without leading blank lines) and raised together as one
:class:`~fmuia.errors.SchemaError`.

**Agreement with the official reader.** The challenge scorer reads each CSV with
``pandas.read_csv(path)`` (defaults). This module does not import pandas; instead it refuses every
file in which pandas would read a cell we use differently from us (proved by
``tests/test_hostile_roots.py`` and ``tests/test_schema_property.py``, which read the same files
both ways):

- the file: a regular ``*.csv`` file (not a link, folder or FIFO; ``.CSV`` is refused because the
  scorer's case-sensitive ``glob('*.csv')`` skips it; hidden files are skipped like the glob skips
  them, with a warning), UTF-8 (one BOM allowed; UTF-16/latin-1/NUL bytes refused), well-formed
  quoting (:mod:`csv` in strict mode), a header and at least one data row;
- the header: no empty, padded or duplicate column names (pandas renames them ``Unnamed: N``,
  keeps the spaces, or renames ``x.1``);
- the rows: never more fields than the header (a trailing comma makes pandas shift every value
  one column to the left); blank lines and lines of spaces/tabs are skipped, as pandas does;
- the cells: text cells (``image_path``, ``task_id``, ``task_name``, ``mask_path``) must not be
  one of pandas' missing-value words (``NA``, ``null``, ``None``, ...), look like a number or a
  boolean (pandas would convert them), and ``task_id`` / ``task_name`` must not be padded;
  numbers must be plain decimals (``3``, ``3.0``, ``-1.5e3``; no spaces, ``inf`` or ``nan``),
  integers at most 2**53 (exact as float64); a landmark is missing exactly when pandas reads NaN.

Label *contents* (every mask decoded, values below ``num_classes``, every image fully decoded) are
checked by :func:`validate_labels`, which scoring and training call once: decoding every file on
every :func:`load_root` would make each command pay for it. :func:`load_root` itself reads only
image headers (a file that is not an image, a truncated PNG, one over the pixel cap).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import stat
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmuia.dataset.images import image_orientation, image_size, read_image
from fmuia.dataset.masks import decode_mask, read_mask_like_opencv
from fmuia.errors import FmuiaError, Problem, SchemaError
from fmuia.tasks import TaskKind, TaskSpec, get_task, has_task

CSV_DIR = "csv_files"
BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")
REQUIRED_COLUMNS = ("image_path", "task_id", "task_name", "num_classes")

# pandas.read_csv's default missing-value words (pandas._libs.parsers.STR_NA_VALUES): a cell whose
# whole text is one of these is read as NaN.
PANDAS_NA_TEXTS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"[+-]?[0-9]+")
MAX_EXACT_INT = 2**53  # larger integers are not exact once pandas reads their column as float64

Box = tuple[float, float, float, float]
Point = tuple[float, float] | None  # None: the landmark is missing in the CSV


# The label of one row, per kind (the counterparts of the prediction records in fmuia.formats).
Box = tuple[float, float, float, float]  # (x_min, y_min, x_max, y_max), pixels
Point = tuple[float, float]  # (x, y), pixels
Points = tuple[Point | None, ...]  # one per landmark; None: the landmark is missing
Label = Path | int | Box | Points  # segmentation: the mask file; classification: the class index


@dataclass(frozen=True)
class Sample:
    """One CSV row.

    ``label`` is the kind's :data:`Label` (``None`` in a root without labels, a hidden test
    folder); read it through the typed accessor of the kind — :attr:`class_index`,
    :attr:`box`, :attr:`points` or :attr:`label_mask` — which checks the kind and the presence of
    the label, so callers never cast.
    """

    task: TaskSpec
    image_path: str
    image_file: Path
    csv_file: Path
    row: int
    mask_path: str | None = None
    mask_file: Path | None = None
    label: Label | None = None

    def _label_of(self, kind: TaskKind) -> Label:
        if self.task.kind is not kind:
            raise AttributeError(f"{self.where}: task {self.task_id!r} is {self.task.kind.value}, not {kind.value}")
        if self.label is None:
            raise AttributeError(f"{self.where}: no label (a root without labels)")
        return self.label

    @property
    def class_index(self) -> int:
        """Classification: the labelled class, ``0..num_classes-1``."""
        return int(self._label_of(TaskKind.CLASSIFICATION))  # type: ignore[arg-type]

    @property
    def box(self) -> Box:
        """Detection: the labelled box ``(x_min, y_min, x_max, y_max)`` in pixels."""
        return self._label_of(TaskKind.DETECTION)  # type: ignore[return-value]

    @property
    def points(self) -> Points:
        """Regression: the labelled landmarks, ``None`` where one is missing."""
        return self._label_of(TaskKind.REGRESSION)  # type: ignore[return-value]

    @property
    def label_mask(self) -> Path:
        """Segmentation: the labelled mask file."""
        return self._label_of(TaskKind.SEGMENTATION)  # type: ignore[return-value]

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


# ---- cells: what pandas reads, refused where it would read something else ---------------------------

def _one_line(text: str) -> str:
    return " ".join(str(text).splitlines())


def _one_line_each(problems: list[Problem]) -> list[Problem]:
    """Messages quote paths and cells, which may hold line breaks: one line per problem, always."""
    return [p if "\n" not in p.message and "\r" not in p.message else Problem(p.file, p.where, _one_line(p.message), p.severity)
            for p in problems]


def _padded(text: str) -> bool:
    return text != text.strip()


def _looks_numeric(text: str) -> bool:
    """Generously: text pandas might convert to a number (``float`` accepts all pandas does and more)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _text_problem(column: str, text: str) -> str | None:
    """Why pandas would not read this non-empty text cell as exactly this string; ``None`` if it would."""
    if text in PANDAS_NA_TEXTS:
        return f"{column}: {text!r} is read as a missing value (NaN) by pandas, the official reader"
    if _looks_numeric(text):
        return f"{column}: {text!r} looks like a number; pandas, the official reader, would read it as one, not as text"
    if text.strip(" \t").lower() in ("true", "false"):
        return f"{column}: {text!r} looks like a boolean; pandas, the official reader, would read it as True/False"
    return None


def _space_hint(text: str) -> str:
    return " (leading/trailing spaces)" if _padded(text) else ""


def _parse_int(text: str) -> int:
    """A plain decimal integer (``3``; ``3.0`` as pandas writes ints in a column with gaps), at most 2**53."""
    if _INTEGER.fullmatch(text):
        value = int(text)
    elif _NUMBER.fullmatch(text):
        number = float(text)
        if not math.isfinite(number) or number != int(number):
            raise ValueError
        value = int(number)
    else:
        raise ValueError
    if abs(value) > MAX_EXACT_INT:
        raise ValueError
    return value


def _parse_float(text: str) -> float:
    """A plain finite decimal number; pandas (float64) and ``float`` read such text identically."""
    if not _NUMBER.fullmatch(text):
        raise ValueError
    value = float(text)
    if not math.isfinite(value):
        raise ValueError
    return value


def _parse_point(text: str) -> Point:
    """JSON ``[x, y]``; ``None`` exactly when pandas reads the cell as NaN (the scorer's "missing")."""
    if text in PANDAS_NA_TEXTS:
        return None
    value = json.loads(text)
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError
    try:
        point = (float(value[0]), float(value[1]))
    except OverflowError:
        raise ValueError from None
    if not all(math.isfinite(v) for v in point):
        raise ValueError
    return point


def _point_columns(fieldnames: Iterable[str]) -> dict[int, str]:
    """``point_K_xy`` columns by K, spelled exactly as the scorer asks for them (``point_01_xy`` is not one)."""
    out = {}
    for name in fieldnames:
        if name.startswith("point_") and name.endswith("_xy"):
            middle = name[len("point_") : -len("_xy")]
            if middle.isascii() and middle.isdigit() and str(int(middle)) == middle:
                out[int(middle)] = name
    return out


class _RowReader:
    """Parses rows of one CSV; appends problems instead of raising."""

    def __init__(self, root: Path, csv_file: Path, problems: list[Problem], check_files: bool):
        self.root, self.csv_file, self.problems, self.check_files = root, csv_file, problems, check_files
        self.csv_dir = csv_file.parent
        self.real_dirs: dict[str, str] = {}

    def error(self, row: int, message: str) -> None:
        self.problems.append(Problem(str(self.csv_file), str(row), _one_line(message)))

    def text(self, row: int, column: str, text: str) -> bool:
        """Report a non-empty text cell pandas would read differently; True when it is fine."""
        why = _text_problem(column, text)
        if why is not None:
            self.error(row, why)
        return why is None

    def path(self, row: int, column: str, text: str, must_exist: bool) -> Path | None:
        if text and not self.text(row, column, text):
            return None
        try:
            resolved = resolve_in_root(self.root, self.csv_dir, text, self.real_dirs)
        except ValueError as exc:
            self.error(row, f"{column}: {exc}")
            return None
        if must_exist and self.check_files:
            if not resolved.is_file():
                what = "not a regular file" if os.path.lexists(resolved) else "file not found"
                self.error(row, f"{column}: {what}: {resolved}")
                return None
            if not self.readable_image(row, column, resolved):
                return None
        return resolved

    def readable_image(self, row: int, column: str, file: Path) -> bool:
        """Header check (cheap): the file is an image OpenCV can open, within the pixel cap."""
        try:
            image_size(file)
        except Exception as exc:  # noqa: BLE001 - any unreadable image becomes a located problem
            self.error(row, f"{column}: {file.name}: {_why_unreadable(exc, file)}")
            return False
        return True


def _why_unreadable(exc: BaseException, file: Path) -> str:
    if type(exc).__name__ == "UnidentifiedImageError":
        return "not an image (no known image format); expected a PNG, JPEG or BMP file"
    text = exc.message if isinstance(exc, FmuiaError) else str(exc)
    text = text.replace(f"{file}: ", "").replace(str(file), file.name)
    return f"not a readable image ({_one_line(text) or type(exc).__name__})"


def _read_label(reader: _RowReader, rec: dict, spec: TaskSpec, row: int, fields: set[str]) -> tuple:
    """Returns (mask_path, mask_file, label) for one row; problems go to ``reader``."""
    kind = spec.kind
    if kind is TaskKind.SEGMENTATION:
        mask_path = rec.get("mask_path") or ""
        if not mask_path.strip():
            reader.error(row, "mask_path: missing; segmentation rows need the mask (or prediction) path")
            return None, None, None
        mask_file = reader.path(row, "mask_path", mask_path, must_exist=False)
        label = mask_file if mask_file is not None and mask_file.is_file() else None
        if label is not None and reader.check_files and not reader.readable_image(row, "mask_path", label):
            return None, None, None
        return mask_path, mask_file, label
    if kind is TaskKind.CLASSIFICATION:
        text = rec.get("mask") or ""
        if text == "":
            return None, None, None
        try:
            value = _parse_int(text)
        except ValueError:
            reader.error(row, f"mask: {text!r} is not an integer class label{_space_hint(text)}")
            return None, None, None
        if not 0 <= value < spec.num_classes:
            reader.error(row, f"mask: class {value} out of range; expected 0..{spec.num_classes - 1}")
            return None, None, None
        return None, None, value
    if kind is TaskKind.DETECTION:
        texts = [rec.get(c) or "" for c in BOX_COLUMNS]
        if all(t == "" for t in texts):
            return None, None, None
        try:
            box = tuple(_parse_float(t) for t in texts)
        except ValueError:
            hint = " (leading/trailing spaces)" if any(_padded(t) for t in texts) else ""
            reader.error(row, f"{','.join(BOX_COLUMNS)}: {texts} are not four finite numbers{hint}")
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
        except (ValueError, json.JSONDecodeError, RecursionError):
            reader.error(row, f"{name}: {text!r} is not a point; expected JSON text like \"[x, y]\"")
            ok = False
    if not ok:
        return None, None, None
    if all(p is None for p in points):
        return None, None, None
    return None, None, tuple(points)


# ---- files ------------------------------------------------------------------------------------------

def _csv_files(csv_dir: Path, problems: list[Problem], notes: list[Problem]) -> list[Path]:
    """The CSVs the official scorer reads (``glob('*.csv')``), each a regular file; the rest reported."""
    out = []
    try:
        names = sorted(os.listdir(csv_dir))  # the scorer's sorted(glob(...)) order
    except OSError as exc:
        raise SchemaError(f"{csv_dir}: cannot list the folder ({exc.strerror or exc})") from None
    for name in names:
        if not name.lower().endswith(".csv"):
            continue
        path = csv_dir / name
        if name.startswith("."):
            notes.append(Problem(str(path), "", "hidden file skipped, as the official scorer's glob('*.csv') skips it", "warning"))
            continue
        if not name.endswith(".csv"):
            problems.append(Problem(str(path), "", f"extension {name[-4:]!r}: the official scorer reads only '*.csv' "
                                    "(case-sensitive) and would skip this file; rename it to end in '.csv'"))
            continue
        try:
            mode = os.lstat(path).st_mode
        except OSError as exc:
            problems.append(Problem(str(path), "", f"cannot read ({exc.strerror})"))
            continue
        if stat.S_ISLNK(mode):
            problems.append(Problem(str(path), "", "a symbolic link; expected a regular CSV file (copy the file itself into csv_files/)"))
        elif stat.S_ISDIR(mode):
            problems.append(Problem(str(path), "", "a folder; expected a regular CSV file"))
        elif not stat.S_ISREG(mode):
            what = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a special file (socket or device)"
            problems.append(Problem(str(path), "", f"{what}; expected a regular CSV file"))
        else:
            out.append(path)
    return out


def _line_of(data: bytes, offset: int) -> int:
    head = data[:offset]
    return head.count(b"\n") + head.count(b"\r") - head.count(b"\r\n") + 1


def _decode(csv_file: Path, data: bytes) -> tuple[str | None, Problem | None]:
    """UTF-8 text of a CSV (one BOM removed, as pandas does), or the located reason it is not."""
    for bom, name in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):
        if data.startswith(bom):
            return None, Problem(str(csv_file), "1", f"unreadable CSV: {name} text (byte-order mark {bom.hex(' ').upper()}); expected UTF-8: "
                                 "re-save the file as UTF-8")
    nul = data.find(b"\x00")
    if nul >= 0:
        return None, Problem(str(csv_file), str(_line_of(data, nul)), "unreadable CSV: NUL byte (UTF-16 text without a byte-order mark, or "
                             "not a text file); expected UTF-8 comma-separated text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, Problem(str(csv_file), str(_line_of(data, exc.start)), f"unreadable CSV: byte 0x{data[exc.start]:02X} is not UTF-8 "
                             "(latin-1 or Windows-1252 text?); expected UTF-8: re-save the file as UTF-8")
    return (text[1:] if text.startswith("\ufeff") else text), None


@dataclass
class _Table:
    header: list[str]
    header_line: int
    rows: list[tuple[int, list[str]]]  # (line where the record starts, fields)


def _read_table(csv_file: Path, problems: list[Problem]) -> _Table | None:
    """Header and records of one CSV, or ``None`` with the reason in ``problems``."""
    where = str(csv_file)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(csv_file, flags)  # no blocking on a FIFO swapped in since the listing, no link followed
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                problems.append(Problem(where, "", "not a regular file; expected a CSV file"))
                return None
            data = fh.read()
    except OSError as exc:
        problems.append(Problem(where, "", f"cannot read ({exc.strerror or exc})"))
        return None
    text, why = _decode(csv_file, data)
    if why is not None:
        problems.append(why)
        return None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    header_line = 1
    rows: list[tuple[int, list[str]]] = []
    raw_lines: list[str] | None = None
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(Problem(where, str(start), f"malformed CSV ({_one_line(str(exc))}): a quote inside a quoted value must be "
                                    "doubled, and a quoted value must be closed; pandas may read this file differently"))
            return None
        if not record:
            continue  # a blank line: pandas skips it too
        if len(record) == 1 and record[0].strip(" \t") == "" and reader.line_num == start:
            if raw_lines is None:
                raw_lines = io.StringIO(text, newline="").readlines()  # split as csv splits them
            if raw_lines[start - 1].strip(" \t\r\n") == "":
                continue  # an unquoted line of spaces or tabs: pandas skips it too (a quoted " " is a row)
        if header is None:
            header, header_line = record, start
        else:
            rows.append((start, record))
    if header is None:
        problems.append(Problem(where, "1", f"empty file; expected a header with {list(REQUIRED_COLUMNS)}"))
        return None
    return _Table(header, header_line, rows)


def _header_problems(csv_file: Path, table: _Table) -> list[Problem]:
    where, line = str(csv_file), str(table.header_line)
    out = []
    first: dict[str, int] = {}
    for i, name in enumerate(table.header, start=1):
        if name == "":
            out.append(Problem(where, line, f"column {i} of the header has no name (a trailing comma?); pandas reads it as "
                               f"'Unnamed: {i - 1}'; delete the extra comma"))
        elif _padded(name):
            out.append(Problem(where, line, f"column {i} {name!r} has leading/trailing spaces; pandas, the official reader, keeps "
                               f"them, so it would not find column {name.strip()!r}"))
        elif name in first:
            out.append(Problem(where, line, f"duplicate column {name!r} (columns {first[name]} and {i}); pandas renames the "
                               f"second to {name + '.1'!r} and reads only the first"))
        else:
            first[name] = i
    if out:
        return out
    missing = [c for c in REQUIRED_COLUMNS if c not in first]
    if missing:
        return [Problem(where, line, f"missing column(s) {missing}; expected {list(REQUIRED_COLUMNS)}")]
    if not table.rows:
        return [Problem(where, line, "no data rows (only a header); expected one row per image")]
    return []


def load_root(root: str | os.PathLike, *, check_files: bool = True) -> DataRoot:
    """Load every CSV under ``root/csv_files`` into :class:`Sample` records.

    ``check_files`` verifies that every image exists and opens as an image (headers only), and,
    in a labelled root, every mask likewise. Tasks the registry lacks are accepted from the CSV
    with a warning; a CSV that contradicts the registry (kind or class count) is an error. CSV
    text the official reader (pandas) would read differently is an error (see the module doc).
    Raises :class:`SchemaError` listing all problems. Label contents: :func:`validate_labels`.
    """
    root = Path(root)
    csv_dir = root / CSV_DIR
    if not csv_dir.is_dir():
        raise SchemaError(f"{root}: not a data root: no {CSV_DIR}/ folder")
    problems: list[Problem] = []
    notes: list[Problem] = []
    csv_files = _csv_files(csv_dir, problems, notes)
    if not csv_files and not problems:
        raise SchemaError(f"{csv_dir}: no .csv files")

    tasks: dict[str, TaskSpec] = {}
    samples: list[Sample] = []
    seen: dict[tuple[str, str], str] = {}
    for csv_file in csv_files:
        reader = _RowReader(root, csv_file, problems, check_files)
        table = _read_table(csv_file, problems)
        if table is None:
            continue
        bad_header = _header_problems(csv_file, table)
        if bad_header:
            problems += bad_header
            continue
        header = table.header
        fields = set(header)
        for row, record in table.rows:
            if len(record) > len(header):
                reader.error(row, f"{len(record)} fields, but the header has {len(header)} columns (a trailing comma, or an "
                             "unquoted comma inside a value?); pandas would shift this row's values or refuse the file")
                continue
            rec = dict(zip(header, record + [""] * (len(header) - len(record)), strict=True))
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
        raise SchemaError(f"{root}: {len(problems)} schema problem(s)", _one_line_each(problems))
    for note in notes:
        warnings.warn(str(note), stacklevel=2)
    return DataRoot(root, samples, tasks, notes)


def _check_partial_labels(rows: list[Sample], problems: list[Problem]) -> None:
    """Within one CSV, either every row has its label or none does (a hidden test CSV)."""
    if not any(s.has_label for s in rows):
        return
    for s in rows:
        if not s.has_label:
            what = f"mask file not found: {s.mask_file}" if s.kind is TaskKind.SEGMENTATION else "label missing"
            problems.append(Problem(str(s.csv_file), str(s.row), f"{what} (other rows of this CSV are labelled)"))


def _row_task(reader: _RowReader, rec: dict, row: int, tasks: dict[str, TaskSpec], notes: list[Problem]) -> TaskSpec | None:
    task_id = rec.get("task_id") or ""
    if not task_id.strip():
        reader.error(row, "task_id: empty")
        return None
    if not reader.text(row, "task_id", task_id):
        return None
    if _padded(task_id):
        reader.error(row, f"task_id: {task_id!r} has leading/trailing spaces; pandas, the official reader, keeps them, so "
                     f"predictions for {task_id.strip()!r} would not match")
        return None
    task_name = rec.get("task_name") or ""
    if task_name and not reader.text(row, "task_name", task_name):
        return None
    try:
        kind = TaskKind.from_csv_name(task_name)
    except ValueError as exc:
        reader.error(row, f"task_name: {exc}")
        return None
    if _padded(task_name):
        reader.error(row, f"task_name: {task_name!r} has leading/trailing spaces; the official scorer compares it exactly")
        return None
    text = rec.get("num_classes") or ""
    try:
        n = _parse_int(text)
        if n < 1:
            raise ValueError
    except ValueError:
        reader.error(row, f"num_classes: {text!r} is not a positive integer{_space_hint(text)}")
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


# ---- label contents ---------------------------------------------------------------------------------

def validate_labels(root: DataRoot | str | os.PathLike, *, images: bool = True) -> DataRoot:
    """Decode every label file of a loaded root and refuse what the official scorer would misread.

    For each segmentation label mask: it decodes (not truncated, not another file type), as
    OpenCV's ``IMREAD_GRAYSCALE`` (the official scorer) and as class indices (strict scoring,
    training) alike — same size, same values, no EXIF orientation (which OpenCV applies and the
    index reader does not) —, it has the image's size (as OpenCV reads the image, see
    :func:`~fmuia.dataset.images.image_size`) and every value is below the task's
    ``num_classes``. With ``images``
    (default) every image is fully decoded by :func:`~fmuia.dataset.images.read_image` too
    (a truncated JPEG passes the header check of :func:`load_root`, not this one).

    ``root``: a :class:`DataRoot` or a path (then loaded with :func:`load_root`). Returns the root;
    raises :class:`SchemaError` with one located problem per bad row. Cost: one full decode per
    file (about 0.4 ms per 256 px image or mask: 0.3 s for 27 tasks x 20 rows), which is why :func:`load_root` does not do it:
    call it once before scoring or training.
    """
    data = root if isinstance(root, DataRoot) else load_root(root)
    problems: list[Problem] = []
    for s in data.samples:
        if images:
            try:
                read_image(s.image_file)
            except Exception as exc:  # noqa: BLE001 - every unreadable image becomes a located problem
                problems.append(Problem(str(s.csv_file), str(s.row), f"image_path: {s.image_file.name}: {_why_unreadable(exc, s.image_file)}"))
        if s.kind is TaskKind.SEGMENTATION and isinstance(s.label, Path):
            try:
                size = image_size(s.image_file)
            except Exception:  # noqa: BLE001 - the image's own problem is reported above or by load_root
                size = None
            why = _mask_problem(s.label, s.task.num_classes, size)
            if why is not None:
                problems.append(Problem(str(s.csv_file), str(s.row), _one_line(f"mask_path: {s.label.name}: {why}")))
    if problems:
        raise SchemaError(f"{data.root}: {len(problems)} label problem(s)", _one_line_each(problems))
    return data


def _mask_problem(file: Path, num_classes: int, image_wh: tuple[int, int] | None) -> str | None:
    """Why a label mask would not give the scorer class indices ``0..num_classes-1`` at the image's size
    (``image_wh``, as OpenCV reads the image; ``None``: not checked); ``None`` if it does."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        return f"cannot read ({exc.strerror or exc})"
    grey = read_mask_like_opencv(data)  # what the official scorer's cv2.imread(IMREAD_GRAYSCALE) returns
    if grey is None:
        return "label mask unreadable (truncated, or not an image): OpenCV's imread returns None"
    try:
        decoded = decode_mask(data, str(file))
        orientation = image_orientation(file)
    except Exception as exc:  # noqa: BLE001 - a mask OpenCV reads but Pillow refuses is unreadable too
        return _why_unreadable(exc, file)
    if orientation != 1:
        return (f"label mask carries EXIF orientation {orientation}: OpenCV rotates it, a class-index reader does not; "
                "save it without the orientation tag")
    index = decoded.array
    if index.shape != grey.shape or not np.array_equal(index, grey):
        return (f"label mask ({decoded.format} mode {decoded.mode}) reads differently as OpenCV grey levels than as class "
                "indices; save it as an 8-bit single-channel PNG of class indices")
    if image_wh is not None and (grey.shape[1], grey.shape[0]) != tuple(image_wh):
        return (f"label mask is {grey.shape[1]}x{grey.shape[0]} but the image is {image_wh[0]}x{image_wh[1]} (as OpenCV "
                "reads it, after EXIF orientation); expected the same size")
    top = int(grey.max()) if grey.size else 0
    if top >= num_classes:
        count = int(np.count_nonzero(grey >= num_classes))
        return (f"label mask holds value {top} ({count} pixel(s) >= {num_classes}); expected class indices "
                f"0..{num_classes - 1} (num_classes={num_classes})")
    return None
