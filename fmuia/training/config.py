"""Training options: their defaults, types and the ``--config FILE`` of ``fmuia train`` (no torch here).

A configuration file is a YAML or JSON mapping whose keys are the training options
(:data:`DEFAULTS`) plus ``data`` and ``out`` (the ``--data`` and ``--out`` folders). Paths are
read as given, relative to the folder ``fmuia`` runs in, like the flags. Flags given on the
command line override the file. Every run folder keeps its resolved options as ``config.yaml``
(:func:`write_config`), so ``fmuia train --config runs/x/config.yaml --out runs/y`` trains the
same run again.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from fmuia._atomic import write_text
from fmuia.errors import FmuiaError

__all__ = [
    "DEFAULTS", "RESUME_MUTABLE", "FILE_KEYS", "CONFIG_NAME", "PYRAMID_CHOICES", "CHECKS", "check_option",
    "read_config", "merge_options", "config_dict", "write_config", "options_from_config",
]

DEFAULTS: dict = {
    "backbone": "efficientnet_b4",
    "pretrained": "imagenet",
    "weights": None,
    "img_size": 256,
    "epochs": 20,
    "steps_per_epoch": None,  # None: one pass over the training samples (per rank)
    "batch_size": 8,
    "lr": 1e-4,
    "head_lr_scale": 10.0,
    "weight_decay": 1e-4,
    "warmup_steps": None,  # None: 5 % of all steps, at most 500
    "min_lr_ratio": 0.01,
    "clip_grad": 1.0,
    "val": None,  # a labelled data root; None: hold out val_fraction of each task
    "val_fraction": 0.1,
    "seed": 0,
    "device": "auto",
    "workers": 2,
    "task_weights": None,
    "tasks": None,  # restrict training to these task ids
    "augment": True,
    "flip_kinds": None,  # None: flip every mirror-safe task; a list of kinds: only mirror-safe tasks of those
    "amp": "auto",  # auto (bf16 if supported, else fp16) | bf16 | fp16 | none; CUDA only
    "channels_last": None,  # None: on CUDA only
    "fpn_channels": 64,  # the stride-4 decoder dominates CPU cost: 64 keeps it ~10 % of the encoder
    "dropout": 0.2,
    "freeze_encoder": False,  # train the FPN and heads only (encoder in eval mode, no gradients)
    "unfreeze_after": None,  # with freeze_encoder: train the encoder too from this (0-based) epoch on
    "layer_decay": None,  # layer-wise LR decay for the encoder (ViTs), in (0, 1]
    "pyramid": "auto",  # auto | simple | none: a ViTDet simple pyramid for single-scale encoders (plain ViTs)
    "out_indices": None,  # encoder features for the pyramid/FPN: N (the last N) or a list; None: the backbone's
    "backbone_kwargs": None,  # more timm model arguments (config file only), e.g. {drop_path_rate: 0.1}
    "stop_after_epochs": None,  # stop this invocation after N epochs (resume later)
    "progress": "auto",  # auto | bars | lines | none (True/False: auto/none)
    "log_every": 50,  # without a terminal: one progress line every N steps
}
# Options a resumed run may change; every other one must match the run being resumed.
RESUME_MUTABLE = {"epochs", "device", "workers", "stop_after_epochs", "progress", "val", "log_every"}
FILE_KEYS = ("data", "out", *DEFAULTS)
CONFIG_NAME = "config.yaml"
_PROGRESS = ("auto", "bars", "lines", "none")
# fmuia.model.pyramid.PYRAMID_CHOICES, here without importing torch (a test keeps them equal)
PYRAMID_CHOICES = ("auto", "none", "simple")
# timm arguments that fmuia sets itself, from these options (or always)
_OWN_TIMM_KWARGS = {"img_size": "img_size", "out_indices": "out_indices", "pretrained": "pretrained / weights",
                    "features_only": None, "dynamic_img_size": None}


# ---- one checker per option: value -> the value to use, or ValueError(what was expected) -----------

Check = Callable[[Any], Any]


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError("an integer")
    return v


def _float(v: Any) -> float:
    # PyYAML reads 1e-4 (no dot) as a string: accept a number written that way
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise ValueError("a number") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError("a finite number")
    return float(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError("a non-empty string")
    return v


def _choice(*values: str) -> Check:
    def check(v: Any) -> str:
        if not isinstance(v, str) or v.lower() not in values:
            raise ValueError("one of " + ", ".join(values))
        return v.lower()

    return check


def _optional(check: Check) -> Check:
    def opt(v: Any) -> Any:
        return None if v is None else check(v)

    opt.__name__ = check.__name__
    return opt


def _str_list(v: Any) -> list[str]:
    if isinstance(v, str):
        v = [t.strip() for t in v.split(",") if t.strip()]
    if not isinstance(v, list) or not v or not all(isinstance(t, str) and t for t in v):
        raise ValueError("a list of names (or one comma-separated string)")
    return v


def _task_weights(v: Any) -> str | dict[str, float]:
    if isinstance(v, str) and v.strip():
        return v
    if isinstance(v, dict) and v and all(isinstance(k, str) for k in v):
        try:
            return {k: _float(w) for k, w in v.items()}
        except ValueError:
            pass
    raise ValueError("uniform, size, sqrt, 'KEY=W,...' or a mapping of task ids or kinds to weights")


def _progress(v: Any) -> bool | str:
    return v if isinstance(v, bool) else _choice(*_PROGRESS)(v)


_INDICES = "an integer N (the last N features) or feature indices such as 2,5,8,11 (negative: from the end)"


def _out_indices(v: Any) -> int | list[int]:
    # the flag's text: "4" is timm's "the last 4", "2,5,8,11" (or "11,": one block) a list
    if isinstance(v, str):
        parts = [t.strip() for t in v.split(",")]
        if len(parts) > 1 and parts[-1] == "":
            parts.pop()
        try:
            nums = [int(t) for t in parts]
        except ValueError:
            raise ValueError(_INDICES) from None
        v = nums[0] if len(parts) == 1 and "," not in v else nums
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 1:
            raise ValueError(_INDICES)
        return v
    if isinstance(v, (list, tuple)) and v and all(isinstance(i, int) and not isinstance(i, bool) for i in v):
        return list(v)
    raise ValueError(_INDICES)


def _plain(v: Any) -> Any:
    """A YAML-writable copy of ``v`` (tuples as lists), or ValueError."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping) and all(isinstance(k, str) for k in v):
        return {k: _plain(x) for k, x in v.items()}
    raise ValueError("plain values (numbers, strings, lists, mappings)")


def _backbone_kwargs(v: Any) -> dict[str, Any]:
    what = "a mapping of timm model arguments to values, e.g. {drop_path_rate: 0.1}"
    if not isinstance(v, Mapping) or not all(isinstance(k, str) and k for k in v):
        raise ValueError(what)
    for k in v:
        if k in _OWN_TIMM_KWARGS:
            own = _OWN_TIMM_KWARGS[k]
            raise ValueError(f"{what}, without {k!r} (" + (f"set by the option {own})" if own else "fmuia sets it)"))
    try:
        return _plain(dict(v))
    except ValueError as exc:
        raise ValueError(f"{what}, of {exc}") from None


CHECKS: dict[str, Check] = {
    "data": _str, "out": _str,
    "backbone": _str, "pretrained": _choice("imagenet", "none"), "weights": _optional(_str),
    "img_size": _int, "epochs": _int, "steps_per_epoch": _optional(_int), "batch_size": _int,
    "lr": _float, "head_lr_scale": _float, "weight_decay": _float, "warmup_steps": _optional(_int),
    "min_lr_ratio": _float, "clip_grad": _optional(_float), "val": _optional(_str), "val_fraction": _float,
    "seed": _int, "device": _str, "workers": _int, "task_weights": _optional(_task_weights),
    "tasks": _optional(_str_list), "augment": _bool, "flip_kinds": _optional(_str_list),
    "amp": _choice("auto", "bf16", "fp16", "none"), "channels_last": _optional(_bool), "fpn_channels": _int,
    "dropout": _float, "freeze_encoder": _bool, "unfreeze_after": _optional(_int), "layer_decay": _optional(_float),
    "stop_after_epochs": _optional(_int), "progress": _progress, "log_every": _int,
    "pyramid": _choice(*PYRAMID_CHOICES), "out_indices": _optional(_out_indices),
    "backbone_kwargs": _optional(_backbone_kwargs),
}


def check_option(name: str, value: Any) -> Any:
    """``value`` checked and normalised by ``CHECKS[name]``; an :class:`FmuiaError` naming the option
    (as its flag, ``--out-indices``, where it has one) and what it expects."""
    try:
        return CHECKS[name](value)
    except ValueError as exc:
        label = name if name in _NO_FLAG else "--" + name.replace("_", "-")
        raise FmuiaError(f"{label} {value!r}: expected {exc}") from None


_NO_FLAG = {"backbone_kwargs", "val_fraction", "warmup_steps", "min_lr_ratio", "weight_decay", "clip_grad",
            "flip_kinds", "fpn_channels", "dropout", "stop_after_epochs"}


def _parse(path: Path, text: str) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise FmuiaError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    try:
        return yaml.safe_load(text)  # YAML 1.1 reads JSON too
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise FmuiaError(f"{path}{where}: not valid YAML: {what}") from None


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The options of a YAML or JSON configuration file, checked key by key.

    An unreadable file, a file that is not a mapping, an unknown key or a value of the wrong type is
    an :class:`FmuiaError` naming the file and the key. Keys left out are simply not set.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FmuiaError(f"--config {p}: cannot read the file: {getattr(exc, 'strerror', None) or exc}") from None
    obj = _parse(p, text)
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise FmuiaError(f"{p}: expected a mapping of option names to values, found {type(obj).__name__}")
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = str(key).replace("-", "_")
        if name not in CHECKS:
            close = difflib.get_close_matches(name, FILE_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FmuiaError(f"{p}: unknown key {key!r}{hint}; known keys: {', '.join(FILE_KEYS)}")
        try:
            out[name] = CHECKS[name](value)
        except ValueError as exc:
            raise FmuiaError(f"{p}: key {key!r}: expected {exc}, got {value!r}") from None
    return out


def merge_options(file_options: Mapping[str, Any], flags: Mapping[str, Any]) -> dict[str, Any]:
    """The file's options overridden by the flags given (a flag left out is ``None``)."""
    return {**file_options, **{k: v for k, v in flags.items() if v is not None}}


def options_from_config(path: str | os.PathLike, flags: Mapping[str, Any]) -> dict[str, Any]:
    """``--config FILE`` merged with the command line ``flags`` (``data``, ``out``, ``resume`` and
    training options; ``None`` = not given).

    Training again into the run folder the file was kept in is refused (it would overwrite that
    run): pass ``--out`` to reproduce elsewhere, or ``--resume`` to continue it.
    """
    p = Path(path)
    merged = merge_options(read_config(p), flags)
    out = merged.get("out")
    if out is not None and merged.get("resume") is None and (Path(out) / "last.pt").is_file() \
            and Path(out).resolve() == p.resolve().parent:
        raise FmuiaError(
            f"--config {p}: its out {out} holds that run (last.pt); pass --out NEW_DIR to train it again "
            f"elsewhere, or --resume {out} to continue it"
        )
    return merged


def config_dict(opts: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration-file form of resolved training options (``data``, ``out``, then :data:`DEFAULTS`' keys)."""
    out: dict[str, Any] = {"data": opts.get("data_root"), "out": opts.get("out_dir")}
    for k in DEFAULTS:
        v = opts.get(k, DEFAULTS[k])
        out[k] = list(v) if isinstance(v, tuple) else (dict(v) if isinstance(v, Mapping) else v)
    return out


def write_config(path: str | os.PathLike, opts: Mapping[str, Any]) -> Path:
    """Write ``opts`` (resolved) as a YAML configuration file that :func:`read_config` reads back."""
    body = yaml.safe_dump(config_dict(opts), sort_keys=False, default_flow_style=False, allow_unicode=True)
    header = ("# fmuia train: the resolved options of this run. Reproduce it with\n"
              "#   fmuia train --config THIS_FILE --out NEW_DIR\n")
    write_text(path, header + body)
    return Path(path)
