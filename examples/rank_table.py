"""Rank five algorithms on three tasks the way challengeR does, from Python (what `fmuia rank` runs).

Builds a small long table (task, algorithm, case, value: a Dice-like score, one missing value), ranks it
by test-then-rank with a Holm adjustment and a seeded bootstrap, prints each task's ranking, the
Kendall's tau between the three methods, the consensus and its stability, and writes the CSV/JSON outputs
to a temporary folder. Offline, a second or two.

    python examples/rank_table.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.rank import RankParams, rank_analysis, write_outputs


def make_table(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    skill = {"unet": 0.82, "nnunet": 0.86, "swin": 0.84, "fpn": 0.80, "baseline": 0.70}
    for task, n_cases in (("lung", 40), ("cervix", 30), ("thyroid", 25)):
        difficulty = rng.normal(0, 0.06, n_cases)
        for alg, s in skill.items():
            values = np.clip(s + difficulty + rng.normal(0, 0.04, n_cases), 0, 1)
            rows += [(task, alg, f"{task}_{c:03d}", round(float(v), 4)) for c, v in enumerate(values)]
    table = pd.DataFrame(rows, columns=["task", "algorithm", "case", "value"])
    table.loc[3, "value"] = np.nan  # one missing value: --na-treat decides what it counts as
    return table


def main() -> None:
    table = make_table()
    params = RankParams(method="test-then-rank", p_adjust="holm", na_treat="worst", bootstrap=200, seed=1)
    result = rank_analysis(table, params, source="example table")
    for task, df in result.ranking.groupby("task", sort=False):
        order = ", ".join(f"{int(r['rank'])}. {r['algorithm']} ({r['prop_significance']:.2f})" for _, r in df.iterrows())
        print(f"{task:8s} {order}")
    tau = result.method_tau.groupby(["method_a", "method_b"])["tau"].mean()
    print("\nKendall's tau between methods (mean over tasks):")
    for (a, b), t in tau.items():
        print(f"  {a} vs {b}: {t:.2f}")
    print("\nconsensus (mean rank over tasks):")
    for _, r in result.consensus.iterrows():
        print(f"  {int(r['rank'])}. {r['algorithm']}  {r['mean_rank']:.2f}")
    b = result.bootstrap
    print(f"\nbootstrap ({b.n} rounds): median tau per task "
          + ", ".join(f"{t} {np.nanmedian(b.tau[i]):.2f}" for i, t in enumerate(b.tasks))
          + f"; consensus {np.nanmedian(b.consensus_tau):.2f}")
    for w in result.warnings:
        print(f"warning: {w}")
    out = Path(tempfile.mkdtemp(prefix="fmuia-rank-"))
    paths = write_outputs(result, out)
    print("\nwritten:", ", ".join(p.name for p in paths.values()), "in", out)


if __name__ == "__main__":
    main()
