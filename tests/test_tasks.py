"""The task registry: 27 official tasks, kinds, CSV names, serialisation."""

from __future__ import annotations

import pytest

from fmuia import tasks
from fmuia.tasks import (
    MIRROR_SAFE_DEFAULT,
    PREDICTION_FILES,
    TaskKind,
    TaskSpec,
    get_task,
    has_task,
    list_tasks,
    register_task,
    validate_spec,
)

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


# ---- per-task policies and registration rules ----------------------------------------------------

# Tasks whose labels a horizontal flip would break: position classes and ordered landmarks.
MIRROR_UNSAFE = {"fetal_head_pos_cls", "fetal_sacral_pos_cls", "FUGC", "IUGC", "fetal_femur"}


@pytest.mark.parametrize("spec", list_tasks(), ids=lambda s: s.task_id)
def test_every_registered_task_validates_and_carries_its_policy(spec: TaskSpec):
    assert validate_spec(spec) is spec
    assert isinstance(spec.mirror_safe, bool)
    assert spec.mirror_safe is (spec.task_id not in MIRROR_UNSAFE)
    d = spec.to_dict()
    assert d["mirror_safe"] is spec.mirror_safe
    assert TaskSpec.from_dict(d).mirror_safe is spec.mirror_safe
    # re-registering exactly the same spec (policy included) is a no-op
    assert register_task(spec.task_id, spec.kind, spec.num_classes, mirror_safe=spec.mirror_safe) == spec


def test_position_classification_tasks_are_mirror_unsafe():
    for task_id in ("fetal_head_pos_cls", "fetal_sacral_pos_cls"):
        assert get_task(task_id).mirror_safe is False
    assert get_task("organ_cls").mirror_safe is True


def test_old_dicts_without_policies_load_with_the_kind_default():
    for spec in list_tasks():
        old = {k: v for k, v in spec.to_dict().items() if k != "mirror_safe"}
        loaded = TaskSpec.from_dict(old)
        assert loaded == spec  # same task: equality is id, kind and size
        assert loaded.mirror_safe is MIRROR_SAFE_DEFAULT[spec.kind]


def test_policies_are_not_part_of_task_identity():
    spec = get_task("organ_cls")
    other = TaskSpec(spec.task_id, spec.kind, spec.num_classes, mirror_safe=not spec.mirror_safe)
    assert other == spec and hash(other) == hash(spec)
    assert TaskSpec("x", TaskKind.DETECTION, 1).mirror_safe is True
    assert TaskSpec("x", TaskKind.REGRESSION, 2).mirror_safe is False


@pytest.mark.parametrize(
    "kind,n,match",
    [
        (TaskKind.SEGMENTATION, 1, r"expected 2\.\.255 classes, background included"),
        (TaskKind.SEGMENTATION, 256, r"expected 2\.\.255"),
        (TaskKind.CLASSIFICATION, 1, r"expected at least 2 classes"),
        (TaskKind.CLASSIFICATION, 0, r"expected at least 2 classes"),
        (TaskKind.DETECTION, 2, r"expected exactly 1 box per image"),
        (TaskKind.DETECTION, 0, r"expected exactly 1 box per image"),
        (TaskKind.REGRESSION, 0, r"expected at least 1 landmark\(s\)"),
        (TaskKind.REGRESSION, -3, r"expected at least 1 landmark\(s\)"),
    ],
    ids=lambda v: getattr(v, "value", str(v)),
)
def test_bad_registration_per_kind_is_a_clear_value_error(kind, n, match):
    with pytest.raises(ValueError, match=match):
        register_task("bad_task_never_registered", kind, n)
    assert not has_task("bad_task_never_registered")


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        (("bad_task_never_registered", "keypoints", 2), {}, "unknown kind 'keypoints'"),
        (("bad_task_never_registered", TaskKind.CLASSIFICATION, 2.5), {}, "expected an integer"),
        (("bad_task_never_registered", TaskKind.CLASSIFICATION, True), {}, "num_classes=True"),
        (("", TaskKind.CLASSIFICATION, 2), {}, "non-empty string"),
        ((" padded ", TaskKind.CLASSIFICATION, 2), {}, "without surrounding spaces"),
        (("bad_task_never_registered", TaskKind.CLASSIFICATION, 2), {"mirror_safe": "yes"}, "mirror_safe='yes'"),
    ],
)
def test_other_bad_registrations(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        register_task(*args, **kwargs)
    assert not has_task("bad_task_never_registered")


def test_reregistering_with_another_policy_is_refused():
    spec = get_task("fetal_head_pos_cls")
    with pytest.raises(ValueError, match="already registered"):
        register_task(spec.task_id, spec.kind, spec.num_classes, mirror_safe=True)
    assert get_task("fetal_head_pos_cls").mirror_safe is False


def test_a_new_task_is_one_register_call():
    try:
        spec = register_task("my_new_task_28", "classification", 4, mirror_safe=True)
        assert get_task("my_new_task_28") is spec and spec.mirror_safe and spec.output_dim == 4
        assert register_task("my_new_task_28", TaskKind.CLASSIFICATION, 4, mirror_safe=True) == spec
    finally:
        tasks._REGISTRY.pop("my_new_task_28", None)
