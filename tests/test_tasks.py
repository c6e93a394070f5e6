"""The task registry: 27 official tasks, kinds, CSV names, serialisation."""

from __future__ import annotations

import pytest

from fmuia.tasks import PREDICTION_FILES, TaskKind, TaskSpec, get_task, has_task, list_tasks, register_task

EXPECTED_COUNTS = {TaskKind.SEGMENTATION: 12, TaskKind.CLASSIFICATION: 9, TaskKind.DETECTION: 3, TaskKind.REGRESSION: 3}


def test_registry_has_the_27_tasks_by_kind():
    assert len(list_tasks()) == 27
    for kind, n in EXPECTED_COUNTS.items():
        assert len(list_tasks(kind)) == n, kind


@pytest.mark.parametrize(
    "task_id,kind,n",
    [
        ("cardiac_multi", TaskKind.SEGMENTATION, 4),
        ("fetal_abdomen_multi", TaskKind.SEGMENTATION, 5),
        ("fetal_head_pos_cls", TaskKind.CLASSIFICATION, 8),
        ("organ_cls", TaskKind.CLASSIFICATION, 6),
        ("uterine_fibroid_det", TaskKind.DETECTION, 1),
        ("IUGC", TaskKind.REGRESSION, 3),
        ("fetal_femur", TaskKind.REGRESSION, 2),
    ],
)
def test_known_entries(task_id, kind, n):
    spec = get_task(task_id)
    assert (spec.kind, spec.num_classes) == (kind, n)


@pytest.mark.parametrize("spec", list_tasks(), ids=lambda s: s.task_id)
def test_every_task_round_trips_and_has_an_output_size(spec: TaskSpec):
    assert TaskSpec.from_dict(spec.to_dict()) == spec
    assert spec.output_dim >= 1
    assert TaskKind.from_csv_name(spec.kind.csv_name) is spec.kind
    if spec.kind is TaskKind.REGRESSION:
        assert spec.output_dim == 2 * spec.num_points
    else:
        with pytest.raises(AttributeError):
            _ = spec.num_points


def test_csv_names_match_the_official_spelling():
    assert TaskKind.REGRESSION.csv_name == "Regression"
    assert TaskKind.from_csv_name("Regression") is TaskKind.REGRESSION
    assert TaskKind.from_csv_name("regression") is TaskKind.REGRESSION
    with pytest.raises(ValueError, match="unknown task_name"):
        TaskKind.from_csv_name("keypoints")


def test_prediction_files_cover_every_json_kind():
    assert set(PREDICTION_FILES) == set(TaskKind) - {TaskKind.SEGMENTATION}


def test_register_conflicting_spec_is_refused_and_identical_is_noop():
    spec = get_task("lung")
    assert register_task("lung", spec.kind, spec.num_classes) == spec
    with pytest.raises(ValueError):
        register_task("lung", TaskKind.SEGMENTATION, 3)
    with pytest.raises(KeyError, match="unknown task"):
        get_task("no_such_task")
    assert not has_task("no_such_task")
