"""Score a prediction folder (or zip) against a labelled data root.

:func:`evaluate` is the one entry point; ``mode`` picks the policy:

- ``"official"`` reproduces the challenge's published scorer, quirks included
  (:mod:`evaluation.official`); the result has exactly the official JSON shape.
- ``"strict"`` scores every label row and never lets a malformed prediction help
  (:mod:`evaluation.strict`); it adds HD95, COCO AP, bootstrap intervals, ``per_case`` rows and
  the nine leaderboard ``aggregates``.

Segmentation rows are scored in a process pool (``workers``); each worker opens the prediction
folder itself and reads the masks it scores, and only per-image numbers travel back, so memory
does not grow with the number of images. This module imports no torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from evaluation import official, strict
from evaluation.aggregates import compute_aggregates
from evaluation.results import write_results
from fmuia.dataset.schema import DataRoot, Sample, load_root, prediction_mask_relpath
from fmuia.errors import FmuiaError, Problem, SchemaError
from fmuia.predfolder import PredictionFolder, open_predictions
from fmuia.tasks import PREDICTION_FILES, TaskKind

__all__ = ["evaluate", "write_results", "MODES"]

log = logging.getLogger("evaluation")

MODES = ("official", "strict")
KIND_ORDER = (TaskKind.SEGMENTATION, TaskKind.CLASSIFICATION, TaskKind.DETECTION, TaskKind.REGRESSION)

# per-mode segmentation job: (folder, label mask file, prediction relpath, num_classes) -> dict
SEG_JOBS: dict[str, Callable[[PredictionFolder, str, str, int], dict]] = {
    "official": official.seg_job,
    "strict": strict.seg_job,
}

# ---- the segmentation pool --------------------------------------------------------------------

_WORKER_FOLDER: PredictionFolder | None = None


def _init_worker(pred_path: str) -> None:
    global _WORKER_FOLDER
    _WORKER_FOLDER = open_predictions(pred_path)


def _run_jobs(jobs: list[tuple[str, str, str, int]]) -> list[dict]:
    assert _WORKER_FOLDER is not None
    return [SEG_JOBS[mode](_WORKER_FOLDER, gt, rel, c) for mode, gt, rel, c in jobs]


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def score_segmentation_rows(samples: list[Sample], pred_path: str | os.PathLike, folder: PredictionFolder,
                            mode: str, workers: int = 1, progress: bool = False) -> list[dict]:
    """Per-image results (in ``samples`` order) of every segmentation row."""
    jobs = [(mode, str(s.mask_file), prediction_mask_relpath(s.mask_path or ""), s.task.num_classes) for s in samples]
    bar = _progress(len(jobs), progress)
    out: list[dict] = []
    try:
        if workers <= 1 or len(jobs) < 2:
            fn = SEG_JOBS[mode]
            for _, gt, rel, c in jobs:
                out.append(fn(folder, gt, rel, c))
                bar.update(1)
            return out
        chunk = max(1, min(32, len(jobs) // (workers * 8) or 1))
        if mode == "official":  # the only mode that uses the compiled metric kernel (no HD95)
            # compile (or load) it once here: forked workers inherit it instead of each loading it
            from evaluation.metrics import prepare_fast_kernel

            prepare_fast_kernel()
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(str(pred_path),)) as ex:
            for res in ex.map(_run_jobs, _chunks(jobs, chunk)):
                out += res
                bar.update(len(res))
        return out
    finally:
        bar.close()


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool) -> Any:
    if not enabled or total == 0:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="segmentation", unit="img", leave=False)


# ---- evaluate -------------------------------------------------------------------------------

def _group(root: DataRoot) -> dict[TaskKind, dict[str, list[Sample]]]:
    out: dict[TaskKind, dict[str, list[Sample]]] = {}
    for s in root.samples:
        out.setdefault(s.kind, {}).setdefault(s.task_id, []).append(s)
    return out


def _load_labels(labels_root: str | os.PathLike) -> DataRoot:
    root = load_root(labels_root)
    unlabelled = [s for s in root.samples if not s.has_label]
    if unlabelled:
        s = unlabelled[0]
        raise SchemaError(
            f"{labels_root}: {len(unlabelled)} row(s) have no label (first: {s.where}); "
            "pass the labelled root (e.g. synth's labels/), not the hidden test root"
        )
    return root


def _official(root: DataRoot, groups: dict, folder: PredictionFolder, pred_path: str | os.PathLike,
              workers: int, progress: bool, **_: Any) -> dict:
    results: dict[str, Any] = {}
    for kind in KIND_ORDER:
        if kind not in groups:
            continue
        by_task = groups[kind]
        if kind is TaskKind.SEGMENTATION:
            samples = [s for rows in by_task.values() for s in rows]
            per_image = score_segmentation_rows(samples, pred_path, folder, "official", workers, progress)
            results[kind.value] = {}
            i = 0
            for task_id, rows in by_task.items():
                part = per_image[i : i + len(rows)]
                i += len(rows)
                results[kind.value][task_id] = official.seg_task_result(rows[0].task.num_classes, part)
        else:
            results[kind.value] = official.score_json_kind(kind, folder, root, by_task)
    return results


def _strict(root: DataRoot, groups: dict, folder: PredictionFolder, pred_path: str | os.PathLike,
            workers: int, progress: bool, n_bootstrap: int, seed: int) -> dict:
    results: dict[str, Any] = {}
    per_case: list[dict] = []
    notes: list[str] = []
    for kind in KIND_ORDER:
        if kind not in groups:
            continue
        by_task = groups[kind]
        if kind is TaskKind.SEGMENTATION:
            samples = [s for rows in by_task.values() for s in rows]
            per_image = score_segmentation_rows(samples, pred_path, folder, "strict", workers, progress)
            bad = [(s, r["label_error"]) for s, r in zip(samples, per_image, strict=True) if "label_error" in r]
            if bad:
                raise SchemaError(f"{len(bad)} label mask(s) could not be read",
                                  [Problem(str(s.csv_file), str(s.row), msg) for s, msg in bad])
            results[kind.value] = {}
            i = 0
            for task_id, rows in by_task.items():
                part = per_image[i : i + len(rows)]
                i += len(rows)
                block, cases = strict.seg_task_result(rows[0].task, rows, part, n_bootstrap, seed)
                results[kind.value][task_id] = block
                per_case += cases
        else:
            block, cases, kind_notes = strict.score_json_kind(kind, folder, root, by_task, n_bootstrap, seed)
            results[kind.value] = block
            per_case += cases
            name = PREDICTION_FILES[kind]
            notes += [n if n.startswith(name) else f"{name}: {n}" for n in kind_notes]
    refused = folder.refused()
    notes += [f"{name}: {why}" for name, why in refused]
    results["aggregates"] = compute_aggregates(results)
    results["per_case"] = per_case
    results["notes"] = notes
    results["mode"] = "strict"
    return results


_SCORERS: dict[str, Callable[..., dict]] = {"official": _official, "strict": _strict}


def evaluate(pred_path: str | os.PathLike, labels_root: str | os.PathLike, *, mode: str = "strict",
             workers: int = 1, n_bootstrap: int = 1000, seed: int = 0, progress: bool = False) -> dict:
    """Score the predictions at ``pred_path`` (folder or ``.zip``) against ``labels_root``.

    Returns the results object: ``{"segmentation": {task: {...}}, "classification": ...,
    "detection": ..., "regression": ...}`` (a kind appears when the labels have it). Strict mode
    adds ``"aggregates"``, ``"per_case"``, ``"notes"`` and, per task, ``"ci95"`` and more metrics.
    ``n_bootstrap`` and ``seed`` apply to strict mode only. Raises :class:`FmuiaError` for a bad
    labels root or an unopenable prediction path; never for bad prediction content.

    Example::

        results = evaluate("preds/", "data/labels", mode="official")
        write_results(results, "results.json")
    """
    if mode not in _SCORERS:
        raise FmuiaError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    root = _load_labels(labels_root)
    groups = _group(root)
    with open_predictions(pred_path) as folder:
        return _SCORERS[mode](root, groups, folder, Path(pred_path), workers=max(1, int(workers)),
                              progress=progress, n_bootstrap=int(n_bootstrap), seed=int(seed))
