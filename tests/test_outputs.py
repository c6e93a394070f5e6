"""Outputs that cannot be written: one error line and exit code 2, never a traceback, and nothing
half-written."""

from __future__ import annotations

import json

import pytest

from evaluation.scoring import evaluate, write_results
from fmuia._atomic import OutputError, ensure_dir, write_json
from fmuia.cli import main


@pytest.fixture
def blocker(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("not a folder")
    return f


def _run(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr().err


def test_atomic_write_under_a_file_is_an_output_error(blocker):
    with pytest.raises(OutputError, match="cannot write here"):
        write_json(blocker / "x.json", {})
    with pytest.raises(OutputError, match="is a folder"):
        write_json(blocker.parent, {})
    with pytest.raises(OutputError, match="not a folder"):
        ensure_dir(blocker)
    with pytest.raises(OutputError, match="cannot create"):
        ensure_dir(blocker / "sub")
    with pytest.raises(OutputError):
        write_json("/proc/fmuia-cannot-write/x.json", {})


def test_nothing_half_written_when_the_body_fails(tmp_path):
    target = tmp_path / "r.json"
    target.write_text('{"old": true}')
    with pytest.raises(ValueError):
        write_json(target, {"x": float("nan")})  # NaN refused while writing
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind


@pytest.mark.parametrize("where", ["under_file", "proc"])
def test_cli_outputs_that_cannot_be_written(synth_root, perfect, blocker, tmp_path, capsys, where):
    bad = blocker / "out" if where == "under_file" else tmp_path.parent / "/proc/fmuia-no/out"
    cases = [
        ["evaluate", str(perfect), "--data", str(synth_root), "--out", str(bad / "r.json"), "-q", "--bootstrap", "0"],
        ["check", str(perfect), "--data", str(synth_root), "--json", str(bad / "c.json"), "-q"],
        ["pack", str(perfect), "--data", str(synth_root), "-o", str(bad / "p.zip")],
    ]
    results = tmp_path / "res" / "results.json"
    write_results(evaluate(perfect, synth_root, n_bootstrap=0), results)
    cases.append(["leaderboard", str(results), "--out", str(bad), "--bootstrap", "0"])
    for argv in cases:
        code, err = _run(argv, capsys)
        assert code == 2, (argv[0], err)
        assert "Traceback" not in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
