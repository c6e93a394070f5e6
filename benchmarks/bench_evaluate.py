"""Benchmark: official-mode segmentation scoring, fast scorer vs the plain reference.

Generates a synth-like labelled root of N segmentation masks (default 2,000; 256-512 px, 2-5
classes, ellipse-shaped structures) and predictions that disagree the way a model does
(shifted/resized structures, boundary noise, false-positive blobs, missed structures). Then it
scores them with ``evaluation.scoring.evaluate(mode="official")`` and with the plain reference of
``tests/reference_scorer.py`` (per image, per class, SimpleITK), each in its own process, and
prints images/s (wall-clock and per CPU-second), the speed ratio, whether the numbers are
identical (1e-9), and the peak RSS of the largest of the scorer's processes (VmHWM for the
scorer's own process, ``getrusage(RUSAGE_CHILDREN)`` for its pool workers).

    python benchmarks/bench_evaluate.py                 # 2,000 masks, reference on all of them
    python benchmarks/bench_evaluate.py --n 500 --ref-n 200 --workers 2
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TASKS = [("breast_lesion", 2), ("cardiac_multi", 4), ("cervix_multi", 3), ("fetal_abdomen_multi", 5),
         ("head_symphysis_multi", 3), ("thyroid_nodule", 2)]


def _ellipse(h: int, w: int, rng: np.random.Generator, scale: float = 1.0) -> tuple:
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    ry, rx = rng.uniform(0.05, 0.22) * h * scale, rng.uniform(0.05, 0.22) * w * scale
    return cy, cx, ry, rx, rng.uniform(0, np.pi)


def _draw(m: np.ndarray, e: tuple, value: int, yy: np.ndarray, xx: np.ndarray) -> None:
    cy, cx, ry, rx, a = e
    y, x = yy - cy, xx - cx
    u = (x * np.cos(a) + y * np.sin(a)) / rx
    v = (-x * np.sin(a) + y * np.cos(a)) / ry
    m[u * u + v * v <= 1.0] = value


def make_pair(rng: np.random.Generator, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A label mask and a plausible imperfect prediction of it."""
    h, w = int(rng.integers(256, 513)), int(rng.integers(256, 513))
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    gt = np.zeros((h, w), np.uint8)
    pred = np.zeros((h, w), np.uint8)
    for c in range(1, num_classes):
        e = _ellipse(h, w, rng)
        if rng.random() < 0.05:
            continue  # class absent from this image
        _draw(gt, e, c, yy, xx)
        if rng.random() < 0.07:
            continue  # structure missed by the model
        cy, cx, ry, rx, a = e
        jitter = (cy + rng.normal(0, 0.02 * h), cx + rng.normal(0, 0.02 * w), ry * rng.uniform(0.85, 1.15),
                  rx * rng.uniform(0.85, 1.15), a + rng.normal(0, 0.1))
        _draw(pred, jitter, c, yy, xx)
        if rng.random() < 0.25:  # a false-positive blob elsewhere
            _draw(pred, _ellipse(h, w, rng, 0.2), c, yy, xx)
    noise = rng.random((h, w)) < 0.0005
    pred[noise] = rng.integers(0, num_classes, int(noise.sum()))
    return gt, pred


def build(out: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """Write ``out/labels`` (a labelled root) and ``out/pred`` (a prediction folder)."""
    rng = np.random.default_rng(seed)
    labels, pred = out / "labels", out / "pred"
    (labels / "csv_files").mkdir(parents=True)
    tiny = out / "tiny.png"
    Image.new("L", (4, 4)).save(tiny)
    tiny_bytes = tiny.read_bytes()
    rows: dict[str, list[str]] = {t: [] for t, _ in TASKS}
    for i in range(n):
        task, c = TASKS[i % len(TASKS)]
        gt, pm = make_pair(rng, c)
        img = labels / "Segmentation" / task / "img" / f"{i:05d}.png"
        mask_rel = f"Segmentation/{task}/mask/{i:05d}.png"
        img.parent.mkdir(parents=True, exist_ok=True)
        img.write_bytes(tiny_bytes)
        for root, arr in ((labels, gt), (pred, pm)):
            p = root / mask_rel
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr, "L").save(p, compress_level=1)
        rows[task].append(f"../Segmentation/{task}/img/{i:05d}.png,{task},segmentation,{c},../{mask_rel}")
    for task, lines in rows.items():
        if lines:
            (labels / "csv_files" / f"{task}.csv").write_text(
                "image_path,task_id,task_name,num_classes,mask_path\n" + "\n".join(lines) + "\n")
    return labels, pred


def subset(labels: Path, out: Path, k: int) -> Path:
    """A labelled root with about ``k`` rows (the first of each task), its files copied (the schema
    reader refuses links that leave the root)."""
    (out / "csv_files").mkdir(parents=True)
    per_task = max(1, k // len(TASKS))
    for csv in sorted((labels / "csv_files").glob("*.csv")):
        lines = csv.read_text().splitlines()[: 1 + per_task]
        (out / "csv_files" / csv.name).write_text("\n".join(lines) + "\n")
        for line in lines[1:]:
            image, *_, mask = line.split(",")
            for rel in (image, mask):
                src, dst = labels / rel.replace("../", ""), out / rel.replace("../", "")
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
    return out


def _child(which: str, labels: str, pred: str, out: str, workers: int) -> None:
    """Run one scorer in this process; print seconds and peak RSS as JSON."""
    sys.path.insert(0, str(REPO / "tests"))
    if which == "fast":
        import scipy.spatial  # noqa: F401 - imported lazily by the scorer: keep its import out of the timing

        from evaluation.scoring import evaluate

        def run() -> dict:
            return evaluate(pred, labels, mode="official", workers=workers)
    else:
        from reference_scorer import reference_evaluate

        def run() -> dict:
            return reference_evaluate(pred, labels)

    def cpu() -> float:
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    c0, t = cpu(), time.perf_counter()
    res = run()
    seconds, cpu_seconds = time.perf_counter() - t, cpu() - c0
    Path(out).write_text(json.dumps(res))
    # getrusage's ru_maxrss of an exec'd child starts from its parent's peak (Linux keeps it
    # across exec), so this process's own peak is read from VmHWM; pool workers from getrusage.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with open("/proc/self/status") as fh:
            own = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        pass
    workers_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mib": max(own, workers_peak) / 1024,
                      "own_rss_mib": own / 1024, "worker_rss_mib": workers_peak / 1024}))


def _run(which: str, labels: Path, pred: Path, out: Path, workers: int = 1) -> dict:
    p = subprocess.run([sys.executable, __file__, "--child", which, str(labels), str(pred), str(out), str(workers)],
                       capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"the {which} scorer failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="segmentation masks to generate (default 2000)")
    ap.add_argument("--ref-n", type=int, default=None, help="score only this many with the slow reference (default: all)")
    ap.add_argument("--workers", type=int, default=1, help="fast scorer processes (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        which, labels, pred, out, workers = args.child
        _child(which, labels, pred, out, int(workers))
        return
    sys.path.insert(0, str(REPO / "tests"))
    from reference_scorer import assert_results_close

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        t = time.perf_counter()
        labels, pred = build(tmp_path, args.n, args.seed)
        print(f"generated {args.n} mask pairs (256-512 px, 2-5 classes) in {time.perf_counter() - t:.1f} s")
        ref_labels = labels if not args.ref_n or args.ref_n >= args.n else subset(labels, tmp_path / "sub", args.ref_n)
        n_ref = sum(len(c.read_text().splitlines()) - 1 for c in (ref_labels / "csv_files").glob("*.csv"))

        fast = _run("fast", labels, pred, tmp_path / "fast.json", args.workers)
        fast1 = _run("fast", labels, pred, tmp_path / "fast1.json", 1) if args.workers != 1 else fast
        fast_sub = _run("fast", ref_labels, pred, tmp_path / "fast_sub.json", 1) if ref_labels != labels else None
        ref = _run("ref", ref_labels, pred, tmp_path / "ref.json")

        ours = json.loads((tmp_path / ("fast_sub.json" if fast_sub else "fast.json")).read_text())
        theirs = json.loads((tmp_path / "ref.json").read_text())
        try:
            assert_results_close(ours, theirs, tol=1e-9)
            same = "identical (|diff| <= 1e-9 everywhere)"
        except AssertionError as exc:
            same = f"DIFFERENT: {exc}"
        fast_rate, ref_rate = args.n / fast1["seconds"], n_ref / ref["seconds"]
        fast_cpu, ref_cpu = args.n / fast1["cpu_seconds"], n_ref / ref["cpu_seconds"]
        print(f"fast scorer, 1 process : {args.n} images in {fast1['seconds']:.1f} s wall ({fast1['cpu_seconds']:.1f} s CPU) "
              f"= {fast_rate:.1f} images/s wall, {fast_cpu:.1f} images per CPU-second; peak RSS {fast1['peak_rss_mib']:.0f} MiB")
        if args.workers != 1:
            total = fast["own_rss_mib"] + args.workers * fast["worker_rss_mib"]
            print(f"fast scorer, {args.workers} processes: {args.n} images in {fast['seconds']:.1f} s wall "
                  f"({fast['cpu_seconds']:.1f} s CPU) = {args.n / fast['seconds']:.1f} images/s wall; peak RSS "
                  f"{fast['own_rss_mib']:.0f} MiB scorer + {fast['worker_rss_mib']:.0f} MiB largest worker "
                  f"(all together at most {total:.0f} MiB)")
        sub = "" if n_ref == args.n else (f" [a subset of {n_ref} of the {args.n} images: the reference's rate is "
                                          f"extrapolated to all of them, ~{args.n / ref_rate:.0f} s wall]")
        print(f"plain reference        : {n_ref} images in {ref['seconds']:.1f} s wall ({ref['cpu_seconds']:.1f} s CPU) "
              f"= {ref_rate:.2f} images/s wall, {ref_cpu:.2f} images per CPU-second; peak RSS {ref['peak_rss_mib']:.0f} MiB{sub}")
        print(f"speed ratio, 1 process : {fast_rate / ref_rate:.1f}x wall-clock (the reference's SimpleITK filter may "
              f"use several threads), {fast_cpu / ref_cpu:.1f}x CPU time (the steadier figure on a shared machine)")
        if args.workers != 1:
            print(f"speed ratio, {args.workers} processes: {args.n / fast['seconds'] / ref_rate:.1f}x wall-clock")
        print(f"numbers: {same}")


if __name__ == "__main__":
    main()
