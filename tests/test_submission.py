"""Unit tests of the `submission` package that need no Docker engine (the engine tests are in
test_submission_docker.py): manifest parsing, limits, GPU requests, the build context, output safety."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import tarfile
from pathlib import Path

import pytest

from submission import build, runner, score
from submission.engine import EngineError, SubmissionError

REPO = Path(__file__).resolve().parent.parent


# ---- manifest ---------------------------------------------------------------------------------------

def test_manifest_reads_images_and_tars(tmp_path):
    m = tmp_path / "manifest.csv"
    m.write_text("# comment line\nname,image,tar\nteam-a,teama/model:v3,\nteam_b,,subs/b.tar\nc.1,,/abs/c.tar.gz\n")
    entries = score.read_manifest(m)
    assert [e.name for e in entries] == ["team-a", "team_b", "c.1"]
    assert entries[0].image == "teama/model:v3" and entries[0].tar is None
    assert entries[1].tar == tmp_path / "subs" / "b.tar"  # relative to the manifest's folder
    assert entries[2].tar == Path("/abs/c.tar.gz")
    assert entries[1].row == 4  # the line in the file (comment and header count)


def test_manifest_reports_every_bad_row(tmp_path):
    m = tmp_path / "manifest.csv"
    m.write_text("name,image,tar\nok,img:1,\nok,img:2,\n../evil,img:3,\nboth,img:4,x.tar\nneither,,\n")
    with pytest.raises(SubmissionError) as ei:
        score.read_manifest(m)
    where = [(p.where, p.message) for p in ei.value.problems]
    assert [w for w, _ in where] == ["line 3", "line 4", "line 5", "line 6"]
    assert "duplicate" in where[0][1]
    assert "names a folder" in where[1][1]
    assert "exactly one" in where[2][1] and "exactly one" in where[3][1]


@pytest.mark.parametrize("text", ["", "team,image\nx,y\n", "name,source\nx,y\n", "name,image\n"])
def test_manifest_header_and_empty(tmp_path, text):
    m = tmp_path / "m.csv"
    m.write_text(text)
    with pytest.raises(SubmissionError):
        score.read_manifest(m)


# ---- limits and GPU requests --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs",
    [{"time_limit": 0}, {"memory": "lots"}, {"memory": "16 g"}, {"cpus": 0}, {"pids": 0}, {"gpus": "some"}],
)
def test_limits_refuse_bad_values(kwargs):
    with pytest.raises(SubmissionError):
        runner.Limits(**kwargs)


def test_device_requests():
    assert runner._device_requests("none", nvidia=True) is None
    assert runner._device_requests("auto", nvidia=False) is None
    (all_,) = runner._device_requests("auto", nvidia=True)
    assert all_["Count"] == -1 and all_["Capabilities"] == [["gpu"]]
    assert runner._device_requests("all", nvidia=False)[0]["Count"] == -1
    assert runner._device_requests("2", nvidia=True)[0]["Count"] == 2
    (ids,) = runner._device_requests("device=0,3", nvidia=True)
    assert ids["DeviceIDs"] == ["0", "3"] and ids["Count"] == 0


# ---- build context ----------------------------------------------------------------------------------

def _names(buf: io.BytesIO) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        return tar.getnames()


def test_context_is_deterministic_and_minimal(tmp_path):
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"not really a checkpoint")
    a, b = build.make_context(ckpt, REPO), build.make_context(ckpt, REPO)
    assert a.getvalue() == b.getvalue()
    names = _names(a)
    assert names == sorted(set(names), key=names.index)  # no duplicates
    assert {"Dockerfile", "pyproject.toml", "README.md", "constraints.txt", build.CHECKPOINT_IN_CONTEXT} <= set(names)
    assert "fmuia/cli/submission.py" in names and "submission/runner.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.startswith(("tests/", ".git"))]
    with tarfile.open(fileobj=io.BytesIO(a.getvalue())) as tar:
        infos = tar.getmembers()
        assert {(i.mtime, i.uid, i.gid, i.mode) for i in infos} == {(0, 0, 0, 0o644)}
        assert tar.extractfile(build.CHECKPOINT_IN_CONTEXT).read() == b"not really a checkpoint"


def test_context_holds_everything_the_dockerfile_copies(tmp_path):
    """Parse the Dockerfile's COPY lines: every source must be in the context the builder sends."""
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"x")
    names = set(_names(build.make_context(ckpt, REPO)))
    sources = []
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            sources += shlex.split(line)[1:-1]
    assert sources, "the Dockerfile copies nothing?"
    for src in sources:
        src = build.CHECKPOINT_IN_CONTEXT if src == "${CHECKPOINT}" else src
        assert src in names or any(n.startswith(src + "/") for n in names), src


def test_context_refuses_missing_checkpoint_and_non_checkout(tmp_path):
    with pytest.raises(SubmissionError, match="no such checkpoint"):
        build.make_context(tmp_path / "missing.pt", REPO)
    (tmp_path / "c.pt").write_bytes(b"x")
    with pytest.raises(SubmissionError, match="not an fmuia source checkout"):
        build.make_context(tmp_path / "c.pt", tmp_path)


def test_dockerfile_contract():
    """The promises of issue 5 that can be read off the Dockerfile itself."""
    text = (REPO / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert base and ":" in base.group(1) and not base.group(1).endswith(":latest")
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    assert "PYTHONUNBUFFERED=1" in text
    user = re.search(r"^USER (\d+)(?::(\d+))?$", text, re.M)
    assert user and int(user.group(1)) != 0
    for var in ("HOME", "MPLCONFIGDIR", "TORCH_HOME", "XDG_CACHE_HOME"):
        assert re.search(rf"\b{var}=/tmp\b", text), var
    assert "-c constraints.txt" in text
    entry = re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1)
    assert '"predict"' in entry and '"/input"' in entry and '"/output"' in entry
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[[i for i, x in enumerate(ignore) if not x.startswith("#")][0]] == "*"  # allow-list


def test_constraints_pin_every_dependency_except_torch():
    import tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name = canonicalize_name(Requirement(dep).name)
        if name in ("torch", "torchvision"):
            assert name not in pins  # they come with the base image
        else:
            assert name in pins, name
            assert Requirement(dep).specifier.contains(pins[name]), (dep, pins[name])
    assert "hatchling" in pins  # the build backend, for offline builds


# ---- output folder safety -----------------------------------------------------------------------------

def test_prepare_output_refuses_non_empty_and_overwrite_never_follows_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.json").write_text("[]")
    (out / "sub").mkdir()
    (out / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SubmissionError, match="not empty"):
        runner.prepare_output(out)
    runner.prepare_output(out, overwrite=True)
    assert list(out.iterdir()) == []
    assert (outside / "keep.txt").read_text() == "keep"
    assert (out.stat().st_mode & 0o777) == 0o777  # any container UID may write
    link = tmp_path / "out_link"
    link.symlink_to(outside, target_is_directory=True)
    with pytest.raises(SubmissionError, match="symlink"):
        runner.prepare_output(link)


def test_unsafe_entries_lists_links_and_special_files(tmp_path):
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "classification_predictions.json").write_text("[]")
    (out / "masks" / "a.png").symlink_to("/etc/passwd")
    (out / "escape").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(out / "fifo")
    assert runner.unsafe_entries(out) == ["escape (symlink)", "fifo (special file)", "masks/a.png (symlink)"]
    assert runner.log_path_for(out) == tmp_path / "out.log"


def test_no_engine_is_a_user_error(monkeypatch):
    from submission.engine import client

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(EngineError, match="cannot reach a Docker engine"):
        client(timeout=5)


def test_score_skips_finished_submissions(tmp_path, monkeypatch):
    """score_manifest is score_batch on one host (the given engine) and one slot; a second run must not
    touch the engine for submissions that already have a state (the fake session of the batch tests)."""
    from test_submission_batch import _FakeSession

    import submission.batch as batch
    from fmuia._atomic import write_json

    monkeypatch.setattr(batch, "HostSession", _FakeSession)
    monkeypatch.setattr(batch, "input_digest", lambda p: "d")
    monkeypatch.setattr(batch, "write_leaderboard", lambda states, board, **k: sorted(states))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    m = tmp_path / "m.csv"
    m.write_text("name,image\na,img:a\nb,img:b\n")
    inp = tmp_path / "in"
    inp.mkdir()
    board = tmp_path / "board"
    write_json(board / "submissions" / "a" / "state.json", {"name": "a", "source": "img:a", "status": "scored", "results": "x"})
    write_json(board / "submissions" / "b" / "state.json", {"name": "b", "source": "img:b", "status": "failed", "reason": "exit code 3"})
    engine = object()

    def run(**kw):
        _FakeSession.runs, _FakeSession.made = [], []
        return score.score_manifest(m, inp, inp, board, docker_client=engine, **kw)

    out = run()
    assert _FakeSession.runs == [] and _FakeSession.made == [] and out["leaderboard"] == ["a", "b"]
    assert set(out) == {"submissions", "leaderboard"}
    assert out["submissions"]["a"]["status"] == "scored" and out["submissions"]["b"]["reason"] == "exit code 3"
    # --retry-failed runs the failed one again, on the one local host (the given client), in one slot
    out = run(retry_failed=True)
    assert _FakeSession.runs == [("b", "unix:///var/run/docker.sock")]
    (sess,) = _FakeSession.made
    assert sess.client is engine and sess.host.data_path == str(inp.resolve())  # a local engine: input bind-mounted
    assert [p["n_slots"] for p in sess.plans] == [1]
    assert out["submissions"]["b"]["status"] == "failed" and out["submissions"]["b"]["reason"] == "exit code 1"
    assert json.loads((board / "submissions" / "b" / "state.json").read_text())["reason"] == "exit code 1"
    assert json.loads((board / "submissions" / "a" / "state.json").read_text())["results"] == "x"  # untouched
    # a changed source is not "finished"; the failed one is skipped again without --retry-failed
    m.write_text("name,image\na,img:a2\nb,img:b\n")
    out = run()
    assert _FakeSession.runs == [("a", "unix:///var/run/docker.sock")]
    assert out["submissions"]["a"]["source"] == "img:a2" and out["submissions"]["a"]["status"] == "failed"


def test_cli_help_imports_neither_torch_nor_docker():
    import subprocess
    import sys

    code = (
        "import sys; from click.testing import CliRunner; from fmuia.cli import cli; "
        "import submission.score, submission.runner, submission.build; "
        "r = CliRunner().invoke(cli, ['submission', 'run', '--help']); assert r.exit_code == 0, r.output; "
        "assert '--time-limit' in r.output and '--memory' in r.output and '--gpus' in r.output; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'docker')); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_atomic_writes_get_the_mode_open_would_give(tmp_path):
    """Board files, image tars and check reports must be readable like any file (mkstemp makes 0600)."""
    from fmuia._atomic import write_json

    write_json(tmp_path / "atomic.json", {"a": 1})
    (tmp_path / "plain.json").write_text("{}")
    assert (tmp_path / "atomic.json").stat().st_mode & 0o777 == (tmp_path / "plain.json").stat().st_mode & 0o777


def test_engine_tests_skip_loudly_without_an_engine(tmp_path):
    """No engine (and none may be started): the container tests skip, saying so in the reason and a warning."""
    import subprocess
    import sys

    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock", "FMUIA_NO_ENGINE_START": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k", "time_limit",
         str(REPO / "tests" / "test_submission_docker.py")],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "1 skipped" in proc.stdout
    assert "DOCKER ENGINE UNAVAILABLE, container tests SKIPPED" in proc.stdout
    assert "UserWarning" in proc.stdout  # the warning summary repeats it
