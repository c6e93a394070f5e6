"""Draw predictions over their images from Python: ground truth vs. prediction, worst cases first.

Runs standalone with no arguments (about 10-30 s on a CPU): it synthesizes a small split data set
(two tasks of each kind) in a temporary folder, makes slightly wrong predictions from the labels
(shifted masks, jittered boxes and landmarks, noisy probabilities), then writes one PNG grid per
task plus an index.html and prints the page's path. The folder is kept so you can open the page.

The same from the shell::

    fmuia visualize preds/ --data data/labels --out viz/ --worst
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from fmuia.dataset import load_root
from fmuia.dataset.synth import synthesize
from fmuia.formats import (
    ClassificationPrediction,
    DetectionPrediction,
    RegressionPrediction,
    SegmentationPrediction,
    write_predictions,
)
from fmuia.oracle import oracle_predictions
from fmuia.visualize import visualize

TASKS = ["fetal_head", "cardiac_multi", "breast_3cls", "organ_cls", "thyroid_nodule_det",
         "uterine_fibroid_det", "IUGC", "fetal_femur"]


def perturb(pred, rng: np.random.Generator):
    """Turn a perfect prediction into a plausible imperfect one."""
    if isinstance(pred, SegmentationPrediction):
        mask = np.roll(pred.mask, (int(rng.integers(-5, 6)), int(rng.integers(-8, 9))), axis=(0, 1))
        return dataclasses.replace(pred, mask=mask)
    if isinstance(pred, DetectionPrediction):
        return dataclasses.replace(pred, bbox_pixels=tuple(float(v + rng.normal(0, 5)) for v in pred.bbox_pixels))
    if isinstance(pred, RegressionPrediction):
        return dataclasses.replace(pred, points_pixels=tuple(float(v + rng.normal(0, 6)) for v in pred.points_pixels))
    if isinstance(pred, ClassificationPrediction):
        logits = np.log(np.asarray(pred.predicted_probs) + 0.05) + rng.normal(0, 1.2, len(pred.predicted_probs))
        probs = np.exp(logits) / np.exp(logits).sum()
        return dataclasses.replace(pred, predicted_class=int(probs.argmax()), predicted_probs=tuple(float(p) for p in probs))
    return pred


def main() -> Path:
    work = Path(tempfile.mkdtemp(prefix="fmuia_visualize_"))
    synthesize(work / "data", per_task=12, seed=0, tasks=TASKS, split=True)
    labels = load_root(work / "data" / "labels")
    rng = np.random.default_rng(0)
    write_predictions(work / "preds", [perturb(p, rng) for p in oracle_predictions(labels)])

    # The worst 4 cases of each task by the strict scorer's per-case metric
    # (Dice, p(true class), IoU, radial error), ground truth solid, prediction dashed.
    index = visualize(work / "preds", work / "data" / "labels", work / "viz", per_task=4, worst=True)
    # Without labels (what a participant has for the test set): predictions only.
    visualize(work / "preds", work / "data" / "test", work / "viz_test", per_task=4)
    print(index)
    return index


if __name__ == "__main__":
    main()
