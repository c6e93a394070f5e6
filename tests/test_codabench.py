"""Codabench: build the bundle from synth labels, unzip it, run the scoring command exactly as its
metadata.yaml says (placeholders substituted the way Codabench's compute worker does, working
directory = the program folder, torch blocked) and check scores.json."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from sklearn.metrics import matthews_corrcoef
from test_visualize_pictures import assert_self_contained

from evaluation.aggregates import AGGREGATES, HIGHER
from fmuia.dataset import load_root
from fmuia.formats import write_predictions
from fmuia.oracle import oracle_predictions

yaml = pytest.importorskip("yaml")

TORCH_BLOCKER = 'raise ImportError("torch is not available to the scoring program")\n'


@pytest.fixture(scope="module")
def bundle(synth_split, tmp_path_factory) -> Path:
    from evaluation.codabench import build_bundle

    out = tmp_path_factory.mktemp("bundle") / "bundle.zip"
    build_bundle(synth_split / "labels", out, start="2026-01-01 00:00:00")
    return out


@pytest.fixture(scope="module")
def unpacked(bundle, tmp_path_factory) -> Path:
    """The bundle unzipped, then its program and reference data unzipped as Codabench lays them out."""
    root = tmp_path_factory.mktemp("codabench")
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(root / "bundle")
    with zipfile.ZipFile(root / "bundle" / "scoring_program.zip") as zf:
        zf.extractall(root / "program")
    with zipfile.ZipFile(root / "bundle" / "reference_data.zip") as zf:
        zf.extractall(root / "ref")
    blocker = root / "blocker" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(TORCH_BLOCKER)
    return root


def codabench_command(metadata: Path, program: Path, input_dir: Path, output_dir: Path) -> list[str]:
    """The metadata command as the compute worker runs it: legacy ``$program``-style placeholders
    become /app/... paths, which here are mapped onto temporary folders; ``python3`` is this
    interpreter (the one with the test environment's site-packages)."""
    command = yaml.safe_load(metadata.read_text())["command"]
    for var, app in [("$input", "/app/input"), ("$output", "/app/output"), ("$program", "/app/program"), ("$hidden", "/app/input/ref")]:
        command = command.replace(var, app)
    for app, real in [("/app/program", program), ("/app/input", input_dir), ("/app/output", output_dir)]:
        command = command.replace(app, str(real))
    argv = shlex.split(command)
    assert argv[0] in ("python", "python3")
    return [sys.executable, *argv[1:]]


def run_scoring(unpacked: Path, submission: Path | None, name: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Lay out /app/input/{ref,res} and /app/output for one submission and run the command."""
    run = unpacked / "runs" / name
    (run / "input").mkdir(parents=True)
    os.symlink(unpacked / "ref", run / "input" / "ref")
    if submission is not None:
        os.symlink(submission, run / "input" / "res")
    (run / "output").mkdir()
    argv = codabench_command(unpacked / "program" / "metadata.yaml", unpacked / "program", run / "input", run / "output")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(unpacked / "blocker")
    proc = subprocess.run(argv, cwd=unpacked / "program", env=env, capture_output=True, text=True, timeout=300)
    return proc, run / "output"


def read_scores(out: Path) -> dict:
    scores = json.loads((out / "scores.json").read_text())
    assert list(scores) == list(AGGREGATES)
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores.values())
    return scores


def test_bundle_follows_codabench_bundle_rules(unpacked):
    """The rules of Codabench's bundle validator: required fields, files present, leaderboard shape."""
    b = unpacked / "bundle"
    comp = yaml.safe_load((b / "competition.yaml").read_text())
    assert comp["version"] == 2
    for field in ("title", "image", "tasks", "phases", "leaderboards", "pages", "terms", "docker_image"):
        assert field in comp, field
    assert (b / comp["image"]).is_file() and comp["image"].endswith(".png")
    assert (b / comp["terms"]).stat().st_size > 0
    for page in comp["pages"]:
        assert page["title"] and (b / page["file"]).stat().st_size > 0
    (task,) = comp["tasks"]
    assert (b / task["scoring_program"]).is_file() and (b / task["reference_data"]).is_file()
    assert comp["phases"][0]["tasks"] == [task["index"]]
    (board,) = comp["leaderboards"]
    assert board["index"] == 0 and board["title"] and board["key"] and board["submission_rule"]
    cols = board["columns"]
    assert [c["key"] for c in cols] == list(AGGREGATES)
    assert sorted(c["index"] for c in cols) == list(range(len(AGGREGATES)))
    for c in cols:
        assert c["title"]
        assert c["sorting"] == ("desc" if AGGREGATES[c["key"]][2] == HIGHER else "asc")
        assert isinstance(c["precision"], int)
    assert comp["enable_detailed_results"] is True
    # The reference data is the labels root, at the zip's top level.
    assert sorted(p.name for p in (unpacked / "ref" / "csv_files").iterdir())
    assert load_root(unpacked / "ref").labelled


def test_scoring_program_imports_only_its_own_copy_without_torch(unpacked):
    """sys.path = the unzipped program + the interpreter's stdlib and site-packages; torch blocked.
    Every evaluation module (but the drawing helpers) imports, only from the program's copy."""
    prog = unpacked / "program"
    code = f"""
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch blocked")
sys.meta_path.insert(0, Block())
sys.path[:] = [{str(prog)!r}] + [p for p in sys.path if "site-packages" in p or p.startswith(sys.base_prefix)]
import evaluation
for m in pkgutil.iter_modules(evaluation.__path__):
    if m.name not in ("plots", "report"):  # drawing helpers, not used when scoring
        importlib.import_module("evaluation." + m.name)
mods = {{n: getattr(m, "__file__", None) for n, m in sys.modules.items() if n.split(".")[0] in ("fmuia", "evaluation")}}
bad = {{n: f for n, f in mods.items() if f and not f.startswith({str(prog)!r})}}
assert not bad, bad
assert "torch" not in sys.modules
print(len(mods))
try:
    import fmuia.check  # the boundary: the repo's other modules are not reachable
except ModuleNotFoundError as exc:
    print(exc.name)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=prog)
    assert proc.returncode == 0, proc.stderr
    n_modules, boundary = proc.stdout.split()
    assert int(n_modules) >= 8 and boundary == "fmuia.check"


@pytest.mark.filterwarnings("ignore:A single label was found")
def test_perfect_submission_scores_perfectly(unpacked, synth_split, tmp_path):
    sub = tmp_path / "perfect"
    write_predictions(sub, oracle_predictions(load_root(synth_split / "labels")))
    proc, out = run_scoring(unpacked, sub, "perfect")
    assert proc.returncode == 0, proc.stderr
    s = read_scores(out)
    assert s["seg_DSC"] == pytest.approx(1.0, abs=1e-9)
    assert s["seg_HD"] == pytest.approx(0.0, abs=1e-9)
    for key in ("cls_Accuracy", "cls_AUC", "cls_F1_macro", "cls_F1_weighted", "det_IoU"):
        assert s[key] == pytest.approx(1.0, abs=1e-9), key
    # MCC of a perfect prediction is 1, except on a task whose few test rows hold one class only,
    # where it is undefined and scored 0 (sklearn's convention): compare with sklearn per task.
    labels = load_root(synth_split / "labels")
    ys = [[s.label for s in rows] for rows in labels.by_task().values() if rows[0].kind.value == "classification"]
    assert s["cls_MCC"] == pytest.approx(sum(matthews_corrcoef(y, y) for y in ys) / len(ys), abs=1e-9)
    assert s["reg_MRE"] == pytest.approx(0.0, abs=1e-9)
    html = (out / "detailed_results.html").read_text()
    assert "Detailed results" in html and not re.search(r"https?://|<script", html)
    # One self-contained file: the report's plots are embedded as PNG data: URIs (decoded, non-blank).
    assert assert_self_contained(out / "detailed_results.html") == []
    assert sorted(p.name for p in out.iterdir()) == ["detailed_results.html", "results.json", "scores.json"]
    n_kinds = 4
    assert html.count("data:image/png;base64,") == 1 + 2 * n_kinds  # aggregates, bars and per case per kind
    assert "Leaderboard scores" in html and "cls_F1_macro" in html
    assert json.loads((out / "results.json").read_text())["aggregates"]["seg_DSC"] == pytest.approx(1.0)


def score_in_process(ref: Path, submission: Path | None, tmp: Path) -> tuple[dict, str]:
    """The same entry, in this process and without the (score-neutral) bootstrap intervals: fast."""
    from evaluation.codabench import score_submission

    (tmp / "input").mkdir(parents=True)
    os.symlink(ref, tmp / "input" / "ref")
    if submission is not None:
        os.symlink(submission, tmp / "input" / "res")
    score_submission(tmp / "input", tmp / "output", n_bootstrap=0)
    return read_scores(tmp / "output"), (tmp / "output" / "detailed_results.html").read_text()


def test_zipped_folder_upload_is_found(unpacked, synth_split, tmp_path):
    sub = tmp_path / "upload"
    write_predictions(sub / "my_predictions", oracle_predictions(load_root(synth_split / "labels")))
    scores, html = score_in_process(unpacked / "ref", sub, tmp_path / "run")
    assert scores["seg_DSC"] == pytest.approx(1.0) and scores["reg_MRE"] == pytest.approx(0.0)
    assert "my_predictions" in html


def _not_better(a: dict, b: dict) -> bool:
    """Score set ``a`` is nowhere better than ``b``."""
    return all((a[k] <= b[k] + 1e-12) if d == HIGHER else (a[k] >= b[k] - 1e-12) for k, (_, _, d) in AGGREGATES.items())


def test_broken_and_missing_submissions_still_get_scores_and_reasons(unpacked, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    s_empty, _ = score_in_process(unpacked / "ref", empty, tmp_path / "run_empty")
    assert s_empty["seg_DSC"] == 0.0 and s_empty["det_IoU"] == 0.0 and s_empty["reg_MRE"] > 0

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "classification_predictions.json").write_text("{this is not json")
    (broken / "detection_predictions.json").write_text(json.dumps([{"image_path": 3}]))
    (broken / "regression_predictions.json").write_text(json.dumps({"not": "a list"}))
    s_broken, html = score_in_process(unpacked / "ref", broken, tmp_path / "run_broken")
    assert _not_better(s_broken, s_empty)
    assert "worst value" in html and "not valid UTF-8 JSON" in html
    assert "Rows scored with the worst value" in html and "data:image/png;base64," in html  # reasons + plots
    assert_self_contained(tmp_path / "run_broken" / "output" / "detailed_results.html")

    # No INPUT/res at all: scored as an empty submission, and the page says why.
    s_missing, html = score_in_process(unpacked / "ref", None, tmp_path / "run_missing")
    assert s_missing == pytest.approx(s_empty)
    assert "could not be scored" in html and "no submission found" in html
    assert "scored as EMPTY" in html


def test_detailed_results_fall_back_to_tables_without_matplotlib(unpacked, synth_split, tmp_path, monkeypatch):
    """A scoring image without matplotlib still gets scores and a complete (table-only) page."""
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib.") or name == "evaluation.plots":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    import sys as _sys

    for mod in [m for m in _sys.modules if m.startswith(("matplotlib", "evaluation.plots", "evaluation.report"))]:
        monkeypatch.delitem(_sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    sub = tmp_path / "perfect"
    write_predictions(sub, oracle_predictions(load_root(synth_split / "labels")))
    scores, html = score_in_process(unpacked / "ref", sub, tmp_path / "run")
    assert scores["seg_DSC"] == pytest.approx(1.0)
    assert "plots unavailable" in html and "data:image" not in html
    assert "Leaderboard scores" in html and "Segmentation" in html


def test_organizer_side_errors_fail_loudly_without_scores(unpacked, synth_split, tmp_path, monkeypatch):
    """A package missing from the docker image, or unusable reference data, is not the
    submission's fault: no scores.json (Codabench marks the run failed), exit code 2, and the
    HTML says what to fix."""
    import evaluation.codabench as cb

    sub = tmp_path / "sub"
    sub.mkdir()
    inp = tmp_path / "in"
    (inp).mkdir()
    os.symlink(unpacked / "ref", inp / "ref")
    os.symlink(sub, inp / "res")
    monkeypatch.setattr(cb, "REQUIRED_MODULES", (*cb.REQUIRED_MODULES, "no_such_module_fmuia_test"))
    assert cb.main([str(inp), str(tmp_path / "out1")]) == 2
    assert not (tmp_path / "out1" / "scores.json").exists()
    assert "no_such_module_fmuia_test" in (tmp_path / "out1" / "detailed_results.html").read_text()
    monkeypatch.undo()

    bad_ref = tmp_path / "bad_ref"
    (bad_ref / "csv_files").mkdir(parents=True)
    (bad_ref / "csv_files" / "x.csv").write_text("image_path,task_id\nnowhere.png,lung\n")
    inp2 = tmp_path / "in2"
    inp2.mkdir()
    os.symlink(bad_ref, inp2 / "ref")
    os.symlink(sub, inp2 / "res")
    assert cb.main([str(inp2), str(tmp_path / "out2")]) == 2
    assert not (tmp_path / "out2" / "scores.json").exists()
    assert "reference data" in (tmp_path / "out2" / "detailed_results.html").read_text()


def test_cli_bundle(synth_split, tmp_path):
    from click.testing import CliRunner

    from fmuia.cli import cli

    out = tmp_path / "b.zip"
    res = CliRunner().invoke(cli, ["codabench", "bundle", "--labels", str(synth_split / "labels"), "--out", str(out), "--docker-image", "example/img:1"])
    assert res.exit_code == 0, res.output
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        comp = yaml.safe_load(zf.read("competition.yaml"))
    assert {"competition.yaml", "scoring_program.zip", "reference_data.zip", "logo.png", "scoring_image.Dockerfile"} <= names
    with zipfile.ZipFile(out) as zf:
        dockerfile = zf.read("scoring_image.Dockerfile").decode()
    for package in ("numpy==", "scipy==", "scikit-learn==", "Pillow==", "pycocotools=="):
        assert package in dockerfile
    assert comp["docker_image"] == "example/img:1"
    res = CliRunner().invoke(cli, ["codabench", "bundle", "--labels", str(synth_split / "test"), "--out", str(tmp_path / "x.zip")])
    assert res.exit_code != 0 and not (tmp_path / "x.zip").exists()
