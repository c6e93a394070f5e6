"""The exit-code contract of every entry point (fmuia.console)."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from fmuia.console import EXIT_FAILED, EXIT_INTERNAL, EXIT_USAGE, run, run_click
from fmuia.errors import FmuiaError, Problem
from submission.engine import EngineError


def _exit_code(body) -> int:
    with pytest.raises(SystemExit) as info:
        run(body)
    return info.value.code


def test_success_returns_and_nonzero_int_exits():
    assert run(lambda: None) is None
    assert run(lambda: 0) is None
    assert _exit_code(lambda: 1) == EXIT_FAILED


def test_user_error_is_one_line_with_problems_and_exit_2(capsys):
    def body():
        raise FmuiaError("bad root", [Problem("a.csv", "3", "missing label")])

    assert _exit_code(body) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: bad root", "  a.csv:3: missing label"]


def test_a_failed_run_exits_1(capsys):
    def body():
        raise EngineError("no docker engine")

    assert _exit_code(body) == EXIT_FAILED
    assert "error: no docker engine" in capsys.readouterr().err


def test_internal_error_exits_3_with_traceback_in_a_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FMUIA_LOG_DIR", str(tmp_path))

    def body():
        return {}["missing"]

    assert _exit_code(body) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "internal error" in err and "KeyError" in err
    (log,) = tmp_path.glob("fmuia-crash-*.log")
    assert str(log) in err and "Traceback" in log.read_text() and "KeyError" in log.read_text()


def test_click_usage_error_exits_2(capsys):
    @click.command()
    @click.option("--n", type=int, required=True)
    def cmd(n: int) -> None:
        click.echo(n)

    with pytest.raises(SystemExit) as info:
        run_click(cmd, ["--n", "x"])
    assert info.value.code == 2 and "Invalid value" in capsys.readouterr().err


def test_python_m_evaluation_crash_is_not_a_traceback(tmp_path):
    # a bug reached from the command line: one line on stderr, exit 3 (forced by a broken mode table)
    code = ("import sys; import evaluation.scoring.engine as e; e.POLICIES['strict'] = None; "
            "from evaluation.cli import main; main(sys.argv[1:])")
    labels = tmp_path / "labels"
    from fmuia.dataset.synth import synthesize

    synthesize(labels, per_task=1, tasks=["organ_cls"])
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path), "--data", str(labels), "--out", str(tmp_path / "r.json")],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == EXIT_INTERNAL, p.stderr
    assert "Traceback" not in p.stderr and "internal error" in p.stderr and list(tmp_path.glob("fmuia-crash-*.log"))


def test_control_characters_never_split_an_error_line(capsys):
    def body():
        raise FmuiaError("bad\\nname", [Problem("a\nb.csv", "3", "cell\x1b[31m")])

    assert _exit_code(body) == EXIT_USAGE
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "\\n" in lines[1] and "\x1b" not in lines[1]
