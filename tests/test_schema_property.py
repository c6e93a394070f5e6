"""Property (hypothesis): malformed CSV text for a small synth root — cells deleted, duplicated, padded,
quoted, replaced by wrong types, extra commas, rows and columns duplicated or dropped, line endings
changed, the text cut short, odd encodings — never makes :func:`load_root` raise anything but
:class:`SchemaError`, and every row it accepts carries exactly the values the official reader
(``pandas.read_csv``, defaults) reads for it.
"""

from __future__ import annotations

import csv
import io
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmuia.dataset import load_root
from fmuia.dataset.synth import synthesize
from fmuia.errors import SchemaError

sys.path.insert(0, str(Path(__file__).parent))
from pandas_view import disagreements  # noqa: E402

EXAMPLES = 2000
TASKS = ["breast_lesion", "organ_cls", "uterine_fibroid_det", "IUGC"]
RAN = {"examples": 0, "accepted": 0, "refused": 0}

VALUES = ["", " ", "NA", "nan", "NAN", "null", "None", "#N/A", "True", "false", "3", "3.0", "-1", "1e400", "1e2",
          "99999999999999999999", "abc", "[1, 2]", "[1,2,3]", "[NaN, 1]", "[1e999, 2]", "\"", "x,y", "\u00e9", "\xa0",
          "1_0", " 3", "3 ", "0x1", "inf", "1.5", "2", "0", "organ_cls", "IUGC", "classification", "Regression",
          "segmentation", "detection", "[94.2, 51.4]", "../x.png", "  ", "\t", "7", "+1", ".5", "5.", "1.0e1",
          "[3, 4.5]", " [1, 2] ", "[-0.0, 1e2]", "00", "-0", "4.000", "1E1", '" "', "a\nb", "\x0c", "\r"]
ENCODINGS = ["utf-8", "utf-8", "utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16", "utf-16-le"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = synthesize(tmp_path_factory.mktemp("prop") / "root", per_task=3, seed=3, tasks=TASKS)
    yield out
    print(f"\nschema property examples run: {RAN['examples']} "
          f"(accepted {RAN['accepted']}, refused {RAN['refused']})")


# One edit of the CSV: (operation, row, column, value); rows and columns are taken modulo the size.
EDIT = st.tuples(
    st.sampled_from(["delete_cell", "duplicate_cell", "pad_cell", "set_cell", "set_cell", "set_label", "set_label",
                     "quote_cell", "quote_cell", "extra_comma",
                     "duplicate_row", "delete_row", "duplicate_column", "delete_column", "swap_header",
                     "blank_line", "space_line", "raw_insert"]),
    st.integers(0, 10), st.integers(0, 10), st.sampled_from(VALUES),
)
TEXT_EDIT = st.sampled_from(["none", "none", "crlf", "cr", "cut", "no_final_newline"])


def _grid_edit(grid: list[list[str]], extra: list[tuple[int, str]], op: str, r: int, c: int, value: str) -> None:
    r %= len(grid)
    row = grid[r]
    c %= max(1, len(row))
    if op == "delete_cell" and row:
        del row[c]
    elif op == "duplicate_cell" and row:
        row.insert(c, row[c])
    elif op == "pad_cell" and row:
        row[c] = [" ", "\t", "  "][len(value) % 3] + row[c] if len(value) % 2 else row[c] + " "
    elif op == "set_cell" and row:
        row[c] = value
    elif op == "set_label" and len(row) > 4 and r > 0:  # a label column (after the four required ones)
        row[4 + c % (len(row) - 4)] = value
    elif op == "quote_cell" and row:
        row[c] = '"' + row[c].replace('"', '""') + '"' if len(value) % 2 else '"' + row[c] + '"'
    elif op == "extra_comma":
        row.append("")
    elif op == "duplicate_row":
        grid.insert(r, list(row))
    elif op == "delete_row" and len(grid) > 1:
        del grid[r]
    elif op == "duplicate_column":
        for line in grid:
            if c < len(line):
                line.insert(c, line[c])
    elif op == "delete_column":
        for line in grid:
            if c < len(line):
                del line[c]
    elif op == "swap_header" and len(grid[0]) > 1:
        h = grid[0]
        a = c % len(h)  # c was reduced modulo the edited row's length, not the header's
        d = (a + 1) % len(h)
        h[a], h[d] = h[d], h[a]
    elif op in ("blank_line", "space_line", "raw_insert"):
        extra.append((r, {"blank_line": "", "space_line": " \t"}.get(op, value)))


def _render(grid: list[list[str]], extra: list[tuple[int, str]]) -> str:
    """Cells are written as edited: quoting only where the original needed it (or an edit added it)."""
    lines = []
    for line in grid:
        out = []
        for cell in line:
            needs = any(ch in cell for ch in ',\n\r') and not (cell.startswith('"') and cell.endswith('"'))
            out.append('"' + cell.replace('"', '""') + '"' if needs else cell)
        lines.append(",".join(out))
    for r, text in sorted(extra, reverse=True):
        lines.insert(min(r + 1, len(lines)), text)
    return "\n".join(lines) + "\n"


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(task=st.sampled_from(TASKS), edits=st.lists(EDIT, min_size=0, max_size=3), text_edit=TEXT_EDIT,
       cut=st.floats(0.0, 1.0), encoding=st.sampled_from(ENCODINGS))
def test_malformed_csv_is_refused_or_read_like_pandas(root, task, edits, text_edit, cut, encoding):
    RAN["examples"] += 1
    path = root / "csv_files" / f"{task}.csv"
    original = path.read_bytes()
    grid = list(csv.reader(io.StringIO(original.decode("utf-8"), newline="")))
    extra: list[tuple[int, str]] = []
    for op, r, c, value in edits:
        _grid_edit(grid, extra, op, r, c, value)
    text = _render(grid, extra)
    if text_edit == "crlf":
        text = text.replace("\n", "\r\n")
    elif text_edit == "cr":
        text = text.replace("\n", "\r")
    elif text_edit == "cut":
        text = text[: int(len(text) * cut)]
    elif text_edit == "no_final_newline":
        text = text.rstrip("\n")
    try:
        path.write_bytes(text.encode(encoding, errors="replace"))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an edited task id is an unregistered task: a warning
                data = load_root(root)
        except SchemaError as exc:
            RAN["refused"] += 1
            assert exc.problems, exc.message
            for p in exc.problems:
                assert "\n" not in str(p) and p.message, str(p)
            return
        RAN["accepted"] += 1
        assert disagreements(data, path) == [], text
    finally:
        path.write_bytes(original)


def test_examples_ran(root):
    """Runs after the property (file order); the count is printed when the module's fixture ends."""
    assert RAN["examples"] >= EXAMPLES // 2
    assert RAN["accepted"] > 0 and RAN["refused"] > 0  # both sides of the property were exercised
