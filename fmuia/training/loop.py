"""The training loop: task-uniform batches, per-kind losses, AdamW with a ×10 head LR (and optional
layer-wise decay, :mod:`fmuia.training.optim`), warmup + cosine, gradient clipping, AMP on CUDA, an
optionally frozen encoder (``freeze_encoder``, ``unfreeze_after``), per-epoch validation, checkpoints,
exact resume, DDP, and progress that a log file can read (:mod:`fmuia.progress`). The options, their
types and ``--config FILE`` are in :mod:`fmuia.training.config`.
"""

from __future__ import annotations

import csv
import gc
import io
import math
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from fmuia._atomic import ensure_dir, json_safe, write_json, write_text
from fmuia.dataset import load_root, validate_labels
from fmuia.errors import FmuiaError
from fmuia.model import build_model
from fmuia.model.net import MultiTaskNet
from fmuia.progress import (
    KIND_ABBREV,
    Progress,
    format_duration,
    format_train_line,
    format_val_line,
    resolve_mode,
)
from fmuia.tasks import TaskKind, TaskSpec, list_tasks
from fmuia.training import distributed as D
from fmuia.training.checkpoint import make_meta, read_checkpoint, save_checkpoint
from fmuia.training.config import CONFIG_NAME, DEFAULTS, RESUME_MUTABLE, check_option, write_config
from fmuia.training.data import AugmentConfig, TaskDataset, collate
from fmuia.training.losses import LOSSES
from fmuia.training.optim import param_groups
from fmuia.training.sampler import TaskBatchSampler, parse_task_weights
from fmuia.training.validate import validate

# Re-exported: the options live in fmuia.training.config (no torch there), with their types.
__all__ = ["DEFAULTS", "RESUME_MUTABLE", "train", "split_by_task", "lr_lambda"]


def _resolve_options(data_root, out_dir, options: dict) -> tuple[dict, dict | None]:
    unknown = set(options) - set(DEFAULTS) - {"resume"}
    if unknown:
        raise TypeError(f"unknown training option(s): {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    resume = options.pop("resume", None)
    passed = {k: v for k, v in options.items() if v is not None}
    if isinstance(passed.get("tasks"), str):
        passed["tasks"] = [t.strip() for t in passed["tasks"].split(",") if t.strip()]
    for k in ("val", "weights"):
        if passed.get(k) is not None:
            passed[k] = str(passed[k])
    for k in _NETWORK_KEYS:  # normalised before a resume compares them: "2,5,8,11" is [2, 5, 8, 11]
        if passed.get(k) is not None:
            passed[k] = check_option(k, passed[k])
    state = None
    if resume is not None:
        path = Path(resume)
        ckpt = path / "last.pt" if path.is_dir() else path
        obj = read_checkpoint(ckpt)
        state = obj.get("train_state")
        if not state:
            raise FmuiaError(f"--resume {resume}: {ckpt} holds no training state (best.pt is weights only; use the run folder or last.pt)")
        # a run saved before an option existed ran with its default
        stored = {**DEFAULTS, **state["options"]}
        for k, v in passed.items():
            if k not in RESUME_MUTABLE and _norm(v) != _norm(stored.get(k)):
                raise FmuiaError(
                    f"--resume {resume}: option {k}={v!r} differs from the run's {stored.get(k)!r}; "
                    f"only {', '.join(sorted(RESUME_MUTABLE))} may change when resuming"
                )
        opts = {**stored, "stop_after_epochs": None, **{k: v for k, v in passed.items() if k in RESUME_MUTABLE}}
        opts["data_root"] = str(data_root) if data_root is not None else stored["data_root"]
        opts["out_dir"] = str(out_dir) if out_dir is not None else str(ckpt.parent)
        state = {**state, "_model": obj["model"], "_tasks": obj["meta"]["tasks"]}
    else:
        if data_root is None or out_dir is None:
            raise FmuiaError("training needs a data root (--data) and an output folder (--out), or --resume RUN_DIR")
        opts = {**DEFAULTS, **passed, "data_root": str(data_root), "out_dir": str(out_dir)}
    if opts.get("flip_kinds") is not None:
        opts["flip_kinds"] = sorted(TaskKind(k).value for k in opts["flip_kinds"])
    return opts, state


# options that shape the encoder and its pyramid (checked by fmuia.training.config, then by the model)
_NETWORK_KEYS = ("pyramid", "out_indices", "backbone_kwargs")


def _norm(v):
    return list(v) if isinstance(v, (tuple, list)) else (str(v) if isinstance(v, Path) else v)


def _check_options(opts: dict, *, resuming: bool = False) -> MultiTaskNet:
    """Every option that can be wrong, before any data is read or a process group joined.

    Returns the network the options build, on the meta device (:func:`network_on_meta`): the model's own
    rules (backbone name, input size, ``out_indices``, pyramid) and ``--layer-decay``'s grouping are checked
    on it, and unless ``resuming``, the ``--weights`` file too.
    """
    for k in ("img_size", "epochs", "batch_size", "log_every"):
        if isinstance(opts[k], bool) or not isinstance(opts[k], int) or opts[k] < 1:
            raise FmuiaError(f"--{k.replace('_', '-')} {opts[k]!r}: expected a positive integer")
    for k in _NETWORK_KEYS:
        if opts[k] is not None:
            check_option(k, opts[k])
    if opts["steps_per_epoch"] is not None and opts["steps_per_epoch"] < 1:
        raise FmuiaError(f"--steps-per-epoch {opts['steps_per_epoch']}: expected a positive integer")
    for k in ("lr", "head_lr_scale"):
        if not (opts[k] > 0 and math.isfinite(opts[k])):
            raise FmuiaError(f"--{k.replace('_', '-')} {opts[k]!r}: expected a positive number")
    if not 0.0 <= opts["val_fraction"] < 1.0:
        raise FmuiaError(f"val_fraction {opts['val_fraction']}: expected 0 <= value < 1")
    if str(opts["amp"] or "auto").lower() not in ("auto", "bf16", "fp16", "none"):
        raise FmuiaError(f"--amp {opts['amp']!r}: expected auto, bf16, fp16 or none")
    ld = opts["layer_decay"]
    if ld is not None and (isinstance(ld, bool) or not isinstance(ld, (int, float)) or not 0.0 < ld <= 1.0):
        raise FmuiaError(f"--layer-decay {ld!r}: expected a number in (0, 1] (1 = no decay)")
    if not isinstance(opts["freeze_encoder"], bool):
        raise FmuiaError(f"freeze_encoder {opts['freeze_encoder']!r}: expected true or false")
    ua = opts["unfreeze_after"]
    if ua is not None:
        if not opts["freeze_encoder"]:
            raise FmuiaError(f"--unfreeze-after {ua}: needs --freeze-encoder (the encoder is trained from the start otherwise)")
        if isinstance(ua, bool) or not isinstance(ua, int) or not 1 <= ua < opts["epochs"]:
            raise FmuiaError(
                f"--unfreeze-after {ua!r}: expected a number of epochs from 1 to {opts['epochs'] - 1} (fewer than --epochs)"
            )
    resolve_mode(opts["progress"])  # a bad --progress or FMUIA_PROGRESS is an error now, not after an epoch
    # the backbone's own rules (total stride, ViT patch or window size, feature indices, pyramid), then
    # timm's layer grouping for --layer-decay: the same calls as training makes, on the meta device
    net = network_on_meta(opts, weights=not resuming)
    if ld is not None:
        param_groups(net, lr=opts["lr"], head_lr_scale=opts["head_lr_scale"], weight_decay=opts["weight_decay"],
                     layer_decay=ld)
    return net


def _one_task_per_kind() -> list[TaskSpec]:
    first: dict[TaskKind, TaskSpec] = {}
    for spec in list_tasks():
        first.setdefault(spec.kind, spec)
    return list(first.values())


def network_on_meta(opts: dict, *, weights: bool = True, tasks: Sequence[TaskSpec] | None = None) -> MultiTaskNet:
    """The network ``opts`` build, on PyTorch's meta device (shapes only: no memory, no download; on the
    CPU for a family whose initialisation cannot run there).

    ``tasks``: its heads (default: one task of each kind; the encoder, pyramid and FPN do not depend on
    them). ``weights``: load ``opts["weights"]`` into it as training will (names and shapes checked;
    the values stay on disk). The same :class:`~fmuia.model.MultiTaskNet` call as training, so every
    rule of the model applies and its :class:`FmuiaError` names the option.
    """
    args = (list(tasks or _one_task_per_kind()), opts["backbone"], "none", opts["weights"] if weights else None)
    kwargs = dict(img_size=opts["img_size"], fpn_channels=opts["fpn_channels"], dropout=opts["dropout"],
                  pyramid=opts["pyramid"], out_indices=opts["out_indices"], backbone_kwargs=opts["backbone_kwargs"])
    try:
        with warnings.catch_warnings():
            # loading a weights file into meta tensors is a no-op that PyTorch warns about for each tensor
            warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")
            with torch.device("meta"):
                return MultiTaskNet(*args, **kwargs)
    except (NotImplementedError, RuntimeError) as exc:
        if not (isinstance(exc, NotImplementedError) or "meta" in str(exc).lower()):
            raise
    return MultiTaskNet(*args, **kwargs)  # a family whose init cannot run on the meta device: on the CPU


def _frozen_at(opts: dict, epoch: int) -> bool:
    """Whether the encoder is frozen during (0-based) ``epoch``."""
    return bool(opts["freeze_encoder"]) and (opts["unfreeze_after"] is None or epoch < opts["unfreeze_after"])


def split_by_task(samples, fraction: float, seed: int):
    """Hold out ``fraction`` of each task (at least one sample for tasks with 4 or more)."""
    rng = np.random.default_rng([seed, 7])
    train, val = [], []
    by_task: dict[str, list] = {}
    for s in samples:
        by_task.setdefault(s.task_id, []).append(s)
    for tid in sorted(by_task):
        group = by_task[tid]
        n_val = int(round(fraction * len(group)))
        if n_val == 0 and fraction > 0 and len(group) >= 4:
            n_val = 1
        order = rng.permutation(len(group))
        held = set(order[:n_val].tolist())
        for i, s in enumerate(group):
            (val if i in held else train).append(s)
    return train, val


def lr_lambda(total: int, warmup: int, min_ratio: float):
    """Linear warmup to 1 over ``warmup`` steps, then cosine down to ``min_ratio`` at ``total``."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def _amp(opts: dict, device: torch.device) -> torch.dtype | None:
    mode = (opts["amp"] or "auto").lower()
    if device.type != "cuda" or mode == "none":
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    table = {"bf16": torch.bfloat16, "fp16": torch.float16}
    return table[mode]


def _rng_state(device: torch.device) -> dict:
    st = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_state(st: dict, device: torch.device) -> None:
    torch.set_rng_state(st["torch"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def _write_logs(out: Path, history: list[dict], extra: dict) -> None:
    write_json(out / "metrics.json", json_safe({"epochs": history, **extra}))
    columns: list[str] = []
    for row in history:
        for k, v in row.items():
            if k not in columns and not isinstance(v, (dict, list)):
                columns.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if v is None else v) for k, v in json_safe(row).items()})
    write_text(out / "metrics.csv", buf.getvalue())


def _load_samples(root, tasks: Sequence[str] | None, what: str):
    dr = validate_labels(load_root(root), images=False)  # a bad mask now, not mid-epoch in a worker
    samples = [s for s in dr.samples if s.has_label]
    if not samples:
        raise FmuiaError(f"{what} {root}: no labelled rows (a hidden-test root cannot be used for {what.strip('-')})")
    if tasks:
        missing = sorted(set(tasks) - {s.task_id for s in samples})
        if missing:
            raise FmuiaError(f"--tasks: {missing} not found in {root}")
        samples = [s for s in samples if s.task_id in set(tasks)]
    return samples


# the optimizer groups of runs trained before fmuia.training.optim (weight decay on every tensor)
_LEGACY_GROUPS = ["encoder", "heads"]


def _param_groups(net, opts: dict, state: dict | None = None) -> list[dict]:
    """The optimizer's parameter groups (each with a ``name``), from :mod:`fmuia.training.optim`; a resumed
    run saved with the two groups of earlier versions gets those again (so it resumes exactly)."""
    saved = [g.get("name") for g in state["optimizer"]["param_groups"]] if state is not None else None
    return param_groups(net, lr=opts["lr"], head_lr_scale=opts["head_lr_scale"], weight_decay=opts["weight_decay"],
                        layer_decay=opts["layer_decay"], decay_exclusions=saved != _LEGACY_GROUPS)


def _is_encoder_group(group: dict) -> bool:
    return str(group.get("name", "")).startswith("encoder")


def _lrs(optim: torch.optim.Optimizer) -> tuple[float | None, float | None]:
    """(largest encoder-group learning rate, largest other-group learning rate), groups found by name."""
    enc = [g["lr"] for g in optim.param_groups if _is_encoder_group(g)]
    heads = [g["lr"] for g in optim.param_groups if not _is_encoder_group(g)]
    return (max(enc) if enc else None), (max(heads) if heads else None)


def _state_bytes(optim: torch.optim.Optimizer) -> int:
    return sum(v.numel() * v.element_size() for st in optim.state.values() for v in st.values()
               if isinstance(v, torch.Tensor))


def _wrap(net: torch.nn.Module, info: D.DistInfo, device: torch.device) -> torch.nn.Module:
    if not info.enabled:
        return net
    return torch.nn.parallel.DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
    )


def _say(mode: str, text: str) -> None:
    if mode != "none":
        print(text, file=sys.stderr, flush=True)


def _kind_losses(sums: torch.Tensor, kinds: list[TaskKind]) -> dict[str, float]:
    return {KIND_ABBREV[k.value]: float(sums[2 * i] / sums[2 * i + 1]) for i, k in enumerate(kinds) if sums[2 * i + 1]}


def train(data_root=None, out_dir=None, **options) -> Path:
    """Train the MH-MTL network; returns ``out_dir/best.pt`` (``out_dir/last.pt`` is written too).

    Options (all optional; the CLI flags of ``fmuia train``): see :data:`DEFAULTS`, plus
    ``resume`` (a run folder or its ``last.pt``: continue exactly where it stopped).
    Launched by ``torchrun`` (``WORLD_SIZE > 1``) it trains with DDP; rank 0 writes the files.
    """
    opts, state = _resolve_options(data_root, out_dir, dict(options))
    _check_options(opts, resuming=state is not None)
    info, device = D.init_distributed(opts["device"])
    try:
        return _train(opts, state, info, device)
    finally:
        D.shutdown(info)


@dataclass
class _Run:
    """What the epochs of one training run share: set up by :func:`_setup`, updated epoch by epoch."""

    opts: dict
    out: Path
    seed: int
    info: D.DistInfo
    device: torch.device
    net: MultiTaskNet
    specs: dict[str, TaskSpec]
    dataset: TaskDataset
    val_samples: list
    sampler: TaskBatchSampler
    optim: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    channels_last: bool
    mode: str
    steps: int
    start_epoch: int
    stop_at: int
    history: list[dict]
    best: float | None
    kinds: list[TaskKind] = field(default_factory=lambda: list(TaskKind))
    frozen: bool | None = None  # the encoder's state in the epoch before (None: not set yet)
    model: torch.nn.Module | None = None  # net, or its DDP wrapper for the current trainable set
    params: list[torch.nn.Parameter] = field(default_factory=list)
    val_s: float = 0.0  # the last validation's duration, for the ETA
    dist_log: dict = field(default_factory=dict)


def _train(opts: dict, state: dict | None, info: D.DistInfo, device: torch.device) -> Path:
    """One run on this rank: set up, then for each epoch train, check the ranks agree, record, validate and save."""
    run = _setup(opts, state, info, device)
    for epoch in range(run.start_epoch, run.stop_at):
        _set_trainable(run, epoch)
        sums, elapsed, t0, seen_tasks = _train_epoch(run, epoch)
        rngs = _check_ranks(run, seen_tasks)
        row = _epoch_row(run, epoch, sums, elapsed)
        _end_epoch(run, epoch, row, rngs, t0)
    return run.out / "best.pt"


def _setup(opts: dict, state: dict | None, info: D.DistInfo, device: torch.device) -> _Run:
    """Data (samples, split, tasks), network, dataset and sampler, optimizer, scheduler and scaler, and the
    resumed state if any; rank 0 writes the run's config. Prints the run's first line."""
    out = Path(opts["out_dir"])
    seed = int(opts["seed"])
    torch.manual_seed(seed)

    train_samples, val_samples, specs = _data(opts, state, seed)
    resuming = state is not None  # weights come from the checkpoint: no download, no weights file
    net = build_model(
        list(specs.values()), opts["backbone"], "none" if resuming else opts["pretrained"],
        None if resuming else opts["weights"],
        fpn_channels=opts["fpn_channels"], dropout=opts["dropout"], img_size=opts["img_size"],
        pyramid=opts["pyramid"], out_indices=opts["out_indices"], backbone_kwargs=opts["backbone_kwargs"],
    )
    net.to(device)
    channels_last = opts["channels_last"] if opts["channels_last"] is not None else device.type == "cuda"
    if channels_last:
        net.to(memory_format=torch.channels_last)
    amp_dtype = _amp(opts, device)

    flip = None if opts["flip_kinds"] is None else frozenset(TaskKind(k) for k in opts["flip_kinds"])
    dataset = TaskDataset(train_samples, opts["img_size"], AugmentConfig(enabled=bool(opts["augment"]), flip_kinds=flip))
    task_indices: dict[str, list[int]] = {}
    for i, s in enumerate(train_samples):
        task_indices.setdefault(s.task_id, []).append(i)
    weights = parse_task_weights(
        opts["task_weights"], {t: len(v) for t, v in task_indices.items()}, {t: specs[t].kind for t in specs}
    )
    per_step = opts["batch_size"] * info.world_size
    steps = opts["steps_per_epoch"] or max(1, math.ceil(len(train_samples) / per_step))
    sampler = TaskBatchSampler(task_indices, opts["batch_size"], steps, weights, seed, info.rank, info.world_size)

    # The optimizer always holds every group, the encoder's too: AdamW keeps no state for a parameter
    # without a gradient, so freezing and unfreezing never change its structure and resume stays exact.
    optim = torch.optim.AdamW(_param_groups(net, opts, state), weight_decay=opts["weight_decay"])
    total = steps * opts["epochs"]
    warmup = opts["warmup_steps"] if opts["warmup_steps"] is not None else max(1, min(500, round(0.05 * total)))
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda(total, warmup, opts["min_lr_ratio"]))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)

    start_epoch, history, best = 0, [], None
    if state is not None:
        start_epoch, history, best = _resume(state, opts, net, optim, sched, scaler, info, device)
    else:
        torch.manual_seed(seed + info.rank)  # dropout differs per rank; weights are broadcast by DDP

    mode = resolve_mode(opts["progress"]) if info.is_main else "none"
    if info.is_main:
        ensure_dir(out)
        write_config(out / CONFIG_NAME, opts)
    stop_at = opts["epochs"] if opts["stop_after_epochs"] is None else min(opts["epochs"], start_epoch + int(opts["stop_after_epochs"]))

    freeze_note = ""
    if opts["freeze_encoder"]:
        freeze_note = " encoder frozen" + (f" until epoch {opts['unfreeze_after'] + 1}" if opts["unfreeze_after"] else "")
    _say(mode, f"train {len(specs)} task(s) {len(train_samples)} images (val {len(val_samples)}) "
               f"{opts['backbone']} {opts['img_size']}px on {device}"
               f"{'' if info.world_size == 1 else f' x{info.world_size}'} amp={'none' if amp_dtype is None else str(amp_dtype).split('.')[-1]}"
               f" {steps} steps/epoch epochs {start_epoch + 1}-{stop_at}/{opts['epochs']}{freeze_note} -> {out}")
    return _Run(
        opts=opts, out=out, seed=seed, info=info, device=device, net=net, specs=specs, dataset=dataset,
        val_samples=val_samples, sampler=sampler, optim=optim, sched=sched, scaler=scaler, amp_dtype=amp_dtype,
        channels_last=channels_last, mode=mode, steps=steps, start_epoch=start_epoch, stop_at=stop_at,
        history=history, best=best,
    )


def _data(opts: dict, state: dict | None, seed: int) -> tuple[list, list, dict[str, TaskSpec]]:
    """(training samples, validation samples, the training tasks by id): ``--val`` or a split of
    ``--data``; validation tasks without training samples are dropped with a warning. A resumed run's
    tasks must be the same."""
    samples = _load_samples(opts["data_root"], opts["tasks"], "--data")
    if opts["val"] is not None:
        train_samples = samples
        val_samples = _load_samples(opts["val"], None, "--val")
    else:
        train_samples, val_samples = split_by_task(samples, float(opts["val_fraction"]), seed)
    specs = {}
    for s in train_samples:
        specs.setdefault(s.task_id, s.task)
    skipped = sorted({s.task_id for s in val_samples} - set(specs))
    if skipped:
        # stacklevel 4: the warning points at train() (through _setup and _train), as it always has
        warnings.warn(f"validation tasks without training samples are skipped: {skipped}", stacklevel=4)
        val_samples = [s for s in val_samples if s.task_id in specs]

    # Tasks compare by id, kind and size: a run saved before the per-task policies resumes.
    if state is not None and list(specs.values()) != [TaskSpec.from_dict(d) for d in state["_tasks"]]:
        raise FmuiaError(
            f"--resume: the training tasks of {opts['data_root']} ({sorted(specs)}) differ from the run's "
            f"({sorted(t['task_id'] for t in state['_tasks'])}); resume with the same data"
        )
    return train_samples, val_samples, specs


def _resume(state: dict, opts: dict, net: MultiTaskNet, optim: torch.optim.Optimizer,
            sched: torch.optim.lr_scheduler.LambdaLR, scaler: torch.amp.GradScaler, info: D.DistInfo,
            device: torch.device) -> tuple[int, list[dict], float | None]:
    """Load a resumed run's weights, optimizer, scheduler, scaler and this rank's RNG state; returns
    (the next epoch, the history so far, the best validation composite)."""
    net.load_state_dict(state["_model"])
    try:
        optim.load_state_dict(state["optimizer"])
    except ValueError as exc:  # another number or size of parameter groups
        raise FmuiaError(
            f"--resume: the optimizer state of {opts['out_dir']} does not fit this version's parameter groups "
            f"({exc}); resume with the fmuia version that wrote it"
        ) from None
    sched.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    rngs = state["rng"]
    if len(rngs) == info.world_size:
        _set_rng_state(rngs[info.rank], device)
    else:
        # stacklevel 4: the warning points at train() (through _setup and _train), as it always has
        warnings.warn(f"resuming on {info.world_size} process(es), saved with {len(rngs)}: RNG streams differ", stacklevel=4)
    return int(state["epoch"]), list(state["history"]), state["best"]


def _set_trainable(run: _Run, epoch: int) -> None:
    """Freeze or unfreeze the encoder for ``epoch`` when that changes (and before the first epoch): the
    trainable parameters, a new DDP wrapper over them, and a line saying so."""
    opts, net = run.opts, run.net
    want = _frozen_at(opts, epoch)
    if want == run.frozen:
        return
    if opts["freeze_encoder"]:
        net.freeze_encoder(want)
    run.frozen = want
    run.params = [p for p in net.parameters() if p.requires_grad]
    # DDP registers its gradient hooks on the parameters that need a gradient when it wraps: a
    # changed trainable set needs a new wrapper (the old one is dropped first, hooks and all).
    run.model = None
    if run.info.enabled:
        gc.collect()
    run.model = _wrap(net, run.info, run.device)
    if epoch > run.start_epoch or opts["freeze_encoder"]:
        _say(run.mode, f"epoch {epoch + 1}/{opts['epochs']} encoder {'frozen' if want else 'trained'}: "
                       f"{sum(p.numel() for p in run.params):,} trainable parameters")


def _train_epoch(run: _Run, epoch: int) -> tuple[torch.Tensor, float, float, list[str]]:
    """One epoch's steps, with progress; returns (the loss and image sums of every rank, the epoch's time,
    its start on ``time.perf_counter``, this rank's task of each step). Ends with the epoch's train line."""
    opts, device, optim, scaler, kinds = run.opts, run.device, run.optim, run.scaler, run.kinds
    model = run.model
    assert model is not None
    run.sampler.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(
        run.dataset, batch_sampler=run.sampler, num_workers=int(opts["workers"]), collate_fn=collate,
        generator=torch.Generator().manual_seed(run.seed * 1000 + epoch), pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    model.train()  # a frozen encoder stays in eval mode (MultiTaskNet.train)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sums = torch.zeros(len(TaskKind) * 2 + 1, dtype=torch.float64)
    seen_tasks: list[str] = []
    t0 = time.perf_counter()
    remaining_vals = (run.stop_at - epoch) if run.val_samples else 0
    line = partial(_progress_line, opts, epoch, run.steps, run.stop_at, sums, kinds, optim, t0, run.info.world_size)
    bar = Progress(run.steps, f"epoch {epoch + 1}/{opts['epochs']}", mode=run.mode, every=opts["log_every"], unit="step")
    for step, (task_id, images, targets) in enumerate(loader, 1):
        seen_tasks.append(task_id)
        kind = run.specs[task_id].kind
        images = images.to(device, non_blocking=True)
        if run.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = {k: v.to(device, non_blocking=True) for k, v in targets.items()}
        with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
            raw = model(images, task_id)
        loss, _parts = LOSSES[kind](raw, targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"epoch {epoch + 1}: non-finite {kind.value} loss on task {task_id}; lower --lr")
        optim.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if opts["clip_grad"]:
            scaler.unscale_(optim)
            torch.nn.utils.clip_grad_norm_(run.params, float(opts["clip_grad"]))
        scaler.step(optim)
        scaler.update()
        run.sched.step()
        k = kinds.index(kind)
        sums[2 * k] += loss.item()
        sums[2 * k + 1] += 1
        sums[-1] += images.shape[0]
        bar.update(1, postfix={"loss": f"{sums[2 * k].item() / sums[2 * k + 1].item():.3f}", "task": task_id[:16]},
                   line=partial(line, step, run.val_s * remaining_vals))
    elapsed = time.perf_counter() - t0
    sums = D.all_reduce_sum(run.info, sums.to(device)).cpu()
    eta = (run.stop_at - epoch - 1) * elapsed + run.val_s * remaining_vals
    bar.close(format_train_line(
        epoch + 1, opts["epochs"], run.steps, run.steps, _kind_losses(sums, kinds),
        float(sums[-1]) / elapsed if elapsed > 0 else None, _lr_fields(*_lrs(optim)), eta,
    ) + f" time {format_duration(elapsed)}")
    return sums, elapsed, t0, seen_tasks


def _check_ranks(run: _Run, seen_tasks: list[str]) -> list[dict]:
    """Under DDP, check one task per step on every rank and record each rank's weight checksum (in
    ``run.dist_log``); returns every rank's RNG state (collectives in the same order on every rank)."""
    info = run.info
    if info.enabled:
        all_tasks = D.all_gather_object(info, seen_tasks)
        if any(t != all_tasks[0] for t in all_tasks):
            raise RuntimeError("DDP ranks trained different tasks in the same step (sampler bug)")
        checksum = float(sum(p.detach().double().sum().item() for p in run.net.parameters()))
        run.dist_log = {
            "world_size": info.world_size,
            "last_epoch_tasks_by_rank": all_tasks,
            "param_checksum_by_rank": D.all_gather_object(info, checksum),
        }
    return D.all_gather_object(info, _rng_state(run.device))


def _epoch_row(run: _Run, epoch: int, sums: torch.Tensor, elapsed: float) -> dict:
    """The epoch's metrics row, before validation: step, learning rates, losses (overall and per kind),
    speed, the encoder's state, parameter and memory figures."""
    lr_enc, lr_heads = _lrs(run.optim)
    row: dict = {"epoch": epoch + 1, "step": (epoch + 1) * run.steps, "lr_encoder": lr_enc, "lr_heads": lr_heads}
    n_loss = sums[1:-1:2].sum()
    row["train_loss"] = float(sums[0:-1:2].sum() / n_loss) if n_loss else None
    for k, kind in enumerate(run.kinds):
        row[f"train_loss_{kind.value}"] = float(sums[2 * k] / sums[2 * k + 1]) if sums[2 * k + 1] else None
    row["train_images_per_s"] = float(sums[-1]) / elapsed if elapsed > 0 else None
    row["encoder_frozen"] = bool(run.frozen)
    row["trainable_params"] = sum(p.numel() for p in run.params)
    row["optimizer_state_mb"] = _state_bytes(run.optim) / 2**20
    if run.device.type == "cuda":
        row["cuda_max_memory_mb"] = torch.cuda.max_memory_allocated(run.device) / 2**20
    return row


def _end_epoch(run: _Run, epoch: int, row: dict, rngs: list[dict], t0: float) -> None:
    """On rank 0: validate, track the best, append ``row`` to the history, write ``last.pt`` (and
    ``best.pt`` when it improved) and the logs. Then every rank takes rank 0's validation time and waits."""
    opts, net, info = run.opts, run.net, run.info
    if info.is_main:
        improved = False
        if run.val_samples:
            # scored on what `fmuia predict` writes (its precision and memory format), then back to training's
            tv = time.perf_counter()
            res = validate(net, run.val_samples, opts["img_size"], run.device, batch_size=opts["batch_size"] * 2,
                           workers=int(opts["workers"]), progress=run.mode)
            run.val_s = time.perf_counter() - tv
            net.to(memory_format=torch.channels_last if run.channels_last else torch.contiguous_format)
            row.update({f"val_{k}": v for k, v in res["aggregates"].items()})
            row["val_composite"] = res["composite"]
            row["val_tasks"] = res["tasks"]
            improved = res["composite"] is not None and (run.best is None or res["composite"] >= run.best)
            if improved:
                run.best = res["composite"]
            _say(run.mode, format_val_line(epoch + 1, opts["epochs"], res["aggregates"], res["composite"], improved, run.val_s))
        else:
            improved = True  # nothing to select on: best = latest
        row["best"] = improved
        row["time_s"] = time.perf_counter() - t0
        run.history.append(json_safe(row))
        meta = make_meta(net, opts["img_size"], train_options=opts, epoch=epoch + 1, val_composite=row.get("val_composite"))
        train_state = {
            "options": opts, "epoch": epoch + 1, "history": run.history, "best": run.best,
            "optimizer": run.optim.state_dict(), "scheduler": run.sched.state_dict(), "scaler": run.scaler.state_dict(),
            "rng": rngs,
            # the sampler has no stream state: an epoch's draws depend only on (seed, epoch)
            "sampler": {"seed": run.seed, "next_epoch": epoch + 1, "tasks": run.sampler.tasks,
                        "probs": run.sampler.probs.tolist()},
        }
        save_checkpoint(run.out / "last.pt", net, meta, train_state)
        if improved:
            save_checkpoint(run.out / "best.pt", net, meta)
        _write_logs(run.out, run.history, {"options": opts, "best_val_composite": run.best, "distributed": run.dist_log})
    run.val_s = D.all_gather_object(info, run.val_s)[0]  # every rank's ETA uses rank 0's validation time
    D.barrier(info)


def _lr_fields(lr_enc: float | None, lr_heads: float | None) -> dict[str, float]:
    return {k: v for k, v in (("enc", lr_enc), ("heads", lr_heads)) if v is not None}


def _progress_line(opts: dict, epoch: int, steps: int, stop_at: int, sums: torch.Tensor, kinds: list[TaskKind],
                   optim: torch.optim.Optimizer, t0: float, world_size: int, step: int, val_left_s: float) -> str:
    """A progress line during an epoch (rank 0's running losses; images/s scaled to all ranks)."""
    elapsed = time.perf_counter() - t0
    per_step = elapsed / step
    eta = ((steps - step) + (stop_at - epoch - 1) * steps) * per_step + val_left_s
    rate = float(sums[-1]) * world_size / elapsed if elapsed > 0 else None
    return format_train_line(epoch + 1, opts["epochs"], step, steps, _kind_losses(sums, kinds), rate,
                             _lr_fields(*_lrs(optim)), eta)
