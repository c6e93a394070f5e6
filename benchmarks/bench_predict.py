"""Benchmark ``fmuia predict``: images/s end to end vs forward-only, at 256² with efficientnet_b4.

End to end = decode (worker processes) + preprocess + forward + postprocess + map back to the
original size + write PNG/JSON. Forward-only = the bare timm ``efficientnet_b4`` classifier and
our multi-task network on a ready tensor, for comparison (the official smp EfficientNet-B4
baseline runs ~7 images/s forward-only on 2 CPU cores; timm's is ~2x faster).

    python benchmarks/bench_predict.py                       # CPU (and CUDA when available)
    python benchmarks/bench_predict.py --per-task 32 --device cpu --workers 2

Prints one line per measurement plus where the end-to-end time goes (waiting for decoded
images / network / decoding outputs and writing files). Uses random weights (no download).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch

from fmuia.dataset import load_root
from fmuia.dataset.synth import synthesize
from fmuia.inference import default_workers, predict_with_model
from fmuia.model import build_model
from fmuia.model.checkpoint import load_for_inference
from fmuia.tasks import get_task
from fmuia.training.checkpoint import make_meta, save_checkpoint

# One task per kind by default: batches stay full, every decoder/writer is exercised.
DEFAULT_TASKS = ["fetal_abdomen_multi", "fetal_plane_cls", "thyroid_nodule_det", "IUGC"]


def _forward_rate(model, x: torch.Tensor, call, device: torch.device, repeats: int) -> float:
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), autocast:
        call(model, x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            call(model, x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return repeats * x.shape[0] / (time.perf_counter() - start)


def bench_device(device: torch.device, args, data: Path, ckpt: Path, work: Path) -> None:
    S, B = args.img_size, args.batch_size
    repeats = args.repeats if device.type == "cpu" else 20
    x = torch.randn(B, 3, S, S, device=device)

    timm_net = timm.create_model(args.backbone, pretrained=False).to(device).eval()
    rate = _forward_rate(timm_net, x, lambda m, t: m(t), device, repeats)
    print(f"[{device}] forward-only timm {args.backbone} classifier   : {rate:7.2f} images/s  (batch {B}, {S}², NCHW)")
    timm_net = timm_net.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    rate = _forward_rate(timm_net, x, lambda m, t: m(t), device, repeats)
    print(f"[{device}] forward-only timm {args.backbone} classifier   : {rate:7.2f} images/s  (channels_last)")
    del timm_net

    net, meta = load_for_inference(ckpt, device=device)
    net = net.to(memory_format=torch.channels_last)  # as predict does
    root = load_root(data)
    for task_id in sorted(root.tasks, key=lambda t: root.tasks[t].kind.value):
        spec = root.tasks[task_id]
        rate = _forward_rate(net, x, lambda m, t, tid=task_id: m.postprocess(tid, m(t, tid)), device, repeats)
        print(f"[{device}] forward-only MultiTaskNet {spec.kind.value:<14} : {rate:7.2f} images/s  ({task_id}, channels_last)")

    for tta in [False] + ([True] if args.tta else []):
        stats: dict[str, float] = {}
        out = work / f"pred_{device.type}_{tta}"
        start = time.perf_counter()
        counts = predict_with_model(root, net, meta, out, batch_size=B, device=device, tta=tta,
                                    workers=args.workers, progress=False, stats=stats)
        seconds = time.perf_counter() - start
        n = sum(counts.values())
        print(f"[{device}] end to end (decode+preprocess+forward+postprocess+write){' TTA' if tta else ''}: "
              f"{n / seconds:7.2f} images/s  ({n} images in {seconds:.1f} s, workers={args.workers})")
        print(f"[{device}]   time split: waiting for images {stats['load_s']:.1f} s, network {stats['forward_s']:.1f} s, "
              f"outputs→files {stats['write_s']:.1f} s")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="efficientnet_b4")
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--per-task", type=int, default=32, help="synthetic images per task")
    p.add_argument("--tasks", nargs="*", default=DEFAULT_TASKS)
    p.add_argument("--workers", type=int, default=default_workers())
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto = CPU, plus CUDA when available")
    p.add_argument("--repeats", type=int, default=3, help="timed forward batches on CPU")
    p.add_argument("--tta", action="store_true", help="also time mirror TTA (mirror-safe tasks)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    devices = [torch.device("cpu")] if args.device in ("auto", "cpu") else []
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; "
          f"{args.backbone} at {args.img_size}², {args.per_task} synthetic images for each of {len(args.tasks)} tasks")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = synthesize(work / "data", per_task=args.per_task, seed=0, tasks=args.tasks)
        net = build_model([get_task(t) for t in args.tasks], backbone=args.backbone, pretrained="none")
        ckpt = save_checkpoint(work / "bench.pt", net, make_meta(net, args.img_size))
        del net
        for device in devices:
            bench_device(device, args, data, ckpt, work)


if __name__ == "__main__":
    sys.exit(main())
