"""The ``fmuia`` command line: a click group whose subcommands are imported only when run.

Each subcommand lives in its own module under :mod:`fmuia.cli` and stays thin: it parses
arguments, calls one library function and prints. Keeping imports lazy keeps ``fmuia check``
and ``fmuia evaluate`` free of torch and fast to start.
"""

from __future__ import annotations

import importlib

import click

from fmuia.console import EXIT_CODES_HELP, run_click

# command name -> (module, attribute, one-line help shown by `fmuia --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("fmuia.cli.demo", "demo", "Synthesize data, train, predict, check and evaluate: the whole pipeline."),
    "synth": ("fmuia.cli.synth", "synth", "Write a synthetic dataset in the official FM_UIA layout."),
    "check": ("fmuia.cli.check", "check", "Validate a prediction folder or zip against a data root (no labels needed)."),
    "pack": ("fmuia.cli.check", "pack", "Check a prediction folder and zip it the way Codabench expects."),
    "train": ("fmuia.cli.train", "train", "Train the MH-MTL baseline on a data root."),
    "predict": ("fmuia.cli.predict", "predict", "Run a trained checkpoint on a data root; write official prediction files."),
    "evaluate": ("evaluation.cli", "evaluate", "Score a prediction folder against labels (official or strict mode)."),
    "leaderboard": ("fmuia.cli.leaderboard", "leaderboard", "Aggregate many results.json files into a ranked leaderboard."),
    "rank": ("fmuia.cli.rank", "rank", "Rank algorithms per task as challengeR does: tests, bootstrap stability, consensus."),
    "codabench": ("fmuia.cli.codabench", "codabench", "Codabench tooling: build the competition bundle."),
    "submission": ("fmuia.cli.submission", "submission", "Build, save, load, run and score submission containers."),
    "visualize": ("fmuia.cli.visualize", "visualize", "Draw predictions (and labels) as PNG grids with an index.html."),
}


def _with_exit_codes(cmd: click.Command) -> click.Command:
    """Every command's --help ends with the exit codes (fmuia.console documents them)."""
    if not cmd.epilog:
        cmd.epilog = EXIT_CODES_HELP
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            _with_exit_codes(sub)
    return cmd


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # the command is planned but not built yet
                return None
            raise
        return _with_exit_codes(getattr(mod, attr))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=EXIT_CODES_HELP)
@click.version_option(package_name="fmuia")
def cli() -> None:
    """fmuia: the open toolkit for the FM_UIA 2026 ultrasound challenge.

    \b
    Typical flow:
      fmuia synth data/                      # or use the real train/ val/ roots
      fmuia train --data data/train --out runs/r1
      fmuia predict --data data/test --checkpoint runs/r1/best.pt --out preds/
      fmuia check preds/ --data data/test    # what a participant runs before uploading
      fmuia evaluate preds/ --data data/labels --out results.json
    """


def main(argv: list[str] | None = None) -> None:
    """Run ``fmuia``: user errors become one line each and a documented exit code, never a traceback."""
    run_click(cli, argv, prog_name="fmuia")


def entry() -> None:
    """The ``fmuia`` console script and ``python -m fmuia``: :func:`main` in a process that ends after it."""
    run_click(cli, None, prog_name="fmuia", exiting=True)
