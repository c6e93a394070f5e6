"""Every user-facing command on unusable input: one error line, a documented exit code, never a
traceback (and never the exit code of an internal error)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fmuia.cli import main


@pytest.fixture(scope="module")
def junk(tmp_path_factory, synth_split):
    d = tmp_path_factory.mktemp("junk")
    (d / "notzip.zip").write_text("x")
    (d / "empty").mkdir()
    (d / "man.csv").write_text("name,image\na,\n")
    (d / "latin.csv").write_bytes(b"\xff\xfe\x00")
    return d, synth_split


CASES = [
    ("check {j}/notzip.zip --data {s}/test", 2, "expected a prediction folder or a .zip"),
    ("check {j}/empty --data {j}/empty", 2, "not a data root"),
    ("evaluate {j}/notzip.zip --data {s}/labels --out {j}/r.json", 2, "expected a folder or a .zip"),
    ("evaluate {j}/empty --data {s}/test --out {j}/r.json", 2, "have no label"),
    ("leaderboard --manifest {j}/latin.csv --out {j}/lb", 2, "not valid UTF-8"),
    ("leaderboard --manifest {j}/man.csv --out {j}/lb", 2, "missing ['results']"),
    ("leaderboard {j}/empty --out {j}/lb", 2, "results file not found"),
    ("predict --data {s}/test --checkpoint {j}/notzip.zip --out {j}/p", 2, "not a readable fmuia checkpoint"),
    ("train --data {j}/empty --out {j}/t", 2, "not a data root"),
    ("train --data {s}/test --out {j}/t --epochs 1", 2, "no labelled rows"),
    ("visualize {j}/notzip.zip --data {s}/test --out {j}/v", 2, "expected a folder or a .zip"),
    ("pack {j}/empty --data {s}/test -o {j}/x.zip", 1, "not packed"),
    ("codabench bundle --labels {j}/empty --out {j}/b.zip", 2, "not a data root"),
    ("submission score {j}/man.csv --data {s}/labels --out {j}/sc", 2, ""),
]


@pytest.mark.parametrize("argv, code, message", CASES, ids=[c[0].split()[0] + str(i) for i, c in enumerate(CASES)])
def test_command_on_unusable_input(junk, capsys, argv, code, message):
    j, s = junk
    with pytest.raises(SystemExit) as info:
        main(argv.format(j=j, s=s).split())
    err = capsys.readouterr().err
    assert info.value.code == code, err
    assert "Traceback" not in err and "internal error" not in err and message in err


def test_python_m_entry_points_on_unusable_input(junk):
    j, s = junk
    for argv, message in [(["-m", "evaluation", str(j / "empty"), "--data", str(s / "labels"), "--out", "/proc/x/r.json"],
                           "cannot write here"),
                          (["-m", "evaluation.codabench", str(j / "nonexist"), str(j / "cb")], "could not be scored")]:
        p = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300)
        assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, p.stderr
