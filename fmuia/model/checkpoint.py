"""Reading checkpoints and rebuilding their network: what inference needs (no training code).

A checkpoint is a ``torch.save`` dict holding only plain types and tensors, so it loads with
``weights_only=True``::

    {"format": "fmuia-checkpoint", "format_version": 1,
     "meta": {"backbone", "img_size", "tasks": [TaskSpec.to_dict()...], "mean", "std",
              "fmuia_version", "model_config", "timm_version", "torch_version", "encoder_frozen", ...},

``model_config`` holds :class:`~fmuia.model.MultiTaskNet`'s options (``img_size``, ``pyramid``,
``out_indices``, ``backbone_kwargs``, ``fpn_channels``, ...); a checkpoint written before the
encoder options existed lacks them and is rebuilt the old way (no size passed to timm, no pyramid).
     "model": state_dict,
     "train_state": {...} | None}      # only fmuia.training reads it (resume)

Writing checkpoints and the training state live in :mod:`fmuia.training.checkpoint`.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

from fmuia import __version__
from fmuia.errors import FmuiaError
from fmuia.model.net import MultiTaskNet, build_model
from fmuia.tasks import TaskSpec

__all__ = ["FORMAT", "FORMAT_VERSION", "read_checkpoint", "build_from_meta", "load_for_inference"]

FORMAT = "fmuia-checkpoint"
FORMAT_VERSION = 1

log = logging.getLogger("fmuia")

# meta keys every reader relies on, and the ones make_meta writes besides (anything else: a warning)
_KNOWN_META = {"backbone", "img_size", "tasks", "mean", "std", "fmuia_version", "model_config", "timm_version",
               "torch_version", "epoch", "val_composite", "train_options", "encoder_frozen"}

# model_config keys added with foundation backbones; a checkpoint without them was built the old way
_OLD_MODEL_CONFIG = {"img_size": None, "pyramid": "none", "out_indices": None, "backbone_kwargs": None,
                     "fit_input": False}


def _model_options() -> set[str]:
    """The network options a checkpoint's ``model_config`` may set (MultiTaskNet's keywords)."""
    params = inspect.signature(MultiTaskNet.__init__).parameters
    return {n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD and n not in ("self", "tasks", "pretrained", "weights")}


def _meta_problems(obj: dict[str, Any]) -> list[str]:
    """What makes a loaded checkpoint unusable (missing or ill-typed fields)."""
    meta = obj.get("meta")
    if not isinstance(meta, dict):
        return ["no 'meta' block"]
    problems = []
    if not isinstance(obj.get("model"), dict) or not obj["model"]:
        problems.append("no 'model' weights")
    if not isinstance(meta.get("backbone"), str) or not meta["backbone"]:
        problems.append("meta.backbone: expected a timm model name")
    size = meta.get("img_size")
    if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 8192:
        problems.append(f"meta.img_size: expected an integer in 16..8192, got {size!r}")
    tasks = meta.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        problems.append("meta.tasks: expected a non-empty list of tasks")
    else:
        for i, d in enumerate(tasks):
            try:
                TaskSpec.from_dict(d)
            except Exception as exc:  # noqa: BLE001 - KeyError, ValueError, TypeError: all "not a task"
                problems.append(f"meta.tasks[{i}]: not a task ({type(exc).__name__}: {exc})")
    for name in ("mean", "std"):
        v = meta.get(name)
        if v is not None and not (isinstance(v, (list, tuple)) and len(v) == 3 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
            problems.append(f"meta.{name}: expected three finite numbers, got {v!r}")
    if meta.get("std") is not None and not problems and any(x <= 0 for x in meta["std"]):
        problems.append("meta.std: expected positive numbers")
    cfg = meta.get("model_config")
    if cfg is not None and not isinstance(cfg, dict):
        problems.append(f"meta.model_config: expected an object, got {type(cfg).__name__}")
    elif cfg:
        unknown = sorted(set(cfg) - _model_options() - {"backbone"})
        if unknown:
            problems.append(f"meta.model_config: unknown option(s) {', '.join(unknown)} (this fmuia knows "
                            f"{', '.join(sorted(_model_options()))})")
        problems += _config_type_problems(cfg)
    return problems


def _config_type_problems(cfg: dict[str, Any]) -> list[str]:
    """Ill-typed values of the model_config keys that shape the encoder (the builder reports bad values)."""
    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    checks = {
        "img_size": (lambda v: v is None or is_int(v), "an integer or null"),
        "pyramid": (lambda v: isinstance(v, str), "a string"),
        "out_indices": (lambda v: v is None or is_int(v) or (isinstance(v, (list, tuple)) and all(map(is_int, v))),
                        "null, an integer or a list of integers"),
        "backbone_kwargs": (lambda v: v is None or (isinstance(v, dict) and all(isinstance(k, str) for k in v)),
                            "null or an object"),
        "fit_input": (lambda v: isinstance(v, bool), "true or false"),
    }
    return [f"meta.model_config.{k}: expected {what}, got {cfg[k]!r}"
            for k, (ok, what) in checks.items() if k in cfg and not ok(cfg[k])]


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint dict (``weights_only``: no code runs from the file)."""
    path = Path(path)
    if not path.is_file():
        raise FmuiaError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise FmuiaError(f"{path}: not a readable fmuia checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise FmuiaError(f"{path}: not an fmuia checkpoint (expected a file written by `fmuia train`)")
    version = obj.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise FmuiaError(f"{path}: format_version {version!r} is not an integer")
    if version > FORMAT_VERSION:
        raise FmuiaError(f"{path}: checkpoint format {version} is newer than this fmuia supports ({FORMAT_VERSION})")
    problems = _meta_problems(obj)
    if problems:
        raise FmuiaError(f"{path}: unusable checkpoint: " + "; ".join(problems))
    unknown = sorted(set(obj["meta"]) - _KNOWN_META)
    if unknown:
        log.warning("%s: checkpoint meta has field(s) this fmuia does not know, ignored: %s", path, ", ".join(unknown))
    return obj


def build_from_meta(meta: dict[str, Any]) -> MultiTaskNet:
    """A fresh, randomly initialised network shaped like the checkpoint's (no download)."""
    tasks = [TaskSpec.from_dict(d) for d in meta["tasks"]]
    cfg = {**_OLD_MODEL_CONFIG, **(meta.get("model_config") or {})}
    cfg.pop("backbone", None)
    return build_model(tasks, backbone=meta["backbone"], pretrained="none", **cfg)


def load_for_inference(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[MultiTaskNet, dict[str, Any]]:
    """``(net, meta)``: the network in eval mode on ``device`` and the checkpoint's meta."""
    obj = read_checkpoint(path)
    meta = obj["meta"]
    net = build_from_meta(meta)
    try:
        net.load_state_dict(obj["model"])
    except RuntimeError as exc:  # parameter names or shapes differ: written by another fmuia model version
        first = str(exc).strip().splitlines()[0]
        raise FmuiaError(
            f"{path}: checkpoint does not fit this version's model (written by fmuia "
            f"{meta.get('fmuia_version', '?')}, this is {__version__}): {first}; "
            "retrain, or predict with the fmuia version that wrote it"
        ) from None
    net.to(device).eval()
    return net, meta
