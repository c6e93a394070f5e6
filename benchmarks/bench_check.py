"""Benchmark ``fmuia check`` on a 10,000-entry submission with its masks.

Builds, in a temporary folder, a data root with rows spread over all 27 tasks like the real
test set (about 12/27 of them segmentation: ~4,400 masks of ~256 px), writes a perfect
prediction folder (masks as real PNGs of nested ellipses), then times
:func:`fmuia.check.check_predictions` with 2 workers (folder and zip). Target: < 10 s.

    python benchmarks/bench_check.py [--entries 10000] [--workers 2] [--all-masks] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import json
import os
import pstats
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from fmuia.check import check_predictions
from fmuia.dataset import load_root
from fmuia.dataset.masks import encode_mask_png
from fmuia.tasks import PREDICTION_FILES, TaskKind, list_tasks

SIZES = [(256, 256), (240, 288), (320, 240), (288, 224), (256, 320)]


def _ellipses(w: int, h: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    mask = np.zeros((h, w), np.uint8)
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    for c in range(1, n_classes):
        r = (n_classes - c + 1) / (n_classes + 1)
        rx, ry = r * w * 0.4, r * h * 0.35
        mask[((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1] = c
    return mask


def build(out: Path, n_entries: int = 10_000, seed: int = 0, all_masks: bool = False) -> tuple[Path, Path]:
    """Write ``out/root`` (a test data root) and ``out/pred`` (a perfect prediction folder).

    ``all_masks``: segmentation tasks only (every entry is a mask: the worst case)."""
    rng = np.random.default_rng(seed)
    root, pred = out / "root", out / "pred"
    (root / "csv_files").mkdir(parents=True)
    base = out / "base"
    base.mkdir()
    base_images = []
    for i, (w, h) in enumerate(SIZES):
        img = (rng.random((h, w)) * 255).astype(np.uint8)
        p = base / f"b{i}.png"
        Image.fromarray(img).save(p)
        base_images.append((p, w, h))
    tasks = list_tasks(TaskKind.SEGMENTATION if all_masks else None)
    per_task = [n_entries // len(tasks) + (i < n_entries % len(tasks)) for i in range(len(tasks))]
    entries: dict[TaskKind, list[dict]] = {k: [] for k in PREDICTION_FILES}
    for spec, n in zip(tasks, per_task, strict=True):
        folder = {
            TaskKind.SEGMENTATION: f"Segmentation/Two/{spec.task_id} data, (v2)",
            TaskKind.CLASSIFICATION: f"Classification/{spec.task_id}",
            TaskKind.DETECTION: f"Detection/{spec.task_id}\xa0images",
            TaskKind.REGRESSION: f"Regression/{spec.task_id}",
        }[spec.kind]
        (root / folder / "img").mkdir(parents=True)
        header = ["image_path", "task_id", "task_name", "num_classes"]
        if spec.kind is TaskKind.SEGMENTATION:
            header.append("mask_path")
            (pred / folder / "mask").mkdir(parents=True)
        rows = []
        for j in range(n):
            src, w, h = base_images[j % len(base_images)]
            os.link(src, root / folder / "img" / f"{j:05d}.png")
            image_path = f"../{folder}/img/{j:05d}.png"
            row = [image_path, spec.task_id, spec.kind.csv_name, spec.num_classes]
            if spec.kind is TaskKind.SEGMENTATION:
                mask_path = f"../{folder}/mask/{j:05d}.png"
                row.append(mask_path)
                (pred / mask_path.replace("../", "")).write_bytes(encode_mask_png(_ellipses(w, h, spec.num_classes, rng)))
            elif spec.kind is TaskKind.CLASSIFICATION:
                probs = rng.dirichlet(np.ones(spec.num_classes))
                entries[spec.kind].append(
                    {"image_path": image_path, "task_id": spec.task_id, "predicted_class": int(probs.argmax()), "predicted_probs": probs.tolist()}
                )
            elif spec.kind is TaskKind.DETECTION:
                x0, y0 = rng.uniform(0, 0.4, 2)
                x1, y1 = x0 + rng.uniform(0.1, 0.5), y0 + rng.uniform(0.1, 0.5)
                norm = [x0, y0, x1, y1]
                entries[spec.kind].append(
                    {"image_path": image_path, "task_id": spec.task_id, "bbox_normalized": norm,
                     "bbox_pixels": [norm[0] * w, norm[1] * h, norm[2] * w, norm[3] * h], "score": 0.9}
                )
            else:
                norm = rng.uniform(0, 1, 2 * spec.num_classes).tolist()
                pix = [v * (w if i % 2 == 0 else h) for i, v in enumerate(norm)]
                entries[spec.kind].append(
                    {"image_path": image_path, "task_id": spec.task_id, "predicted_points_normalized": norm, "predicted_points_pixels": pix}
                )
            rows.append(row)
        with open(root / "csv_files" / f"{spec.task_id}.csv", "w", newline="", encoding="utf-8") as fh:
            wr = csv.writer(fh)
            wr.writerow(header)
            wr.writerows(rows)
    for kind, items in entries.items():
        if items:
            (pred / PREDICTION_FILES[kind]).write_text(json.dumps(items), encoding="utf-8")
    return root, pred


def zip_folder(pred: Path, out_zip: Path) -> Path:
    with zipfile.ZipFile(out_zip, "w") as zf:
        for f in sorted(pred.rglob("*")):
            if f.is_file():
                rel = f.relative_to(pred).as_posix()
                zf.write(f, rel, compress_type=zipfile.ZIP_STORED if rel.endswith(".png") else zipfile.ZIP_DEFLATED)
    return out_zip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per input; the best is reported")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one folder check")
    ap.add_argument("--all-masks", action="store_true", help="segmentation tasks only: every entry is a mask")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_check_"))
    try:
        t0 = time.perf_counter()
        root_dir, pred = build(tmp, args.entries, all_masks=args.all_masks)
        zpath = zip_folder(pred, tmp / "predictions.zip")
        n_masks = sum(1 for _ in pred.rglob("*.png"))
        print(f"built {args.entries} entries ({n_masks} masks) in {time.perf_counter() - t0:.1f} s")

        t0, c0 = time.perf_counter(), time.process_time()
        root = load_root(root_dir)
        t_load = time.perf_counter() - t0
        print(f"load_root: {t_load:.2f} s wall ({time.process_time() - c0:.2f} s CPU)")
        print(f"machine load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall times grow with it)")

        for label, path in (("folder", pred), ("zip", zpath)):
            best, best_cpu = float("inf"), float("inf")
            for _ in range(args.repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                report = check_predictions(path, root, workers=args.workers)
                best = min(best, time.perf_counter() - t0)
                best_cpu = min(best_cpu, time.process_time() - c0)  # all threads of this process
            assert report.ok, report.problems[:5]
            found = sum(c.found for c in report.tasks.values())
            assert found == args.entries, found
            print(
                f"check {label:6s} ({args.workers} workers): {best:.2f} s wall ({best_cpu:.2f} s CPU) for {found} entries "
                f"= {found / best:,.0f} entries/s; with load_root {best + t_load:.2f} s (target < 10 s)"
            )
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            check_predictions(pred, root, workers=1)
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
