"""What a scoring policy is: parameters in one object, and the hooks the engine calls.

The engine (:mod:`evaluation.scoring.engine`) walks kind → task → row once. For each row it asks
the policy for a typed score (:mod:`evaluation.scoring.rows`); for each task it asks the policy to
reduce the task's scores to a task block (and, in strict mode, :class:`~evaluation.schema.CaseRow`
rows); at the end the policy finishes the results object. Stages and their data:

1. ``read_entries(kind, folder, root)`` → :class:`Entries` (JSON kinds), or ``None`` when the kind
   has no results at all (official mode: its file is absent).
2. ``score_mask(folder, gt_file, pred_rel, num_classes)`` → :class:`SegScore` (segmentation; runs
   in worker processes) and ``score_row(sample, entries)`` → the kind's score (JSON kinds).
3. ``task_block(spec, samples, scores)`` → ``(block, cases)``.
4. ``finish(results, cases, notes, folder)`` → the results object.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from evaluation.schema import CaseRow
from evaluation.scoring.rows import RowScore, SegScore
from fmuia.dataset.schema import DataRoot, Sample
from fmuia.predfolder import PredictionFolder
from fmuia.tasks import TaskKind, TaskSpec

Key = tuple[str, str]  # (task_id, image_path): how predictions are matched to label rows


@dataclass(frozen=True)
class ScoreParams:
    """Every scoring option in one object."""

    mode: str = "strict"
    workers: int = 1
    n_bootstrap: int = 1000
    seed: int = 0
    progress: bool = False


@dataclass
class Entries:
    """A kind's prediction file, indexed: the usable record per row key, why other keys are not
    usable, and notes about entries that match no row."""

    valid: dict[Key, Any] = field(default_factory=dict)
    problems: dict[Key, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Policy(ABC):
    """A scoring policy: how one row scores and how a task's rows reduce (see the module doc)."""

    name: ClassVar[str]

    def __init__(self, params: ScoreParams):
        self.params = params

    @abstractmethod
    def score_mask(self, folder: PredictionFolder, gt_file: str, pred_rel: str, num_classes: int) -> SegScore:
        """Score one segmentation row (label mask file, prediction path inside the folder)."""

    @abstractmethod
    def read_entries(self, kind: TaskKind, folder: PredictionFolder, root: DataRoot) -> Entries | None:
        """Read and index a JSON kind's prediction file."""

    @abstractmethod
    def score_row(self, sample: Sample, entries: Entries) -> RowScore:
        """Score one row of a JSON kind."""

    @abstractmethod
    def fallback(self, sample: Sample, reason: str) -> RowScore:
        """The score of a row whose scoring raised an unforeseen exception (``reason`` says which):
        one bad entry never sinks a submission."""

    @abstractmethod
    def task_block(self, spec: TaskSpec, samples: list[Sample], scores: list[Any]) -> tuple[dict, list[CaseRow]]:
        """Reduce one task's row scores (in CSV order) to its results block and per-case rows."""

    def kind_notes(self, kind: TaskKind, entries: Entries, blocks: dict[str, dict]) -> list[str]:
        """Notes about a JSON kind's file once its tasks are scored."""
        return list(entries.notes)

    def finish(self, results: dict, cases: list[CaseRow], notes: list[str], folder: PredictionFolder) -> dict:
        """Complete the results object (aggregates, per-case rows, notes)."""
        return results
