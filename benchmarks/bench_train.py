"""Training-step throughput (images/s) and peak memory of the MH-MTL network, per backbone family,
with and without ``--freeze-encoder``, on CPU and CUDA.

    python benchmarks/bench_train.py                                   # three families, 224², batch 8
    python benchmarks/bench_train.py --backbones convnext_tiny --img-size 512 --device cuda
    python benchmarks/bench_train.py --batch-size 4 --steps 2 --threads 1   # a CPU shared with other jobs

A step is what ``fmuia train`` does per batch: forward through encoder (+ pyramid + FPN) and one head,
the kind's loss, backward, gradient clipping, AdamW step over :func:`fmuia.training.optim.param_groups`
(AMP bf16/fp16 + channels_last on CUDA). Steps cycle through one task per kind. Inputs are random
tensors, so the figures exclude image decoding (done by loader workers in parallel during training).

Every configuration runs in its own subprocess, so peak memory is honest: on the CPU the process's
peak resident set (``ru_maxrss``; Python's tracemalloc does not see torch's allocations), printed as
the peak and as the part above the resident set after building the network (what training adds:
activations, gradients, AdamW state); on CUDA ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

DEFAULT_BACKBONES = "convnext_tiny,vit_small_patch16_224,swin_tiny_patch4_window7_224"
TASKS = ("cardiac_multi", "fetal_plane_cls", "thyroid_nodule_det", "IUGC")  # one per kind


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _target(spec, b: int, s: int, dev) -> dict:
    from fmuia.tasks import TaskKind

    g = torch.Generator().manual_seed(0)
    if spec.kind is TaskKind.SEGMENTATION:
        return {"mask": torch.randint(0, spec.num_classes, (b, s, s), generator=g).to(dev)}
    if spec.kind is TaskKind.CLASSIFICATION:
        return {"label": torch.randint(0, spec.num_classes, (b,), generator=g).to(dev)}
    if spec.kind is TaskKind.DETECTION:
        lo = torch.rand(b, 2, generator=g) * 0.5
        return {"box": torch.cat([lo, lo + 0.3], 1).to(dev)}
    return {"points": torch.rand(b, spec.num_classes, 2, generator=g).to(dev),
            "valid": torch.ones(b, spec.num_classes, dtype=torch.bool).to(dev)}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def run_one(args) -> dict:
    """One configuration, in this process: build, warm up, time ``steps`` steps per kind."""
    from fmuia.model import build_model
    from fmuia.tasks import get_task
    from fmuia.training.losses import LOSSES
    from fmuia.training.optim import param_groups

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    amp = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
    specs = [get_task(t) for t in TASKS]
    torch.manual_seed(0)
    net = build_model(specs, args.backbone, pretrained="none", img_size=args.img_size).to(dev)
    if cuda:
        net.to(memory_format=torch.channels_last)
    if args.freeze:
        net.freeze_encoder()
    net.train()
    opt = torch.optim.AdamW(param_groups(net, lr=1e-4, head_lr_scale=10.0, weight_decay=1e-4))
    params = [p for p in net.parameters() if p.requires_grad]
    b, s = args.batch_size, args.img_size
    x = torch.randn(b, 3, s, s, device=dev)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    targets = [_target(spec, b, s, dev) for spec in specs]
    built_rss = _rss_mb()
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)

    def step(spec, target):
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            raw = net(x, spec.task_id)
        loss, _ = LOSSES[spec.kind](raw, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    for _ in range(args.warmup):
        for spec, target in zip(specs, targets, strict=True):
            step(spec, target)
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        for spec, target in zip(specs, targets, strict=True):
            step(spec, target)
    _sync(dev)
    elapsed = time.perf_counter() - t0
    out = {
        "backbone": args.backbone, "device": args.device, "frozen": bool(args.freeze),
        "pyramid": net.config["pyramid"], "images_per_s": b * args.steps * len(specs) / elapsed,
        "trainable_params": sum(p.numel() for p in params), "params": sum(p.numel() for p in net.parameters()),
        "optimizer_state_tensors": sum(len(v) for v in opt.state.values()),
    }
    if cuda:
        out["peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        out["peak_mb"], out["peak_above_built_mb"] = peak, peak - built_rss
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default=DEFAULT_BACKBONES, help="comma-separated timm names")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed steps per kind")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="all", help="cpu, cuda, or all (cpu + cuda when available)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (on a CPU shared with other jobs, 1 is often fastest)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: run one configuration
    p.add_argument("--backbone", help=argparse.SUPPRESS)
    p.add_argument("--freeze", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args)))
        return
    devices = ["cpu"] if args.device in ("all", "cpu") else []
    if args.device == "cuda" or (args.device == "all" and torch.cuda.is_available()):
        devices.append("cuda")
    print(f"{args.img_size}x{args.img_size}, batch {args.batch_size}, {args.steps} timed steps per kind (4 kinds); "
          f"torch threads {args.threads or torch.get_num_threads()}")
    for dev in devices:
        name = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"
        mem = "peak allocated" if dev == "cuda" else "peak RSS (above built)"
        print(f"{name}: backbone, encoder, images/s, {mem}, trainable params")
        for backbone in args.backbones.split(","):
            rows = {}
            for freeze in (False, True):
                cmd = [sys.executable, __file__, "--one", "--backbone", backbone, "--device", dev,
                       "--img-size", str(args.img_size), "--batch-size", str(args.batch_size),
                       "--steps", str(args.steps), "--warmup", str(args.warmup)]
                cmd += ["--freeze"] if freeze else []
                cmd += ["--threads", str(args.threads)] if args.threads else []
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode:
                    print(f"  {backbone:<32} {'frozen' if freeze else 'trained':<8} failed: "
                          f"{(res.stderr.strip().splitlines() or ['?'])[-1]}")
                    continue
                r = rows[freeze] = json.loads(res.stdout.strip().splitlines()[-1])
                above = f" ({r['peak_above_built_mb']:7.0f})" if "peak_above_built_mb" in r else ""
                print(f"  {backbone:<32} {'frozen' if freeze else 'trained':<8} {r['images_per_s']:8.2f} images/s  "
                      f"{r['peak_mb']:8.0f} MiB{above}  {r['trainable_params'] / 1e6:6.2f}M / "
                      f"{r['params'] / 1e6:.2f}M params  [{r['pyramid']} pyramid]")
            if len(rows) == 2:
                key = "peak_above_built_mb" if "peak_above_built_mb" in rows[False] else "peak_mb"
                saved = rows[False][key] - rows[True][key]
                print(f"  {backbone:<32} freezing saves {saved:.0f} MiB ({100 * saved / rows[False][key]:.0f} % of "
                      f"{'training memory' if key != 'peak_mb' else 'peak'}) and runs "
                      f"{rows[True]['images_per_s'] / rows[False]['images_per_s']:.2f}x as fast")


if __name__ == "__main__":
    main()
