"""The HTML report of `fmuia rank` (evaluation.rank.report): its numbers on hand-worked cases, the page
(self-contained, escaped, bootstrap sections only with a bootstrap), and the page in a real browser.

`make_result` builds a RankResult by hand (plain pandas rankings, seeded bootstrap noise), without the
analysis code; `test_real_analysis_renders` runs the real analysis when it is there.
"""

from __future__ import annotations

import base64
import io
import itertools
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import browser
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import kendalltau
from test_visualize_pictures import assert_self_contained

from evaluation.rank import _plots, report
from evaluation.rank.report import write_report
from evaluation.rank.result import BootstrapResult, RankParams, RankResult
from fmuia.errors import FmuiaError


def _ranked(df: pd.DataFrame, stat: str, ascending: bool, ties: str = "min") -> pd.DataFrame:
    df = df.copy()
    df["rank"] = df.groupby("task", sort=False)[stat].rank(method=ties, ascending=ascending)
    return df


def make_result(n_tasks: int = 3, n_algorithms: int = 4, n_cases: int = 6, *, seed: int = 0,
                bootstrap: int = 20, smaller_better: bool = False, algorithms: list[str] | None = None,
                tasks: list[str] | None = None, warnings: list[str] | None = None) -> RankResult:
    rng = np.random.default_rng(seed)
    tasks = tasks or [f"task{t}" for t in range(n_tasks)]
    algs = algorithms or [f"alg{a}" for a in range(n_algorithms)]
    sign = -1.0 if smaller_better else 1.0
    rows = [(t, a, f"case{c}", float(sign * 0.3 * i + rng.normal()))
            for t in tasks for i, a in enumerate(algs) for c in range(n_cases)]
    table = pd.DataFrame(rows, columns=["task", "algorithm", "case", "value"])
    asc = smaller_better

    atr = table.groupby(["task", "algorithm"], sort=False)["value"].mean().rename("value_mean").reset_index()
    atr = _ranked(atr, "value_mean", asc)
    cr = table.groupby(["task", "case"], sort=False)["value"].rank(method="min", ascending=asc)
    rta = table.assign(r=cr).groupby(["task", "algorithm"], sort=False)["r"].mean().rename("rank_mean").reset_index()
    rta = _ranked(rta, "rank_mean", True)

    sig_rows = []
    means = atr.set_index(["task", "algorithm"])["value_mean"]
    for t in tasks:
        for a, o in itertools.permutations(algs, 2):
            better = (means[(t, a)] < means[(t, o)]) if smaller_better else (means[(t, a)] > means[(t, o)])
            p = float(rng.uniform(0, 0.1) if better else rng.uniform(0.3, 1))
            sig_rows.append((t, a, o, n_cases, 1.0, p, p, p < 0.05))
    significance = pd.DataFrame(sig_rows, columns=["task", "algorithm", "other", "n_cases", "statistic",
                                                   "p_value", "p_adjusted", "significant"])
    ttr = significance.groupby(["task", "algorithm"], sort=False)["significant"].mean().rename(
        "prop_significance").reset_index()
    ttr = _ranked(ttr, "prop_significance", False)
    methods = {"aggregate-then-rank": atr, "rank-then-aggregate": rta, "test-then-rank": ttr}

    tau_rows = []
    for t in tasks:
        for ma, mb in itertools.combinations(methods, 2):
            ra = methods[ma][methods[ma]["task"] == t].set_index("algorithm")["rank"].reindex(algs)
            rb = methods[mb][methods[mb]["task"] == t].set_index("algorithm")["rank"].reindex(algs)
            tau = float(kendalltau(ra, rb).statistic) if len(algs) > 1 else float("nan")
            tau_rows.append((t, ma, mb, tau))
    method_tau = pd.DataFrame(tau_rows, columns=["task", "method_a", "method_b", "tau"])

    consensus = atr.groupby("algorithm", sort=False)["rank"].mean().rename("mean_rank").reset_index()
    consensus["rank"] = consensus["mean_rank"].rank(method="min")

    boot = None
    if bootstrap:
        full = atr.pivot(index="task", columns="algorithm", values="rank").reindex(index=tasks, columns=algs)
        noise = rng.integers(-1, 2, size=(len(tasks), bootstrap, len(algs)))
        ranks = np.clip(full.to_numpy()[:, None, :] + noise, 1, len(algs)).astype(float)
        cons = np.clip(consensus.set_index("algorithm")["rank"].reindex(algs).to_numpy()[None, :]
                       + rng.integers(-1, 2, size=(bootstrap, len(algs))), 1, len(algs)).astype(float)
        boot = BootstrapResult(n=bootstrap, seed=seed, tasks=list(tasks), algorithms=list(algs), ranks=ranks,
                               tau=rng.uniform(0.3, 1.0, size=(len(tasks), bootstrap)), consensus_ranks=cons,
                               consensus_tau=rng.uniform(0.5, 1.0, size=bootstrap))
    return RankResult(
        params=RankParams(smaller_better=smaller_better, bootstrap=bootstrap, seed=seed),
        tasks=list(tasks), algorithms=list(algs), table=table, statistic="value_mean", ranking=atr,
        methods=methods, method_tau=method_tau, significance=significance, consensus=consensus,
        bootstrap=boot, warnings=list(warnings or []), source="hand-made table",
    )


# ---- helpers of the tests --------------------------------------------------------------------------------

class _Tables(HTMLParser):
    """Every <table> of a page as a list of rows of cell texts, and the id of the section it is in."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self.section = ""
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "h2" and attrs.get("id"):
            self.section = attrs["id"]
        elif tag == "details" and attrs.get("id"):
            self.section = attrs["id"]
        elif tag == "table":
            self.tables.append((self.section, []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def tables_of(page: str) -> list[tuple[str, list[list[str]]]]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def images_of(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)]


def expected_images(result: RankResult) -> int:
    """What the report draws: across tasks (with >1 task) the blob plot, always the consensus-by-method
    lines; with a bootstrap the tau violins and the consensus blob; per task 5 figures (+1 bootstrap blob)."""
    per_task = 5 + (result.bootstrap is not None)
    return (len(result.tasks) > 1) + 1 + 2 * (result.bootstrap is not None) + per_task * len(result.tasks)


@pytest.fixture(scope="module")
def boot_result() -> RankResult:
    return make_result(3, 4, 6, bootstrap=30, seed=3, warnings=["task 'task1': one case NA replaced"])


@pytest.fixture(scope="module")
def boot_page(boot_result, tmp_path_factory) -> Path:
    return write_report(boot_result, tmp_path_factory.mktemp("rank_report") / "out")


# ---- the numbers behind the figures, on hand-worked cases ---------------------------------------------------

def test_case_ranks_hand_worked():
    nan = np.nan
    # rows: cases, columns: algorithms a, b, c
    values = np.array([[0.9, 0.5, 0.5],
                       [0.1, nan, 0.3],
                       [0.2, 0.2, 0.2]])
    # larger is better; min ties; a missing value ranks after the last of the others (challengeR's rankNA2)
    np.testing.assert_array_equal(report.case_ranks(values, False, "min"), [[1, 2, 2], [2, 3, 1], [1, 1, 1]])
    np.testing.assert_array_equal(report.case_ranks(values, False, "max"), [[1, 3, 3], [2, 3, 1], [3, 3, 3]])
    np.testing.assert_array_equal(report.case_ranks(values, False, "average"),
                                  [[1, 2.5, 2.5], [2, 3, 1], [2, 2, 2]])
    np.testing.assert_array_equal(report.case_ranks(values, True, "min"), [[3, 1, 1], [1, 3, 2], [1, 1, 1]])
    # --na-treat remove: the missing value takes no rank
    np.testing.assert_array_equal(report.case_ranks(values, True, "min", "remove"),
                                  [[3, 1, 1], [1, nan, 2], [1, 1, 1]])


def test_rank_counts_hand_worked():
    ranks = np.array([[1, 2, 3], [1, 3, 2], [2.5, 2.5, 1], [np.nan, 1, 2]])
    # algorithm 0: ranks 1, 1, 2 (2.5 counts at 2), NaN nowhere; 1: 2, 3, 2, 1; 2: 3, 2, 1, 2
    np.testing.assert_array_equal(report.rank_counts(ranks), [[2, 1, 0], [1, 2, 1], [1, 2, 1]])
    assert report.rank_counts(ranks).sum(axis=1).tolist() == [3, 4, 4]  # one count per case with a rank
    np.testing.assert_array_equal(report.rank_counts(np.empty((0, 2))), np.zeros((2, 2)))


def test_significance_matrix_hand_worked():
    sig = pd.DataFrame({"task": ["t", "t", "t", "u"], "algorithm": ["a", "b", "a", "a"],
                        "other": ["b", "a", "c", "b"], "significant": [True, False, False, False]})
    m = report.significance_matrix(sig, "t", ["b", "a", "c"])  # display order b, a, c
    nan = np.nan
    np.testing.assert_array_equal(m, [[nan, 0, nan], [1, nan, 0], [nan, nan, nan]])


def test_consensus_by_method_hand_worked():
    m1 = pd.DataFrame({"task": ["t", "t", "t", "u", "u"], "algorithm": ["a", "b", "c", "a", "b"],
                       "rank": [1.0, 2.0, 3.0, 2.0, 1.0]})
    m2 = pd.DataFrame({"task": ["t", "t", "t", "u", "u"], "algorithm": ["a", "b", "c", "a", "b"],
                       "rank": [3.0, 1.0, 2.0, 1.0, 2.0]})
    out = report.consensus_by_method({"m1": m1, "m2": m2}, ["a", "b", "c"], "min")
    # m1: means a 1.5, b 1.5, c 3 (c only in t) -> 1, 1, 3; m2: a 2, b 1.5, c 2 -> 2, 1, 2
    assert out["m1"].tolist() == [1.0, 1.0, 3.0]
    assert out["m2"].tolist() == [2.0, 1.0, 2.0]
    assert report.consensus_by_method({"m1": m1}, ["a", "b", "c"], "max")["m1"].tolist() == [2.0, 2.0, 3.0]


# ---- the page -------------------------------------------------------------------------------------------

def test_page_is_self_contained_and_complete(boot_result, boot_page):
    assert boot_page.name == "report.html" and boot_page.is_file()
    assert sorted(p.name for p in boot_page.parent.iterdir()) == ["report.html"]  # atomic: no temp file left
    assert assert_self_contained(boot_page) == []  # no local file, no URL; every data: URI a non-blank PNG
    page = boot_page.read_text(encoding="utf-8")
    assert "<script" not in page and "<link" not in page
    imgs = images_of(page)
    assert len(imgs) == expected_images(boot_result) == 4 + 6 * 3
    assert page.count("<figcaption>") == len(imgs)
    for png in imgs:
        with Image.open(io.BytesIO(png)) as im:
            assert im.format == "PNG" and im.width >= 300 and im.height >= 200
    for i, t in enumerate(boot_result.tasks):
        assert f"<details class='task' id='task-{i}'>" in page
        assert f"<summary>{t} " in page
    assert "id='bootstrap'" in page and "Bootstrap (30 rounds, seed 3)" in page
    assert "one case NA replaced" in page and "Warnings (1)" in page
    assert "Source: <code>hand-made table</code>" in page


def test_consensus_and_tau_tables_show_the_result(boot_result, boot_page):
    tables = tables_of(boot_page.read_text(encoding="utf-8"))
    params = [t for s, t in tables if s == "setup"][0]
    assert params[0][:3] == ["method", "aggregate", "smaller_better"]
    assert params[1][:3] == ["aggregate-then-rank", "mean", "False"] and params[1][4] == "—"
    cons = [t for s, t in tables if s == "consensus"][0]
    assert cons[0] == ["consensus rank", "algorithm", "mean rank", *boot_result.tasks]
    expected = boot_result.consensus.sort_values(["rank", "mean_rank"], kind="stable")
    assert [r[1] for r in cons[1:]] == expected["algorithm"].tolist()
    ranking = boot_result.ranking.set_index(["task", "algorithm"])["rank"]
    for row in cons[1:]:
        a = row[1]
        c = boot_result.consensus.set_index("algorithm").loc[a]
        assert int(row[0]) == c["rank"] and float(row[2]) == pytest.approx(c["mean_rank"], abs=0.005)
        assert [int(x) for x in row[3:]] == [ranking[(t, a)] for t in boot_result.tasks]
    tau = [t for s, t in tables if s == "methods"][0]
    mt = boot_result.method_tau
    assert tau[0] == ["task", *[f"{a} vs {b}" for a, b in dict.fromkeys(zip(mt.method_a, mt.method_b, strict=True))]]
    for row in tau[1:-1]:
        want = mt[mt.task == row[0]]["tau"].tolist()
        assert [float(x) for x in row[1:]] == pytest.approx(want, abs=5e-4)
    assert tau[-1][0] == "mean over tasks"
    assert float(tau[-1][1]) == pytest.approx(mt.groupby(["method_a", "method_b"], sort=False)["tau"].mean().iloc[0],
                                              abs=5e-4)
    # per task: rank, algorithm, statistic, best first
    t0 = [t for s, t in tables if s == "task-0"][0]
    want = boot_result.ranking[boot_result.ranking.task == "task0"].sort_values("rank", kind="stable")
    assert [r[1] for r in t0[1:]] == want["algorithm"].tolist()
    assert [float(r[2]) for r in t0[1:]] == pytest.approx(want["value_mean"].tolist(), abs=5e-5)


def test_no_bootstrap_no_bootstrap_sections(tmp_path):
    result = make_result(2, 3, 5, bootstrap=0, seed=1)
    page = write_report(result, tmp_path / "a" / "b").read_text(encoding="utf-8")  # folders created
    assert "id='bootstrap'" not in page and "#bootstrap" not in page and "bootstrap ranks" not in page
    assert len(images_of(page)) == expected_images(result) == 2 + 5 * 2
    assert "No warnings." in page


def test_names_are_escaped_and_drawn_literally(tmp_path):
    algs = ["<script>alert(1)</script>", 'a&b "q"', r"$\frac{x$ and $5", "x" * 60]
    result = make_result(algorithms=algs, tasks=["<t1>", "t$2$"], n_cases=4, bootstrap=0)
    page = write_report(result, tmp_path).read_text(encoding="utf-8")
    assert "<script" not in page and "<t1>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "a&amp;b &quot;q&quot;" in page
    assert "&lt;t1&gt;" in page
    assert len(images_of(page)) == expected_images(result)  # mathtext would raise on "$\frac{x$"
    assert _plots.label(r"$\frac{x$") == r"\$\frac{x\$" and _plots.label("x" * 60) == "x" * 27 + "…"


def test_write_report_refuses_a_file_as_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(FmuiaError):
        write_report(make_result(1, 2, 3, bootstrap=0), tmp_path / "f")
    # rewriting replaces the page
    out = write_report(make_result(1, 2, 3, bootstrap=0, algorithms=["p", "q"]), tmp_path / "d")
    out2 = write_report(make_result(1, 2, 3, bootstrap=0, algorithms=["r", "s"]), tmp_path / "d")
    assert out == out2 and ">r<" in out.read_text(encoding="utf-8") and ">p<" not in out.read_text(encoding="utf-8")


def test_single_task_single_case_and_one_algorithm(tmp_path):
    result = make_result(1, 1, 1, bootstrap=4)
    result.bootstrap.tau[:] = np.nan  # tau is undefined with one algorithm
    result.bootstrap.consensus_tau[:] = 1.0  # a constant: no violin can be drawn, a bar is
    page = write_report(result, tmp_path).read_text(encoding="utf-8")
    assert "<details class='task' id='task-0' open>" in page  # the only task is open
    assert len(images_of(page)) == expected_images(result) == 0 + 1 + 2 + 6


def test_figures_grow_with_the_number_of_algorithms():
    def size(n):
        rng = np.random.default_rng(n)
        names = [f"a{i}" for i in range(n)]
        cols = _plots.colours(n)
        box = _plots.dot_box([rng.normal(size=9) for _ in range(n)], names, cols, title="t", ylabel="v")
        blob = _plots.blobs(rng.integers(1, n + 1, size=(50, n)), names, cols, title="t")
        sig = _plots.significance_map(np.zeros((n, n)), names, title="t")
        return [Image.open(io.BytesIO(p)).size for p in (box, blob, sig)]

    small, large = size(5), size(50)
    assert large[0][0] > 2.5 * small[0][0]  # wider boxes plot
    assert large[1][0] > 2.5 * small[1][0] and large[1][1] > 2 * small[1][1]  # blob plot wider and taller
    assert large[2][0] > 1.8 * small[2][0] and large[2][1] > 1.8 * small[2][1]
    assert len(set(_plots.colours(50))) == 50 and len(set(_plots.colours(15))) == 15


def test_nothing_to_draw_gives_no_picture():
    assert _plots.dot_box([np.array([np.nan])], ["a"], _plots.colours(1), title="t", ylabel="v") is None
    assert _plots.blobs(np.full((5, 2), np.nan), ["a", "b"], _plots.colours(2), title="t") is None
    assert _plots.blobs(np.ones((5, 3)), ["a", "b"], _plots.colours(2), title="t") is None  # 3 columns, 2 names
    assert _plots.podium(np.empty((0, 2)), np.empty((0, 2)), ["a", "b"], _plots.colours(2), title="t",
                         ylabel="v") is None
    assert _plots.tau_violins([], [], title="t") is None


def test_parallel_drawing_keeps_the_task_order(monkeypatch):
    # The forked workers inherit the patched section writer (cheap: no drawing); the sections must come
    # back in task order, drawn by other processes than this one.
    monkeypatch.setattr(report, "_task_section", lambda result, task, index, cols: f"{index}:{task}:{os.getpid()}")
    result = make_result(5, 2, 2, bootstrap=0)
    parts = report._task_sections(result, {}, workers=3)
    assert [p.rsplit(":", 1)[0] for p in parts] == [f"{i}:task{i}" for i in range(5)]
    pids = {int(p.rsplit(":", 1)[1]) for p in parts}
    assert os.getpid() not in pids and len(pids) >= 1
    serial = report._task_sections(result, {}, workers=1)
    assert {int(p.rsplit(":", 1)[1]) for p in serial} == {os.getpid()}
    assert report._SHARED is None  # nothing of the result is kept after the pool


def test_default_workers():
    assert report._default_workers(3) == 1  # few tasks: not worth forking
    n = report._default_workers(27)
    assert 1 <= n <= 8 and n <= len(os.sched_getaffinity(0))


def test_real_analysis_renders(tmp_path):
    analysis = pytest.importorskip("evaluation.rank.analysis")
    rng = np.random.default_rng(5)
    rows = [(t, a, f"c{c}", float(i * 0.4 + rng.normal())) for t in ("liver", "kidney") for i, a in
            enumerate(["unet", "nnunet", "sam"]) for c in range(7)]
    rows[3] = (rows[3][0], rows[3][1], rows[3][2], float("nan"))  # one missing value: ranks last in its case
    table = pd.DataFrame(rows, columns=["task", "algorithm", "case", "value"])
    params = RankParams(method="rank-then-aggregate", bootstrap=25, seed=2)
    result = analysis.rank_analysis(table, params, source="made here")
    page_path = write_report(result, tmp_path)
    assert assert_self_contained(page_path) == []
    page = page_path.read_text(encoding="utf-8")
    assert len(images_of(page)) == expected_images(result) == 4 + 6 * 2
    # the report's consensus-by-method (pandas) agrees with the analysis' consensus (numpy)
    by_method = report.consensus_by_method(result.methods, result.algorithms, params.ties)
    assert by_method[params.method].tolist() == result.consensus.set_index("algorithm")["rank"].reindex(
        result.algorithms).tolist()
    # the heatmap's case ranks give the analysis' rank-then-aggregate statistic (mean rank over the cases)
    for task in result.tasks:
        sub = result.table[result.table.task == task]
        order = result.algorithms
        values = sub.groupby(["case", "algorithm"], sort=False)["value"].first().unstack().reindex(columns=order)
        mean_rank = np.nanmean(report.case_ranks(values.to_numpy(), False, params.ties), axis=0)
        want = result.ranking[result.ranking.task == task].set_index("algorithm")["rank_mean"].reindex(order)
        np.testing.assert_allclose(mean_rank, want.to_numpy())


# ---- in a real browser ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chromium():
    exe = browser.find_chromium()
    if exe is None:
        pytest.skip(browser.SKIP_REASON)
    with browser.Browser(exe, width=1280, height=900) as b:
        yield b


def test_report_in_a_browser(chromium, boot_result, boot_page):
    tab = chromium.open(boot_page)
    images = tab.evaluate(browser.IMAGES_JS)
    assert len(images) == expected_images(boot_result)
    assert [i for i in images if not (i["complete"] and i["width"] > 0 and i["height"] > 0)] == []
    colours, spread = browser.screenshot_stats(tab.screenshot())
    assert colours > 200 and spread > 10, (colours, spread)  # the top of the page: text, tables, a figure
    assert tab.evaluate(browser.OPEN_ALL_JS) == len(boot_result.tasks)
    assert tab.evaluate("Array.from(document.images).every(im => im.getBoundingClientRect().width > 50)")
    shot = tab.screenshot(full_page=True)
    colours, spread = browser.screenshot_stats(shot)
    assert colours > 500 and spread > 20, (colours, spread)  # a blank page has 1 colour (test below)
    # no horizontal page scroll: wide tables and figures stay inside the page
    assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert tab.errors == []


def test_browser_checks_can_fail(chromium, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><img src='missing.png' alt='gone'>"
                    "<script>console.error('broken', 1); setTimeout(() => { throw new Error('late') }, 0)</script>"
                    "</body></html>", encoding="utf-8")
    tab = chromium.open(page)
    images = tab.evaluate(browser.IMAGES_JS)
    assert images[0]["alt"] == "gone" and images[0]["width"] == 0
    tab.evaluate("new Promise(r => setTimeout(r, 100))")
    errors = tab.errors
    assert any("console.error: broken 1" in e for e in errors)
    assert any("exception:" in e and "late" in e for e in errors)
    assert any("ERR_FILE_NOT_FOUND" in e and "missing.png" in e for e in errors)
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>", encoding="utf-8")
    colours, spread = browser.screenshot_stats(chromium.open(blank).screenshot())
    assert colours == 1 and spread == 0  # a blank page fails the screenshot check
