"""Time ``fmuia rank`` (evaluation.rank.rank_analysis) on a synthetic challenge: by default 50 algorithms ×
27 tasks × 2,000 cases with 1,000 bootstrap rounds, each method in turn (the target: under a minute on two
cores). Prints one line per method: the analysis without and with the bootstrap.

    python benchmarks/bench_rank.py                       # the full size, every method
    python benchmarks/bench_rank.py --methods aggregate-then-rank rank-then-aggregate
    python benchmarks/bench_rank.py --algorithms 10 --tasks 3 --cases 200 --bootstrap 100   # quick
    python benchmarks/bench_rank.py --set-level --tasks 9   # F1_macro, F1_weighted, MCC (aggregate-then-rank)
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

from evaluation.rank import rank_analysis
from evaluation.rank.result import METHODS, RankParams
from evaluation.rank.setlevel import SET_METRICS, SetLevel
from evaluation.rank.wilcoxon import kernel_kind


def synthetic_table(n_alg: int, n_tasks: int, n_cases: int, seed: int = 0) -> pd.DataFrame:
    """A DSC-like table: per algorithm a skill, per case a difficulty, noise; values in [0, 1] rounded to
    3 decimals (so there are ties, as in real Dice scores)."""
    rng = np.random.default_rng(seed)
    skill = rng.normal(0.0, 0.05, size=(n_tasks, n_alg, 1))
    hard = rng.normal(0.0, 0.1, size=(n_tasks, 1, n_cases))
    v = np.clip(np.round(0.8 + skill + hard + rng.normal(0, 0.05, size=(n_tasks, n_alg, n_cases)), 3), 0, 1)
    t, a, c = np.meshgrid(np.arange(n_tasks), np.arange(n_alg), np.arange(n_cases), indexing="ij")
    return pd.DataFrame({
        "task": np.array([f"task{i:02d}" for i in range(n_tasks)], dtype=object)[t.ravel()],
        "algorithm": np.array([f"alg{i:02d}" for i in range(n_alg)], dtype=object)[a.ravel()],
        "case": np.array([f"case{i:04d}" for i in range(n_cases)], dtype=object)[c.ravel()],
        "value": v.ravel(),
    })


def synthetic_cls_table(n_alg: int, n_tasks: int, n_cases: int, metric: str, seed: int = 0) -> pd.DataFrame:
    """A set-level classification table: tasks of 2, 3 and 5 classes in turn, per algorithm a skill, 5 %
    invalid predictions; ``attrs["set_level"]`` as :func:`evaluation.rank.table.table_from_results` sets it."""
    rng = np.random.default_rng(seed)
    parts, classes = [], {}
    for t in range(n_tasks):
        c = (2, 3, 5)[t % 3]
        y = rng.integers(0, c, n_cases)
        skill = rng.uniform(0.4, 0.9, size=(n_alg, 1))
        pred = np.where(rng.random((n_alg, n_cases)) < skill, y, rng.integers(0, c, (n_alg, n_cases)))
        pred = np.where(rng.random((n_alg, n_cases)) < 0.05, -1, pred)
        a, i = np.meshgrid(np.arange(n_alg), np.arange(n_cases), indexing="ij")
        name = f"task{t:02d}"
        classes[name] = c
        parts.append(pd.DataFrame({"task": name, "algorithm": np.array([f"alg{k:02d}" for k in range(n_alg)],
                                                                        dtype=object)[a.ravel()],
                                   "case": np.array([f"case{k:04d}" for k in range(n_cases)], dtype=object)[i.ravel()],
                                   "value": (pred == y).astype(float).ravel(), "label": np.broadcast_to(y, pred.shape).ravel(),
                                   "predicted": pred.ravel()}))
    df = pd.concat(parts, ignore_index=True)
    df["line"] = 0
    df.attrs["set_level"] = SetLevel(metric, classes)
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algorithms", type=int, default=50)
    ap.add_argument("--tasks", type=int, default=27)
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--aggregate", default="mean", choices=("mean", "median"))
    ap.add_argument("--set-level", action="store_true", help="time F1_macro, F1_weighted and MCC instead")
    args = ap.parse_args()
    if args.set_level:
        for metric in SET_METRICS:
            table = synthetic_cls_table(args.algorithms, args.tasks, args.cases, metric)
            t0 = time.perf_counter()
            rank_analysis(table, RankParams())
            plain = time.perf_counter() - t0
            t0, c0 = time.perf_counter(), time.process_time()
            res = rank_analysis(table, RankParams(bootstrap=args.bootstrap, seed=1))
            boot, boot_cpu = time.perf_counter() - t0, time.process_time() - c0
            print(f"{metric:12s} {args.algorithms} algorithms x {args.tasks} tasks x {args.cases} cases: analysis "
                  f"{plain:6.2f} s   with bootstrap {args.bootstrap}: {boot:6.1f} s wall {boot_cpu:6.1f} s CPU   "
                  f"(mean tau {np.nanmean(res.bootstrap.tau):.3f})", flush=True)
        return

    t0 = time.perf_counter()
    table = synthetic_table(args.algorithms, args.tasks, args.cases)
    print(f"table: {args.algorithms} algorithms x {args.tasks} tasks x {args.cases} cases = {len(table):,} rows "
          f"(built in {time.perf_counter() - t0:.1f} s); bootstrap {args.bootstrap} rounds; "
          f"{os.cpu_count()} CPU(s); test kernel: {kernel_kind()}")
    if "test-then-rank" in args.methods and kernel_kind() == "numba":  # compile (or load) the kernel first
        rank_analysis(synthetic_table(3, 1, 5), RankParams(method="test-then-rank", bootstrap=2))
    for method in args.methods:
        p0 = RankParams(method=method, aggregate=args.aggregate, bootstrap=0)
        t0, c0 = time.perf_counter(), time.process_time()
        rank_analysis(table, p0)
        plain, plain_cpu = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        res = rank_analysis(table, RankParams(method=method, aggregate=args.aggregate, bootstrap=args.bootstrap, seed=1))
        boot, boot_cpu = time.perf_counter() - t0, time.process_time() - c0
        tau = np.nanmean(res.bootstrap.tau) if res.bootstrap is not None and args.bootstrap else float("nan")
        # CPU seconds (all threads) as well: on a shared machine the wall time also counts others' work
        print(f"{method:22s} analysis {plain:6.1f} s wall {plain_cpu:6.1f} s CPU   with bootstrap {boot:6.1f} s wall "
              f"{boot_cpu:6.1f} s CPU   (mean tau {tau:.3f})", flush=True)


if __name__ == "__main__":
    main()
