"""``fmuia check``: validate a prediction folder (or its ``.zip``) against a data root's CSVs.

No labels are needed: the data root only says which predictions must exist (one per CSV row),
their task, class count and image size. Every rule, in words, is in :data:`RULE_LIST`.

Where each concern lives:

* :mod:`fmuia.check.checker` — :func:`check_predictions` and the walk over a folder: matching
  entries and masks to CSV rows, the generic rules (missing, duplicate, unknown, refused,
  unexpected files), the thread pool that decodes masks; :func:`load_data_root`.
* :mod:`fmuia.check.rules` — the per-kind rules, one function per :class:`~fmuia.tasks.TaskKind`
  in the :data:`RULES` table, their tolerances, :data:`RULE_LIST`.
* :mod:`fmuia.check.report` — :class:`CheckReport` / :class:`TaskCounts` and their text and JSON
  rendering, the :data:`Finding` a rule returns, :class:`CheckUsageError`.
* :mod:`fmuia.check.sizes` — image sizes from the data root's image headers, cached.

Reading the folder safely is :mod:`fmuia.predfolder`, through the readers strict and official
scoring use too (one per format, so their verdicts cannot drift): JSON files by
:func:`fmuia.formats.load_prediction_json`, masks by :func:`fmuia.dataset.masks.read_prediction_mask`
and judged by :func:`fmuia.dataset.masks.prediction_mask_problems`. This package imports neither
torch nor tqdm (the progress bar is imported only when shown), so ``fmuia check`` starts fast.

>>> report = check_predictions("preds/", "data/test")      # doctest: +SKIP
>>> report.ok, report.summary_table()                       # doctest: +SKIP
"""

from __future__ import annotations

from fmuia.check.checker import check_predictions, load_data_root
from fmuia.check.report import CheckReport, CheckUsageError, Finding, TaskCounts
from fmuia.check.rules import NEEDS_SIZE, NORM_TOL, PIX_TOL, PNG_MODES, PROB_SUM_TOL, RULE_LIST, RULES

__all__ = [
    "CheckReport",
    "CheckUsageError",
    "TaskCounts",
    "RULES",
    "RULE_LIST",
    "check_predictions",
    "load_data_root",
    # also importable, as before the split
    "Finding",
    "NEEDS_SIZE",
    "NORM_TOL",
    "PIX_TOL",
    "PNG_MODES",
    "PROB_SUM_TOL",
]
