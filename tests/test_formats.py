"""Prediction records: strict parsing, serialisation round trips, the folder writer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from fmuia.errors import FormatError
from fmuia.formats import (
    ClassificationPrediction,
    DetectionPrediction,
    RegressionPrediction,
    SegmentationPrediction,
    parse_entry,
    to_entry,
    write_predictions,
)
from fmuia.tasks import PREDICTION_FILES, TaskKind

RECORDS = [
    ClassificationPrediction("../Classification/a b/1.png", "organ_cls", 2, (0.1, 0.2, 0.7, 0.0, 0.0, 0.0)),
    DetectionPrediction("../Detection/x\xa0y/1.jpg", "thyroid_nodule_det", (0.1, 0.2, 0.5, 0.6), (10.0, 20.0, 50.0, 60.0), 0.9),
    DetectionPrediction("../Detection/x/2.jpg", "thyroid_nodule_det", (0.1, 0.2, 0.5, 0.6), (10.0, 20.0, 50.0, 60.0)),
    RegressionPrediction("../Regression/r/1.png", "IUGC", (0.1, 0.2, 0.3, 0.4, 0.5, 0.6), (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)),
]


@pytest.mark.parametrize("rec", RECORDS, ids=lambda r: type(r).__name__)
def test_round_trip(rec):
    entry = json.loads(json.dumps(to_entry(rec)))
    assert parse_entry(rec.kind, entry) == rec


def test_optional_fields_are_omitted_not_null():
    assert "score" not in to_entry(RECORDS[2])
    cls = ClassificationPrediction("p", "organ_cls", 1)
    assert "predicted_probs" not in to_entry(cls)
    assert parse_entry(TaskKind.CLASSIFICATION, to_entry(cls)).predicted_probs is None


@pytest.mark.parametrize(
    "kind,entry,match",
    [
        (TaskKind.CLASSIFICATION, [], "expected an object"),
        (TaskKind.CLASSIFICATION, {"task_id": "t", "predicted_class": 1}, "image_path"),
        (TaskKind.CLASSIFICATION, {"image_path": 3, "task_id": "t", "predicted_class": 1}, "image_path: expected a string"),
        (TaskKind.CLASSIFICATION, {"image_path": "p", "task_id": "t", "predicted_class": True}, "predicted_class"),
        (TaskKind.CLASSIFICATION, {"image_path": "p", "task_id": "t", "predicted_class": "1"}, "predicted_class"),
        (TaskKind.CLASSIFICATION, {"image_path": "p", "task_id": "t", "predicted_class": 1.5}, "predicted_class"),
        (TaskKind.CLASSIFICATION, {"image_path": "p", "task_id": "t", "predicted_class": 1, "predicted_probs": [0.5, "x"]}, "list of numbers"),
        (TaskKind.DETECTION, {"image_path": "p", "task_id": "t", "bbox_normalized": [0, 0, 1], "bbox_pixels": [0, 0, 1, 1]}, "expected 4 numbers"),
        (TaskKind.DETECTION, {"image_path": "p", "task_id": "t", "bbox_normalized": [0, 0, 1, math.nan], "bbox_pixels": [0, 0, 1, 1]}, "finite"),
        (TaskKind.DETECTION, {"image_path": "p", "task_id": "t", "bbox_normalized": [0, 0, 1, 1]}, "bbox_pixels"),
        (TaskKind.DETECTION, {"image_path": "p", "task_id": "t", "bbox_normalized": [0, 0, 1, 1], "bbox_pixels": [0, 0, 1, 1], "score": "hi"}, "score"),
        (TaskKind.REGRESSION, {"image_path": "p", "task_id": "t", "predicted_points_normalized": [0.1, 0.2]}, "predicted_points_pixels"),
        (TaskKind.REGRESSION, {"image_path": "p", "task_id": "t", "predicted_points_normalized": [[0.1, 0.2]], "predicted_points_pixels": [1, 2]}, "list of numbers"),
    ],
)
def test_malformed_entries_raise_format_error(kind, entry, match):
    with pytest.raises(FormatError, match=match):
        parse_entry(kind, entry)


def test_integral_float_class_is_an_error():
    """The format says integer: 2.0 is refused (check: an error; strict: an invalid row), like 2.5."""
    with pytest.raises(FormatError, match="predicted_class: expected an integer, got the number 2.0"):
        parse_entry(TaskKind.CLASSIFICATION, {"image_path": "p", "task_id": "t", "predicted_class": 2.0})
    rec = parse_entry(TaskKind.CLASSIFICATION, {"image_path": "p", "task_id": "t", "predicted_class": 2})
    assert rec.predicted_class == 2 and isinstance(rec.predicted_class, int)


def test_writer_writes_official_layout(tmp_path):
    mask = np.zeros((7, 5), dtype=np.uint8)
    mask[2:4, 1:3] = 2
    seg = SegmentationPrediction("../Segmentation/Three/d s+(1)/img/1.png", "cervix_multi", "../Segmentation/Three/d s+(1)/mask/1.png", mask)
    counts = write_predictions(tmp_path, [*RECORDS, seg])
    assert counts == {"organ_cls": 1, "thyroid_nodule_det": 2, "IUGC": 1, "cervix_multi": 1}
    png = tmp_path / "Segmentation/Three/d s+(1)/mask/1.png"
    with Image.open(png) as im:
        assert im.format == "PNG" and im.mode == "L" and im.size == (5, 7)
        assert np.array_equal(np.asarray(im), mask)
    for kind, name in PREDICTION_FILES.items():
        entries = json.loads((tmp_path / name).read_text(encoding="utf-8"))
        assert [parse_entry(kind, e) for e in entries] == [r for r in RECORDS if r.kind is kind]
    assert "x\xa0y" in (tmp_path / PREDICTION_FILES[TaskKind.DETECTION]).read_text(encoding="utf-8")
    assert not list(tmp_path.rglob("*.tmp"))


def test_writer_refuses_mask_path_escaping_the_folder(tmp_path):
    seg = SegmentationPrediction("x", "lung", "/etc/evil.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(FormatError, match="outside"):
        write_predictions(tmp_path / "out", [seg])
    assert not (tmp_path / "etc").exists()


def test_kind_without_predictions_gets_no_file(tmp_path):
    write_predictions(tmp_path, RECORDS[:1])
    assert (tmp_path / "classification_predictions.json").exists()
    assert not (tmp_path / "detection_predictions.json").exists()


def test_writer_removes_a_stale_json_of_a_kind_it_did_not_write(tmp_path):
    write_predictions(tmp_path, RECORDS)  # all three JSON kinds
    write_predictions(tmp_path, RECORDS[:1])  # a later run with classification only
    assert (tmp_path / "classification_predictions.json").exists()
    assert not (tmp_path / "detection_predictions.json").exists()
    assert not (tmp_path / "regression_predictions.json").exists()
