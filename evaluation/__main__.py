"""``python -m evaluation PRED_DIR --data LABELS --out results.json [--mode ...]``: the same command
as ``fmuia evaluate``, for organizers' scoring servers."""

from __future__ import annotations

import sys

from fmuia.errors import FmuiaError


def main(argv: list[str] | None = None) -> None:
    import click

    from fmuia.cli.evaluate import evaluate

    try:
        evaluate.main(args=argv, prog_name="python -m evaluation", standalone_mode=False)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except FmuiaError as exc:
        lines = exc.lines()
        click.echo(f"error: {lines[0]}", err=True)
        for line in lines[1:]:
            click.echo(line, err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
