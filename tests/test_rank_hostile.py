"""`fmuia rank` on hostile tables: exit 0 or 2 (one located error line), never a traceback or exit 3;
when it succeeds, every rank is a whole number in 1..n and every written number is finite or empty."""

from __future__ import annotations

import csv
import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmuia.cli import main

GARBAGE = st.sampled_from(["", "NA", "nan", "inf", "-inf", "1e309", "0x10", "one", " 0.5 ", "1,5", "true", "None",
                           "\x00", "1e-320", "-0", "+3"])
NAMES = st.sampled_from(["a", "b", "c", "A", "a ", "", "é", "x,y", '"q"', "na", "1"])
HEADERS = st.sampled_from([
    ["task", "algorithm", "case", "value"],
    ["algorithm", "task", "value", "case"],
    ["task", "algorithm", "case", "value", "extra"],
    ["task", "algorithm", "case"],
    ["Task", "Algorithm", "Case", "Value"],
    ["task", "task", "case", "value"],
])


@st.composite
def tables(draw) -> tuple[list[str], list[dict[str, str]]]:
    """A valid table (tasks x algorithms x cases, finite values, ties likely), then a few hostile edits."""
    n_t, n_a, n_c = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 6))
    value = st.one_of(st.integers(0, 3).map(str), st.floats(-1e6, 1e6, allow_nan=False).map(repr))
    rows = [{"task": f"t{t}", "algorithm": f"alg{a}", "case": f"c{c}", "value": draw(value)}
            for t in range(n_t) for a in range(n_a) for c in range(n_c)]
    header = ["task", "algorithm", "case", "value"]
    for _ in range(draw(st.integers(0, 3))):
        edit = draw(st.sampled_from(["delete", "garbage", "duplicate", "rename", "header", "none"]))
        if not rows:
            break
        i = draw(st.integers(0, len(rows) - 1))
        if edit == "delete":
            rows.pop(i)
        elif edit == "garbage":
            rows[i] = {**rows[i], "value": draw(GARBAGE)}
        elif edit == "duplicate":
            rows.append(dict(rows[i]))
        elif edit == "rename":
            rows[i] = {**rows[i], draw(st.sampled_from(["task", "algorithm", "case"])): draw(NAMES)}
        elif edit == "header":
            header = draw(HEADERS)
    return header, rows


OPTIONS = st.sampled_from([
    [], ["--method", "rank-then-aggregate"], ["--method", "test-then-rank", "--p-adjust", "holm"],
    ["--na-treat", "worst"], ["--na-treat", "remove", "--aggregate", "median"], ["--na-treat", "0", "--smaller-better"],
    ["--na-treat", "nan"], ["--na-treat", "inf"], ["--ties", "average", "--na-treat", "worst", "--bootstrap", "5"],
    ["--alpha", "2"], ["--bootstrap", "-1"],
])


def _table(header: list[str], rows: list[dict[str, str]]) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".csv", newline="", delete=False, encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow([r.get(k.lower(), "") for k in header])
    return f.name


def _finite_or_empty(cell: str) -> bool:
    if cell == "":
        return True
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return True  # a name, a decision: not a number


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table_rows=tables(), options=OPTIONS)
def test_rank_never_crashes_and_writes_only_sane_numbers(table_rows, options, capsys):
    table = _table(*table_rows)
    with tempfile.TemporaryDirectory() as out:
        with pytest.raises(SystemExit) as info:
            main(["rank", table, "--out", out, *options])
            raise SystemExit(0)
        err = capsys.readouterr().err
        Path(table).unlink()
        assert info.value.code in (0, 2), err
        assert "Traceback" not in err and "internal error" not in err, err
        if info.value.code == 2:
            assert err.strip().startswith("error:") or "Usage:" in err or "Error:" in err, err
            return
        with open(Path(out) / "ranking.csv", newline="", encoding="utf-8") as f:
            ranking = list(csv.DictReader(f))
        n_alg: dict[str, int] = {}
        for r in ranking:
            n_alg[r["task"]] = n_alg.get(r["task"], 0) + 1
        for r in ranking:
            rank = float(r["rank"])
            assert rank == int(rank) or "average" in options, r
            assert 1 <= rank <= n_alg[r["task"]], r
            assert all(_finite_or_empty(v) for v in r.values()), r
        with open(Path(out) / "significance.csv", newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                for k in ("p_value", "p_adjusted"):
                    assert r[k] == "" or 0.0 <= float(r[k]) <= 1.0, r
        text = (Path(out) / "ranking.json").read_text(encoding="utf-8")
        json.loads(text, parse_constant=lambda c: pytest.fail(f"ranking.json holds {c}"))  # strict JSON


@st.composite
def improvements(draw):
    """A complete table of small integers (ties likely), one algorithm, and how much each of its cases gains."""
    n_a, n_c = draw(st.integers(2, 5)), draw(st.integers(1, 8))
    values = draw(st.lists(st.integers(0, 4), min_size=n_a * n_c, max_size=n_a * n_c))
    who = draw(st.integers(0, n_a - 1))
    gains = draw(st.lists(st.integers(0, 3), min_size=n_c, max_size=n_c))
    return n_a, n_c, values, who, gains


@settings(max_examples=150, deadline=None)
@given(case=improvements(), method=st.sampled_from(["aggregate-then-rank", "rank-then-aggregate"]),
       aggregate=st.sampled_from(["mean", "median"]), ties=st.sampled_from(["min", "max", "average"]),
       smaller_better=st.booleans())
def test_doing_better_never_worsens_a_rank(case, method, aggregate, ties, smaller_better):
    """An algorithm that does at least as well on every case (others unchanged) never ranks worse."""
    import pandas as pd

    from evaluation.rank import RankParams, rank_analysis

    n_a, n_c, values, who, gains = case
    sign = -1 if smaller_better else 1

    def frame(with_gain: bool) -> pd.DataFrame:
        rows = [("t", f"a{a}", f"c{c}", float(values[a * n_c + c] + (sign * gains[c] if with_gain and a == who else 0)))
                for a in range(n_a) for c in range(n_c)]
        return pd.DataFrame(rows, columns=["task", "algorithm", "case", "value"])

    params = RankParams(method=method, aggregate=aggregate, ties=ties, smaller_better=smaller_better)
    before, after = (rank_analysis(frame(g), params).ranking.set_index("algorithm")["rank"] for g in (False, True))
    assert after[f"a{who}"] <= before[f"a{who}"], (before.to_dict(), after.to_dict())
