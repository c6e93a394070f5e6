"""The task registry: the one place a task id becomes a :class:`TaskSpec`.

Every FM_UIA task is an instance of one of four kinds. Code in every layer dispatches on
``spec.kind`` (through a per-layer table keyed by :class:`TaskKind`), never on a task id, so
adding a task is one :func:`register_task` call.

This module must stay free of torch: the validator and the scorer import it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
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


# A task whose spec does not say: may a horizontal flip of its images keep the labels valid? Masks and
# boxes move with the pixels. Classes and landmark order are unknown for a task defined only by a
# CSV, and may encode left/right (position classes, "left end first"), so those kinds say no.
MIRROR_SAFE_DEFAULT: dict[TaskKind, bool] = {
    TaskKind.SEGMENTATION: True,
    TaskKind.CLASSIFICATION: False,
    TaskKind.DETECTION: True,
    TaskKind.REGRESSION: False,
}


@dataclass(frozen=True)
class TaskSpec:
    """One task: its id, kind and size, and its per-task policies.

    ``num_classes`` is the CSV's ``num_classes`` column: the number of classes (background
    included) for segmentation and classification, the number of landmarks for regression, and
    the number of boxes per image (1) for detection.

    Policies (not part of equality: a CSV or a checkpoint that agrees on id, kind and size
    describes the same task whatever policy it was trained with):

    - ``mirror_safe``: a horizontal flip keeps the labels valid (masks, boxes and points moved with
      the pixels; classes and landmark identities unchanged). Training flips only these tasks, and
      ``fmuia predict --tta`` mirrors only these. ``None`` → :data:`MIRROR_SAFE_DEFAULT` of the kind.
    """

    task_id: str
    kind: TaskKind
    num_classes: int
    mirror_safe: bool | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.mirror_safe is None:
            object.__setattr__(self, "mirror_safe", MIRROR_SAFE_DEFAULT[TaskKind(self.kind)])

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
        """Plain types, as stored in checkpoints."""
        return {"task_id": self.task_id, "kind": self.kind.value, "num_classes": self.num_classes,
                "mirror_safe": bool(self.mirror_safe)}

    @classmethod
    def from_dict(cls, d: dict) -> TaskSpec:
        """Inverse of :meth:`to_dict`; a dict written before the policies existed gets the kind's defaults."""
        flag = d.get("mirror_safe")
        return cls(str(d["task_id"]), TaskKind(d["kind"]), int(d["num_classes"]), None if flag is None else bool(flag))


# What num_classes may be, per kind: (lowest, highest or None, what it counts).
_NUM_CLASSES_RANGE: dict[TaskKind, tuple[int, int | None, str]] = {
    TaskKind.SEGMENTATION: (2, 255, "classes, background included (8-bit masks)"),
    TaskKind.CLASSIFICATION: (2, None, "classes"),
    TaskKind.DETECTION: (1, 1, "box per image"),
    TaskKind.REGRESSION: (1, None, "landmark(s)"),
}


def validate_spec(spec: TaskSpec) -> TaskSpec:
    """Return ``spec`` if it is a valid task of its kind; raise ``ValueError`` saying what is wrong.

    Segmentation 2..255 classes (background included), classification at least 2 classes, detection
    exactly 1 box per image, regression at least 1 landmark; a non-empty id without surrounding
    spaces; ``mirror_safe`` a bool.
    """
    if not isinstance(spec.task_id, str) or not spec.task_id or spec.task_id != spec.task_id.strip():
        raise ValueError(f"task id {spec.task_id!r}: expected a non-empty string without surrounding spaces")
    if not isinstance(spec.kind, TaskKind):
        raise ValueError(f"task {spec.task_id!r}: kind {spec.kind!r} is not a TaskKind")
    n = spec.num_classes
    lo, hi, what = _NUM_CLASSES_RANGE[spec.kind]
    if isinstance(n, bool) or not isinstance(n, int) or n < lo or (hi is not None and n > hi):
        expected = f"exactly {lo}" if lo == hi else (f"{lo}..{hi}" if hi is not None else f"at least {lo}")
        raise ValueError(f"task {spec.task_id!r} ({spec.kind.value}): num_classes={n!r}; expected {expected} {what}")
    if not isinstance(spec.mirror_safe, bool):
        raise ValueError(f"task {spec.task_id!r}: mirror_safe={spec.mirror_safe!r}; expected True or False")
    return spec


_REGISTRY: dict[str, TaskSpec] = {}


def register_task(task_id: str, kind: TaskKind | str, num_classes: int, *, mirror_safe: bool | None = None) -> TaskSpec:
    """Add a task to the registry (re-registering an identical spec is a no-op).

    Raises ``ValueError`` for an unknown kind, a size its kind does not allow (see
    :func:`validate_spec`) or a task id already registered with another spec or policy.
    ``mirror_safe=None`` takes the kind's default (:data:`MIRROR_SAFE_DEFAULT`).
    """
    try:
        k = TaskKind(kind)
    except ValueError:
        raise ValueError(f"task {task_id!r}: unknown kind {kind!r}; expected one of {[v.value for v in TaskKind]}") from None
    if mirror_safe is not None and not isinstance(mirror_safe, bool):
        raise ValueError(f"task {task_id!r}: mirror_safe={mirror_safe!r}; expected True, False or None")
    try:
        if isinstance(num_classes, bool):
            raise TypeError
        n = operator.index(num_classes)  # any integer type; refuses True, 2.5 and "2"
    except TypeError:
        raise ValueError(f"task {task_id!r}: num_classes={num_classes!r}; expected an integer") from None
    spec = validate_spec(TaskSpec(task_id, k, n, mirror_safe))
    old = _REGISTRY.get(task_id)
    if old is not None and old.to_dict() != spec.to_dict():
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
    """Whether ``task_id`` is registered."""
    return task_id in _REGISTRY


def list_tasks(kind: TaskKind | str | None = None) -> list[TaskSpec]:
    """All registered tasks (optionally of one kind), in registration order."""
    if kind is None:
        return list(_REGISTRY.values())
    k = TaskKind(kind)
    return [s for s in _REGISTRY.values() if s.kind is k]


# The 27 FM_UIA tasks. mirror_safe, decided per task (None = the kind's default above):
# - segmentation: every class is an anatomical structure or lesion, never a side; a mirrored mask is
#   a valid mask of the mirrored image (cardiac_multi's chambers keep their identity too).
# - classification: diagnosis, plane and organ classes do not depend on left/right, so mirroring is
#   safe; fetal_head_pos_cls and fetal_sacral_pos_cls are position classes (left/right occiput or
#   sacrum positions): a mirror changes the class, so never.
# - detection: one box that moves with the pixels.
# - regression: the landmarks are ordered and the order may be positional (femur and canal ends
#   listed left end first; IUGC's symphysis ends and head point come in a fixed orientation), so a
#   mirror would swap which point is which: never, until a task declares a point permutation.
_S, _C, _D, _R = TaskKind.SEGMENTATION, TaskKind.CLASSIFICATION, TaskKind.DETECTION, TaskKind.REGRESSION
register_task("breast_lesion", _S, 2)
register_task("cardiac_multi", _S, 4)
register_task("carotid_artery", _S, 2)
register_task("cervix", _S, 2)
register_task("cervix_multi", _S, 3)
register_task("fetal_abdomen_multi", _S, 5)
register_task("fetal_head", _S, 2)
register_task("fetal_heart", _S, 2)
register_task("head_symphysis_multi", _S, 3)
register_task("lung", _S, 2)
register_task("ovary_tumor", _S, 2)
register_task("thyroid_nodule", _S, 2)
register_task("breast_2cls", _C, 2, mirror_safe=True)
register_task("breast_3cls", _C, 3, mirror_safe=True)
register_task("fetal_head_pos_cls", _C, 8, mirror_safe=False)  # position classes: left/right
register_task("fetal_plane_cls", _C, 6, mirror_safe=True)
register_task("fetal_sacral_pos_cls", _C, 8, mirror_safe=False)  # position classes: left/right
register_task("liver_lesion_2cls", _C, 2, mirror_safe=True)
register_task("lung_2cls", _C, 2, mirror_safe=True)
register_task("lung_disease_3cls", _C, 3, mirror_safe=True)
register_task("organ_cls", _C, 6, mirror_safe=True)
register_task("spinal_cord_injury_loc", _D, 1)
register_task("thyroid_nodule_det", _D, 1)
register_task("uterine_fibroid_det", _D, 1)
register_task("FUGC", _R, 2)
register_task("IUGC", _R, 3)
register_task("fetal_femur", _R, 2)
