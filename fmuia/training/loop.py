"""The training loop: task-uniform batches, per-kind losses, AdamW with a ×10 head LR, warmup + cosine,
gradient clipping, AMP on CUDA, per-epoch validation, checkpoints, exact resume and DDP.
"""

from __future__ import annotations

import csv
import io
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fmuia._atomic import ensure_dir, write_json, write_text
from fmuia.dataset import load_root, validate_labels
from fmuia.errors import FmuiaError
from fmuia.model import build_model
from fmuia.tasks import TaskKind, TaskSpec
from fmuia.training import distributed as D
from fmuia.training.checkpoint import make_meta, read_checkpoint, save_checkpoint
from fmuia.training.data import AugmentConfig, TaskDataset, collate
from fmuia.training.losses import LOSSES
from fmuia.training.sampler import TaskBatchSampler, parse_task_weights
from fmuia.training.validate import validate

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
    "stop_after_epochs": None,  # stop this invocation after N epochs (resume later)
    "progress": True,
}
# Options a resumed run may change; every other one must match the run being resumed.
RESUME_MUTABLE = {"epochs", "device", "workers", "stop_after_epochs", "progress", "val"}


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
    state = None
    if resume is not None:
        path = Path(resume)
        ckpt = path / "last.pt" if path.is_dir() else path
        obj = read_checkpoint(ckpt)
        state = obj.get("train_state")
        if not state:
            raise FmuiaError(f"--resume {resume}: {ckpt} holds no training state (best.pt is weights only; use the run folder or last.pt)")
        stored = dict(state["options"])
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


def _norm(v):
    return list(v) if isinstance(v, (tuple, list)) else (str(v) if isinstance(v, Path) else v)


def _check_positive(opts: dict) -> None:
    for k in ("img_size", "epochs", "batch_size"):
        if not isinstance(opts[k], int) or opts[k] < 1:
            raise FmuiaError(f"--{k.replace('_', '-')} {opts[k]!r}: expected a positive integer")
    if opts["img_size"] % 32:
        raise FmuiaError(f"--img-size {opts['img_size']}: expected a multiple of 32 (the encoder's total stride)")
    if opts["steps_per_epoch"] is not None and opts["steps_per_epoch"] < 1:
        raise FmuiaError(f"--steps-per-epoch {opts['steps_per_epoch']}: expected a positive integer")
    for k in ("lr", "head_lr_scale"):
        if not (opts[k] > 0 and math.isfinite(opts[k])):
            raise FmuiaError(f"--{k.replace('_', '-')} {opts[k]!r}: expected a positive number")
    if not 0.0 <= opts["val_fraction"] < 1.0:
        raise FmuiaError(f"val_fraction {opts['val_fraction']}: expected 0 <= value < 1")


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
    if mode not in table:
        raise FmuiaError(f"amp {opts['amp']!r}: expected auto, bf16, fp16 or none")
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


def _clean(v):
    """JSON-safe: NaN/inf → None, numpy scalars → Python."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def _write_logs(out: Path, history: list[dict], extra: dict) -> None:
    write_json(out / "metrics.json", _clean({"epochs": history, **extra}))
    columns: list[str] = []
    for row in history:
        for k, v in row.items():
            if k not in columns and not isinstance(v, (dict, list)):
                columns.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if v is None else v) for k, v in _clean(row).items()})
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


def train(data_root=None, out_dir=None, **options) -> Path:
    """Train the MH-MTL network; returns ``out_dir/best.pt`` (``out_dir/last.pt`` is written too).

    Options (all optional; the CLI flags of ``fmuia train``): see :data:`DEFAULTS`, plus
    ``resume`` (a run folder or its ``last.pt``: continue exactly where it stopped).
    Launched by ``torchrun`` (``WORLD_SIZE > 1``) it trains with DDP; rank 0 writes the files.
    """
    opts, state = _resolve_options(data_root, out_dir, dict(options))
    _check_positive(opts)
    info, device = D.init_distributed(opts["device"])
    try:
        return _train(opts, state, info, device)
    finally:
        D.shutdown(info)


def _train(opts: dict, state: dict | None, info: D.DistInfo, device: torch.device) -> Path:
    out = Path(opts["out_dir"])
    seed = int(opts["seed"])
    torch.manual_seed(seed)

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
        warnings.warn(f"validation tasks without training samples are skipped: {skipped}", stacklevel=2)
        val_samples = [s for s in val_samples if s.task_id in specs]

    # Tasks compare by id, kind and size: a run saved before the per-task policies resumes.
    if state is not None and list(specs.values()) != [TaskSpec.from_dict(d) for d in state["_tasks"]]:
        raise FmuiaError(
            f"--resume: the training tasks of {opts['data_root']} ({sorted(specs)}) differ from the run's "
            f"({sorted(t['task_id'] for t in state['_tasks'])}); resume with the same data"
        )
    resuming = state is not None  # weights come from the checkpoint: no download, no weights file
    net = build_model(
        list(specs.values()), opts["backbone"], "none" if resuming else opts["pretrained"],
        None if resuming else opts["weights"],
        fpn_channels=opts["fpn_channels"], dropout=opts["dropout"],
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

    head_lr = opts["lr"] * opts["head_lr_scale"]
    optim = torch.optim.AdamW(
        [
            {"params": net.encoder_parameters(), "lr": opts["lr"], "name": "encoder"},
            {"params": net.decoder_parameters(), "lr": head_lr, "name": "heads"},
        ],
        weight_decay=opts["weight_decay"],
    )
    total = steps * opts["epochs"]
    warmup = opts["warmup_steps"] if opts["warmup_steps"] is not None else max(1, min(500, round(0.05 * total)))
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda(total, warmup, opts["min_lr_ratio"]))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)

    start_epoch, history, best = 0, [], None
    if state is not None:
        net.load_state_dict(state["_model"])
        optim.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, history, best = int(state["epoch"]), list(state["history"]), state["best"]
        rngs = state["rng"]
        if len(rngs) == info.world_size:
            _set_rng_state(rngs[info.rank], device)
        else:
            warnings.warn(f"resuming on {info.world_size} process(es), saved with {len(rngs)}: RNG streams differ", stacklevel=2)
    else:
        torch.manual_seed(seed + info.rank)  # dropout differs per rank; weights are broadcast by DDP

    model = net
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    meta_base = {"train_options": opts}
    if info.is_main:
        ensure_dir(out)
    dist_log: dict = {}
    stop_at = opts["epochs"] if opts["stop_after_epochs"] is None else min(opts["epochs"], start_epoch + int(opts["stop_after_epochs"]))
    params = [p for p in net.parameters() if p.requires_grad]

    for epoch in range(start_epoch, stop_at):
        sampler.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, num_workers=int(opts["workers"]), collate_fn=collate,
            generator=torch.Generator().manual_seed(seed * 1000 + epoch), pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        model.train()
        sums = torch.zeros(len(TaskKind) * 2 + 1, dtype=torch.float64)
        kinds = list(TaskKind)
        seen_tasks: list[str] = []
        t0 = time.perf_counter()
        bar = tqdm(loader, total=steps, desc=f"epoch {epoch + 1}/{opts['epochs']}", disable=not (opts["progress"] and info.is_main) or None)
        for task_id, images, targets in bar:
            seen_tasks.append(task_id)
            kind = specs[task_id].kind
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = {k: v.to(device, non_blocking=True) for k, v in targets.items()}
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                raw = model(images, task_id)
            loss, _parts = LOSSES[kind](raw, targets)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch + 1}: non-finite {kind.value} loss on task {task_id}; lower --lr")
            optim.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if opts["clip_grad"]:
                scaler.unscale_(optim)
                torch.nn.utils.clip_grad_norm_(params, float(opts["clip_grad"]))
            scaler.step(optim)
            scaler.update()
            sched.step()
            k = kinds.index(kind)
            sums[2 * k] += loss.item()
            sums[2 * k + 1] += 1
            sums[-1] += images.shape[0]
            bar.set_postfix(loss=f"{sums[2 * k].item() / sums[2 * k + 1].item():.3f}", task=task_id[:16])
        bar.close()
        elapsed = time.perf_counter() - t0
        sums = D.all_reduce_sum(info, sums.to(device)).cpu()

        # DDP invariants: one task per step on every rank, identical weights
        if info.enabled:
            all_tasks = D.all_gather_object(info, seen_tasks)
            if any(t != all_tasks[0] for t in all_tasks):
                raise RuntimeError("DDP ranks trained different tasks in the same step (sampler bug)")
            checksum = float(sum(p.detach().double().sum().item() for p in net.parameters()))
            dist_log = {
                "world_size": info.world_size,
                "last_epoch_tasks_by_rank": all_tasks,
                "param_checksum_by_rank": D.all_gather_object(info, checksum),
            }
        rngs = D.all_gather_object(info, _rng_state(device))

        row: dict = {"epoch": epoch + 1, "step": (epoch + 1) * steps, "lr_encoder": optim.param_groups[0]["lr"],
                     "lr_heads": optim.param_groups[1]["lr"]}
        n_loss = sums[1:-1:2].sum()
        row["train_loss"] = float(sums[0:-1:2].sum() / n_loss) if n_loss else None
        for k, kind in enumerate(kinds):
            row[f"train_loss_{kind.value}"] = float(sums[2 * k] / sums[2 * k + 1]) if sums[2 * k + 1] else None
        row["train_images_per_s"] = float(sums[-1]) / elapsed if elapsed > 0 else None
        if info.is_main:
            improved = False
            if val_samples:
                # scored on what `fmuia predict` writes (its precision and memory format), then back to training's
                res = validate(net, val_samples, opts["img_size"], device, batch_size=opts["batch_size"] * 2,
                               workers=int(opts["workers"]), progress=opts["progress"])
                net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
                row.update({f"val_{k}": v for k, v in res["aggregates"].items()})
                row["val_composite"] = res["composite"]
                row["val_tasks"] = res["tasks"]
                improved = res["composite"] is not None and (best is None or res["composite"] >= best)
                if improved:
                    best = res["composite"]
            else:
                improved = True  # nothing to select on: best = latest
            row["best"] = improved
            row["time_s"] = time.perf_counter() - t0
            history.append(_clean(row))
            meta = make_meta(net, opts["img_size"], **meta_base, epoch=epoch + 1, val_composite=row.get("val_composite"))
            train_state = {
                "options": opts, "epoch": epoch + 1, "history": history, "best": best,
                "optimizer": optim.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                "rng": rngs,
                # the sampler has no stream state: an epoch's draws depend only on (seed, epoch)
                "sampler": {"seed": seed, "next_epoch": epoch + 1, "tasks": sampler.tasks, "probs": sampler.probs.tolist()},
            }
            save_checkpoint(out / "last.pt", net, meta, train_state)
            if improved:
                save_checkpoint(out / "best.pt", net, meta)
            _write_logs(out, history, {"options": opts, "best_val_composite": best, "distributed": dist_log})
        D.barrier(info)
    return out / "best.pt"
