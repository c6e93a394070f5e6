"""Score a prediction folder (or zip) against a labelled data root: one engine, two policies.

- :mod:`.engine` — :func:`evaluate`, the walk kind → task → row, the segmentation process pool.
- :mod:`.policy` — :class:`ScoreParams` (every option in one object) and the :class:`Policy` hooks.
- :mod:`.official` / :mod:`.strict` — the two policies (the published scorer's quirks; every row
  scored, a broken prediction never helps).
- :mod:`.rows` — the typed per-row scores; :mod:`.bootstrap` — seeded intervals.

The results object's fields are named in :mod:`evaluation.schema`; :func:`write_results` writes it.
This package imports no torch.
"""

from evaluation.results import write_results
from evaluation.scoring.engine import MODES, POLICIES, default_workers, evaluate
from evaluation.scoring.policy import Entries, Policy, ScoreParams

__all__ = ["evaluate", "write_results", "MODES", "POLICIES", "ScoreParams", "Policy", "Entries", "default_workers"]
