"""The input of ``fmuia rank``: a long table ``task, algorithm, case, value`` (one metric), read from a CSV
(every bad row reported with its line) or built from strict ``results.json`` files; and its dense form,
one ``[algorithms, cases]`` array per task.

Per-case values in strict results (:data:`evaluation.schema.CASE_METRICS`): DSC, HD, HD95 (segmentation),
IoU (detection), MRE (regression), and for classification the per-case correctness (``--metric Accuracy``:
1 for a correct prediction, 0 otherwise, whose mean is the task's accuracy) and ``prob_true`` (the
probability given to the true class). F1_macro, F1_weighted and MCC are set-level metrics (one number per
task): their table keeps each case's ``label`` and ``predicted`` (-1 = invalid) and, in ``table.attrs
["set_level"]``, a :class:`~evaluation.rank.setlevel.SetLevel` (metric, classes per task), and the analysis
computes the metric over the cases (:mod:`evaluation.rank.setlevel`). AUC and AP cannot be reproduced from
per-case rows and are refused with that reason.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.leaderboard.load import load_results
from evaluation.rank.setlevel import SET_METRICS, SET_REFUSED, SetLevel
from evaluation.schema import AGGREGATES, DIRECTIONS, KIND_ORDER, LOWER, read_cases
from fmuia.errors import FmuiaError
from fmuia.tasks import TaskKind, get_task, has_task

__all__ = [
    "COLUMNS",
    "NA_TOKENS",
    "CASE_FIELDS",
    "METRIC_ALIASES",
    "SET_LEVEL",
    "TaskData",
    "read_table",
    "check_table",
    "metric_field",
    "set_metric",
    "table_from_results",
    "dense_tasks",
]

COLUMNS = ("task", "algorithm", "case", "value")
NA_TOKENS = ("", "na", "nan", "null", "none")  # compared lower-cased: a missing value

# --metric -> (kind, CaseRow field, smaller is better)
CASE_FIELDS: dict[str, tuple[TaskKind, str, bool]] = {
    "DSC": (TaskKind.SEGMENTATION, "DSC", DIRECTIONS["DSC"] == LOWER),
    "HD": (TaskKind.SEGMENTATION, "HD", DIRECTIONS["HD"] == LOWER),
    "HD95": (TaskKind.SEGMENTATION, "HD95", DIRECTIONS["HD95"] == LOWER),
    "IoU": (TaskKind.DETECTION, "IoU", DIRECTIONS["IoU"] == LOWER),
    "MRE": (TaskKind.REGRESSION, "MRE", DIRECTIONS["MRE"] == LOWER),
    "Accuracy": (TaskKind.CLASSIFICATION, "correct", False),
    "prob_true": (TaskKind.CLASSIFICATION, "prob_true", False),
}
# the leaderboard's column names for the same metrics (seg_DSC, seg_HD, cls_Accuracy, det_IoU, reg_MRE)
METRIC_ALIASES: dict[str, str] = {key: metric for key, (_k, metric, _d) in AGGREGATES.items() if metric in CASE_FIELDS}
SET_LEVEL = ("AUC", "F1_macro", "F1_weighted", "MCC", "AP", "AP50", "AP75")
MAX_TABLE_BYTES = 2 * 1024 ** 3


def set_metric(metric: str) -> str | None:
    """The set-level metric a ``--metric`` names (``F1_macro``, ``F1_weighted``, ``MCC``; the leaderboard
    keys ``cls_F1_macro`` ... too), ``None`` for any other name; :class:`FmuiaError` for AUC and AP, which
    per-case rows cannot reproduce."""
    bare = metric.split("_", 1)[1] if metric.startswith(("cls_", "det_")) else metric
    if bare in SET_METRICS:
        return bare
    if bare in SET_REFUSED:
        raise FmuiaError(f"--metric {metric}: cannot be ranked from strict results: {bare} {SET_REFUSED[bare]}")
    return None


def metric_field(metric: str) -> tuple[str, TaskKind, str, bool]:
    """``(canonical name, kind, CaseRow field, smaller is better)`` of a ``--metric`` (its leaderboard
    key, e.g. ``seg_DSC``, is accepted too); :class:`FmuiaError` for a set-level or unknown metric."""
    name = METRIC_ALIASES.get(metric, metric)
    if name in CASE_FIELDS:
        kind, fld, smaller = CASE_FIELDS[name]
        return name, kind, fld, smaller
    bare = metric.split("_", 1)[1] if metric.startswith(("cls_", "det_")) else metric
    accepted = ", ".join(CASE_FIELDS)
    if bare in SET_METRICS:
        raise FmuiaError(f"--metric {metric}: a set-level metric (one value per task, none per case); rank it "
                         "from strict results (--results), where the analysis computes it over each task's cases")
    if bare in SET_LEVEL:
        raise FmuiaError(f"--metric {metric}: a set-level metric (one value per task, none per case), so there is "
                         f"nothing to rank per case or test; per-case metrics are {accepted} "
                         "(classification: Accuracy = per-case correctness 0/1, prob_true)")
    raise FmuiaError(f"--metric {metric}: unknown; expected one of {accepted}, {', '.join(SET_METRICS)} "
                     f"(or {', '.join(METRIC_ALIASES)}, cls_F1_macro, cls_F1_weighted, cls_MCC)")


# ---- the CSV -------------------------------------------------------------------------------------------

def _fail(path: str, bad: pd.Series, why: str, total: int) -> None:
    more = f" (and {total - 1} more such row(s))" if total > 1 else ""
    raise FmuiaError(f"{path}:{int(bad.iloc[0])}: {why}{more}")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check the long CSV ``path``: columns ``task, algorithm, case, value`` (others ignored),
    one row per algorithm × case of a task. A value may be NA (empty, ``NA``, ``NaN``): a missing value.

    Returns the table (``value`` float, NaN where missing; ``line``: the row's line in the file, the
    header being line 1). Every problem is a one-line :class:`FmuiaError` naming the file and line.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise FmuiaError(f"{p}: table not found") from None
    except OSError as exc:
        raise FmuiaError(f"{p}: cannot read the table ({exc.strerror or exc})") from None
    if size > MAX_TABLE_BYTES:
        raise FmuiaError(f"{p}: {size:,} bytes is over the {MAX_TABLE_BYTES:,}-byte cap for a table")
    try:
        raw = pd.read_csv(p, dtype=str, keep_default_na=False, skip_blank_lines=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise FmuiaError(f"{p}: empty table (expected a header `task,algorithm,case,value` and one row per "
                         "algorithm and case)") from None
    except UnicodeDecodeError as exc:
        raise FmuiaError(f"{p}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise FmuiaError(f"{p}: not a readable CSV ({str(exc).strip()[:200]})") from None
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    missing = [c for c in COLUMNS if c not in raw.columns]
    if missing:
        raise FmuiaError(f"{p}:1: the header lacks the column(s) {', '.join(missing)} "
                         f"(expected task,algorithm,case,value; found {','.join(raw.columns)})")
    df = raw[list(COLUMNS)].fillna("")
    for c in COLUMNS:
        df[c] = df[c].str.strip()
    df["line"] = np.arange(2, len(df) + 2)
    blank = (df[list(COLUMNS)] == "").all(axis=1)
    df = df[~blank]
    return check_table(df, str(p))


def check_table(df: pd.DataFrame, name: str = "table") -> pd.DataFrame:
    """Check a long table (``task, algorithm, case`` labels, ``value`` numbers or strings; ``line``
    optional) and return it with ``value`` as float (NaN = missing). One-line :class:`FmuiaError` for the
    first problem. Labels are compared as given (:func:`read_table` strips the CSV's cells)."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise FmuiaError(f"{name}: the table lacks the column(s) {', '.join(missing)} (expected {','.join(COLUMNS)})")
    df = df.copy()
    if "line" not in df.columns:
        df["line"] = np.arange(2, len(df) + 2)
    if len(df) == 0:
        raise FmuiaError(f"{name}: no rows (expected one row per task, algorithm and case)")
    for c in ("task", "algorithm", "case"):
        if not (df[c].dtype == object or pd.api.types.is_string_dtype(df[c])):
            df[c] = df[c].astype(str)
        empty = df[c] == ""
        if empty.any():
            _fail(name, df.loc[empty, "line"], f"empty {c} (every row needs task, algorithm and case)", int(empty.sum()))
    val = df["value"]
    if val.dtype == object or pd.api.types.is_string_dtype(val):
        text = val.astype(str).str.strip()
        na = text.str.lower().isin(NA_TOKENS)
        num = pd.to_numeric(text.where(~na, "nan"), errors="coerce")
        bad = num.isna() & ~na
        if bad.any():
            first = text[bad].iloc[0]
            _fail(name, df.loc[bad, "line"], f"value {first[:40]!r} is not a number (expected a number, or "
                  "empty/NA for a missing value)", int(bad.sum()))
        values = num.to_numpy(dtype=float)
    else:
        values = pd.to_numeric(val, errors="coerce").to_numpy(dtype=float)
    infinite = np.isinf(values)
    if infinite.any():
        _fail(name, df.loc[infinite, "line"], "value is infinite (expected a finite number, or NA for missing)",
              int(infinite.sum()))
    df["value"] = values
    # duplicates on integer codes: hashing 3 string columns of millions of rows takes seconds
    codes = [pd.factorize(df[c], sort=False) for c in ("task", "algorithm", "case")]
    (tc, _), (ac, algs), (cc, cases) = codes
    key = (tc.astype(np.int64) * len(algs) + ac) * len(cases) + cc
    dup = pd.Series(key).duplicated(keep="first").to_numpy()
    if dup.any():
        row = df[dup].iloc[0]
        first = df[(df["task"] == row["task"]) & (df["algorithm"] == row["algorithm"]) & (df["case"] == row["case"])]
        raise FmuiaError(f"{name}:{int(row['line'])}: duplicate row for algorithm {row['algorithm']!r}, case "
                         f"{row['case']!r} of task {row['task']!r} (first at line {int(first['line'].iloc[0])}; "
                         "one row per algorithm and case)")
    return df.reset_index(drop=True)


# ---- strict results ------------------------------------------------------------------------------------

def _named(subs: Mapping[str, dict]) -> dict[str, dict]:
    """Submissions renamed by a top-level ``name`` string in their results, where they have one."""
    out: dict[str, dict] = {}
    for folder, res in subs.items():
        given = res.get("name")
        name = given.strip() if isinstance(given, str) and given.strip() else folder
        if name in out:
            raise FmuiaError(f"two submissions are both named {name!r}; name them with a manifest CSV "
                             "(columns name,results)")
        out[name] = res
    return out


def table_from_results(results: Sequence[str | os.PathLike] | Mapping[str, dict], metric: str
                       ) -> tuple[pd.DataFrame, bool, str, list[str]]:
    """The long table of one per-case metric from strict results: ``(table, smaller_better, source,
    warnings)``. ``results``: results.json paths (or folders, or a manifest CSV) named by folder, or
    ``name -> results object``; a ``name`` in a results file names that submission instead. Cases are
    the rows' ``image_path``; tasks are those of the metric's kind, by id. For a set-level metric
    (F1_macro, F1_weighted, MCC) ``value`` is the per-case correctness and the table has ``label`` and
    ``predicted`` columns and ``attrs["set_level"]`` (see the module's docstring)."""
    set_name = set_metric(metric)
    if set_name is not None:
        canonical, kind, fld, smaller = set_name, TaskKind.CLASSIFICATION, "correct", False
    else:
        canonical, kind, fld, smaller = metric_field(metric)
    subs = dict(results) if isinstance(results, Mapping) else load_results(list(results))
    subs = _named(subs)
    labels: list[int] = []
    preds: list[int] = []
    warnings: list[str] = []
    tasks: list[str] = []
    alg: list[str] = []
    task_col: list[str] = []
    case_col: list[str] = []
    vals: list[float] = []
    for name, res in subs.items():
        rows, problems = read_cases(res)
        if problems:
            warnings.append(f"{name}: {len(problems)} per-case row(s) skipped as invalid (first: {problems[0]})")
        seen: set[tuple[str, str]] = set()
        mine = [r for r in rows if r.kind is kind]
        if not mine:
            raise FmuiaError(f"{name}: no per-case {kind.value} rows (strict-mode 'per_case'); "
                             f"`fmuia evaluate --mode strict` writes them")
        for r in mine:
            key = (r.task_id, r.image_path)
            if key in seen:
                raise FmuiaError(f"{name}: two per-case rows for task {r.task_id!r}, case {r.image_path!r}")
            seen.add(key)
            x = getattr(r, fld)
            alg.append(name)
            task_col.append(r.task_id)
            case_col.append(r.image_path)
            vals.append(math.nan if x is None else float(x))
            if set_name is not None:
                if r.label is None:
                    raise FmuiaError(f"{name}: per-case row of task {r.task_id!r}, case {r.image_path!r} has no "
                                     f"label, which {set_name} needs")
                labels.append(int(r.label))
                preds.append(-1 if r.predicted is None else int(r.predicted))
            if r.task_id not in tasks:
                tasks.append(r.task_id)
    df = pd.DataFrame({"task": task_col, "algorithm": alg, "case": case_col, "value": vals})
    if set_name is not None:
        df["label"] = np.asarray(labels, dtype=np.int64)
        df["predicted"] = np.asarray(preds, dtype=np.int64)
    order = sorted(tasks)
    df["task"] = pd.Categorical(df["task"], categories=order, ordered=True)
    df = df.sort_values("task", kind="stable").reset_index(drop=True)
    df["task"] = df["task"].astype(str)
    df["line"] = 0
    kinds = f"{kind.value} task(s)" if kind in KIND_ORDER else "tasks"
    source = f"{len(subs)} results file(s), metric {canonical} ({len(order)} {kinds})"
    if set_name is not None:
        df.attrs["set_level"] = SetLevel(set_name, _num_classes(subs, df, order))
        source += ", computed over each task's cases"
    return df, smaller, source, warnings


def _num_classes(subs: Mapping[str, dict], df: pd.DataFrame, tasks: list[str]) -> dict[str, int]:
    """Each task's number of classes: the length of ``per_class`` in the results' task block (strict writes
    one F1 per class), the same in every submission; else the registered task's; labels and predictions
    must lie below it."""
    out: dict[str, int] = {}
    for task in tasks:
        found: dict[str, int] = {}
        for name, res in subs.items():
            block = res.get(TaskKind.CLASSIFICATION.value)
            block = block.get(task) if isinstance(block, Mapping) else None
            per_class = block.get("per_class") if isinstance(block, Mapping) else None
            if isinstance(per_class, Mapping) and per_class:
                found[name] = len(per_class)
        if len(set(found.values())) > 1:
            detail = ", ".join(f"{n}: {c}" for n, c in found.items())
            raise FmuiaError(f"task {task!r}: the results disagree on the number of classes (per_class: {detail})")
        if found:
            c = next(iter(found.values()))
        elif has_task(task):
            c = get_task(task).num_classes
        else:
            raise FmuiaError(f"task {task!r}: number of classes unknown (no per_class in any results file and not a "
                             "registered task); F1 and MCC need it")
        rows = df[df["task"] == task]
        top = int(max(rows["label"].max(), rows["predicted"].max()))
        if top >= c:
            raise FmuiaError(f"task {task!r}: a per-case label or prediction is {top}, outside 0..{c - 1} "
                             f"(the task has {c} classes)")
        out[task] = c
    return out


# ---- dense form ----------------------------------------------------------------------------------------

@dataclass
class TaskData:
    """One task in dense form: ``values[a, c]`` for the task's algorithms (indices into the global
    algorithm list, in that order) and cases (NaN = missing); ``line[a, c]``: the row's line (0 = none)."""

    name: str
    algorithms: np.ndarray
    cases: list[str]
    values: np.ndarray
    line: np.ndarray


def dense_tasks(df: pd.DataFrame) -> tuple[list[str], list[str], list[TaskData]]:
    """``(tasks, algorithms, per-task dense data)``; tasks, algorithms and cases in order of first
    appearance. An algorithm takes part in a task when it has at least one row there."""
    t_codes, tasks = pd.factorize(df["task"], sort=False)
    a_codes, algs = pd.factorize(df["algorithm"], sort=False)
    lines = df["line"].to_numpy() if "line" in df.columns else np.zeros(len(df), dtype=np.int64)
    values = df["value"].to_numpy(dtype=float)
    order = np.argsort(t_codes, kind="stable")
    bounds = np.searchsorted(t_codes[order], np.arange(len(tasks) + 1))
    out: list[TaskData] = []
    cases_all = df["case"].to_numpy()
    for t in range(len(tasks)):
        rows = order[bounds[t]:bounds[t + 1]]
        c_codes, cases = pd.factorize(cases_all[rows], sort=False)
        present = np.unique(a_codes[rows])  # sorted = global order of first appearance
        local = np.searchsorted(present, a_codes[rows])
        v = np.full((present.size, len(cases)), np.nan)
        ln = np.zeros((present.size, len(cases)), dtype=np.int64)
        v[local, c_codes] = values[rows]
        ln[local, c_codes] = lines[rows]
        out.append(TaskData(str(tasks[t]), present, [str(c) for c in cases], v, ln))
    return [str(t) for t in tasks], [str(a) for a in algs], out
