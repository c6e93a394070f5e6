"""Perfect predictions made from labels: the reference point for writers, checks and scorers.

``oracle_predictions(labelled_root)`` returns, for every labelled row, the prediction record a
perfect model would produce. Tests use it to prove that writers, coordinate mappings, the
validator and the scorers agree end to end (a perfect submission must check clean and score
perfectly).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fmuia.dataset.images import image_size
from fmuia.dataset.masks import read_mask
from fmuia.dataset.schema import DataRoot, Sample
from fmuia.formats import (
    ClassificationPrediction,
    DetectionPrediction,
    Prediction,
    RegressionPrediction,
    SegmentationPrediction,
)
from fmuia.tasks import TaskKind


def _seg(s: Sample) -> Prediction:
    return SegmentationPrediction(s.image_path, s.task_id, s.mask_path or "", read_mask(s.label_mask))


def _cls(s: Sample) -> Prediction:
    probs = [0.0] * s.task.num_classes
    probs[s.class_index] = 1.0
    return ClassificationPrediction(s.image_path, s.task_id, s.class_index, tuple(probs))


def _det(s: Sample) -> Prediction:
    w, h = image_size(s.image_file)
    x0, y0, x1, y1 = s.box
    return DetectionPrediction(s.image_path, s.task_id, (x0 / w, y0 / h, x1 / w, y1 / h), (x0, y0, x1, y1), 1.0)


def _reg(s: Sample) -> Prediction:
    w, h = image_size(s.image_file)
    pix: list[float] = []
    for p in s.points:
        x, y = p if p is not None else (0.0, 0.0)
        pix += [x, y]
    norm = [v / (w if i % 2 == 0 else h) for i, v in enumerate(pix)]
    return RegressionPrediction(s.image_path, s.task_id, tuple(norm), tuple(pix))


_ORACLES: dict[TaskKind, Callable[[Sample], Prediction]] = {
    TaskKind.SEGMENTATION: _seg,
    TaskKind.CLASSIFICATION: _cls,
    TaskKind.DETECTION: _det,
    TaskKind.REGRESSION: _reg,
}


def oracle_prediction(sample: Sample) -> Prediction:
    """The perfect prediction record for one labelled sample."""
    if not sample.has_label:
        raise ValueError(f"{sample.where}: no label to build an oracle prediction from")
    return _ORACLES[sample.kind](sample)


def oracle_predictions(root: DataRoot) -> Iterator[Prediction]:
    """Perfect prediction records for every labelled sample of ``root``."""
    for s in root.samples:
        yield oracle_prediction(s)
