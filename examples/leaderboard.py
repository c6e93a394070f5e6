"""Rank three submissions on a synthetic test split: perfect, noisy and empty.

Run with no arguments (about 10-30 s on a CPU)::

    python examples/leaderboard.py

It synthesizes a small split in a temporary folder, writes the three prediction folders, scores
each with the strict scorer, builds the leaderboard (rank-then-aggregate, composite score,
bootstrap ranking stability) and prints the ranked table. The same from the shell::

    fmuia evaluate perfect/ --data labels/ --out perfect/results.json
    fmuia leaderboard perfect/results.json noisy/results.json empty/results.json --out board/
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from evaluation.leaderboard import build_leaderboard, write_leaderboard
from evaluation.scoring import evaluate, write_results
from fmuia.dataset import load_root
from fmuia.dataset.images import image_size
from fmuia.dataset.synth import synthesize
from fmuia.formats import (
    ClassificationPrediction,
    DetectionPrediction,
    RegressionPrediction,
    SegmentationPrediction,
    write_predictions,
)
from fmuia.oracle import oracle_prediction


def noisy(sample, rng: np.random.Generator):
    """The oracle prediction, degraded: shifted masks/boxes/points, some classes flipped."""
    p = oracle_prediction(sample)
    if isinstance(p, SegmentationPrediction):
        return dataclasses.replace(p, mask=np.roll(p.mask, int(rng.integers(2, 6)), axis=1))
    if isinstance(p, ClassificationPrediction):
        if rng.random() < 0.4:
            n = len(p.predicted_probs)
            c = (p.predicted_class + 1) % n
            probs = tuple(0.7 if i == c else 0.3 / (n - 1) for i in range(n))
            return dataclasses.replace(p, predicted_class=c, predicted_probs=probs)
        return p
    w, h = image_size(sample.image_file)
    if isinstance(p, DetectionPrediction):
        d = rng.uniform(2, 8)
        pix = tuple(min(max(v + d, 0.0), (w if i % 2 == 0 else h)) for i, v in enumerate(p.bbox_pixels))
        norm = tuple(v / (w if i % 2 == 0 else h) for i, v in enumerate(pix))
        return dataclasses.replace(p, bbox_pixels=pix, bbox_normalized=norm)
    if isinstance(p, RegressionPrediction):
        pix = tuple(v + rng.uniform(-8, 8) for v in p.points_pixels)
        norm = tuple(v / (w if i % 2 == 0 else h) for i, v in enumerate(pix))
        return dataclasses.replace(p, points_pixels=pix, points_normalized=norm)
    return p


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fmuia-leaderboard-") as tmp:
        tmp = Path(tmp)
        split = synthesize(tmp / "data", per_task=12, seed=0, split=True)
        labels = load_root(split / "labels")
        rng = np.random.default_rng(0)
        subs = {
            "perfect": [oracle_prediction(s) for s in labels.samples],
            "noisy": [noisy(s, rng) for s in labels.samples],
            "empty": [],
        }
        results = {}
        for name, preds in subs.items():
            folder = tmp / "submissions" / name
            folder.mkdir(parents=True)
            write_predictions(folder, preds)
            results[name] = evaluate(folder, split / "labels", mode="strict", n_bootstrap=200)
            write_results(results[name], folder / "results.json")
        lb = build_leaderboard(results, n_bootstrap=500, seed=0, labels=split / "labels")
        paths = write_leaderboard(lb, tmp / "board")
        print(lb.format_table())
        print()
        print("files:", ", ".join(p.name for p in paths.values()), "(in a temporary folder, removed on exit)")


if __name__ == "__main__":
    main()
