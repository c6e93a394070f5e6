"""Training-step throughput of the MH-MTL baseline (images/s), per task kind, on CPU and CUDA.

    python benchmarks/bench_train.py                       # efficientnet_b4, 256², batch 8
    python benchmarks/bench_train.py --backbone convnext_tiny --steps 10 --device cuda
    python benchmarks/bench_train.py --threads 1          # a CPU shared with other jobs

A step is what ``fmuia train`` does per batch: forward through encoder (+ FPN) and one head, the
kind's loss, backward, gradient clipping, AdamW step (AMP bf16/fp16 + channels_last on CUDA).
Inputs are random tensors, so the figures exclude image decoding (done by loader workers in
parallel during training). For reference it also times timm's ``efficientnet_b4`` feature
extractor alone, forward only.
"""

from __future__ import annotations

import argparse
import time

import timm
import torch

from fmuia.model import build_model
from fmuia.tasks import TaskKind, get_task
from fmuia.training.losses import LOSSES

TASKS = {  # one representative task per kind
    TaskKind.SEGMENTATION: "cardiac_multi",
    TaskKind.CLASSIFICATION: "fetal_plane_cls",
    TaskKind.DETECTION: "thyroid_nodule_det",
    TaskKind.REGRESSION: "IUGC",
}


def _target(kind: TaskKind, spec, b: int, s: int, dev) -> dict:
    g = torch.Generator().manual_seed(0)
    if kind is TaskKind.SEGMENTATION:
        return {"mask": torch.randint(0, spec.num_classes, (b, s, s), generator=g).to(dev)}
    if kind is TaskKind.CLASSIFICATION:
        return {"label": torch.randint(0, spec.num_classes, (b,), generator=g).to(dev)}
    if kind is TaskKind.DETECTION:
        lo = torch.rand(b, 2, generator=g) * 0.5
        return {"box": torch.cat([lo, lo + 0.3], 1).to(dev)}
    return {"points": torch.rand(b, spec.num_classes, 2, generator=g).to(dev),
            "valid": torch.ones(b, spec.num_classes, dtype=torch.bool).to(dev)}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def bench_device(args, dev: torch.device) -> dict[str, float]:
    cuda = dev.type == "cuda"
    amp = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
    specs = [get_task(t) for t in TASKS.values()]
    torch.manual_seed(0)
    net = build_model(specs, args.backbone, pretrained="none").to(dev)
    if cuda:
        net.to(memory_format=torch.channels_last)
    net.train()
    opt = torch.optim.AdamW([{"params": net.encoder_parameters(), "lr": 1e-4},
                             {"params": net.decoder_parameters(), "lr": 1e-3}])
    b, s = args.batch_size, args.img_size
    x = torch.randn(b, 3, s, s, device=dev)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    results = {}
    for kind, tid in TASKS.items():
        target = _target(kind, get_task(tid), b, s, dev)

        def step(tid=tid, kind=kind, target=target):
            with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                raw = net(x, tid)
            loss, _ = LOSSES[kind](raw, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()

        for _ in range(args.warmup):
            step()
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        _sync(dev)
        results[f"train {kind.value}"] = b * args.steps / (time.perf_counter() - t0)
    results["train mean over kinds"] = len(TASKS) / sum(1 / v for v in results.values())

    # reference: timm efficientnet_b4 features alone, forward only
    enc = timm.create_model("efficientnet_b4", features_only=True, pretrained=False).to(dev).eval()
    if cuda:
        enc.to(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
        for _ in range(args.warmup):
            enc(x)
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            enc(x)
        _sync(dev)
    results["forward-only timm efficientnet_b4 features"] = b * args.steps / (time.perf_counter() - t0)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="efficientnet_b4")
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed steps per kind")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="all", help="cpu, cuda, or all (cpu + cuda when available)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (on a CPU shared with other jobs, 1 is often fastest)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] if args.device in ("all", "cpu") else []
    if args.device == "cuda" or (args.device == "all" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    print(f"backbone {args.backbone}, {args.img_size}x{args.img_size}, batch {args.batch_size}, "
          f"{args.steps} timed steps per kind; torch threads {torch.get_num_threads()}")
    for dev in devices:
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
        for what, ips in bench_device(args, dev).items():
            print(f"  {name:>24}  {what:<44} {ips:8.1f} images/s")


if __name__ == "__main__":
    main()
