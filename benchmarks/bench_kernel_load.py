"""Benchmark: what making the numba segmentation kernel ready costs in a fresh process.

Each measurement is a new interpreter (the cost is paid once per process, so it only shows
there), with numba's on-disk cache warm (one untimed run fills it first). Phases:

- ``import numpy`` and ``import numba``;
- ``import evaluation.metrics._seg_numba`` (creates the dispatchers; compiles nothing);
- making the kernel ready: the JIT kernel by :func:`evaluation.metrics._seg_numba.load` (the fast
  path: the cached specialisation is added without numba's per-process registry refresh), by
  numba's ordinary path (a first call through the dispatcher: refresh, which imports every numba
  implementation module and probes scipy for BLAS, then the cache load), or the kernel built
  ahead of time (``python -m evaluation.metrics._seg_numba --build-aot``, done here into a
  temporary cache folder), which needs no numba at all;
- the first real call, on a 320 x 320 pair.

It also prints, after an official-like sequence of calls (read-only decoded masks, a writeable
resized one), how many specialisations the process holds and whether any was compiled, and, with
``--cold``, the cost with an empty cache (a compile). Then, in one process, the per-mask time
of the compiled kernel and of the numpy fallback on synthetic pairs of a few sizes, and the
break-even number of masks: the fixed load cost divided by the per-mask saving.

    python benchmarks/bench_kernel_load.py            # 7 fresh processes per path
    python benchmarks/bench_kernel_load.py --cold     # + one compile into an empty cache
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _child(how: str) -> None:
    t0 = time.perf_counter()
    import numpy as np

    t1 = time.perf_counter()
    if how != "aot":
        import numba  # noqa: F401
    t2 = time.perf_counter()
    from evaluation.metrics import _kernel

    if how != "aot":
        from evaluation.metrics import _seg_numba as S
    t3 = time.perf_counter()
    if how == "ordinary":  # numba's ordinary path: the first call through the dispatcher
        a = np.zeros((3, 3), np.uint8)
        S.seg_kernel(S._read_only(a), S._read_only(a), 2)
        kernel = S.run
    else:  # what scoring does: the AOT module if present (how == "aot"), else the JIT fast path
        _kernel.prepare_fast_kernel()
        kernel = _kernel._KERNEL[0]
    t4 = time.perf_counter()
    rng = np.random.default_rng(0)
    g = np.zeros((320, 320), np.uint8)
    g[60:200, 80:240] = 1
    g[100:150, 120:180] = 2
    p = np.roll(g, (3, -2), axis=(0, 1))
    p[rng.random(p.shape) < 0.001] = 1
    g.flags.writeable = False  # like a decoded mask; p stays writeable, like a resized one
    kernel(p, g, 3)
    t5 = time.perf_counter()
    kernel(g, g, 3)
    info = {"signatures": 0, "cache_hits": 0, "cache_misses": 0}
    if "evaluation.metrics._seg_numba" in sys.modules:
        S = sys.modules["evaluation.metrics._seg_numba"]
        info = {"signatures": len(S.seg_kernel.signatures), "cache_hits": sum(S.seg_kernel.stats.cache_hits.values()),
                "cache_misses": sum(S.seg_kernel.stats.cache_misses.values())}
    print(json.dumps({"numpy": t1 - t0, "numba": t2 - t1, "module": t3 - t2, "ready": t4 - t3, "first_call": t5 - t4,
                      "total": t5 - t0, **info, "numba_imported": "numba" in sys.modules,
                      "refreshed": "numba.np.arraymath" in sys.modules,
                      "how": _kernel.kernel_kind() or "jit, numba (ordinary)"}))


def _fresh(how: str, env: dict) -> dict:
    p = subprocess.run([sys.executable, __file__, "--child", how], capture_output=True, text=True, cwd=REPO, env=env)
    if p.returncode:
        raise SystemExit(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def _pairs(rng, n: int, size: int, c: int):  # type: ignore[no-untyped-def]
    import numpy as np

    out = []
    for _ in range(n):
        h, w = int(size * rng.uniform(0.8, 1.0)), size
        yy, xx = np.ogrid[:h, :w]
        g = np.zeros((h, w), np.uint8)
        for k in range(1, c):
            cy, cx, ry, rx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.08, 0.25) * h, \
                rng.uniform(0.08, 0.25) * w
            g[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = k
        p = np.roll(g, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1))
        noise = rng.random(p.shape) < 0.001
        p[noise] = rng.integers(0, c, int(noise.sum()))
        g.flags.writeable = False
        out.append((p, g, c))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--cold", action="store_true", help="also time one compile into an empty cache")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child)
        return
    no_aot = dict(os.environ, FMUIA_NO_AOT="1")
    _fresh("fast", no_aot)  # fills numba's cache if it is empty
    aot_tmp = tempfile.TemporaryDirectory()
    aot_env = dict(os.environ, FMUIA_AOT_DIR=aot_tmp.name)
    t = time.perf_counter()
    built = subprocess.run([sys.executable, "-m", "evaluation.metrics._seg_numba", "--build-aot"], cwd=REPO,
                           env=aot_env, capture_output=True, text=True)
    aot_build_s = time.perf_counter() - t
    paths = {"fast": no_aot, "ordinary": no_aot}
    if built.returncode == 0:
        paths["aot"] = aot_env
    else:
        print(f"(no ahead-of-time kernel here: {built.stderr.strip()[-300:]})")
    rows: dict[str, list[dict]] = {how: [] for how in paths}
    for _ in range(args.repeats):
        for how, env in paths.items():
            rows[how].append(_fresh(how, env))
    keys = ("numpy", "numba", "module", "ready", "first_call", "total")
    print(f"fresh process, warm cache, median of {args.repeats} (seconds):")
    print(f"  {'path':<34s}" + "".join(f"{k:>11s}" for k in keys) + "  specialisations / hits / misses / refreshed")
    labels = {"fast": "JIT, fast cache path (default)", "ordinary": "JIT, numba's ordinary cache load",
              "aot": "ahead of time (prebuilt)"}
    for how, r in rows.items():
        med = {k: statistics.median(x[k] for x in r) for k in keys}
        last = r[-1]
        print(f"  {labels[how]:<34s}" + "".join(f"{med[k]:11.3f}" for k in keys)
              + f"  {last['signatures']} / {last['cache_hits']} / {last['cache_misses']} / {last['refreshed']}"
              + f"  [{last['how']}; numba imported: {last['numba_imported']}]")
    if "aot" in paths:
        print(f"  (building the ahead-of-time kernel took {aot_build_s:.1f} s, once: "
              "python -m evaluation.metrics._seg_numba --build-aot)")
    if args.cold:
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, NUMBA_CACHE_DIR=tmp, FMUIA_NO_AOT="1")
            cold = _fresh("fast", env)
            print(f"  cold cache (compile), JIT: ready {cold['ready']:.2f} s, "
                  f"{cold['signatures']} specialisation(s), misses {cold['cache_misses']}")

    # per-mask cost: compiled (JIT, AOT) vs numpy, in this process
    import numpy as np

    sys.path.insert(0, str(REPO))
    from evaluation import metrics as M
    from evaluation.metrics import _kernel

    os.environ["FMUIA_NO_AOT"] = "1"
    t = time.perf_counter()
    M.prepare_fast_kernel()
    load_s = time.perf_counter() - t
    kernels = {"JIT": _kernel._KERNEL[0]}
    if kernels["JIT"] is None:
        print("numba unavailable here: only the numpy fallback")
        return
    if "aot" in paths:
        os.environ["FMUIA_AOT_DIR"] = aot_tmp.name
        kernels["AOT"] = _kernel._load_aot()
    kernels["numpy"] = None
    fixed = statistics.median(x["numba"] + x["module"] + x["ready"] for x in rows["fast"])  # the JIT's
    print(f"\nper mask, synthetic shifted ellipses + specks, 3 classes (this process; the JIT load here took {load_s:.2f} s):")
    print(f"  {'size px':>8s}" + "".join(f"{name + ' ms':>10s}" for name in kernels) + f"{'JIT break-even masks':>22s}")
    rng = np.random.default_rng(1)
    for size in (160, 320, 640, 960):
        pairs = _pairs(rng, 40, size, 3)
        per = {}
        for name, kern in kernels.items():
            _kernel._KERNEL[:] = [kern]
            M.per_class_metrics(*pairs[0])
            t = time.perf_counter()
            for p, g, c in pairs:
                M.per_class_metrics(p, g, c)
            per[name] = (time.perf_counter() - t) / len(pairs)
        gain = per["numpy"] - per["JIT"]
        even = f"{fixed / gain:22.0f}" if gain > 0 else f"{'never':>22s}"
        print(f"  {size:8d}" + "".join(f"{per[name] * 1e3:10.3f}" for name in kernels) + even)
    print(f"  (break-even = the JIT's fixed cost in a fresh process, {fixed:.3f} s, over its per-mask saving; "
          "the AOT kernel's is ~0.003 s)")
    aot_tmp.cleanup()


if __name__ == "__main__":
    main()
