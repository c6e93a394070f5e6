"""Benchmark: whole-process scoring time of ``fmuia evaluate`` vs the plain reference scorer.

Builds a synthetic labelled root of every registered task with
:func:`fmuia.dataset.synth.synthesize` (``--per-task 60`` → 1,620 rows of the 27 tasks, 720 of
them segmentation masks; images ``--sizes 180,700`` px, the real data's range, where synth's own
default is 128..320) and one prediction folder made from the labels with
:mod:`fmuia.oracle`, then perturbed the way a model gets things wrong (shifted structures, boundary
noise, missed structures, false-positive blobs, masks of another size, a few missing masks,
wrong classes, jittered boxes and points; about a quarter of the masks stay perfect).

Each scorer then runs as its own **whole process** (interpreter start-up, imports and kernel
loading included) with default options, a few times:

- ``fmuia evaluate PRED --data LABELS --out r.json --mode official``
- ``fmuia evaluate PRED --data LABELS --out r.json`` (strict, the default mode)
- ``python -m evaluation PRED --data LABELS --out r.json --mode official``
- the plain reference scorer of ``tests/reference_scorer.py`` (cv2, pandas, SimpleITK,
  scikit-learn), from a small ``python -c`` that imports it.

It prints min/median wall-clock and CPU seconds (user + system, pool workers included), the
speed ratio of each of ours to the reference, whether the official results equal the
reference's (1e-9 everywhere), and where our time goes: a ``python -X importtime`` summary of
one official run (which import pulled in how much) and a cProfile top-15 of one in-process
official run (one worker, so that everything is seen).

    python benchmarks/bench_evaluate.py                    # 60 rows per task, 3 repeats
    python benchmarks/bench_evaluate.py --repeats 5 --extra  # + numpy fallback, --workers, prebuilt kernel
    python benchmarks/bench_evaluate.py --keep /tmp/bench    # keep (and reuse) the dataset
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# ---- the dataset ----------------------------------------------------------------------------------

def _perturb_mask(m, c: int, rng):  # type: ignore[no-untyped-def]
    """A plausible imperfect prediction of label mask ``m`` (uint8, classes ``0..c-1``)."""
    import numpy as np

    out = m.copy()
    h, w = m.shape
    if rng.random() < 0.8:  # shifted structures
        out = np.roll(out, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1))
    if rng.random() < 0.15 and c > 1:  # one structure missed
        out[out == int(rng.integers(1, c))] = 0
    if rng.random() < 0.3 and c > 1:  # a false-positive blob elsewhere
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        r = int(rng.integers(2, max(3, min(h, w) // 12)))
        yy, xx = np.ogrid[:h, :w]
        out[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = int(rng.integers(1, c))
    noise = rng.random((h, w)) < 0.001  # boundary noise / specks
    out[noise] = rng.integers(0, c, int(noise.sum()))
    return out.astype(np.uint8)


def build(out: Path, per_task: int, seed: int, sizes: tuple[int, int] = (180, 700)) -> tuple[Path, Path, dict]:
    """``out/labels`` (a synth labelled root of all tasks) and ``out/pred`` (its predictions)."""
    import numpy as np
    from PIL import Image

    from fmuia.dataset import load_root
    from fmuia.dataset.masks import read_mask, write_mask_png
    from fmuia.dataset.schema import prediction_mask_relpath
    from fmuia.dataset.synth import synthesize
    from fmuia.formats import write_predictions
    from fmuia.oracle import oracle_predictions
    from fmuia.tasks import PREDICTION_FILES, TaskKind

    labels, pred = out / "labels", out / "pred"
    synthesize(labels, per_task=per_task, seed=seed, overwrite=True, sizes=sizes)
    root = load_root(labels)
    if pred.exists():
        shutil.rmtree(pred)
    write_predictions(pred, oracle_predictions(root))
    rng = np.random.default_rng(seed)
    sizes, n_perfect, n_missing, n_resized = [], 0, 0, 0
    for s in root.of_kind(TaskKind.SEGMENTATION):
        path = pred / prediction_mask_relpath(s.mask_path or "")
        m = read_mask(path)
        sizes.append(m.shape)
        u = rng.random()
        if u < 0.25:
            n_perfect += 1
            continue
        if u < 0.28:
            path.unlink()  # a missing mask: skipped by the official scorer, the worst in strict
            n_missing += 1
            continue
        pm = _perturb_mask(m, s.task.num_classes, rng)
        if u < 0.36:  # another size: the official scorer resizes it (nearest)
            h, w = pm.shape
            pm = np.asarray(Image.fromarray(pm, "L").resize((max(1, w * 3 // 4), max(1, h * 3 // 4)), Image.NEAREST))
            n_resized += 1
        write_mask_png(path, pm)
    for kind, name in PREDICTION_FILES.items():
        p = pred / name
        if not p.exists():
            continue
        entries = json.loads(p.read_text())
        for e in entries:
            if kind is TaskKind.CLASSIFICATION:
                c = len(e["predicted_probs"])
                probs = rng.random(c) + np.eye(c)[e["predicted_class"]] * rng.uniform(0, 1.5)
                probs = probs / probs.sum()
                e["predicted_probs"] = probs.tolist()
                e["predicted_class"] = int(np.argmax(probs))
            elif kind is TaskKind.DETECTION:
                e["bbox_pixels"] = (np.asarray(e["bbox_pixels"]) + rng.normal(0, 4, 4)).tolist()
            elif kind is TaskKind.REGRESSION:
                pts = e["predicted_points_pixels"]
                e["predicted_points_pixels"] = (np.asarray(pts) + rng.normal(0, 3, len(pts))).tolist()
        p.write_text(json.dumps(entries))
    hs, ws = [h for h, _ in sizes], [w for _, w in sizes]
    info = {"rows": len(root.samples), "tasks": len(root.tasks), "masks": len(sizes),
            "mask_px": (min(min(hs), min(ws)), max(max(hs), max(ws))), "perfect": n_perfect,
            "missing": n_missing, "resized": n_resized}
    return labels, pred, info


# ---- running whole processes ----------------------------------------------------------------------

def _fmuia_command() -> list[str]:
    """The ``fmuia`` console script of this interpreter (not a pyenv shim, which adds a shell)."""
    script = Path(sys.executable).with_name("fmuia")
    if script.is_file():
        return [str(script)]
    found = shutil.which("fmuia")
    return [found] if found else [sys.executable, "-m", "fmuia"]


def _timed(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system of the process and every child it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _reference_command(pred: Path, labels: Path, out: Path) -> list[str]:
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); "
            "from reference_scorer import reference_evaluate; "
            "json.dump(reference_evaluate(sys.argv[2], sys.argv[3]), open(sys.argv[4], 'w'))")
    return [sys.executable, "-c", code, str(REPO / "tests"), str(pred), str(labels), str(out)]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "FMUIA_NO_NUMBA"}
    env.update(extra)
    return env


# ---- where the time goes --------------------------------------------------------------------------

_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def importtime_summary(cmd: list[str], top: int = 10) -> str:
    """Run ``cmd`` (a ``python ...`` command) under ``-X importtime``: the total import time, the
    top-level packages whose import cost most (each with what it pulled in that was not loaded
    yet, and the top-level import statement that pulled it in) and the project's own modules
    (their own time)."""
    p = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], capture_output=True, text=True, env=_env())
    packages: dict[str, tuple[float, str]] = {}
    pending: list[str] = []  # packages seen since the last top-level import (its children: post-order)
    total = own = 0.0
    n = 0
    for line in p.stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if not m:
            continue
        n += 1
        name, self_s, cum_s = m.group(4), int(m.group(1)) / 1e6, int(m.group(2)) / 1e6
        total += self_s
        if name.split(".")[0] in ("evaluation", "fmuia"):
            own += self_s
        elif "." not in name and not name.startswith("_") and name not in packages:
            packages[name] = (cum_s, "")
            pending.append(name)
        if len(m.group(3)) <= 1:  # a top-level import statement: it pulled in everything pending
            for pkg in pending:
                if pkg != name:
                    packages[pkg] = (packages[pkg][0], name)
            pending = []
    lines = [f"  imports: {total:.2f} s in {n} modules (-X importtime inflates them a little); the project's own "
             f"modules {own:.3f} s; the costliest packages (incl. what each pulled in):"]
    for pkg, (sec, via) in sorted(packages.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"    {pkg:<22s} {sec:6.3f} s" + (f"   (pulled in by {via})" if via else ""))
    return "\n".join(lines)


def _timed_phases(fn) -> tuple[float, dict[str, float]]:  # type: ignore[no-untyped-def]
    """Run ``fn`` once with the main steps of official scoring wrapped in timers (far lighter than
    a profiler); the total and seconds per step."""
    import evaluation.metrics
    from evaluation.scoring import engine, official
    from fmuia import predfolder

    spent: dict[str, float] = {}
    targets = [  # (module or class, attribute, label)
        (engine, "load_labels", "read the label CSVs (load_labels)"),
        (predfolder.DirPredictionFolder, "read_bytes", "read prediction files (checked path, stat, read)"),
        (official, "read_mask_like_opencv", "decode masks, labels and predictions (Pillow)"),
        (official, "resize_nearest_opencv", "resize predictions of another size"),
        (evaluation.metrics, "per_class_metrics", "Dice + Hausdorff (per_class_metrics)"),
        (official, "_cls_metrics", "classification metrics (as the official scikit-learn calls)"),
    ]
    saved = []
    for owner, attr, label in targets:
        orig = getattr(owner, attr)
        saved.append((owner, attr, orig))
        spent[label] = 0.0

        def wrapper(*a, _orig=orig, _label=label, **k):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            try:
                return _orig(*a, **k)
            finally:
                spent[_label] += time.perf_counter() - t0

        setattr(owner, attr, wrapper)
    try:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t, spent
    finally:
        for owner, attr, orig in saved:
            setattr(owner, attr, orig)


def _profile_child(pred: str, labels: str) -> None:
    """In this process: what official mode loads lazily (timed, not profiled: cProfile inflates
    imports), one official evaluate() with its steps timed, then one under cProfile (its top-15
    by own time). One worker, so that everything happens in this process."""
    import cProfile
    import pstats

    lazy = []
    t = time.perf_counter()
    from evaluation.scoring import evaluate

    lazy.append(("import evaluation.scoring", time.perf_counter() - t))
    t = time.perf_counter()
    from evaluation.metrics import prepare_fast_kernel
    from evaluation.metrics._kernel import kernel_kind

    prepare_fast_kernel()
    lazy.append((f"segmentation kernel ({kernel_kind()})", time.perf_counter() - t))
    print("  in one process, loaded before the runs below (wall-clock):")
    for label, sec in lazy:
        print(f"    {label:<56s} {sec:6.3f} s")
    total, phases = _timed_phases(lambda: evaluate(pred, labels, mode="official", workers=1))
    print(f"  evaluate(mode='official', workers=1), phases timed by wrappers (no profiler): {total:.3f} s")
    for label, sec in phases.items():
        print(f"    {label:<56s} {sec:6.3f} s")
    print(f"    {'everything else (walk, policy, aggregation)':<56s} {total - sum(phases.values()):6.3f} s")
    prof = cProfile.Profile()
    prof.enable()
    evaluate(pred, labels, mode="official", workers=1)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
    text = buf.getvalue()
    start = text.find("   ncalls")
    print("  cProfile top-15 by own time:")
    print("\n".join("    " + line for line in text[start:].rstrip().splitlines()))


# ---- main -----------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-task", type=int, default=60, help="rows per task (default 60: 1,620 rows of 27 tasks)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sizes", default="180,700",
                    help="smallest,largest image side in px (default 180,700: the real data's range; synth's own is 128,320)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each of our commands (default 3)")
    ap.add_argument("--ref-repeats", type=int, default=2, help="runs of the reference (default 2)")
    ap.add_argument("--extra", action="store_true",
                    help="also time official mode with FMUIA_NO_NUMBA=1, with --workers 1 and with the kernel "
                         "built ahead of time (into a cache folder of the dataset's)")
    ap.add_argument("--no-profile", action="store_true", help="skip the importtime / cProfile breakdown")
    ap.add_argument("--keep", type=Path, default=None, help="build the dataset here (reused if present)")
    ap.add_argument("--profile-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.profile_child:
        _profile_child(*args.profile_child)
        return

    sys.path.insert(0, str(REPO / "tests"))
    from reference_scorer import assert_results_close

    tmp = None
    if args.keep is None:
        tmp = tempfile.TemporaryDirectory()
        work = Path(tmp.name)
    else:
        work = args.keep.resolve()
        work.mkdir(parents=True, exist_ok=True)
    sizes = [int(v) for v in args.sizes.split(",")]
    try:
        info_file = work / "bench_info.json"
        if args.keep is not None and info_file.is_file() and json.loads(info_file.read_text()).get("key") == [
                args.per_task, args.seed, sizes]:
            labels, pred, info = work / "labels", work / "pred", json.loads(info_file.read_text())
            print(f"reusing the dataset in {work}")
        else:
            t = time.perf_counter()
            labels, pred, info = build(work, args.per_task, args.seed, tuple(sizes))
            info["key"] = [args.per_task, args.seed, sizes]
            info_file.write_text(json.dumps(info))
            print(f"built the dataset in {time.perf_counter() - t:.1f} s")
        print(f"{info['rows']} rows of {info['tasks']} tasks; {info['masks']} masks of {info['mask_px'][0]}-"
              f"{info['mask_px'][1]} px ({info['perfect']} predicted perfectly, {info['resized']} of another "
              f"size, {info['missing']} missing); {len(os.sched_getaffinity(0))} usable cores")

        fmuia = _fmuia_command()
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)  # results of this run only
        out.mkdir()
        common = [str(pred), "--data", str(labels)]
        runs: list[tuple[str, list[str], dict, int]] = [
            ("fmuia evaluate --mode official", [*fmuia, "evaluate", *common, "--out", str(out / "official.json"),
                                                "--mode", "official"], _env(), args.repeats),
            ("fmuia evaluate (strict)", [*fmuia, "evaluate", *common, "--out", str(out / "strict.json")],
             _env(), args.repeats),
            ("python -m evaluation --mode official", [sys.executable, "-m", "evaluation", *common, "--out",
                                                      str(out / "module.json"), "--mode", "official"],
             _env(), args.repeats),
        ]
        if args.extra:
            off = [*fmuia, "evaluate", *common, "--out", str(out / "extra.json"), "--mode", "official"]
            runs += [("  official --workers 1", [*off, "--workers", "1"], _env(), args.repeats),
                     ("  official, FMUIA_NO_NUMBA=1", off, _env(FMUIA_NO_NUMBA="1"), args.repeats)]
            aot_cache = work / "aot-cache"  # this machine's ahead-of-time kernel, built once here
            built = subprocess.run([sys.executable, "-m", "evaluation.metrics._seg_numba", "--build-aot"],
                                   env=_env(FMUIA_AOT_DIR=str(aot_cache)), capture_output=True, text=True)
            if built.returncode == 0:
                aot_env = _env(FMUIA_AOT_DIR=str(aot_cache))
                off_aot = [str(out / "aot.json") if a == str(out / "extra.json") else a for a in off]
                runs += [("  official, AOT kernel prebuilt", off_aot, aot_env, args.repeats)]
            else:
                print(f"(no ahead-of-time kernel here: {built.stderr.strip()[-300:]})")
        runs.append(("reference (tests/reference_scorer.py)", _reference_command(pred, labels, out / "ref.json"),
                     _env(), args.ref_repeats))

        # one untimed run of ours first: it fills numba's on-disk cache if it is empty
        subprocess.run(runs[0][1], capture_output=True, env=_env())
        kind = subprocess.run([sys.executable, "-c", "from evaluation.metrics import _kernel; "
                               "_kernel.prepare_fast_kernel(); print(_kernel.kernel_kind())"],
                              capture_output=True, text=True, env=_env()).stdout.strip()
        print(f"segmentation kernel of the default runs: {kind}")
        timings: dict[str, list[tuple[float, float]]] = {}
        for _ in range(max(r[3] for r in runs)):  # interleaved: a busy moment hits every command alike
            for name, cmd, env, repeats in runs:
                if len(timings.get(name, [])) < repeats:
                    timings.setdefault(name, []).append(_timed(cmd, env))

        ref_name = runs[-1][0]
        ref_wall = statistics.median(w for w, _ in timings[ref_name])
        ref_min = min(w for w, _ in timings[ref_name])
        print(f"\nwhole process, default options ({args.repeats} runs of ours, {args.ref_repeats} of the reference; "
              "CPU = user + system incl. workers):")
        print(f"  {'command':<46s} {'min s':>7s} {'median s':>9s} {'CPU s':>7s} {'ratio (median)':>15s} {'(min)':>7s}")
        for name, *_ in runs:
            walls = [w for w, _ in timings[name]]
            cpus = [c for _, c in timings[name]]
            med = statistics.median(walls)
            ratio = "" if name == ref_name else f"{ref_wall / med:14.1f}x"
            ratio_min = "" if name == ref_name else f"{ref_min / min(walls):6.1f}x"
            print(f"  {name:<46s} {min(walls):7.2f} {med:9.2f} {statistics.median(cpus):7.2f} {ratio:>15s} "
                  f"{ratio_min:>7s}")

        reference = json.loads((out / "ref.json").read_text())
        checked = [("fmuia evaluate --mode official", out / "official.json"),
                   ("python -m evaluation --mode official", out / "module.json")]
        if args.extra:
            checked += [(name, path) for name, path in (
                ("official, FMUIA_NO_NUMBA=1 / --workers 1", out / "extra.json"),
                ("official, AOT kernel prebuilt", out / "aot.json")) if path.is_file()]
        for name, path in checked:
            try:
                assert_results_close(json.loads(path.read_text()), reference, tol=1e-9)
                verdict = "equal to the reference (|diff| <= 1e-9 everywhere)"
            except AssertionError as exc:
                verdict = f"DIFFERENT from the reference: {exc}"
            print(f"{name}: {verdict}")

        if not args.no_profile:
            print("\nwhere our time goes (official mode):")
            print(importtime_summary([sys.executable, "-m", "fmuia", "evaluate", *common, "--out",
                                      str(out / "importtime.json"), "--mode", "official"]))
            p = subprocess.run([sys.executable, __file__, "--profile-child", str(pred), str(labels)],
                               capture_output=True, text=True, env=_env())
            print(p.stdout.rstrip() if p.returncode == 0 else f"  profile failed:\n{p.stderr[-2000:]}")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
