"""The command line: every command teaches with --help; user errors never show a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from fmuia.cli import COMMANDS, cli


def test_group_help_lists_every_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_exists_and_has_help(name):
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and len(result.output.splitlines()) > 3


def test_check_and_evaluate_start_without_torch():
    code = (
        "import sys; from fmuia.cli import cli; "
        "[cli.get_command(None, n) for n in ('check', 'evaluate', 'pack', 'leaderboard')]; "
        "import evaluation.scoring, fmuia.check; "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_user_error_is_one_line_not_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fmuia", "check", str(tmp_path), "--data", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_help_documents_the_exit_codes(name):
    from click.testing import CliRunner

    r = CliRunner().invoke(cli, [name, "--help"])
    assert r.exit_code == 0 and "Exit codes: 0 fine" in r.output and "3 internal error" in r.output
