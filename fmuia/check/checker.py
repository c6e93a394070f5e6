"""The checker walk: match a prediction folder's entries and masks to the data root's CSV rows.

:func:`check_predictions` opens the folder or zip (:mod:`fmuia.predfolder`, which refuses unsafe
files), then :class:`_Checker` applies the generic rules and hands each matched record to its
kind's rule (:data:`fmuia.check.rules.RULES`):

* every CSV row has exactly one prediction (missing → error, duplicate → error; a task with
  no prediction at all is reported in one line, not one per row);
* no unknown task, no task of another kind in a kind's file, no unknown image for a task;
* the folder's JSON files are UTF-8 JSON lists, entries are objects of the right field types;
* files/links resolving outside the folder, zip-slip names and links in archives are refused
  (never read) and reported; JSON over the size cap, images over the pixel cap and archives
  inflating past their cap are refused with a clear message;
* a zip whose files sit in one top folder instead of the archive root is reported as such;
* files nobody asked for are warnings.

Masks, the hot path, are read and decoded once each, by the reader strict and official scoring
use (:meth:`fmuia.predfolder.PredictionFolder.read_prediction_mask`: Pillow and the emulated
OpenCV read of the official scorer; the stricter decides), in a thread pool: Pillow and zlib
release the GIL while decoding. JSON files go through the one JSON reader too
(:meth:`~fmuia.predfolder.PredictionFolder.read_json_file`), so a file check calls unreadable is
unreadable for the scorers, and the reverse.
"""

from __future__ import annotations

import os
import sys
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fmuia.check.report import CheckReport, CheckUsageError, Finding, TaskCounts, err, warn
from fmuia.check.rules import NEEDS_SIZE, RULES
from fmuia.check.sizes import SizeCache
from fmuia.dataset.schema import DataRoot, Sample, load_root, prediction_mask_relpath
from fmuia.errors import FmuiaError, Problem, UnsafeInputError
from fmuia.formats import parse_entry
from fmuia.predfolder import PredictionFolder, extracted_name, open_predictions
from fmuia.tasks import PREDICTION_FILES, TaskKind

__all__ = ["check_predictions", "load_data_root"]


def _default_workers() -> int:
    """Threads for decoding masks: the CPUs this process may run on, at most 4."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        n = os.cpu_count() or 1
    return max(1, min(4, n))


def _map_chunked(fn: Callable, jobs: list, workers: int, progress: bool) -> list:
    """``[fn(j) for j in jobs]``, in chunks of 64 over ``workers`` threads (order kept); a progress bar
    on stderr when ``progress`` and there are over 200 jobs."""
    bar = None
    if progress and len(jobs) > 200:
        # Lazy: tqdm adds ~20-50 ms to `fmuia check` start-up (python -X importtime) and is only
        # needed for a bar on a terminal over 200+ masks.
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="masks", unit="mask", file=sys.stderr, leave=False)
    chunk = 64
    chunks = [jobs[i : i + chunk] for i in range(0, len(jobs), chunk)]

    def run(c: list) -> list:
        out = [fn(j) for j in c]
        if bar is not None:
            bar.update(len(c))
        return out

    try:
        if workers <= 1 or len(chunks) <= 1:
            parts = [run(c) for c in chunks]
        else:
            with ThreadPoolExecutor(workers) as pool:
                parts = list(pool.map(run, chunks))
    finally:
        if bar is not None:
            bar.close()
    return [r for p in parts for r in p]


def _wholly_absent(samples: Iterable[Sample], present: Callable[[Sample], bool]) -> dict[str, int | None]:
    """Tasks none of whose rows is ``present`` → their row count (reported as one line)."""
    total: dict[str, int] = {}
    hit: set[str] = set()
    for s in samples:
        total[s.task_id] = total.get(s.task_id, 0) + 1
        if present(s):
            hit.add(s.task_id)
    return {t: n for t, n in total.items() if t not in hit}


def _desc(s: Sample) -> str:
    return f"task {s.task_id!r}, image {s.image_path!r}"


def _norm_key(path: str) -> str:
    return os.path.normpath(path.replace("\\", "/")).replace("\\", "/").lstrip("./")


class _Checker:
    """One check run: the generic rules over one opened folder, the per-kind rules via :data:`RULES`;
    every finding goes into ``report``."""

    def __init__(self, folder: PredictionFolder, root: DataRoot, report: CheckReport, workers: int, progress: bool):
        self.folder, self.root, self.report = folder, root, report
        self.workers, self.progress = workers, progress
        self.sizes = SizeCache()
        self.by_kind: dict[TaskKind, dict[tuple[str, str], Sample]] = {k: {} for k in TaskKind}
        for s in root.samples:
            self.by_kind[s.kind][s.key] = s
        self.files = set(folder.files())
        self.refused = dict(folder.refused())
        self.reported_refused: set[str] = set()
        # Files whose names hold backslashes: on the platform (Linux) these are not folder separators.
        self.backslashed = {f.replace("\\", "/"): f for f in self.files if "\\" in f}
        # Hints for image paths that differ from the CSV string only by normalisation.
        self.hints: dict[tuple[str, str], str] = {(s.task_id, _norm_key(s.image_path)): s.image_path for s in root.samples}

    def add(self, file: str, where: str, finding: Finding, task_id: str | None) -> None:
        sev, msg = finding
        self.report.add(Problem(file, where, msg, sev), task_id)

    # generic -----------------------------------------------------------------------------------
    def expected_files(self) -> set[str]:
        names = set(PREDICTION_FILES.values())  # checked whenever present (entries of absent tasks are errors)
        names |= {prediction_mask_relpath(s.mask_path or "") for s in self.by_kind[TaskKind.SEGMENTATION].values()}
        return names

    def nested_top_folder(self, files: list[str], expected: set[str]) -> str | None:
        """The single top folder the expected files sit in, when none of them is at the root."""
        if not expected or set(files) & expected:
            return None
        tops = sorted({f.split("/", 1)[0] for f in files if "/" in f} - {"__MACOSX"})
        for top in tops:
            inner = {f[len(top) + 1 :] for f in files if f.startswith(top + "/")}
            if inner & expected:
                return top
        return None

    def refused_problem(self, rel: str, task_id: str | None = None) -> bool:
        reason = self.refused.get(rel) or self.folder.refusal(rel)
        if reason is None:
            return False
        self.add(rel, "", err(f"not read: {reason}; expected a regular file inside the prediction folder"), task_id)
        self.reported_refused.add(rel)
        return True

    def backslash_hint(self, rel: str) -> str:
        alias = self.backslashed.get(rel)
        if alias is None:
            return ""
        return (f"; the archive has {alias!r}, but a backslash is no folder separator on the platform (Linux): it is "
                "extracted as one file of that name, not at this path; zip with '/' (`fmuia pack` does)")

    # JSON kinds ---------------------------------------------------------------------------------
    def check_json_kind(self, kind: TaskKind) -> None:
        rel = PREDICTION_FILES[kind]
        expected = self.by_kind[kind]
        if self.refused_problem(rel):
            return
        try:
            loaded = self.folder.read_json_file(kind)
        except FmuiaError as exc:  # not what json.load reads, not a list, over the size cap, not extractable
            self.add(rel, "", err(f"{exc.message}; none of its entries could be checked"), None)
            return
        except Exception as exc:  # noqa: BLE001 - never a crash: anything unforeseen is a finding
            self.add(rel, "", err(f"cannot read the file ({type(exc).__name__}: {exc}); none of its entries could be checked"), None)
            return
        if loaded is None:
            if expected:
                per_task: dict[str, int] = {}
                for t, _ in expected:
                    per_task[t] = per_task.get(t, 0) + 1
                for t, n in per_task.items():
                    self.add(rel, "", err(f"file missing; expected {n} entries for task {t!r}{self.backslash_hint(rel)}"), t)
            return
        entries = loaded.entries
        for where, message in loaded.warnings:
            self.add(rel, where, warn(message), None)
        rule = RULES[kind]
        seen: dict[tuple[str, str], int] = {}
        for i, entry in enumerate(entries):
            where = f"entry {i}"
            task_id = entry.get("task_id") if isinstance(entry, dict) else None
            image_path = entry.get("image_path") if isinstance(entry, dict) else None
            key = (task_id, image_path) if isinstance(task_id, str) and isinstance(image_path, str) else None
            sample = expected.get(key) if key else None
            counted = sample.task_id if sample else None
            if sample is not None:
                if key in seen:
                    self.add(rel, where, err(f"{_desc(sample)}: duplicate entry (first at entry {seen[key]}); expected exactly one per CSV row"), counted)
                    continue
                seen[key] = i
                self.report.tasks[sample.task_id].found += 1
            try:
                pred = parse_entry(kind, entry)  # the parser strict scoring uses
            except Exception as exc:  # noqa: BLE001 - FormatError, or anything else one entry provokes
                why = exc.message if isinstance(exc, FmuiaError) else f"unreadable entry ({type(exc).__name__})"
                prefix = f"{_desc(sample)}: " if sample else ""
                self.add(rel, where, err(prefix + why), counted)
                continue
            if sample is None:
                self.unknown(kind, rel, where, pred.task_id, pred.image_path)
                continue
            size = None
            if kind in NEEDS_SIZE:
                try:
                    size = self.sizes.get(sample.image_file)
                except FmuiaError as exc:
                    self.add(rel, where, err(f"{_desc(sample)}: cannot check against the image: {exc.message}"), counted)
                    continue
            findings = rule(pred, sample, size)
            for f in findings:
                self.add(rel, where, (f[0], f"{_desc(sample)}: {f[1]}"), counted)
            if not any(f[0] == "error" for f in findings):
                self.report.tasks[sample.task_id].valid += 1
        self.missing(kind, rel, set(seen))

    def unknown(self, kind: TaskKind, rel: str, where: str, task_id: str, image_path: str) -> None:
        spec = self.root.tasks.get(task_id)
        if spec is None:
            known = sorted(t for t, s in self.root.tasks.items() if s.kind is kind)
            msg = f"unknown task_id {task_id!r}: no CSV row of the data root has it; expected one of {known}"
        elif spec.kind is not kind:
            where_ok = PREDICTION_FILES.get(spec.kind, "a mask PNG per row under Segmentation/")
            msg = f"task {task_id!r} is a {spec.kind.value} task; its predictions belong in {where_ok}, not {rel}"
        else:
            hint = self.hints.get((task_id, _norm_key(image_path)))
            extra = f"; expected the CSV string unchanged: {hint!r}" if hint else "; expected an image_path string from the task's CSV rows"
            msg = f"task {task_id!r}: image {image_path!r} is not in the data root's CSVs for this task{extra}"
            self.add(rel, where, err(msg), task_id)
            return
        self.add(rel, where, err(msg), None)

    def missing(self, kind: TaskKind, rel: str, seen: set[tuple[str, str]]) -> None:
        """One error per missing row; one line for a task with no entry at all."""
        absent = _wholly_absent(self.by_kind[kind].values(), lambda s: s.key in seen)
        for key, s in self.by_kind[kind].items():
            if key in seen:
                continue
            n = absent.get(s.task_id, 0)
            if n is None:
                continue  # already reported as a whole task
            if n > 1:
                self.add(rel, "", err(f"no entry for any of the {n} rows of task {s.task_id!r}; expected one per CSV row"), s.task_id)
                absent[s.task_id] = None
                continue
            self.add(rel, "", err(f"missing entry for {_desc(s)} (CSV {s.where}); expected exactly one"), s.task_id)

    # segmentation -------------------------------------------------------------------------------
    def check_masks(self) -> None:
        samples = list(self.by_kind[TaskKind.SEGMENTATION].values())
        if not samples:
            return
        jobs = [(s, prediction_mask_relpath(s.mask_path or "")) for s in samples]
        results = _map_chunked(self._check_mask, jobs, self.workers, self.progress)
        present = {rel for (_, rel), (found, _) in zip(jobs, results, strict=True) if found or rel in self.refused}
        absent = _wholly_absent(samples, lambda s: prediction_mask_relpath(s.mask_path or "") in present)
        for (s, rel), (found, findings) in zip(jobs, results, strict=True):
            if not found:
                n = absent.get(s.task_id, 0)
                if n is None:
                    continue  # already reported as a whole task
                if n > 1:
                    folder = os.path.dirname(rel) + "/"
                    self.add(folder, "", err(f"no mask for any of the {n} rows of task {s.task_id!r}; expected one 8-bit PNG "
                                             f"per row, e.g. {rel!r}{self.backslash_hint(rel)}"), s.task_id)
                    absent[s.task_id] = None
                elif not self.refused_problem(rel, s.task_id):
                    self.add(rel, "", err(f"missing mask for {_desc(s)} (CSV {s.where}); expected an 8-bit PNG of class "
                                          f"indices{self.backslash_hint(rel)}"), s.task_id)
                continue
            self.report.tasks[s.task_id].found += 1
            for f in findings:
                self.add(rel, "", (f[0], f"{_desc(s)}: {f[1]}"), s.task_id)
            if not any(f[0] == "error" for f in findings):
                self.report.tasks[s.task_id].valid += 1

    def _check_mask(self, job: tuple[Sample, str]) -> tuple[bool, list[Finding]]:
        s, rel = job
        if not self.folder.exists(rel):
            return False, []
        try:
            mask = self.folder.read_prediction_mask(rel)  # the reader strict and official scoring use
        except FileNotFoundError:
            return False, []
        except UnsafeInputError as exc:
            return True, [err(f"refused: {exc.message}")]
        except FmuiaError as exc:  # a member that cannot be extracted
            return True, [err(exc.message)]
        except Exception as exc:  # noqa: BLE001 - anything unforeseen is a finding, never a crash
            return True, [err(f"cannot read the file ({type(exc).__name__}: {exc})")]
        if mask.error is not None:
            return True, RULES[TaskKind.SEGMENTATION](mask, s, None)
        try:
            size = self.sizes.get(s.image_file)
        except FmuiaError as exc:
            return True, [err(f"cannot check against the image: {exc.message}")]
        return True, RULES[TaskKind.SEGMENTATION](mask, s, size)

    # extras ---------------------------------------------------------------------------------------
    def check_extras(self, files: Iterable[str], expected: set[str]) -> None:
        expected = expected | {extracted_name(e) for e in expected}
        verify = getattr(self.folder, "verify", None)  # a zip: every member must extract on the platform
        for f in files:
            if f in expected:
                continue
            broken = verify(f) if verify is not None else None
            if broken is not None:
                self.add(f, "", err(f"cannot read the file ({broken}): the platform's unzip stops at it, so the "
                                    "files after it in the archive would be missing; remove or re-add it"), None)
                continue
            meant = f.replace("\\", "/")
            hint = f" (its backslashes are no folder separators on the platform: meant as {meant!r}?)" if meant in expected else ""
            self.add(f, "", warn(f"unexpected file: not asked for by the data root's CSVs; it is ignored{hint}"), None)
        for name, reason in sorted(self.refused.items()):
            if name not in self.reported_refused:
                self.add(name, "", err(f"not read: {reason}"), None)


def load_data_root(data: DataRoot | str | os.PathLike) -> DataRoot:
    """``data`` itself if already loaded, else :func:`load_root`; errors become :class:`CheckUsageError`."""
    if isinstance(data, DataRoot):
        return data
    try:
        return load_root(data)
    except FmuiaError as exc:
        raise CheckUsageError(f"cannot read the data root: {exc.message}", exc.problems) from None
    except OSError as exc:
        raise CheckUsageError(f"cannot read the data root {data}: {exc}") from None


def check_predictions(
    pred_path: str | os.PathLike,
    data: DataRoot | str | os.PathLike,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> CheckReport:
    """Validate a prediction folder or ``.zip`` against a data root (a path or a loaded :class:`DataRoot`).

    Never raises for a bad submission: every problem is in the returned report. Raises
    :class:`CheckUsageError` when the check cannot run (no such path, neither a folder nor a zip,
    unreadable data root).

    >>> report = check_predictions("preds/", "data/test")      # doctest: +SKIP
    >>> report.ok, report.tasks["fetal_head"].valid             # doctest: +SKIP
    """
    root = load_data_root(data)
    p = Path(pred_path)
    if not p.exists():
        raise CheckUsageError(f"{p}: no such prediction folder or zip")
    if not p.is_dir() and not (p.is_file() and zipfile.is_zipfile(p)):
        raise CheckUsageError(f"{p}: expected a prediction folder or a .zip archive")
    tasks = {}
    for s in root.samples:
        c = tasks.get(s.task_id)
        if c is None:
            c = tasks[s.task_id] = TaskCounts(s.task_id, s.kind)
        c.expected += 1
    report = CheckReport(str(p), str(root.root), tasks)
    try:
        folder = open_predictions(p)
    except FmuiaError as exc:  # bad zip, zip bomb, archive over the inflate cap
        report.add(Problem(p.name, "", exc.message))
        return report
    with folder:
        checker = _Checker(folder, root, report, workers or _default_workers(), progress)
        files = folder.files()
        expected = checker.expected_files()
        top = checker.nested_top_folder(files, expected)
        if top is not None:
            where = "the archive root" if p.is_file() else f"the top of {p}"
            report.add(
                Problem(
                    top + "/",
                    "",
                    f"the prediction files sit inside the folder {top!r}; expected them at {where} "
                    "(zip the folder's contents, not the folder: `fmuia pack` does it right)",
                )
            )
            return report
        for kind in PREDICTION_FILES:
            checker.check_json_kind(kind)
        checker.check_masks()
        checker.check_extras(files, expected)
    return report
