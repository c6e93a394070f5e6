"""Rank many submissions from their ``results.json`` files: tables, rankings and their stability.

Input: one results object per submission (what :func:`evaluation.scoring.evaluate` returns), given
as a mapping ``name -> results``, as paths to ``results.json`` files (a submission is named after
the file's parent folder; a folder stands for ``folder/results.json``), or as a CSV manifest with
columns ``name,results`` (paths relative to the manifest).

Three rankings are reported:

(a) **Rank then aggregate** (challengeR style). For every task and every *ranked metric* of its
    kind (the metrics behind the nine aggregates: segmentation DSC↑ HD↓; classification Accuracy↑
    AUC↑ F1_macro↑ F1_weighted↑ MCC↑; detection IoU↑; regression MRE↓) the submissions are ranked
    with ties sharing the lowest (best) rank (``min`` method); a submission without a value for
    that task/metric gets the worst value (it ties with the other missing ones, after every
    submission that has a value). A submission's score is the mean of its ranks; the final rank
    ranks these means the same way (lower mean is better).

(b) **Composite score** in [0, 100]. Each per-task value is mapped to [0, 1], higher is better:
    DSC, IoU, Accuracy, AUC, F1_macro, F1_weighted are clipped to [0, 1]; MCC becomes
    ``(MCC + 1) / 2``; a distance d (HD, MRE, in pixels) becomes ``clip(1 - d / diagonal, 0, 1)``,
    where ``diagonal`` is the task's mean image diagonal: recorded in a results file (task key
    ``mean_diagonal``, ``diagonal`` or ``image_diagonal``; strict mode records ``mean_diagonal``),
    else measured on the ``labels`` root when one is given, else :data:`DEFAULT_DIAGONAL` (1000 px,
    an 800×600 frame). A missing value counts 0. Each of the nine aggregate columns is the mean over
    the tasks of its kind of these normalised values (a task/metric no submission has a value for,
    e.g. an AUC undefined on these labels, is left out); the composite is 100 × the mean of the
    aggregate columns that have at least one task.

(c) **Ranking stability** (needs the strict mode's ``per_case`` rows for every submission, read with
    :func:`evaluation.schema.read_cases`: rows that do not parse are left out and counted in the
    notes). For ``n_bootstrap`` rounds the cases of each task are resampled with replacement (one
    seeded draw per task and round, shared by all submissions: a paired bootstrap); per-task
    metrics are recomputed from the per-case values and ranking (a) is redone. Recomputed are the
    metrics that are means of per-case values (:data:`PER_CASE_METRICS`: DSC, HD, Accuracy from the
    ``correct`` column, IoU, MRE) and, when every submission's classification rows carry ``label``
    (strict mode writes ``label`` and ``predicted``, ``null`` for an invalid prediction) and the
    task's class count is known (task registry, else ``per_class``; it bounds the labels), F1_macro,
    F1_weighted and MCC from the resampled confusion matrix (:data:`CONFUSION_METRICS`, the
    functions of :mod:`evaluation.metrics.classification`: an invalid prediction is wrong and a
    false positive for no class). AUC is **not** bootstrapped: the per-case rows keep only the
    probability of the true class, not the full vector. The reference ranking for Kendall's τ is
    ranking (a) with the recomputed metrics on all cases. Reported: Kendall's τ_b of every bootstrap
    ranking to the reference (mean, median, 2.5 % and 97.5 % quantiles), each submission's 95 % rank
    interval, and the raw bootstrap rank samples (for blob plots).

Modules: :mod:`.load` (results files, folders, manifest, naming), :mod:`.ranking` (ranks,
Kendall's τ_b, composite), :mod:`.bootstrap` (ranking (c)), :mod:`.build` (:class:`Leaderboard`,
:func:`build_leaderboard`), :mod:`.render` (CSV, JSON, terminal, Markdown, HTML, files).
"""

from evaluation.leaderboard.bootstrap import CONFUSION_METRICS, PER_CASE_METRICS, Stability
from evaluation.leaderboard.build import DIAGONAL_KEYS, Leaderboard, build_leaderboard, label_diagonals
from evaluation.leaderboard.load import ResultsInput, load_results, read_manifest
from evaluation.leaderboard.ranking import (
    DEFAULT_DIAGONAL,
    NORMALIZERS,
    RANKED_METRICS,
    kendall_tau_b,
    rank_min,
    rank_then_aggregate,
)
from evaluation.leaderboard.render import (
    ARROWS,
    METHOD_TEXT,
    REPORT_DIR,
    to_html,
    to_markdown,
    write_leaderboard,
)

__all__ = [
    "ARROWS",
    "CONFUSION_METRICS",
    "DEFAULT_DIAGONAL",
    "DIAGONAL_KEYS",
    "Leaderboard",
    "METHOD_TEXT",
    "NORMALIZERS",
    "PER_CASE_METRICS",
    "RANKED_METRICS",
    "REPORT_DIR",
    "ResultsInput",
    "Stability",
    "build_leaderboard",
    "kendall_tau_b",
    "label_diagonals",
    "load_results",
    "rank_min",
    "rank_then_aggregate",
    "read_manifest",
    "to_html",
    "to_markdown",
    "write_leaderboard",
]
