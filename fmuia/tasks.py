"""The task registry: the one place a task id becomes a :class:`TaskSpec`.

Every FM_UIA task is an instance of one of four kinds. Code in every layer dispatches on
``spec.kind`` (through a per-layer table keyed by :class:`TaskKind`), never on a task id, so
adding a task is one :func:`register_task` call.

This module must stay free of torch: the validator and the scorer import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class TaskKind(str, Enum):
    """The four task kinds. The value is our canonical lower-case name."""

    SEGMENTATION = "segmentation"
    CLASSIFICATION = "classification"
    DETECTION = "detection"
    REGRESSION = "regression"

    @property
    def csv_name(self) -> str:
        """The ``task_name`` string used in the official CSVs (note the capital R)."""
        return _CSV_NAMES[self]

    @classmethod
    def from_csv_name(cls, name: str) -> TaskKind:
        """Parse the CSV ``task_name``; raises ``ValueError`` for an unknown name."""
        try:
            return _FROM_CSV[name.strip()]
        except KeyError:
            expected = ", ".join(repr(v) for v in _CSV_NAMES.values())
            raise ValueError(f"unknown task_name {name!r}; expected one of {expected}") from None


_CSV_NAMES = {
    TaskKind.SEGMENTATION: "segmentation",
    TaskKind.CLASSIFICATION: "classification",
    TaskKind.DETECTION: "detection",
    TaskKind.REGRESSION: "Regression",
}
# The official CSVs use exactly these strings; we also accept our canonical lower-case names.
_FROM_CSV = {**{v: k for k, v in _CSV_NAMES.items()}, **{k.value: k for k in TaskKind}}

# Which prediction JSON file holds each non-dense kind (segmentation is one PNG per row).
PREDICTION_FILES = {
    TaskKind.CLASSIFICATION: "classification_predictions.json",
    TaskKind.DETECTION: "detection_predictions.json",
    TaskKind.REGRESSION: "regression_predictions.json",
}


@dataclass(frozen=True)
class TaskSpec:
    """One task: its id, kind and size.

    ``num_classes`` is the CSV's ``num_classes`` column: the number of classes (background
    included) for segmentation and classification, the number of landmarks for regression, and
    the number of boxes per image (1) for detection.
    """

    task_id: str
    kind: TaskKind
    num_classes: int

    @property
    def num_points(self) -> int:
        """Number of landmarks (regression only)."""
        if self.kind is not TaskKind.REGRESSION:
            raise AttributeError(f"task {self.task_id!r} is {self.kind.value}, not regression")
        return self.num_classes

    @property
    def output_dim(self) -> int:
        """Size of the network head's output for one image (before spatial dims)."""
        return {
            TaskKind.SEGMENTATION: self.num_classes,
            TaskKind.CLASSIFICATION: self.num_classes,
            TaskKind.DETECTION: 5,
            TaskKind.REGRESSION: 2 * self.num_classes,
        }[self.kind]

    def to_dict(self) -> dict:
        return {"task_id": self.task_id, "kind": self.kind.value, "num_classes": self.num_classes}

    @classmethod
    def from_dict(cls, d: dict) -> TaskSpec:
        return cls(str(d["task_id"]), TaskKind(d["kind"]), int(d["num_classes"]))


_REGISTRY: dict[str, TaskSpec] = {}


def register_task(task_id: str, kind: TaskKind | str, num_classes: int) -> TaskSpec:
    """Add a task to the registry (re-registering an identical spec is a no-op)."""
    spec = TaskSpec(task_id, TaskKind(kind), int(num_classes))
    old = _REGISTRY.get(task_id)
    if old is not None and old != spec:
        raise ValueError(f"task {task_id!r} already registered as {old}")
    _REGISTRY[task_id] = spec
    return spec


def get_task(task_id: str) -> TaskSpec:
    """Look a task up; raises ``KeyError`` with the known ids when it is unknown."""
    try:
        return _REGISTRY[task_id]
    except KeyError:
        raise KeyError(f"unknown task {task_id!r}") from None


def has_task(task_id: str) -> bool:
    return task_id in _REGISTRY


def list_tasks(kind: TaskKind | str | None = None) -> list[TaskSpec]:
    """All registered tasks (optionally of one kind), in registration order."""
    if kind is None:
        return list(_REGISTRY.values())
    k = TaskKind(kind)
    return [s for s in _REGISTRY.values() if s.kind is k]


_S, _C, _D, _R = TaskKind.SEGMENTATION, TaskKind.CLASSIFICATION, TaskKind.DETECTION, TaskKind.REGRESSION
for _tid, _kind, _n in [
    ("breast_lesion", _S, 2),
    ("cardiac_multi", _S, 4),
    ("carotid_artery", _S, 2),
    ("cervix", _S, 2),
    ("cervix_multi", _S, 3),
    ("fetal_abdomen_multi", _S, 5),
    ("fetal_head", _S, 2),
    ("fetal_heart", _S, 2),
    ("head_symphysis_multi", _S, 3),
    ("lung", _S, 2),
    ("ovary_tumor", _S, 2),
    ("thyroid_nodule", _S, 2),
    ("breast_2cls", _C, 2),
    ("breast_3cls", _C, 3),
    ("fetal_head_pos_cls", _C, 8),
    ("fetal_plane_cls", _C, 6),
    ("fetal_sacral_pos_cls", _C, 8),
    ("liver_lesion_2cls", _C, 2),
    ("lung_2cls", _C, 2),
    ("lung_disease_3cls", _C, 3),
    ("organ_cls", _C, 6),
    ("spinal_cord_injury_loc", _D, 1),
    ("thyroid_nodule_det", _D, 1),
    ("uterine_fibroid_det", _D, 1),
    ("FUGC", _R, 2),
    ("IUGC", _R, 3),
    ("fetal_femur", _R, 2),
]:
    register_task(_tid, _kind, _n)
del _tid, _kind, _n
