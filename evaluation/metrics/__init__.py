"""Challenge metrics as pure numpy functions: arrays in, floats out.

One module per kind; every function documents its edge-case policy and is tested against an
independent reference (scikit-learn, SimpleITK, brute force). Nothing here reads files or knows
about tasks: the scoring policies (:mod:`evaluation.scoring`) decide which edge case applies where.

- :mod:`.segmentation` — ``dice``, ``hausdorff``, ``hd95``, ``per_class_metrics`` (a whole label
  map at once: the exact accelerated search of :mod:`._search`, or the compiled kernel of
  :mod:`._seg_numba` chosen by :mod:`._kernel`).
- :mod:`.classification` — one confusion-matrix core: accuracy, F1, MCC (batched), and AUC.
- :mod:`.detection` — ``iou_xyxy``; :mod:`.regression` — ``radial_errors``, ``mean_radial_error``.
"""

from evaluation.metrics._kernel import prepare_fast_kernel
from evaluation.metrics.classification import (
    MCC_WORST_CASE_BUDGET,
    accuracy,
    auc_binary,
    auc_ovr_macro,
    confusion_matrix,
    f1_macro,
    f1_per_class,
    f1_weighted,
    mcc,
    mcc_worst_case,
)
from evaluation.metrics.detection import iou_xyxy
from evaluation.metrics.regression import mean_radial_error, radial_errors
from evaluation.metrics.segmentation import (
    SegClassMetrics,
    diagonal,
    dice,
    directed_distances,
    foreground_mean,
    hausdorff,
    hd95,
    per_class_metrics,
)

__all__ = [
    "dice",
    "hausdorff",
    "hd95",
    "directed_distances",
    "SegClassMetrics",
    "per_class_metrics",
    "foreground_mean",
    "prepare_fast_kernel",
    "diagonal",
    "iou_xyxy",
    "radial_errors",
    "mean_radial_error",
    "confusion_matrix",
    "accuracy",
    "f1_per_class",
    "f1_macro",
    "f1_weighted",
    "mcc",
    "mcc_worst_case",
    "MCC_WORST_CASE_BUDGET",
    "auc_binary",
    "auc_ovr_macro",
]
