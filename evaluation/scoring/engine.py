"""The scoring engine: walks kind → task → row once and lets a policy decide what each row scores.

Segmentation rows are scored in a process pool: each worker opens the prediction folder itself
and reads the masks it scores, and only per-row scores travel back, so memory does not grow with
the number of images. JSON kinds are read once per kind through the prediction folder's shared
reader. This module imports no torch.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from evaluation.metrics import prepare_fast_kernel
from evaluation.schema import KIND_ORDER, CaseRow
from evaluation.scoring.official import OfficialPolicy
from evaluation.scoring.policy import Entries, Policy, ScoreParams
from evaluation.scoring.rows import SegScore
from evaluation.scoring.strict import StrictPolicy
from fmuia.dataset.schema import DataRoot, Sample, load_root, prediction_mask_relpath, validate_labels
from fmuia.errors import FmuiaError, Problem, SchemaError
from fmuia.predfolder import PredictionFolder, open_predictions
from fmuia.tasks import TaskKind

__all__ = ["evaluate", "POLICIES", "MODES", "default_workers"]

log = logging.getLogger("evaluation")

# mode name -> policy class: the one place a mode becomes a policy
POLICIES: dict[str, type[Policy]] = {p.name: p for p in (OfficialPolicy, StrictPolicy)}
MODES = tuple(POLICIES)


def default_workers() -> int:
    """The CPUs this process may use (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


# ---- the segmentation pool --------------------------------------------------------------------

_WORKER: tuple[PredictionFolder, Policy] | None = None


def _init_worker(pred_path: str, params: ScoreParams) -> None:
    global _WORKER
    _WORKER = (open_predictions(pred_path), POLICIES[params.mode](params))


def _run_jobs(jobs: list[tuple[str, str, int]]) -> list[SegScore | str]:
    assert _WORKER is not None
    folder, policy = _WORKER
    return [_guarded_mask(policy, folder, gt, rel, c) for gt, rel, c in jobs]


def _unforeseen(exc: BaseException) -> str:
    return f"internal error while scoring this row ({type(exc).__name__}: {str(exc)[:200]}); scored as invalid"


def _guarded_mask(policy: Policy, folder: PredictionFolder, gt: str, rel: str, c: int) -> SegScore | str:
    """A row's score, or the text of the unforeseen exception its scoring raised (never raised)."""
    try:
        return policy.score_mask(folder, gt, rel, c)
    except Exception as exc:  # noqa: BLE001 - one bad row must not sink the submission
        return _unforeseen(exc)


def _fall_back(policy: Policy, sample: Sample, reason: str, notes: list[str] | None) -> Any:
    """The policy's score for a row whose scoring raised; logged, and noted in the results."""
    log.error("%s (%s): %s", sample.where, sample.image_path, reason)
    if notes is not None:
        notes.append(f"{sample.where}: {reason}")
    return policy.fallback(sample, reason)


def _guarded_row(policy: Policy, sample: Sample, entries: Entries, notes: list[str]) -> Any:
    try:
        return policy.score_row(sample, entries)
    except Exception as exc:  # noqa: BLE001 - one bad row must not sink the submission
        return _fall_back(policy, sample, _unforeseen(exc), notes)


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class _Progress:
    """A tqdm bar on a terminal; otherwise one log line per tenth of the work (readable in a
    non-interactive log)."""

    def __init__(self, total: int, enabled: bool, desc: str):
        self.total, self.done, self.enabled, self.desc = total, 0, enabled and total > 0, desc
        self.bar = None
        self.next_line = max(1, total // 10)
        if self.enabled and sys.stderr.isatty():
            from tqdm import tqdm  # deferred: only with --progress on a terminal

            self.bar = tqdm(total=total, desc=desc, unit="img", leave=False)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and (self.done >= self.next_line or self.done == self.total):
            print(f"{self.desc}: {self.done}/{self.total} rows scored", file=sys.stderr, flush=True)
            self.next_line = self.done + max(1, self.total // 10)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def score_masks(samples: list[Sample], pred_path: str | os.PathLike, folder: PredictionFolder,
                policy: Policy, notes: list[str] | None = None) -> list[SegScore]:
    """Per-row scores (in ``samples`` order) of segmentation rows, in ``policy.params.workers``
    processes (one when there are few rows). A row whose scoring raises gets ``policy.fallback``."""
    raw = _score_masks(samples, pred_path, folder, policy)
    return [_fall_back(policy, s, r, notes) if isinstance(r, str) else r for s, r in zip(samples, raw, strict=True)]


def _score_masks(samples: list[Sample], pred_path: str | os.PathLike, folder: PredictionFolder,
                 policy: Policy) -> list[SegScore | str]:
    params = policy.params
    jobs = [(str(s.mask_file), prediction_mask_relpath(s.mask_path or ""), s.task.num_classes) for s in samples]
    bar = _Progress(len(jobs), params.progress, "segmentation")
    out: list[SegScore | str] = []
    try:
        workers = min(params.workers, max(1, len(jobs) // 8))
        if workers <= 1:
            for gt, rel, c in jobs:
                out.append(_guarded_mask(policy, folder, gt, rel, c))
                bar.update(1)
            return out
        prepare_fast_kernel()  # load it once here: forked workers inherit it instead of each loading it
        chunk = max(1, min(32, len(jobs) // (workers * 8) or 1))
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                 initargs=(str(pred_path), params)) as ex:
            for res in ex.map(_run_jobs, _chunks(jobs, chunk)):
                out += res
                bar.update(len(res))
        return out
    finally:
        bar.close()


# ---- evaluate -------------------------------------------------------------------------------

def _group(root: DataRoot) -> dict[TaskKind, dict[str, list[Sample]]]:
    out: dict[TaskKind, dict[str, list[Sample]]] = {}
    for s in root.samples:
        out.setdefault(s.kind, {}).setdefault(s.task_id, []).append(s)
    return out


def load_labels(labels_root: str | os.PathLike, *, check_files: bool = True) -> DataRoot:
    """A labelled data root; every row must carry its label. With ``check_files`` every image
    header is read and every label mask decoded once, refused when the official reader would
    misread it or a value is not a class (:func:`fmuia.dataset.schema.validate_labels`)."""
    root = load_root(labels_root, check_files=check_files)
    unlabelled = [s for s in root.samples if not s.has_label]
    if unlabelled:
        s = unlabelled[0]
        raise SchemaError(
            f"{labels_root}: {len(unlabelled)} row(s) have no label (first: {s.where}); "
            "pass the labelled root (e.g. synth's labels/), not the hidden test root"
        )
    return validate_labels(root, images=False) if check_files else root


def _label_problems(samples: list[Sample], scores: list[Any]) -> None:
    bad = [(s, r.label_error) for s, r in zip(samples, scores, strict=True) if getattr(r, "label_error", None)]
    if bad:
        raise SchemaError(f"{len(bad)} label row(s) could not be read",
                          [Problem(str(s.csv_file), str(s.row), msg) for s, msg in bad])


def run(policy: Policy, root: DataRoot, folder: PredictionFolder, pred_path: str | os.PathLike) -> dict:
    """Score ``folder`` against ``root`` under ``policy``: the walk kind → task → row."""
    groups = _group(root)
    results: dict[str, Any] = {}
    cases: list[CaseRow] = []
    notes: list[str] = []
    for kind in KIND_ORDER:
        by_task = groups.get(kind)
        if not by_task:
            continue
        samples = [s for rows in by_task.values() for s in rows]
        entries = None
        if kind is TaskKind.SEGMENTATION:
            scores: list[Any] = score_masks(samples, pred_path, folder, policy, notes)
        else:
            entries = policy.read_entries(kind, folder, root)
            if entries is None:  # the kind has no results at all (official: its file is absent)
                results[kind.value] = {}
                continue
            scores = [_guarded_row(policy, s, entries, notes) for s in samples]
        _label_problems(samples, scores)
        blocks: dict[str, dict] = {}
        i = 0
        for task_id, rows in by_task.items():
            blocks[task_id], task_cases = policy.task_block(rows[0].task, rows, scores[i : i + len(rows)])
            cases += task_cases
            i += len(rows)
        results[kind.value] = blocks
        if entries is not None:
            notes += policy.kind_notes(kind, entries, blocks)
    return policy.finish(results, cases, notes, folder)


def evaluate(pred_path: str | os.PathLike, labels_root: str | os.PathLike, *, mode: str = "strict",
             workers: int | None = None, n_bootstrap: int = 1000, seed: int = 0, progress: bool = False) -> dict:
    """Score the predictions at ``pred_path`` (folder or ``.zip``) against ``labels_root``.

    ``mode`` picks the policy: ``"official"`` reproduces the published scorer (its exact JSON
    shape); ``"strict"`` (the default) scores every row, adds HD95, COCO AP, bootstrap intervals
    (``n_bootstrap``, ``seed``), ``per_case`` rows, ``notes`` and the nine ``aggregates``.
    ``workers`` defaults to the usable CPUs. Returns the results object described in
    :mod:`evaluation.schema`. Raises :class:`FmuiaError` for a bad labels root or an unopenable
    prediction path; never for bad prediction content.

    Example::

        results = evaluate("preds/", "data/labels", mode="official")
        write_results(results, "results.json")
    """
    if mode not in POLICIES:
        raise FmuiaError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    params = ScoreParams(mode=mode, workers=max(1, int(workers)) if workers is not None else default_workers(),
                         n_bootstrap=int(n_bootstrap), seed=int(seed), progress=progress)
    # official mode reads the labels exactly as the published scorer does, whatever they hold
    root = load_labels(labels_root, check_files=mode != "official")
    with open_predictions(pred_path) as folder:
        return run(POLICIES[mode](params), root, folder, Path(pred_path))
