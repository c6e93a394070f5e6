"""The outcome of a check: findings, per-task counts, the report and its text/JSON rendering.

A rule returns :data:`Finding` tuples (built with :func:`err` / :func:`warn`); the checker turns
each into a :class:`~fmuia.errors.Problem` of the :class:`CheckReport`, tied to a task or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fmuia.errors import FmuiaError, Problem
from fmuia.tasks import TaskKind

__all__ = ["CheckReport", "CheckUsageError", "Finding", "TaskCounts", "err", "warn"]

Finding = tuple[str, str]  # (severity, message)


def err(msg: str) -> Finding:
    """An error finding: the submission is invalid."""
    return ("error", msg)


def warn(msg: str) -> Finding:
    """A warning finding: suspicious, but the submission stays valid."""
    return ("warning", msg)


class CheckUsageError(FmuiaError):
    """The check cannot run at all (missing path, not a folder or zip, unreadable data root)."""

    exit_code = 2


@dataclass
class TaskCounts:
    """Per-task tallies: CSV rows, predictions found, found and valid, and problems."""

    task_id: str
    kind: TaskKind
    expected: int = 0
    found: int = 0
    valid: int = 0
    errors: int = 0
    warnings: int = 0

    def to_dict(self) -> dict:
        """The counts as a JSON-able dict (one value of the report's ``tasks``)."""
        return {
            "kind": self.kind.value,
            "expected": self.expected,
            "found": self.found,
            "valid": self.valid,
            "errors": self.errors,
            "warnings": self.warnings,
        }


@dataclass
class CheckReport:
    """The outcome of :func:`~fmuia.check.check_predictions`.

    ``problems`` holds errors and warnings in a stable order; ``problem_tasks[i]`` is the task
    the ``i``-th problem belongs to (``None`` for file-level problems).
    """

    pred_path: str
    data_root: str
    tasks: dict[str, TaskCounts]
    problems: list[Problem] = field(default_factory=list)
    problem_tasks: list[str | None] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        """The problems of severity ``error``, in report order."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        """The other problems (warnings), in report order."""
        return [p for p in self.problems if p.severity != "error"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not any(p.severity == "error" for p in self.problems)

    def add(self, problem: Problem, task_id: str | None = None) -> None:
        """Append ``problem``, tied to ``task_id`` (``None``: file-level), and count it for that task."""
        self.problems.append(problem)
        self.problem_tasks.append(task_id)
        counts = self.tasks.get(task_id) if task_id is not None else None
        if counts is not None:
            if problem.severity == "error":
                counts.errors += 1
            else:
                counts.warnings += 1

    def to_dict(self) -> dict:
        """A JSON-able report (what ``fmuia check --json`` writes)."""
        return {
            "ok": self.ok,
            "pred_path": self.pred_path,
            "data_root": self.data_root,
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "tasks": {tid: c.to_dict() for tid, c in self.tasks.items()},
            "problems": [
                {**p.to_dict(), "task_id": t} for p, t in zip(self.problems, self.problem_tasks, strict=True)
            ],
        }

    def summary_table(self) -> str:
        """A per-task table (kind, expected, found, valid, errors, warnings) plus a total line."""
        header = ("task", "kind", "expected", "found", "valid", "errors", "warnings")
        rows = [
            (c.task_id, c.kind.value, c.expected, c.found, c.valid, c.errors, c.warnings)
            for c in sorted(self.tasks.values(), key=lambda c: (list(TaskKind).index(c.kind), c.task_id))
        ]
        file_level = [p for p, t in zip(self.problems, self.problem_tasks, strict=True) if t is None]
        tot = [sum(r[i] for r in rows) for i in range(2, 7)]
        tot[3] += sum(p.severity == "error" for p in file_level)
        tot[4] += sum(p.severity != "error" for p in file_level)
        total = ("TOTAL", "", *tot)
        cells = [tuple(str(v) for v in r) for r in [header, *rows, total]]
        widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

        def fmt(r: tuple[str, ...]) -> str:
            return "  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))

        rule = "-" * len(fmt(cells[0]))
        lines = [fmt(cells[0]), rule, *(fmt(r) for r in cells[1:-1]), rule, fmt(cells[-1])]
        if file_level:
            lines.append(f"({len(file_level)} file-level problem(s) not tied to one task are in the TOTAL line)")
        lines.append(self.verdict())
        return "\n".join(lines)

    def verdict(self) -> str:
        """The one-line verdict: ``OK: ...`` or ``INVALID: N error(s) ...``."""
        n_err, n_warn = len(self.errors), len(self.warnings)
        if n_err == 0:
            return f"OK: {self.pred_path} is a valid submission ({n_warn} warning(s))."
        return f"INVALID: {n_err} error(s), {n_warn} warning(s) in {self.pred_path}."
