"""Inference: data root → network → prediction records → the official prediction folder.

:func:`predict` loads a checkpoint and runs it on a data root; :func:`predict_with_model` does the
work for an already-built network (tests pass an oracle network that returns the labels).

How one batch flows:

1. Samples are grouped by task; each batch holds images of one task only.
2. Worker processes (a torch ``DataLoader``) decode each image and run
   :func:`fmuia.transforms.preprocess` (square ``img_size`` resize + normalization); the original
   ``(W, H)`` travels with it. An image that cannot be read is reported, never replaced.
3. The network runs under ``torch.inference_mode()`` (bf16 autocast on CUDA; channels_last on
   every device) and ``net.postprocess`` turns the raw output into normalized outputs.
4. One decoder per task kind (:data:`DECODERS`) maps those back to the ORIGINAL image: segmentation
   class map resized with nearest neighbour (pixel centres) to exactly W×H; classification softmax
   probabilities (renormalized to sum to 1) and their argmax; detection ``bbox_normalized`` and
   ``bbox_pixels = normalized × (W, H, W, H)`` clipped to the image, plus a ``score``;
   regression landmarks normalized and in pixels.
5. :func:`predict_samples` hands each record to a sink: :class:`fmuia.formats.PredictionWriter`
   writes the PNGs and (atomically) the JSON files.

Test-time augmentation (``tta=True``) averages the outputs for the image and for its horizontal
mirror, mapped back (:data:`_TTA`: probabilities flipped back, box x-coordinates and landmark x
mirrored). It is applied only to tasks whose spec says ``mirror_safe`` (see :mod:`fmuia.tasks`):
position classes and ordered landmarks are predicted from the original image only.

Validation during training (:mod:`fmuia.training.validate`) scores the records of
:func:`predict_samples`, the same function that feeds the writer here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmuia.dataset.images import read_image
from fmuia.dataset.schema import DataRoot, Sample, load_root
from fmuia.errors import FmuiaError, Problem
from fmuia.formats import (
    ClassificationPrediction,
    DetectionPrediction,
    Prediction,
    PredictionWriter,
    RegressionPrediction,
    SegmentationPrediction,
)
from fmuia.model.checkpoint import load_for_inference
from fmuia.progress import Progress
from fmuia.resize import resize_nearest_centres
from fmuia.tasks import TaskKind, TaskSpec
from fmuia.transforms import IMAGENET_MEAN, IMAGENET_STD, preprocess

__all__ = [
    "predict", "predict_with_model", "predict_samples", "Decoder", "DECODERS", "RecordSink", "resolve_device",
    "default_workers", "resize_nearest_centres", "LOG_EVERY",
]

LOG_EVERY = 1000  # without a terminal: one progress line per this many images (and at least one per 30 s)


def default_workers() -> int:
    """Decoder processes by default: half the cores (the other half runs the network), at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) // 2))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise FmuiaError(f"--device {device!r}: {exc}; expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FmuiaError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return dev


# ---- decoding images in worker processes -------------------------------------------------------

class _ImageSet(torch.utils.data.Dataset):
    """``dataset[i]`` → ``(i, preprocessed [3,S,S] float32 or None, (W, H), error or None)``."""

    def __init__(self, files: Sequence[Path], img_size: int, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD):
        self.files = list(files)
        self.img_size = img_size
        self.mean, self.std = tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, tuple[int, int], str | None]:
        try:
            image = read_image(self.files[i])
            h, w = image.shape[:2]
            if h == 0 or w == 0:
                raise ValueError("image has zero width or height")
            x = preprocess(image, self.img_size, self.mean, self.std)
            return i, np.ascontiguousarray(x, dtype=np.float32), (w, h), None
        except FileNotFoundError:
            return i, None, (0, 0), "image file not found"
        except Exception as exc:  # any decode failure is reported with its path, never skipped silently
            return i, None, (0, 0), f"cannot read image: {type(exc).__name__}: {exc}"


@dataclass
class _Batch:
    indices: list[int]  # dataset indices of the images that decoded, in batch order
    # [n, 3, S, S]. A numpy array while crossing from a worker: torch would pass a tensor through
    # /dev/shm, which is 64 MB in a plain `docker run` (the official run contract); running out of it
    # makes the DataLoader hang. numpy arrays travel through the worker's pipe instead.
    images: np.ndarray | torch.Tensor | None
    sizes: list[tuple[int, int]]  # (W, H) per decoded image
    errors: list[tuple[int, str]]  # (dataset index, message) per unreadable image

    def tensor(self) -> torch.Tensor:
        assert self.images is not None
        return self.images if isinstance(self.images, torch.Tensor) else torch.from_numpy(self.images)

    def pin_memory(self) -> _Batch:  # called in the main process when pin_memory=True (CUDA)
        if self.images is not None:
            self.images = self.tensor().pin_memory()
        return self


def _collate(items: list[tuple[int, np.ndarray | None, tuple[int, int], str | None]]) -> _Batch:
    ok = [it for it in items if it[1] is not None]
    images = np.stack([it[1] for it in ok]) if ok else None
    return _Batch([it[0] for it in ok], images, [it[2] for it in ok], [(it[0], it[3] or "") for it in items if it[1] is None])


def _task_batches(samples: Sequence[Sample], batch_size: int) -> list[list[int]]:
    """Index batches over ``samples``: one task per batch, tasks in order of first appearance."""
    by_task: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_task.setdefault(s.task_id, []).append(i)
    return [idx[k : k + batch_size] for idx in by_task.values() for k in range(0, len(idx), batch_size)]


# ---- network outputs → prediction records, one decoder per kind --------------------------------

# fetch: postprocessed tensors of a batch → numpy arrays (reduced on the device where that saves copies)
# record: (sample, per-image arrays, (W, H)) → the prediction record for the ORIGINAL image


def _seg_fetch(post: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {"labels": post["probs"].argmax(dim=1).to(torch.uint8).cpu().numpy()}


def _seg_record(s: Sample, out: dict[str, np.ndarray], size: tuple[int, int]) -> Prediction:
    w, h = size
    return SegmentationPrediction(s.image_path, s.task_id, s.mask_path or "", resize_nearest_centres(out["labels"], h, w))


def _cls_fetch(post: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {"probs": post["probs"].double().cpu().numpy()}


def _cls_record(s: Sample, out: dict[str, np.ndarray], size: tuple[int, int]) -> Prediction:
    p = np.clip(np.nan_to_num(out["probs"], nan=0.0), 0.0, None)
    total = p.sum()
    p = p / total if total > 0 else np.full_like(p, 1.0 / len(p))
    return ClassificationPrediction(s.image_path, s.task_id, int(np.argmax(p)), tuple(float(v) for v in p))


def _det_fetch(post: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {
        "box": post["box"].double().cpu().numpy(),
        "score": post["score"].double().cpu().numpy(),
    }


def _det_record(s: Sample, out: dict[str, np.ndarray], size: tuple[int, int]) -> Prediction:
    w, h = size
    b = np.clip(np.nan_to_num(out["box"], nan=0.0), 0.0, 1.0)
    x0, x1 = sorted((float(b[0]), float(b[2])))
    y0, y1 = sorted((float(b[1]), float(b[3])))
    norm = [x0, y0, x1, y1]
    # A box narrower than one pixel becomes one pixel wide (inside the image), so it stays a valid box.
    for lo, hi, extent in ((0, 2, w), (1, 3, h)):
        if (norm[hi] - norm[lo]) * extent < 1.0:
            side = min(1.0, float(extent)) / extent
            centre = (norm[lo] + norm[hi]) / 2
            start = min(max(centre - side / 2, 0.0), 1.0 - side)
            norm[lo], norm[hi] = start, start + side
    pixels = (norm[0] * w, norm[1] * h, norm[2] * w, norm[3] * h)
    score = float(np.clip(np.nan_to_num(out["score"], nan=0.0), 0.0, 1.0))
    return DetectionPrediction(s.image_path, s.task_id, tuple(norm), pixels, score)  # type: ignore[arg-type]


def _reg_fetch(post: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {"points": post["points"].double().cpu().numpy()}


def _reg_record(s: Sample, out: dict[str, np.ndarray], size: tuple[int, int]) -> Prediction:
    w, h = size
    pts = np.clip(np.nan_to_num(out["points"], nan=0.5), 0.0, 1.0).reshape(-1, 2)
    norm = [float(v) for xy in pts for v in xy]
    pixels = [float(v) for x, y in pts for v in (x * w, y * h)]
    return RegressionPrediction(s.image_path, s.task_id, tuple(norm), tuple(pixels))


@dataclass(frozen=True)
class Decoder:
    """How one kind's postprocessed outputs become prediction records."""

    fetch: Callable[[dict[str, torch.Tensor]], dict[str, np.ndarray]]
    record: Callable[[Sample, dict[str, np.ndarray], tuple[int, int]], Prediction]


DECODERS: dict[TaskKind, Decoder] = {
    TaskKind.SEGMENTATION: Decoder(_seg_fetch, _seg_record),
    TaskKind.CLASSIFICATION: Decoder(_cls_fetch, _cls_record),
    TaskKind.DETECTION: Decoder(_det_fetch, _det_record),
    TaskKind.REGRESSION: Decoder(_reg_fetch, _reg_record),
}


# ---- mirror TTA (only for tasks with spec.mirror_safe), one rule per kind --------------------------
# (postprocessed outputs of the images, of their mirrors) -> the average in the images' frame


def _unmirror_seg(post: dict[str, torch.Tensor], mirrored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**post, "probs": (post["probs"].float() + torch.flip(mirrored["probs"].float(), dims=[3])) / 2}


def _unmirror_cls(post: dict[str, torch.Tensor], mirrored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**post, "probs": (post["probs"].float() + mirrored["probs"].float()) / 2}


def _unmirror_det(post: dict[str, torch.Tensor], mirrored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    m = mirrored["box"].float()
    back = torch.stack([1 - m[:, 2], m[:, 1], 1 - m[:, 0], m[:, 3]], dim=1)  # x0' = 1 - x1, x1' = 1 - x0
    return {**post, "box": (post["box"].float() + back) / 2,
            "score": (post["score"].float() + mirrored["score"].float()) / 2}


def _unmirror_reg(post: dict[str, torch.Tensor], mirrored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    m = mirrored["points"].float()
    back = torch.stack([1 - m[..., 0], m[..., 1]], dim=-1)
    return {**post, "points": (post["points"].float() + back) / 2}


Unmirror = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], dict[str, torch.Tensor]]
_TTA: dict[TaskKind, Unmirror] = {
    TaskKind.SEGMENTATION: _unmirror_seg,
    TaskKind.CLASSIFICATION: _unmirror_cls,
    TaskKind.DETECTION: _unmirror_det,
    TaskKind.REGRESSION: _unmirror_reg,
}


def _with_mirror(net: torch.nn.Module, spec: TaskSpec, x: torch.Tensor, post: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``post`` averaged with the outputs for the mirrored images (call only for mirror-safe tasks)."""
    mirrored = net.postprocess(spec.task_id, net(torch.flip(x, dims=[3]), spec.task_id))
    return _TTA[spec.kind](post, mirrored)


# ---- the run -----------------------------------------------------------------------------------

def _checkpoint_tasks(meta: dict[str, Any]) -> dict[str, TaskSpec]:
    return {d["task_id"]: TaskSpec.from_dict(d) for d in meta.get("tasks", [])}


def _check_tasks(root: DataRoot, known: dict[str, TaskSpec], source: str) -> None:
    problems = []
    for task_id, spec in root.tasks.items():
        have = known.get(task_id)
        if have is None:
            problems.append(Problem(source, task_id, "the checkpoint has no head for this task"))
        elif have != spec:
            problems.append(
                Problem(source, task_id, f"the checkpoint's head is {have.kind.value} with {have.num_classes} "
                        f"classes/points, the data root says {spec.kind.value} with {spec.num_classes}")
            )
    if problems:
        raise FmuiaError(f"{root.root}: the model cannot predict {len(problems)} task(s) of this data root", problems)


# A sink receives each record with the sample it belongs to and the original image size (W, H).
RecordSink = Callable[[Sample, Prediction, tuple[int, int]], None]


def predict_samples(
    net: torch.nn.Module,
    samples: Sequence[Sample],
    img_size: int,
    sink: RecordSink,
    *,
    device: str | torch.device = "auto",
    batch_size: int = 16,
    tta: bool = False,
    workers: int = 0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    progress: bool | str | None = None,
    desc: str = "predict",
    leave: bool = True,
    log_every: int | None = LOG_EVERY,
) -> tuple[list[Problem], dict[str, float]]:
    """Run ``net`` on ``samples`` and hand every prediction record to ``sink`` (the one prediction path).

    Batches hold one task each; the network runs in eval mode, channels_last, under
    ``torch.inference_mode()`` (bf16 autocast on CUDA); :data:`DECODERS` turn the outputs into the
    records of :mod:`fmuia.formats` for the original image size. ``tta`` mirrors only tasks whose
    spec is ``mirror_safe``. ``net`` is left on ``device`` in eval mode and channels_last.
    ``progress`` (see :func:`fmuia.progress.resolve_mode`): ``None``/``True``/``"auto"`` shows a ``desc``
    bar on a terminal and, without one, a line every ``log_every`` images (and every 30 s), then one
    at the end when ``leave``; ``False``/``"none"``: nothing; ``"bars"``/``"lines"``: that.

    Returns the unreadable images (no record is made for them) and seconds spent waiting for
    images (``load_s``), in the network (``forward_s``) and decoding records into ``sink``
    (``write_s``).
    """
    if batch_size < 1:
        raise FmuiaError(f"--batch-size {batch_size}: expected a positive integer")
    dev = resolve_device(device)
    net = net.to(dev).eval()
    # channels_last: faster convolutions on CUDA and on CPU (oneDNN), ~1.5x for efficientnet_b4 on CPU.
    net = net.to(memory_format=torch.channels_last)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()

    samples = list(samples)
    batches = _task_batches(samples, batch_size)
    loader = torch.utils.data.DataLoader(
        _ImageSet([s.image_file for s in samples], int(img_size), mean, std),
        batch_sampler=batches,
        collate_fn=_collate,
        num_workers=0 if len(batches) <= 1 else min(max(0, int(workers)), len(batches)),  # no start-up for one batch
        pin_memory=dev.type == "cuda",
        # its own generator: iterating must not draw from the global torch RNG (training resumes exactly)
        generator=torch.Generator().manual_seed(0),
    )
    unreadable: list[Problem] = []
    timing = {"load_s": 0.0, "forward_s": 0.0, "write_s": 0.0}
    bar = Progress(len(samples), desc, mode=progress, every=log_every, unit="img", noun="images", leave=leave)
    with torch.inference_mode():
        t = time.perf_counter()
        for batch in loader:
            t0 = time.perf_counter()
            timing["load_s"] += t0 - t
            for i, message in batch.errors:
                s = samples[i]
                unreadable.append(Problem(str(s.image_file), s.where, message))
            if batch.images is not None:
                spec = samples[batch.indices[0]].task
                x = batch.tensor().to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
                with autocast:
                    post = net.postprocess(spec.task_id, net(x, spec.task_id))
                    if tta and spec.mirror_safe:
                        post = _with_mirror(net, spec, x, post)
                decoder = DECODERS[spec.kind]
                arrays = decoder.fetch(post)
                t1 = time.perf_counter()
                timing["forward_s"] += t1 - t0
                for j, (i, size) in enumerate(zip(batch.indices, batch.sizes, strict=True)):
                    sink(samples[i], decoder.record(samples[i], {k: v[j] for k, v in arrays.items()}, size), size)
                timing["write_s"] += time.perf_counter() - t1
            bar.update(len(batch.indices) + len(batch.errors),
                       postfix=samples[(batch.indices or [i for i, _ in batch.errors])[0]].task_id)
            t = time.perf_counter()
    bar.close()
    return unreadable, timing


def predict_with_model(
    root: DataRoot,
    net: torch.nn.Module,
    meta: dict[str, Any],
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    tta: bool = False,
    workers: int | None = None,
    progress: bool | str | None = None,
    stats: dict[str, float] | None = None,
    log_every: int | None = LOG_EVERY,
) -> dict[str, int]:
    """Run ``net`` on every sample of ``root`` and write the official prediction folder ``out_dir``.

    ``meta`` needs ``img_size`` and ``tasks`` (as saved in checkpoints; ``mean``/``std`` when
    present). Returns the number of predictions written per task. If images could not be read,
    every other prediction is still written and an :class:`FmuiaError` listing each unreadable
    image is raised at the end. ``stats``, when given, receives seconds spent waiting for images,
    in the network and in decoding/writing (for benchmarks). ``progress`` and ``log_every``: see
    :func:`predict_samples`.
    """
    if batch_size < 1:
        raise FmuiaError(f"--batch-size {batch_size}: expected a positive integer")
    dev = resolve_device(device)
    _check_tasks(root, _checkpoint_tasks(meta), str(meta.get("checkpoint", "checkpoint")))
    writer = PredictionWriter(out_dir)
    unreadable, timing = predict_samples(
        net, root.samples, int(meta["img_size"]), lambda _s, record, _size: writer.add(record),
        device=dev, batch_size=batch_size, tta=tta, workers=default_workers() if workers is None else int(workers),
        mean=meta.get("mean", IMAGENET_MEAN), std=meta.get("std", IMAGENET_STD), progress=progress,
        log_every=log_every,
    )
    t = time.perf_counter()
    counts = writer.close()
    timing["write_s"] += time.perf_counter() - t
    if stats is not None:
        stats.update(timing)
    if unreadable:
        raise FmuiaError(
            f"{len(unreadable)} image(s) could not be read; no prediction was written for them "
            f"(predictions for the other {sum(counts.values())} images are in {out_dir})",
            unreadable,
        )
    return counts


def predict(
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    checkpoint: str | os.PathLike,
    *,
    batch_size: int = 16,
    device: str = "auto",
    tta: bool = False,
    workers: int | None = None,
    progress: bool | str | None = None,
    log_every: int | None = LOG_EVERY,
) -> dict[str, int]:
    """Predict every row of ``data_root`` with ``checkpoint``; write the official files to ``out_dir``.

    Returns the number of predictions written per task. See :func:`predict_with_model`.
    """
    ckpt = Path(checkpoint)
    if not ckpt.is_file():
        raise FmuiaError(f"{ckpt}: checkpoint not found (expected a file such as RUN_DIR/best.pt)")
    dev = resolve_device(device)
    # Missing or corrupt images are reported at the end with every other prediction written.
    root = load_root(data_root, check_files=False)
    net, meta = load_for_inference(ckpt, device=str(dev))
    meta = {**meta, "checkpoint": str(ckpt)}
    return predict_with_model(
        root, net, meta, out_dir, batch_size=batch_size, device=dev, tta=tta, workers=workers, progress=progress,
        log_every=log_every,
    )
