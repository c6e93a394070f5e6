"""How every command line entry point runs: one error line, documented exit codes (no torch).

``fmuia``, ``python -m evaluation`` and ``python -m evaluation.codabench`` all end through
:func:`run`, the one place where errors are printed and exit codes chosen:

====  ===============================================================================
code  meaning
====  ===============================================================================
0     fine
1     ``check`` found problems, or a run failed (a container, an engine, a training run)
2     usage error, or input that cannot be used (a bad file, row, entry or option)
3     internal error: a bug in fmuia. One line says so; the traceback goes to a log file
      whose path is printed
====  ===============================================================================
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmuia.errors import FmuiaError

if TYPE_CHECKING:
    import click

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERNAL", "EXIT_CODES_HELP", "print_error", "quiet_stdout",
           "run", "run_click"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_CODES_HELP = ("Exit codes: 0 fine; 1 problems found or a run failed; 2 usage error or unusable input; "
                   "3 internal error (a bug: the traceback is written to a log file).")


def print_error(exc: FmuiaError) -> None:
    """``error: <message>`` then one indented line per located problem, on stderr."""
    lines = exc.lines()
    _echo(f"error: {lines[0]}")
    for line in lines[1:]:
        _echo(line)


def _echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def exit_code_of(exc: FmuiaError) -> int:
    """The exit code an error asks for (its class's ``exit_code``; unusable input by default)."""
    code = getattr(exc, "exit_code", EXIT_USAGE)
    return code if isinstance(code, int) and code in (EXIT_FAILED, EXIT_USAGE) else EXIT_USAGE


def _crash_log(exc: BaseException) -> Path | None:
    """Write the traceback of an unforeseen exception to a fresh log file; its path, or None."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    name = f"fmuia-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    folders = [Path(os.environ["FMUIA_LOG_DIR"])] if os.environ.get("FMUIA_LOG_DIR") else []
    for folder in [*folders, Path.cwd(), Path(tempfile.gettempdir())]:
        try:
            path = folder / name
            with open(path, "x", encoding="utf-8") as fh:
                fh.write(f"fmuia {' '.join(sys.argv)}\n{text}")
            return path
        except OSError:
            continue
    return None


def report_internal_error(exc: BaseException) -> int:
    """Print the one-line notice of a bug, write its traceback to a log file; returns exit code 3."""
    path = _crash_log(exc)
    where = f"traceback written to {path}" if path else "the traceback could not be written to a log file"
    summary = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    _echo(f"internal error (a bug in fmuia, please report it): {summary}; {where}")
    return EXIT_INTERNAL


def run(body: Callable[[], Any], *, exiting: bool = False) -> None:
    """Call ``body`` (which may return an int exit code); return when it succeeds, else exit with
    the documented code. ``exiting``: the process ends right after (a console script), so the
    objects left are frozen out of the final garbage collection (numba's and numpy's many objects
    made interpreter shutdown take about 0.13 s of a 0.9 s scoring run)."""
    try:
        rc = body()
        if type(rc) is int and rc != EXIT_OK:
            sys.exit(rc)
    except SystemExit:
        raise
    except FmuiaError as exc:
        print_error(exc)
        sys.exit(exit_code_of(exc))
    except KeyboardInterrupt:
        _echo("Interrupted.")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - anything unforeseen is a bug: exit 3, traceback to a file
        _click_exit(exc)
        sys.exit(report_internal_error(exc))
    finally:
        if exiting:
            gc.freeze()


def _click_exit(exc: Exception) -> None:
    """Exit as click would for its own exceptions (usage errors: 2). click is looked up, not
    imported: this module must import without it (the Codabench scoring program has no click)."""
    click = sys.modules.get("click")
    if click is None:
        return
    if isinstance(exc, click.exceptions.Abort):
        _echo("Aborted.")
        sys.exit(130)
    if isinstance(exc, click.exceptions.ClickException):
        exc.show()
        sys.exit(exc.exit_code)
    if isinstance(exc, click.exceptions.Exit):
        sys.exit(exc.exit_code)


def run_click(command: click.Command, argv: Sequence[str] | None = None, prog_name: str | None = None, *,
              exiting: bool = False) -> None:
    """Run a click command or group under :func:`run` (``ctx.exit(n)`` becomes exit code ``n``)."""
    run(lambda: command.main(args=list(argv) if argv is not None else None, prog_name=prog_name,
                             standalone_mode=False), exiting=exiting)


class _ThreadQuietStdout(io.TextIOBase):
    """``sys.stdout`` while some thread is in :func:`quiet_stdout`: drops that thread's writes and
    forwards every other thread's to the stream it replaced."""

    def __init__(self, target: Any):
        self.target = target
        self.local = threading.local()

    def write(self, text: str) -> int:
        if getattr(self.local, "depth", 0):
            return len(text)
        return self.target.write(text)

    def flush(self) -> None:
        self.target.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno ... of the real stream
        return getattr(self.target, name)


_quiet_lock = threading.Lock()
_quiet_users = 0


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence what the *calling thread* prints (libraries that print, such as COCOeval).

    ``contextlib.redirect_stdout`` swaps the process-wide stream: with threads scoring at once, one
    thread's restore could undo another's, and every other thread's output went to the sink too.
    """
    global _quiet_users
    with _quiet_lock:
        proxy = sys.stdout if isinstance(sys.stdout, _ThreadQuietStdout) else None
        if proxy is None:
            proxy = _ThreadQuietStdout(sys.stdout)
            sys.stdout = proxy
        _quiet_users += 1
    proxy.local.depth = getattr(proxy.local, "depth", 0) + 1
    try:
        yield
    finally:
        proxy.local.depth -= 1
        with _quiet_lock:
            _quiet_users -= 1
            if _quiet_users == 0 and sys.stdout is proxy:
                sys.stdout = proxy.target
