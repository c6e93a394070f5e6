"""The baseline on a real GPU, measured: AMP, channels_last, NCCL DDP, CUDA predict, an smp reference.

Runs the whole ``fmuia`` pipeline as a sequence of steps, each in its own subprocess with its own
time cap (one hung step cannot eat the others), and writes everything it measures to ONE JSON file
plus a log::

    python benchmarks/gpu_check.py --out DIR [--device auto|cuda|cpu] [--dry-run]

    DIR/gpu_check.json   rewritten atomically after every step: a killed run still leaves its results
    DIR/gpu_check.log    every subprocess's command, stdout and stderr, with timestamps

Nothing else is written under DIR (the device tool brings back at most 8 files from $OUT): data,
runs and predictions go to a scratch folder (``--work``; a temporary folder, removed at the end
unless ``--keep-work``). No network: backbones start from random weights (``--pretrained none``;
``--weights FILE`` for a local timm weights file). The orchestrator needs the standard library only;
each step's subprocess imports torch, and finds this checkout's ``fmuia`` through PYTHONPATH (the
package need not be installed).

Steps, in order (``issue_step`` in the JSON is the step number of the issue "The baseline on a real
GPU: AMP, channels_last, NCCL DDP, CUDA predict -- measured"):

  0  env               versions, GPU, bf16, NCCL, which optional packages import
  1  synth             ``fmuia synth --split`` a small data set
  1  train_256         ``fmuia.training.train`` efficientnet_b4, 256 px, batch 32, AMP bf16, channels_last,
                       200 steps: loss finite and falling (metrics.json/.csv), images/s, peak GPU memory
                       (torch.cuda.max_memory_allocated, read in the training process), and a compute-only
                       step rate on ready tensors (tells whether the loop waits for the data loader)
  2  train_512         the same at 512 px, batch 16
  3  ddp               ``torchrun --nproc-per-node 1 -m fmuia train`` (a few steps; checkpoint written and
                       loadable with ``load_for_inference``), then a probe under torchrun that joins an
                       NCCL (gloo on CPU) process group and trains the checkpoint's network in DDP
  4  predict           ``fmuia predict`` on the device with that checkpoint: images/s end to end
  4  predict_format    forward-only images/s (library timing and ready tensors), the CPU path, and the
                       comparison of both folders: same files, same JSON keys, masks of the same sizes
  4  check             ``fmuia check`` on both prediction folders
  4  evaluate_strict   ``fmuia evaluate --mode strict``
  4  evaluate_official ``fmuia evaluate --mode official``
  5  smp_reference     segmentation-models-pytorch ``smp.FPN("efficientnet-b4")``, batch 20, 256 px, one
                       plain AMP-bf16 segmentation step, side by side with one segmentation task's step
                       through our network; steps/s of both and the ratio ours/reference (goal >= 1.5).
                       Skipped with the reason when smp does not import.
  6  vit               ``build_model(..., backbone="vit_small_patch16_224")`` at 512 px: a few steps with
                       the encoder frozen vs fine-tuned, or "skipped: not supported yet" with the error

Each step records ``status`` (ok / failed / skipped / timeout, or pending if the run was killed
first), ``reason``, ``seconds``, ``figures``, ``checks`` (booleans; ``hard`` ones decide the status,
the others, such as "the loss falls" or "ratio >= 1.5", are reported in ``summary.soft_checks_unmet``)
and, on failure, the tail of stderr. A step whose prerequisite failed is skipped with that reason.

``--dry-run`` runs the same steps on the CPU with tiny settings (timm's ``test_efficientnet``,
``--pretrained none``, 64 px (96 px for train_512), batch 2, a few steps, gloo) so this script
cannot rot; figures that need a GPU (peak GPU memory, NCCL, the smp ratio) are null with a
reason there, never made up. ``tests/test_gpu_check.py`` runs it. ``--set STEP.KEY=VALUE`` changes
one setting (e.g. ``--set train_512.steps_per_epoch=25``, or a step's time cap: ``--set caps.train_512=200``);
the JSON's ``settings`` lists them all.

On the device machine (one H200, 16 cores; python3 there has torch, timm, numpy, scipy, sklearn,
pandas, numba, OpenCV, click, tqdm, pillow, matplotlib; no pycocotools, SimpleITK, docker or smp),
as ONE call of the device tool's ``run``, well inside its 600 s limit (the script's own budget is
540 s; every step is capped)::

    run(command="PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT --device cuda",
        timeout_s=600)

and with the smp reference (step 5), the wheels made here beforehand (see below) carried along::

    run(command="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade "
                "--target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; "
                "PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT --device cuda",
        carry=[".whl"], timeout_s=600)

Bringing segmentation-models-pytorch as wheels (do it here, in the repo root, before the device call;
all of these are pure Python, and timm, torchvision, huggingface_hub, safetensors, pillow, tqdm and
six are already on the device machine, so --no-deps)::

    echo /.whl/ >> .git/info/exclude
    # smp 0.5.x ships its own EfficientNet encoders (no efficientnet-pytorch/pretrainedmodels needed):
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform any -d .whl segmentation-models-pytorch==0.5.0
    # (or, instead, an older smp: 0.3.x/0.4.x imports efficientnet-pytorch and pretrainedmodels, which
    # imports munch; those two are published as source only, so build their pure-Python wheels here)
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform any -d .whl segmentation-models-pytorch==0.4.0 munch
    python3 -m pip wheel --no-deps -w .whl efficientnet-pytorch==0.7.1 pretrainedmodels==0.7.4
    unzip -p .whl/segmentation_models_pytorch-*.whl '*/METADATA' | grep ^Requires-Dist   # what else it needs

Keep one version of each package in .whl (two stop the install). Step 5 was tried here on the CPU
against segmentation-models-pytorch 0.5.0 with timm 1.0 (``smp.FPN("efficientnet-b4")`` builds and trains).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
SCHEMA_VERSION = 1
GIB = float(1 << 30)

# (name, issue step, title, cap in seconds for a full run, cap for a dry run)
STEPS: list[tuple[str, int, str, int, int]] = [
    ("env", 0, "environment: versions, GPU, optional packages", 60, 60),
    ("synth", 1, "fmuia synth --split", 90, 60),
    ("train_256", 1, "fmuia train efficientnet_b4 256 px batch 32, AMP bf16, channels_last", 150, 90),
    ("train_512", 2, "fmuia train efficientnet_b4 512 px batch 16, AMP bf16, channels_last", 150, 90),
    ("ddp", 3, "torchrun --nproc-per-node 1 fmuia train (NCCL/gloo) + checkpoint loadable + DDP probe", 120, 120),
    ("predict", 4, "fmuia predict on the device", 90, 60),
    ("predict_format", 4, "forward-only images/s; CPU path; same files, JSON keys and mask sizes", 120, 90),
    ("check", 4, "fmuia check on the device and CPU predictions", 60, 60),
    ("evaluate_strict", 4, "fmuia evaluate --mode strict", 90, 60),
    ("evaluate_official", 4, "fmuia evaluate --mode official", 60, 60),
    ("smp_reference", 5, "smp.FPN efficientnet-b4 vs ours: segmentation step, batch 20, 256 px", 120, 90),
    ("vit", 6, "vit_small_patch16_224 at 512 px: frozen vs fine-tuned", 90, 60),
]
# what a run writes in its scratch folder (removed first when --work names an existing folder)
WORK_ITEMS = ("data", "run_train_256", "run_train_512", "run_ddp", "pred_device", "pred_device_lib", "pred_cpu", "workers",
              "check_device.json", "check_cpu.json", "results_strict.json", "results_strict_summary.txt",
              "results_strict_per_case.csv", "results_official.json", "results_official_summary.txt")
WORK_MARKER = ".gpu_check_work"
STATUSES = ("ok", "failed", "skipped", "timeout", "pending")
SHM_NEEDED_GIB = 1.5  # training loader workers: prefetched batches live in /dev/shm (~1 GiB at 512 px, batch 16)
SEG_TASK = "cardiac_multi"  # the segmentation task of the side-by-side steps (4 classes)


# ------------------------------------------------------------------------------------------------
# small helpers (shared by the orchestrator and the workers; standard library only)
# ------------------------------------------------------------------------------------------------

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _clean(v):
    """JSON-safe: non-finite floats -> None, tuples -> lists, unknown objects -> str."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    try:  # numpy / torch scalars
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if f.is_integer() and "int" in type(v).__name__:
        return int(f)
    return f if math.isfinite(f) else None


def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(_clean(obj), f, indent=2, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _tail(text: str, n: int = 3000) -> str:
    return text if len(text) <= n else "..." + text[-n:]


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _fmt(x, spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec)


# ------------------------------------------------------------------------------------------------
# settings
# ------------------------------------------------------------------------------------------------

def make_settings(dry: bool, cpu_count: int) -> dict[str, dict]:
    """Every knob of every step; ``--set STEP.KEY=VALUE`` overrides one."""
    workers = 0 if dry else max(0, min(8, cpu_count - 2))
    backbone = "test_efficientnet" if dry else "efficientnet_b4"
    common = {"backbone": backbone, "pretrained": "none", "weights": None, "workers": workers, "amp": "bf16",
              "seed": 0}
    if dry:
        train_a = {**common, "img_size": 64, "batch_size": 2, "epochs": 2, "steps_per_epoch": 3, "probe_steps": 2,
                   "probe_warmup": 1}
        train_b = {**train_a, "img_size": 96}
    else:
        train_a = {**common, "img_size": 256, "batch_size": 32, "epochs": 4, "steps_per_epoch": 50, "probe_steps": 20,
                   "probe_warmup": 5}
        train_b = {**train_a, "img_size": 512, "batch_size": 16}
    return {
        "synth": {"per_task": 6 if dry else 48, "seed": 0},
        "train_256": train_a,
        "train_512": train_b,
        "ddp": {**common, "img_size": 64 if dry else 256, "batch_size": 2 if dry else 32, "epochs": 1,
                "steps_per_epoch": 2 if dry else 10, "nproc_per_node": 1, "probe_steps": 2 if dry else 10,
                "probe_warmup": 1 if dry else 3, "probe_batch_size": 2 if dry else 32},
        "predict": {"batch_size": 16, "workers": workers, "forward_repeats": 2 if dry else 20,
                    "forward_batch_size": 2 if dry else 32},
        "evaluate": {"bootstrap": 20 if dry else 1000},
        "smp_reference": {"backbone": backbone, "smp_encoder": "efficientnet-b0" if dry else "efficientnet-b4",
                          "task": SEG_TASK, "img_size": 64 if dry else 256, "batch_size": 2 if dry else 20,
                          "warmup": 1 if dry else 10, "steps": 2 if dry else 30, "rounds": 1 if dry else 2,
                          "clip_grad": 1.0, "lr": 1e-4},
        "vit": {"backbone": "vit_small_patch16_224", "task": SEG_TASK, "img_size": 64 if dry else 512,
                "batch_size": 2 if dry else 8, "warmup": 1 if dry else 2, "steps": 2 if dry else 8, "lr": 1e-4},
    }


def apply_overrides(settings: dict[str, dict], pairs: list[str]) -> None:
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        step, dot, name = key.partition(".")
        if not sep or not dot or step not in settings:
            raise SystemExit(f"--set {pair!r}: expected STEP.KEY=VALUE with STEP one of {', '.join(settings)}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        settings[step][name] = value


# ------------------------------------------------------------------------------------------------
# the orchestrator
# ------------------------------------------------------------------------------------------------

class StepTimeout(Exception):
    pass


class StepFailed(Exception):
    pass


class StepSkipped(Exception):
    pass


class Check:
    """The orchestrator: runs the steps, records them, rewrites the JSON after each."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.json_path = self.out / "gpu_check.json"
        self.log_path = self.out / "gpu_check.log"
        if args.work:
            self.work = Path(args.work).resolve()
            marker = self.work / WORK_MARKER
            if self.work.is_dir() and any(self.work.iterdir()) and not marker.is_file():
                raise SystemExit(f"--work {self.work}: not empty and not a gpu_check scratch folder; name a new one")
            self.work.mkdir(parents=True, exist_ok=True)
            marker.write_text("scratch folder of benchmarks/gpu_check.py\n", encoding="utf-8")
            self.own_work = False
            for stale in WORK_ITEMS:  # what an earlier run left here would mix with this run's outputs
                q = self.work / stale
                if q.is_dir():
                    shutil.rmtree(q)
                elif q.exists():
                    q.unlink()
        else:
            self.work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
            self.own_work = True
        self.log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.dry = bool(args.dry_run)
        self.t0 = time.monotonic()
        budget = args.budget if args.budget is not None else (280.0 if self.dry else 540.0)
        self.deadline = self.t0 + budget
        self.settings = make_settings(self.dry, os.cpu_count() or 1)
        if args.weights:
            for k in ("train_256", "train_512", "ddp"):
                self.settings[k]["weights"] = str(Path(args.weights).resolve())
        self.settings["caps"] = {name: (dcap if self.dry else cap) for name, _i, _t, cap, dcap in STEPS}
        apply_overrides(self.settings, args.set or [])
        self.device = "cpu" if (self.dry and args.device == "auto") else args.device  # resolved in env
        self.current: subprocess.Popen | None = None
        self.current_rec: dict | None = None
        self.data = {
            "schema_version": SCHEMA_VERSION,
            "script": "benchmarks/gpu_check.py",
            "argv": sys.argv[1:],
            "mode": "dry-run" if self.dry else "full",
            "started": _now(),
            "finished": None,
            "budget_s": budget,
            "device_requested": args.device,
            "device": None,
            "work_dir": str(self.work),
            "settings": self.settings,
            "environment": None,
            "steps": {
                name: {"issue_step": issue, "title": title, "status": "pending", "reason": None, "seconds": None,
                       "timeout_s": None, "commands": [], "figures": {}, "checks": {}, "hard_checks": [],
                       "stderr_tail": None}
                for name, issue, title, _cap, _dcap in STEPS
            },
            "summary": None,
        }
        self.caps = self.settings["caps"]
        self.save()

    # ---- output --------------------------------------------------------------------------------
    def save(self) -> None:
        self.data["summary"] = self.summary()
        write_json_atomic(self.json_path, self.data)

    def summary(self) -> dict:
        steps = self.data["steps"]
        counts = {s: sum(1 for r in steps.values() if r["status"] == s) for s in STATUSES}
        soft = []
        hard = []
        for name, r in steps.items():
            for k, v in r["checks"].items():
                if v is False:
                    (hard if k in r["hard_checks"] else soft).append(f"{name}.{k}")
        return {
            "statuses": {n: r["status"] for n, r in steps.items()},
            "seconds": {n: r["seconds"] for n, r in steps.items()},
            "reasons": {n: r["reason"] for n, r in steps.items() if r["reason"]},
            "counts": counts,
            "hard_checks_failed": hard,
            "soft_checks_unmet": soft,
            "all_ok": counts["failed"] == 0 and counts["timeout"] == 0 and counts["pending"] == 0,
            "elapsed_s": round(time.monotonic() - self.t0, 1),
        }

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.logline(line)

    def logline(self, line: str) -> None:
        self.log.write(f"{_now()} {line}\n")
        self.log.flush()

    def close(self) -> None:
        self.data["finished"] = _now()
        self.save()
        self.log.close()
        if self.own_work and not self.args.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)

    # ---- subprocesses --------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + old if old else "")
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: nothing is downloaded
        return env

    def kill_current(self) -> None:
        proc = self.current
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)  # its own process group: torchrun's and the loaders' children too
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def sub(self, rec: dict, cmd: list[str], deadline: float, *, cwd: Path | None = None) -> tuple[int, str, str, float]:
        """Run ``cmd`` until ``deadline``; ``(returncode, stdout, stderr, seconds)``; StepTimeout past it."""
        rec["commands"].append(shlex.join(cmd))
        timeout = deadline - time.monotonic()
        if timeout < 1:
            raise StepTimeout("no time left in this step's cap")
        self.logline(f"$ {shlex.join(cmd)}")
        with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as fo, \
                tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as fe:
            t = time.monotonic()
            self.current = subprocess.Popen(cmd, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, env=self.env(),
                                            cwd=str(cwd or REPO), preexec_fn=os.setpgrp)  # noqa: PLW1509
            timed_out = False
            try:
                rc = self.current.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                self.kill_current()
                rc = self.current.returncode if self.current.returncode is not None else -9
            seconds = time.monotonic() - t
            self.current = None
            fo.seek(0)
            fe.seek(0)
            out, err = fo.read(), fe.read()
        self.log.write(f"--- stdout ({len(out)} chars) ---\n{out}\n--- stderr ({len(err)} chars) ---\n{err}\n"
                       f"--- rc={rc} in {seconds:.1f} s{' (timed out)' if timed_out else ''} ---\n")
        self.log.flush()
        if timed_out:
            rec["stderr_tail"] = _tail(err) or _tail(out)
            raise StepTimeout(f"killed after {seconds:.0f} s (the step's cap)")
        return rc, out, err, seconds

    def worker(self, rec: dict, kind: str, params: dict, deadline: float, *, launcher: list[str] | None = None) -> dict:
        """Run ``this_script --worker KIND`` (under ``launcher``, e.g. torchrun); merge its result into ``rec``."""
        pdir = self.work / "workers"
        pdir.mkdir(parents=True, exist_ok=True)
        ppath, rpath = pdir / f"{kind}.params.json", pdir / f"{kind}.result.json"
        write_json_atomic(ppath, params)
        if rpath.exists():
            rpath.unlink()
        prefix = launcher if launcher is not None else [sys.executable]
        cmd = [*prefix, str(HERE), "--worker", kind, "--params", str(ppath), "--result", str(rpath)]
        try:
            rc, out, err, _s = self.sub(rec, cmd, deadline)
        finally:  # what a killed worker managed to record is kept
            result = self._read_result(rpath)
            rec["figures"].update(result.get("figures", {}))
            rec["checks"].update(result.get("checks", {}))
            for h in result.get("hard_checks", []):
                if h not in rec["hard_checks"]:
                    rec["hard_checks"].append(h)
        if rc != 0:
            rec["stderr_tail"] = _tail(err) or _tail(out)
            raise StepFailed(result.get("reason") or f"worker {kind} exited with status {rc}")
        status = result.get("status", "ok")
        if status == "skipped":
            raise StepSkipped(result.get("reason") or "skipped")
        if status == "failed":
            rec["stderr_tail"] = _tail(err) or _tail(out)
            raise StepFailed(result.get("reason") or "failed")
        return result

    @staticmethod
    def _read_result(path: Path) -> dict:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    # ---- running one step ----------------------------------------------------------------------
    def run_step(self, index: int, name: str, fn) -> None:
        rec = self.data["steps"][name]
        start = time.monotonic()
        remaining = self.deadline - start
        cap = float(self.caps[name])
        if remaining < 10:
            rec.update(status="skipped", reason=f"the run's time budget ({self.data['budget_s']:.0f} s) is spent",
                       seconds=0.0)
        else:
            deadline = start + min(cap, remaining)
            rec["timeout_s"] = round(min(cap, remaining), 1)
            rec["status"] = "running"
            self.current_rec = rec
            try:
                fn(rec, deadline)
                failed_hard = [k for k in rec["hard_checks"] if rec["checks"].get(k) is False]
                if failed_hard:
                    rec.update(status="failed", reason="check(s) failed: " + ", ".join(failed_hard))
                else:
                    rec["status"] = "ok"
            except StepSkipped as exc:
                rec.update(status="skipped", reason=str(exc))
            except StepTimeout as exc:
                rec.update(status="timeout", reason=str(exc))
            except StepFailed as exc:
                rec.update(status="failed", reason=str(exc))
            except Exception as exc:  # a bug here, not in the step: record it and go on
                rec.update(status="failed", reason=f"gpu_check error: {type(exc).__name__}: {exc}",
                           stderr_tail=_tail(traceback.format_exc()))
            rec["seconds"] = round(time.monotonic() - start, 2)
            self.current_rec = None
        self.save()
        show = rec["status"] == "ok" or (rec["status"] == "skipped" and rec["figures"])
        head = headline(name, rec) if show else ""
        why = f"  ({rec['reason']})" if rec["reason"] and rec["status"] != "ok" else ""
        self.say(f"[gpu_check] {index:>2}/{len(STEPS)} {name:<18} {rec['status']:<8} {rec['seconds'] or 0:7.1f} s"
                 f"  {head}{_tail(why, 300)}")

    # ---- the steps -----------------------------------------------------------------------------
    def run(self) -> int:
        self.say(f"[gpu_check] {self.data['mode']} run, device {self.args.device}, budget {self.data['budget_s']:.0f} s, "
                 f"out {self.out}, work {self.work}")
        plan = [
            ("env", self.step_env), ("synth", self.step_synth), ("train_256", self.step_train),
            ("train_512", self.step_train), ("ddp", self.step_ddp), ("predict", self.step_predict),
            ("predict_format", self.step_predict_format), ("check", self.step_check),
            ("evaluate_strict", self.step_evaluate), ("evaluate_official", self.step_evaluate),
            ("smp_reference", self.step_smp), ("vit", self.step_vit),
        ]
        for i, (name, method) in enumerate(plan, 1):
            self.run_step(i, name, lambda rec, deadline, m=method, n=name: m(n, rec, deadline))
        s = self.summary()
        self.say(f"[gpu_check] done in {s['elapsed_s']:.0f} s: " + ", ".join(f"{v} {k}" for k, v in s["counts"].items() if v)
                 + (f"; hard checks failed: {', '.join(s['hard_checks_failed'])}" if s["hard_checks_failed"] else "")
                 + (f"; soft checks unmet: {', '.join(s['soft_checks_unmet'])}" if s["soft_checks_unmet"] else "")
                 + f"; results in {self.json_path}")
        return 0 if s["all_ok"] else 1

    def _cuda(self) -> bool:
        return self.device is not None and self.device.startswith("cuda")

    def _need(self, *names: str) -> None:
        for n in names:
            st = self.data["steps"][n]["status"]
            if st != "ok":
                raise StepSkipped(f"needs step {n}, which is {st}")

    def step_env(self, name, rec, deadline) -> None:
        result = self.worker(rec, "env", {}, deadline)
        env = result.get("figures", {})
        self.data["environment"] = env
        cuda = bool(env.get("cuda_available"))
        want = self.args.device
        if want == "auto":
            self.device = "cpu" if self.dry else ("cuda" if cuda else "cpu")
        else:
            self.device = want
        self.data["device"] = self.device
        rec["checks"]["device_usable"] = not (self.device.startswith("cuda") and not cuda)
        rec["hard_checks"].append("device_usable")
        if not rec["checks"]["device_usable"]:
            raise StepFailed("CUDA was asked for (--device cuda) but torch.cuda.is_available() is False: "
                             f"{env.get('gpu_note') or ''}".strip())
        if not self.dry and not self._cuda():
            self.say("[gpu_check] warning: full settings on the CPU will not fit the budget; use --dry-run")
        # training's loader workers hand batches over through /dev/shm (a plain container has 64 MB)
        shm = env.get("dev_shm_free_gib")
        overridden = {kv.partition("=")[0] for kv in self.args.set or []}
        if shm is not None and shm < SHM_NEEDED_GIB:
            for k in ("train_256", "train_512", "ddp"):
                if self.settings[k]["workers"] and f"{k}.workers" not in overridden:
                    self.settings[k]["workers"] = 0
                    self.settings[k]["workers_note"] = (f"/dev/shm has {shm} GiB free (< {SHM_NEEDED_GIB}): training "
                                                        "loads images in the main process")

    def _device_ok(self) -> None:
        if self.data["steps"]["env"]["status"] != "ok":
            raise StepSkipped(f"needs step env, which is {self.data['steps']['env']['status']}")

    def step_synth(self, name, rec, deadline) -> None:
        self._device_ok()
        s = self.settings["synth"]
        root = self.work / "data"
        cmd = [sys.executable, "-m", "fmuia", "synth", str(root), "--per-task", str(s["per_task"]), "--seed", str(s["seed"]),
               "--split", "--overwrite"]
        rc, out, err, seconds = self.sub(rec, cmd, deadline)
        if rc != 0:
            rec["stderr_tail"] = _tail(err) or _tail(out)
            raise StepFailed(f"fmuia synth exited with status {rc}")
        counts = {}
        for split in ("train", "test", "labels"):
            csvs = list((root / split / "csv_files").glob("*.csv"))
            rows = 0
            for c in csvs:
                with open(c, encoding="utf-8") as f:
                    rows += max(0, sum(1 for _ in f) - 1)
            counts[split] = {"csv_files": len(csvs), "rows": rows}
        rec["figures"].update({"root": str(root), "counts": counts, "stdout": _tail(out, 800), "seconds": round(seconds, 2)})
        rec["checks"]["three_roots_written"] = all(counts[k]["rows"] > 0 for k in counts)
        rec["hard_checks"].append("three_roots_written")

    def step_train(self, name, rec, deadline) -> None:
        self._need("env", "synth")
        s = dict(self.settings[name])
        params = {**s, "data": str(self.work / "data" / "train"), "out": str(self.work / f"run_{name}"),
                  "device": self.device, "channels_last": True if self._cuda() else None, "seg_task": SEG_TASK}
        try:
            self.worker(rec, "train", params, deadline)
        except StepTimeout:  # the loop writes metrics.json after every epoch: keep what it had done
            try:
                log = json.loads((Path(params["out"]) / "metrics.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                log = {}
            epochs = log.get("epochs", [])
            rec["figures"]["epochs_done_before_timeout"] = len(epochs)
            rec["figures"]["train_losses"] = [e.get("train_loss") for e in epochs]
            rec["figures"]["images_per_s_by_epoch"] = [e.get("train_images_per_s") for e in epochs]
            raise

    def step_ddp(self, name, rec, deadline) -> None:
        self._need("env", "synth")
        s = self.settings[name]
        out = self.work / "run_ddp"
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(s["nproc_per_node"])]
        cmd = [*torchrun, "-m", "fmuia", "train", "--data", str(self.work / "data" / "train"), "--out", str(out),
               "--backbone", s["backbone"], "--pretrained", s["pretrained"], "--img-size", str(s["img_size"]),
               "--epochs", str(s["epochs"]), "--steps-per-epoch", str(s["steps_per_epoch"]),
               "--batch-size", str(s["batch_size"]), "--workers", str(s["workers"]), "--device", self.device,
               "--seed", str(s["seed"]), "--quiet"]
        if s.get("weights"):
            cmd += ["--weights", str(s["weights"])]
        rc, stdout, err, seconds = self.sub(rec, cmd, deadline)
        rec["figures"]["train_seconds"] = round(seconds, 2)
        rec["figures"]["train_stdout"] = _tail(stdout, 600)
        if rc != 0:
            rec["stderr_tail"] = _tail(err) or _tail(stdout)
            raise StepFailed(f"torchrun fmuia train exited with status {rc}")
        written = {f: (out / f).is_file() for f in ("best.pt", "last.pt", "metrics.json", "metrics.csv")}
        rec["figures"]["files_written"] = written
        rec["checks"]["checkpoint_written"] = written["best.pt"] and written["last.pt"]
        rec["hard_checks"].append("checkpoint_written")
        try:
            log = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log = {}
        losses = [e.get("train_loss") for e in log.get("epochs", [])]
        rec["figures"]["train_losses"] = losses
        rec["checks"]["loss_finite"] = bool(losses) and all(_finite(x) for x in losses)
        rec["hard_checks"].append("loss_finite")
        dist_log = log.get("distributed") or {}
        rec["figures"]["fmuia_joined_process_group"] = bool(dist_log)
        if not dist_log:
            rec["figures"]["fmuia_joined_process_group_note"] = (
                "fmuia.training.distributed.init_distributed joins a process group only when WORLD_SIZE > 1: "
                "with --nproc-per-node 1 the run trains without DDP, so the NCCL/DDP path is exercised by the probe")
        if not rec["checks"]["checkpoint_written"]:
            raise StepFailed("torchrun fmuia train wrote no checkpoint")
        launcher = [*torchrun]
        params = {"checkpoint": str(out / "best.pt"), "device": self.device, "seg_task": SEG_TASK,
                  "img_size": s["img_size"], "batch_size": s["probe_batch_size"], "steps": s["probe_steps"],
                  "warmup": s["probe_warmup"]}
        self.worker(rec, "ddp_probe", params, deadline, launcher=launcher)

    def _checkpoint(self) -> Path:
        for name, path in (("ddp", self.work / "run_ddp" / "best.pt"), ("train_256", self.work / "run_train_256" / "best.pt"),
                           ("train_512", self.work / "run_train_512" / "best.pt")):
            if self.data["steps"][name]["status"] == "ok" and path.is_file():
                return path
        raise StepSkipped("no checkpoint: steps ddp, train_256 and train_512 all failed or were skipped")

    def step_predict(self, name, rec, deadline) -> None:
        self._need("env", "synth")
        ckpt = self._checkpoint()
        s = self.settings["predict"]
        out = self.work / "pred_device"
        cmd = [sys.executable, "-m", "fmuia", "predict", "--data", str(self.work / "data" / "test"), "--out", str(out),
               "--checkpoint", str(ckpt), "--device", self.device, "--batch-size", str(s["batch_size"]),
               "--workers", str(s["workers"])]
        rc, stdout, err, seconds = self.sub(rec, cmd, deadline)
        rec["figures"]["checkpoint"] = str(ckpt.relative_to(self.work))
        if rc != 0:
            rec["stderr_tail"] = _tail(err) or _tail(stdout)
            raise StepFailed(f"fmuia predict exited with status {rc}")
        n, cli_seconds, cli_rate = _parse_predict_stdout(stdout)
        rec["figures"].update({
            "device": self.device, "images": n, "process_seconds": round(seconds, 2),
            "images_per_s_process": round(n / seconds, 2) if n and seconds > 0 else None,
            "cli_seconds": cli_seconds, "images_per_s_cli": cli_rate,
            "note": "process: the whole `fmuia predict` subprocess (python + torch import, model build, checkpoint load, "
                    "predict, write); cli: what the command prints (from checkpoint load to the last file)",
            "stdout_tail": _tail(stdout, 400),
        })
        rec["checks"]["predictions_written"] = bool(n)
        rec["hard_checks"].append("predictions_written")

    def step_predict_format(self, name, rec, deadline) -> None:
        self._need("predict")
        s = self.settings["predict"]
        params = {"checkpoint": str(self._checkpoint()), "data": str(self.work / "data" / "test"), "device": self.device,
                  "batch_size": s["batch_size"], "workers": s["workers"], "forward_repeats": s["forward_repeats"],
                  "forward_batch_size": s["forward_batch_size"], "cli_out": str(self.work / "pred_device"),
                  "out_device": str(self.work / "pred_device_lib"), "out_cpu": str(self.work / "pred_cpu")}
        self.worker(rec, "predict_format", params, deadline)

    def step_check(self, name, rec, deadline) -> None:
        self._need("predict")
        folders = [("device", self.work / "pred_device")]
        if (self.work / "pred_cpu").is_dir():
            folders.append(("cpu", self.work / "pred_cpu"))
        for label, folder in folders:
            report = self.work / f"check_{label}.json"
            cmd = [sys.executable, "-m", "fmuia", "check", str(folder), "--data", str(self.work / "data" / "test"),
                   "--json", str(report), "--quiet"]
            rc, stdout, err, seconds = self.sub(rec, cmd, deadline)
            try:
                rep = json.loads(report.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                rep = {}
            rec["figures"][label] = {"exit_status": rc, "seconds": round(seconds, 2), "ok": rep.get("ok"),
                                     "n_errors": rep.get("n_errors"), "n_warnings": rep.get("n_warnings"),
                                     "verdict": stdout.strip()[-300:]}
            rec["checks"][f"{label}_valid"] = rc == 0 and rep.get("ok") is True
            rec["hard_checks"].append(f"{label}_valid")
            if rc not in (0, 1):
                rec["stderr_tail"] = _tail(err) or _tail(stdout)

    def step_evaluate(self, name, rec, deadline) -> None:
        self._need("predict")
        mode = name.split("_", 1)[1]
        res = self.work / f"results_{mode}.json"
        cmd = [sys.executable, "-m", "fmuia", "evaluate", str(self.work / "pred_device"), "--data",
               str(self.work / "data" / "labels"), "--out", str(res), "--mode", mode, "--quiet"]
        if mode == "strict":
            cmd += ["--bootstrap", str(self.settings["evaluate"]["bootstrap"])]
        rc, stdout, err, seconds = self.sub(rec, cmd, deadline)
        if rc != 0:
            rec["stderr_tail"] = _tail(err) or _tail(stdout)
            raise StepFailed(f"fmuia evaluate --mode {mode} exited with status {rc}")
        try:
            results = json.loads(res.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StepFailed(f"{res.name} unreadable: {exc}") from None
        figures = {"seconds": round(seconds, 2), "top_level_keys": sorted(results),
                   "stdout_tail": _tail(stdout, 300), "warnings": _tail(err, 600) if err.strip() else None}
        if mode == "strict":
            figures["aggregates"] = results.get("aggregates")
            figures["notes"] = results.get("notes")
        rec["figures"].update(figures)
        rec["checks"]["results_written"] = all(k in results for k in ("segmentation", "classification", "detection", "regression"))
        rec["hard_checks"].append("results_written")

    def step_smp(self, name, rec, deadline) -> None:
        self._need("env")
        params = {**self.settings[name], "device": self.device, "dry_run": self.dry}
        self.worker(rec, "smp", params, deadline)

    def step_vit(self, name, rec, deadline) -> None:
        self._need("env")
        params = {**self.settings[name], "device": self.device}
        self.worker(rec, "vit", params, deadline)


def _parse_predict_stdout(stdout: str) -> tuple[int | None, float | None, float | None]:
    """``wrote N predictions for T task(s) to OUT in S s (R images/s)`` -> (N, S, R)."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("wrote ") and " predictions for " in line:
            parts = line.split()
            try:
                n = int(parts[1])
            except (IndexError, ValueError):
                return None, None, None
            seconds = rate = None
            try:
                i = parts.index("in", len(parts) - 6)
                seconds = float(parts[i + 1])
            except (ValueError, IndexError):
                pass
            if "(" in line and "images/s" in line:
                try:
                    rate = float(line.rsplit("(", 1)[1].split()[0])
                except (IndexError, ValueError):
                    pass
            return n, seconds, rate
    return None, None, None


def headline(name: str, rec: dict) -> str:
    """The few figures printed on a step's line."""
    f = rec["figures"]
    try:
        if name == "env":
            return (f"torch {f.get('torch')}, timm {f.get('timm')}, {f.get('gpu_name') or 'no GPU'}, "
                    f"bf16 {f.get('bf16_supported')}, smp {'yes' if f.get('packages', {}).get('segmentation_models_pytorch') else 'no'}")
        if name == "synth":
            c = f.get("counts", {})
            return ", ".join(f"{k} {v['rows']} rows" for k, v in c.items())
        if name.startswith("train_"):
            ls = f.get("train_losses") or []
            loss = f"loss {_fmt(ls[0], '.3f')}->{_fmt(ls[-1], '.3f')}" if ls else "no loss"
            mem = f.get("peak_memory_allocated_gib")
            return (f"{loss}, {_fmt(f.get('images_per_s_steady'))} img/s (compute-only {_fmt(f.get('compute_only_images_per_s'))}), "
                    f"peak {_fmt(mem, '.2f')} GiB")
        if name == "ddp":
            return (f"backend {f.get('backend')}, checkpoint loadable {rec['checks'].get('checkpoint_loadable')}, "
                    f"DDP {_fmt(f.get('ddp_steps_per_s'), '.2f')} steps/s")
        if name == "predict":
            return f"{f.get('images')} images, {_fmt(f.get('images_per_s_cli'))} img/s (cli), {_fmt(f.get('images_per_s_process'))} img/s (process)"
        if name == "predict_format":
            fo = f.get("forward_only", {})
            rates = ", ".join(f"{k} {_fmt(v.get('images_per_s'))}" for k, v in fo.items() if isinstance(v, dict))
            return (f"same format {rec['checks'].get('format_identical')}, library {_fmt(f.get('device_library', {}).get('images_per_s'))} img/s, "
                    f"forward-only {rates} img/s")
        if name == "check":
            return ", ".join(f"{k}: {'valid' if v.get('ok') else 'INVALID'}" for k, v in f.items() if isinstance(v, dict))
        if name.startswith("evaluate_"):
            agg = f.get("aggregates") or {}
            return f"{len(agg)} aggregates" if agg else ", ".join(f.get("top_level_keys", []))
        if name == "smp_reference":
            ours = f.get("ours", {}).get("steps_per_s")
            ref = f.get("reference", {}).get("steps_per_s") if isinstance(f.get("reference"), dict) else None
            return f"ours {_fmt(ours, '.2f')} steps/s, smp {_fmt(ref, '.2f')} steps/s, ratio {_fmt(f.get('ratio_ours_over_reference'), '.2f')}"
        if name == "vit":
            if "frozen" not in f:
                return ""
            fr, ft = f.get("frozen", {}), f.get("fine_tuned", {})
            return f"frozen {_fmt(fr.get('steps_per_s'), '.2f')} steps/s, fine-tuned {_fmt(ft.get('steps_per_s'), '.2f')} steps/s"
    except Exception as exc:  # a headline never breaks the run
        return f"(headline: {type(exc).__name__})"
    return ""


# ------------------------------------------------------------------------------------------------
# workers: each runs in its own subprocess and writes its result file after every figure
# ------------------------------------------------------------------------------------------------

class Skip(Exception):
    pass


class Result:
    def __init__(self, path: Path):
        self.path = path
        self.data: dict = {"status": "running", "reason": None, "figures": {}, "checks": {}, "hard_checks": []}

    @property
    def figures(self) -> dict:
        return self.data["figures"]

    def check(self, name: str, value: bool, hard: bool = False) -> None:
        self.data["checks"][name] = bool(value)
        if hard and name not in self.data["hard_checks"]:
            self.data["hard_checks"].append(name)
        self.save()

    def save(self) -> None:
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 speaks for all
            write_json_atomic(self.path, self.data)


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _mem(dev, res: Result, prefix: str = "peak_memory") -> None:
    """Peak GPU memory since the last reset, or null with the reason."""
    import torch

    if dev.type == "cuda":
        res.figures[f"{prefix}_allocated_gib"] = round(torch.cuda.max_memory_allocated(dev) / GIB, 3)
        res.figures[f"{prefix}_reserved_gib"] = round(torch.cuda.max_memory_reserved(dev) / GIB, 3)
    else:
        res.figures[f"{prefix}_allocated_gib"] = None
        res.figures[f"{prefix}_reserved_gib"] = None
        res.figures[f"{prefix}_note"] = "CPU run: torch.cuda memory statistics exist on a GPU only"


def _reset_mem(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)


def _seg_target(spec, b: int, s: int, dev, seed: int = 0) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    return {"mask": torch.randint(0, spec.num_classes, (b, s, s), generator=g).to(dev)}


def _timed_steps(step, warmup: int, steps: int, dev) -> tuple[float, list[float]]:
    """Run ``step()`` ``warmup`` then ``steps`` times; ``(steps per second, losses of the timed steps)``."""
    import torch

    for _ in range(max(0, warmup)):
        step()
    _sync(dev)
    losses = []
    t = time.perf_counter()
    for _ in range(steps):
        losses.append(step().detach())
    _sync(dev)
    dt = time.perf_counter() - t
    values = [float(v) for v in torch.stack(losses).float().cpu().tolist()] if losses else []
    return (steps / dt if dt > 0 else float("nan")), values


def _our_seg_step(net, spec, x, target, dev, *, clip: float | None, amp, lr: float = 1e-4, params=None):
    """One training step the way fmuia.training.loop does it, for one segmentation task."""
    import torch

    from fmuia.training.losses import LOSSES

    params = [p for p in (params if params is not None else net.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    kind = spec.kind

    def step():
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            raw = net(x, spec.task_id)
        loss, _ = LOSSES[kind](raw, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        return loss

    return step


def _amp_dtype(dev, wanted: str = "bf16"):
    import torch

    if dev.type != "cuda" or wanted in (None, "none"):
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[wanted]


def w_env(p: dict, res: Result) -> None:
    import importlib
    import platform

    f = res.figures
    f["python"] = platform.python_version()
    f["platform"] = platform.platform()
    f["cpu_count"] = os.cpu_count()
    import numpy
    import torch

    f["torch"] = torch.__version__
    f["numpy"] = numpy.__version__
    f["cuda_available"] = torch.cuda.is_available()
    f["torch_cuda"] = torch.version.cuda
    f["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    f["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    f["distributed"] = {"available": torch.distributed.is_available(),
                        "gloo": torch.distributed.is_available() and torch.distributed.is_gloo_available(),
                        "nccl": torch.distributed.is_available() and torch.distributed.is_nccl_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        f["gpu_name"] = props.name
        f["gpu_count"] = torch.cuda.device_count()
        f["gpu_memory_gib"] = round(props.total_memory / GIB, 2)
        f["gpu_capability"] = f"{props.major}.{props.minor}"
        f["gpu_multiprocessors"] = props.multi_processor_count
        f["bf16_supported"] = torch.cuda.is_bf16_supported()
        try:
            v = torch.cuda.nccl.version()
            f["nccl_version"] = ".".join(str(x) for x in v) if isinstance(v, (tuple, list)) else str(v)
        except Exception as exc:  # noqa: BLE001
            f["nccl_version"] = f"unknown ({type(exc).__name__})"
        smi = shutil.which("nvidia-smi")
        if smi:
            try:
                q = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version,clocks.max.sm", "--format=csv,noheader"],
                                   capture_output=True, text=True, timeout=20)
                f["nvidia_smi"] = q.stdout.strip()
            except (OSError, subprocess.SubprocessError) as exc:
                f["nvidia_smi"] = f"failed: {exc}"
    else:
        f["gpu_name"] = None
        f["bf16_supported"] = None
        f["gpu_note"] = "torch.cuda.is_available() is False"
    packages = {}
    versions = {}
    # imported (a broken install counts as absent); matplotlib only looked up: its first import on a fresh
    # machine builds the font cache, and no step here needs it
    for mod in ("timm", "torchvision", "click", "tqdm", "PIL", "scipy", "sklearn", "pandas", "numba", "cv2",
                "pycocotools", "SimpleITK", "docker", "segmentation_models_pytorch", "efficientnet_pytorch",
                "pretrainedmodels", "munch"):
        try:
            m = importlib.import_module(mod)
            packages[mod] = True
            versions[mod] = str(getattr(m, "__version__", "?"))
        except Exception as exc:  # noqa: BLE001 - any import failure means "absent" here
            packages[mod] = False
            versions[mod] = f"{type(exc).__name__}: {str(exc)[:160]}"
    import importlib.metadata
    import importlib.util

    packages["matplotlib"] = importlib.util.find_spec("matplotlib") is not None
    try:
        versions["matplotlib"] = importlib.metadata.version("matplotlib")
    except importlib.metadata.PackageNotFoundError:
        versions["matplotlib"] = None
    try:
        shm = shutil.disk_usage("/dev/shm")
        f["dev_shm_total_gib"] = round(shm.total / GIB, 2)
        f["dev_shm_free_gib"] = round(shm.free / GIB, 2)
    except OSError:
        f["dev_shm_total_gib"] = f["dev_shm_free_gib"] = None
    f["packages"] = packages
    f["package_versions"] = versions
    f["timm"] = versions.get("timm")
    import fmuia

    f["fmuia"] = fmuia.__version__
    f["fmuia_path"] = str(Path(fmuia.__file__).parent)
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        f["git_head"] = head.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        f["git_head"] = None
    f["env_vars"] = {k: v for k, v in os.environ.items() if k.startswith(("CUDA_", "NCCL_", "OMP_", "TORCH_"))}
    res.check("fmuia_imports", True, hard=True)


def w_train(p: dict, res: Result) -> None:
    import torch

    from fmuia.model.checkpoint import load_for_inference
    from fmuia.tasks import get_task
    from fmuia.training import train

    dev = torch.device("cuda" if p["device"].startswith("cuda") else "cpu")
    if dev.type == "cuda":
        dev = torch.device(p["device"] if ":" in p["device"] else "cuda:0")
    f = res.figures
    opts = dict(backbone=p["backbone"], pretrained=p["pretrained"], weights=p.get("weights"), img_size=p["img_size"],
                epochs=p["epochs"], steps_per_epoch=p["steps_per_epoch"], batch_size=p["batch_size"], device=p["device"],
                workers=p["workers"], amp=p["amp"], channels_last=p["channels_last"], seed=p["seed"], progress=False)
    f["options"] = opts
    f["amp_effective"] = p["amp"] if dev.type == "cuda" else None
    f["channels_last_effective"] = bool(p["channels_last"]) if dev.type == "cuda" else False
    if dev.type != "cuda":
        f["amp_note"] = "CPU run: the training loop uses AMP and channels_last on CUDA only"
    _reset_mem(dev)
    t = time.perf_counter()
    best = train(p["data"], p["out"], **opts)
    _sync(dev)
    f["train_call_seconds"] = round(time.perf_counter() - t, 2)
    _mem(dev, res)
    out = Path(p["out"])
    f["files_written"] = {n: (out / n).is_file() for n in ("best.pt", "last.pt", "metrics.json", "metrics.csv")}
    res.check("metrics_written", f["files_written"]["metrics.json"] and f["files_written"]["metrics.csv"], hard=True)
    log = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    with open(out / "metrics.csv", encoding="utf-8") as fh:
        csv_lines = fh.read().splitlines()
    f["metrics_csv_columns"] = csv_lines[0].split(",") if csv_lines else []
    f["metrics_csv_rows"] = max(0, len(csv_lines) - 1)
    epochs = log.get("epochs", [])
    losses = [e.get("train_loss") for e in epochs]
    f["train_losses"] = losses
    f["train_losses_by_kind"] = {k: [e.get(f"train_loss_{k}") for e in epochs]
                                 for k in ("segmentation", "classification", "detection", "regression")}
    rates = [e.get("train_images_per_s") for e in epochs]
    f["images_per_s_by_epoch"] = rates
    f["epoch_seconds"] = [e.get("time_s") for e in epochs]
    f["val_composite_by_epoch"] = [e.get("val_composite") for e in epochs]
    per_epoch = p["steps_per_epoch"] * p["batch_size"]
    total_train_s = sum(per_epoch / r for r in rates if _finite(r) and r > 0)
    f["steps"] = p["steps_per_epoch"] * len(epochs)
    f["images_per_s_overall"] = round(per_epoch * len(epochs) / total_train_s, 2) if total_train_s else None
    steady = [r for r in rates[1:] if _finite(r)] or [r for r in rates if _finite(r)]
    f["images_per_s_steady"] = round(sum(steady) / len(steady), 2) if steady else None
    f["images_per_s_note"] = ("the loop's train_images_per_s (data loading included, validation excluded); steady: "
                              "mean over epochs after the first (cuDNN and loader warm-up)")
    res.check("loss_finite", bool(losses) and all(_finite(x) for x in losses), hard=True)
    if len(losses) >= 2 and all(_finite(x) for x in losses):
        res.check("loss_falls", losses[-1] < losses[0])
    else:
        f["loss_falls_note"] = "needs two finite epoch losses"
    # each step trains one task, drawn at random: per kind, the first and last epochs that trained it
    by_kind = {}
    for k, seq in f["train_losses_by_kind"].items():
        seen = [x for x in seq if _finite(x)]
        by_kind[k] = (seen[-1] < seen[0]) if len(seen) >= 2 else None
    f["loss_falls_by_kind"] = by_kind
    f["cli_note"] = ("`fmuia train` has no --amp or --channels-last flag (it uses amp=auto -> bf16 where supported, and "
                     "channels_last on CUDA) and prints no GPU memory figure: this step calls fmuia.training.train with "
                     "the same options, amp='bf16' and channels_last=True on CUDA, in its own process")
    res.save()
    # the checkpoint loads, and a compute-only step rate on ready tensors (no data loader)
    net, meta = load_for_inference(best, device=str(dev))
    res.check("checkpoint_loadable", True, hard=True)
    spec = get_task(p["seg_task"]) if p["seg_task"] in net.tasks else next(iter(net.tasks.values()))
    net.train()
    cl = dev.type == "cuda" and bool(p["channels_last"])
    if cl:
        net.to(memory_format=torch.channels_last)
    b, s = p["batch_size"], p["img_size"]
    x = torch.randn(b, 3, s, s, device=dev)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    step = _our_seg_step(net, spec, x, _seg_target(spec, b, s, dev), dev, clip=1.0, amp=_amp_dtype(dev, p["amp"]))
    _reset_mem(dev)
    sps, probe_losses = _timed_steps(step, p["probe_warmup"], p["probe_steps"], dev)
    f["compute_only_task"] = spec.task_id
    f["compute_only_steps_per_s"] = round(sps, 3)
    f["compute_only_images_per_s"] = round(sps * b, 2)
    f["compute_only_note"] = ("segmentation steps of the trained network on ready random tensors, as the loop steps "
                              "(AdamW, clip 1.0, AMP and channels_last on CUDA): the rate without the data loader")
    _mem(dev, res, "compute_only_peak_memory")
    res.check("compute_only_loss_finite", all(_finite(v) for v in probe_losses), hard=True)
    if _finite(f["images_per_s_steady"]) and f["compute_only_images_per_s"]:
        f["loop_over_compute_only"] = round(f["images_per_s_steady"] / f["compute_only_images_per_s"], 3)


def w_ddp_probe(p: dict, res: Result) -> None:
    """Under torchrun: the checkpoint loads; join NCCL (gloo on CPU); DDP-train the checkpoint's network."""
    import torch
    import torch.distributed as dist

    from fmuia.model.checkpoint import load_for_inference
    from fmuia.tasks import get_task

    f = res.figures
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    f["world_size"] = world
    cuda = p["device"].startswith("cuda")
    dev = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    net, meta = load_for_inference(p["checkpoint"], device=str(dev))
    f["checkpoint_tasks"] = len(meta["tasks"])
    f["checkpoint_img_size"] = meta["img_size"]
    res.check("checkpoint_loadable", True, hard=True)
    backend = "nccl" if cuda else "gloo"
    t = time.perf_counter()
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=int(p.get("timeout_s", 90))))
    f["backend"] = dist.get_backend()
    f["init_process_group_seconds"] = round(time.perf_counter() - t, 3)
    if not cuda:
        f["nccl_note"] = "CPU run: gloo, as fmuia uses on CPU; NCCL needs a GPU"
    try:
        ones = torch.ones(4, device=dev)
        dist.all_reduce(ones)
        res.check("all_reduce_correct", bool(torch.all(ones == world).item()), hard=True)
        spec = get_task(p["seg_task"]) if p["seg_task"] in net.tasks else next(iter(net.tasks.values()))
        net.train()
        if cuda:
            net.to(memory_format=torch.channels_last)
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if cuda else None,
                                                          find_unused_parameters=True)
        b, s = p["batch_size"], p["img_size"]
        x = torch.randn(b, 3, s, s, device=dev)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)

        _reset_mem(dev)
        # model(images, task_id): DDP passes both to MultiTaskNet.forward, as the training loop calls it
        step = _our_seg_step(model, spec, x, _seg_target(spec, b, s, dev), dev, clip=1.0, amp=_amp_dtype(dev),
                             params=list(net.parameters()))
        sps, losses = _timed_steps(step, p["warmup"], p["steps"], dev)
        f["ddp_task"] = spec.task_id
        f["ddp_steps_per_s"] = round(sps, 3)
        f["ddp_images_per_s"] = round(sps * b, 2)
        f["ddp_losses"] = losses
        _mem(dev, res, "ddp_peak_memory")
        res.check("ddp_loss_finite", bool(losses) and all(_finite(v) for v in losses), hard=True)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    f["rank"] = rank


def _list_files(root: Path) -> set[str]:
    return {str(q.relative_to(root)) for q in root.rglob("*") if q.is_file()}


def compare_prediction_folders(a: Path, b: Path) -> dict:
    """Format of two prediction folders: same files, same JSON records and keys, masks of the same size/mode."""
    import numpy as np
    from PIL import Image

    fa, fb = _list_files(a), _list_files(b)
    out: dict = {"files_a": len(fa), "files_b": len(fb), "only_in_a": sorted(fa - fb)[:10], "only_in_b": sorted(fb - fa)[:10]}
    out["same_files"] = fa == fb
    json_ok, json_diff = True, []
    agreement: dict[str, list[float]] = {"classification_argmax_agree": [], "detection_box_abs_diff": [],
                                         "regression_point_abs_diff": []}
    for name in sorted(x for x in fa & fb if x.endswith(".json")):
        ja = json.loads((a / name).read_text(encoding="utf-8"))
        jb = json.loads((b / name).read_text(encoding="utf-8"))
        if type(ja) is not type(jb) or (isinstance(ja, list) and len(ja) != len(jb)):
            json_ok = False
            json_diff.append(f"{name}: different type or number of records")
            continue
        if isinstance(ja, dict):
            if sorted(ja) != sorted(jb):
                json_ok = False
                json_diff.append(f"{name}: top-level keys differ")
            continue
        index_b = {(r.get("image_path"), r.get("task_id")): r for r in jb if isinstance(r, dict)}
        for ra in ja:
            rb = index_b.get((ra.get("image_path"), ra.get("task_id")))
            if rb is None:
                json_ok = False
                json_diff.append(f"{name}: {ra.get('image_path')} missing in one folder")
                continue
            if sorted(ra) != sorted(rb):
                json_ok = False
                json_diff.append(f"{name}: keys {sorted(ra)} vs {sorted(rb)}")
                continue
            for k in ra:
                va, vb = ra[k], rb[k]
                if type(va) is not type(vb) and not (isinstance(va, (int, float)) and isinstance(vb, (int, float))):
                    json_ok = False
                    json_diff.append(f"{name}: {k} is {type(va).__name__} vs {type(vb).__name__}")
                elif isinstance(va, list) and len(va) != len(vb):
                    json_ok = False
                    json_diff.append(f"{name}: {k} has {len(va)} vs {len(vb)} values")
            if "predicted_class" in ra:
                agreement["classification_argmax_agree"].append(float(ra["predicted_class"] == rb["predicted_class"]))
            if "bbox_normalized" in ra:
                agreement["detection_box_abs_diff"].append(
                    float(np.max(np.abs(np.subtract(ra["bbox_normalized"], rb["bbox_normalized"])))))
            if "predicted_points_normalized" in ra:
                agreement["regression_point_abs_diff"].append(
                    float(np.max(np.abs(np.subtract(ra["predicted_points_normalized"], rb["predicted_points_normalized"])))))
    out["same_json_keys"] = json_ok
    out["json_differences"] = json_diff[:10]
    masks_ok, mask_diff, pixel_agree = True, [], []
    for name in sorted(x for x in fa & fb if x.lower().endswith(".png")):
        with Image.open(a / name) as ia, Image.open(b / name) as ib:
            if ia.size != ib.size or ia.mode != ib.mode:
                masks_ok = False
                mask_diff.append(f"{name}: {ia.size} {ia.mode} vs {ib.size} {ib.mode}")
                continue
            pixel_agree.append(float(np.mean(np.asarray(ia) == np.asarray(ib))))
    out["masks"] = len(pixel_agree) + len(mask_diff)
    out["same_mask_sizes"] = masks_ok
    out["mask_differences"] = mask_diff[:10]
    out["values"] = {
        "segmentation_pixel_agreement_mean": sum(pixel_agree) / len(pixel_agree) if pixel_agree else None,
        "classification_argmax_agreement": (sum(agreement["classification_argmax_agree"]) / len(agreement["classification_argmax_agree"])
                                            if agreement["classification_argmax_agree"] else None),
        "detection_box_max_abs_diff": max(agreement["detection_box_abs_diff"], default=None),
        "regression_point_max_abs_diff": max(agreement["regression_point_abs_diff"], default=None),
        "note": "values may differ (bf16 autocast on CUDA vs float32 on the CPU); the format must not",
    }
    out["identical_format"] = out["same_files"] and json_ok and masks_ok
    return out


def w_predict_format(p: dict, res: Result) -> None:
    import torch

    from fmuia.dataset import load_root
    from fmuia.inference import predict_with_model
    from fmuia.model.checkpoint import load_for_inference
    from fmuia.tasks import TaskKind

    f = res.figures
    dev = torch.device(p["device"] if p["device"] != "cuda" else "cuda:0")
    root = load_root(p["data"], check_files=False)
    n = len(root.samples)
    net, meta = load_for_inference(p["checkpoint"], device=str(dev))
    meta = {**meta, "checkpoint": p["checkpoint"]}
    # (a) the library path on the device, timed by predict_samples
    stats: dict[str, float] = {}
    t = time.perf_counter()
    predict_with_model(root, net, meta, p["out_device"], batch_size=p["batch_size"], device=dev, workers=p["workers"],
                       progress=False, stats=stats)
    _sync(dev)
    wall = time.perf_counter() - t
    f["device_library"] = {
        "device": str(dev), "images": n, "seconds": round(wall, 3), "images_per_s": round(n / wall, 2) if wall else None,
        **{k: round(v, 3) for k, v in stats.items()},
        "forward_images_per_s": round(n / stats["forward_s"], 2) if stats.get("forward_s") else None,
        "note": "predict_with_model after the checkpoint is loaded; forward_s covers host-to-device copy, network, "
                "postprocess and the copy back (it synchronises), not image decoding or writing",
    }
    res.save()
    # (b) forward only, on ready tensors (channels_last, bf16 autocast on CUDA, inference_mode), one task per kind
    tasks = {spec.kind: spec for spec in reversed(list(net.tasks.values()))}
    fo = {}
    b, s = p["forward_batch_size"], int(meta["img_size"])
    x = torch.randn(b, 3, s, s, device=dev).contiguous(memory_format=torch.channels_last)
    net.to(memory_format=torch.channels_last).eval()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda")
    for kind in (TaskKind.SEGMENTATION, TaskKind.CLASSIFICATION):
        spec = tasks.get(kind)
        if spec is None:
            continue
        with torch.inference_mode(), autocast:
            net.postprocess(spec.task_id, net(x, spec.task_id))
            _sync(dev)
            t = time.perf_counter()
            for _ in range(p["forward_repeats"]):
                net.postprocess(spec.task_id, net(x, spec.task_id))
            _sync(dev)
            dt = time.perf_counter() - t
        fo[kind.value] = {"task": spec.task_id, "batch_size": b, "img_size": s,
                          "images_per_s": round(p["forward_repeats"] * b / dt, 2) if dt else None}
    f["forward_only"] = fo
    res.save()
    # (c) the CPU path, and the comparison with the folder `fmuia predict` wrote on the device
    del net
    net_cpu, meta_cpu = load_for_inference(p["checkpoint"], device="cpu")
    meta_cpu = {**meta_cpu, "checkpoint": p["checkpoint"]}
    t = time.perf_counter()
    predict_with_model(root, net_cpu, meta_cpu, p["out_cpu"], batch_size=p["batch_size"], device="cpu", workers=p["workers"],
                       progress=False)
    wall = time.perf_counter() - t
    f["cpu_library"] = {"images": n, "seconds": round(wall, 3), "images_per_s": round(n / wall, 2) if wall else None,
                        "torch_threads": torch.get_num_threads()}
    cmp = compare_prediction_folders(Path(p["cli_out"]), Path(p["out_cpu"]))
    cmp["compared"] = f"`fmuia predict --device {p['device']}` folder vs the CPU path (predict_with_model on cpu)"
    if dev.type == "cpu":
        cmp["note"] = "CPU run: both folders come from the CPU; the comparison only exercises the code"
    f["comparison"] = cmp
    res.check("same_files", cmp["same_files"], hard=True)
    res.check("same_json_keys", cmp["same_json_keys"], hard=True)
    res.check("same_mask_sizes", cmp["same_mask_sizes"], hard=True)
    res.check("format_identical", cmp["identical_format"], hard=True)


def w_smp(p: dict, res: Result) -> None:
    import torch
    import torch.nn.functional as F

    from fmuia.model import build_model
    from fmuia.tasks import get_task, list_tasks

    f = res.figures
    dev = torch.device(p["device"] if p["device"] != "cuda" else "cuda:0")
    cuda = dev.type == "cuda"
    amp = _amp_dtype(dev)
    spec = get_task(p["task"])
    b, s = p["batch_size"], p["img_size"]
    f["setup"] = {"batch_size": b, "img_size": s, "task": spec.task_id, "classes": spec.num_classes,
                  "amp": "bf16" if amp is not None else None, "device": str(dev),
                  "ours": f"fmuia MultiTaskNet({p['backbone']}, all {len(list_tasks())} task heads), one "
                          f"segmentation task's step as the loop does it (channels_last on CUDA, AdamW, clip {p['clip_grad']}, "
                          f"CE + Dice)",
                  "reference": f"smp.FPN(encoder_name={p['smp_encoder']!r}, encoder_weights=None, classes={spec.num_classes}), "
                               "plain step: autocast forward, CE + soft Dice in float32, backward, AdamW (no clipping)"}
    x = torch.randn(b, 3, s, s, device=dev)
    target = _seg_target(spec, b, s, dev)
    torch.manual_seed(0)
    ours = build_model(list_tasks(), p["backbone"], pretrained="none").to(dev).train()
    x_ours = x
    if cuda:
        ours.to(memory_format=torch.channels_last)
        x_ours = x.contiguous(memory_format=torch.channels_last)
    ours_step = _our_seg_step(ours, spec, x_ours, target, dev, clip=p["clip_grad"], amp=amp, lr=p["lr"])

    def measure(step) -> dict:
        _reset_mem(dev)
        sps, losses = _timed_steps(step, p["warmup"], p["steps"], dev)
        d = {"steps_per_s": round(sps, 3), "images_per_s": round(sps * b, 2), "losses_finite": all(_finite(v) for v in losses)}
        if cuda:
            d["peak_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated(dev) / GIB, 3)
        return d

    runs: dict[str, list[dict]] = {"ours": []}
    runs["ours"].append(measure(ours_step))
    f["ours"] = {**runs["ours"][0], "rounds": runs["ours"]}
    res.check("ours_loss_finite", f["ours"]["losses_finite"], hard=True)
    if not cuda:
        f["ours"]["peak_memory_note"] = "CPU run: no GPU memory statistics"
    try:
        import segmentation_models_pytorch as smp
    except Exception as exc:  # noqa: BLE001 - any import failure: the reference cannot run
        f["reference"] = None
        f["ratio_ours_over_reference"] = None
        f["ratio_note"] = "no reference: segmentation_models_pytorch is not importable"
        raise Skip(f"segmentation_models_pytorch is not importable ({type(exc).__name__}: {str(exc)[:200]}); bring it as "
                   "wheels (see this script's docstring) to measure the reference") from None
    f["smp_version"] = getattr(smp, "__version__", "?")

    def ref_step(channels_last: bool):
        torch.manual_seed(0)
        net = smp.FPN(encoder_name=p["smp_encoder"], encoder_weights=None, classes=spec.num_classes).to(dev).train()
        xr = x
        if channels_last:
            net.to(memory_format=torch.channels_last)
            xr = x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(net.parameters(), lr=p["lr"], weight_decay=1e-4)
        mask = target["mask"]
        onehot = F.one_hot(mask, spec.num_classes).permute(0, 3, 1, 2).float()

        def step():
            with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                logits = net(xr)
            logits = logits.float()
            probs = logits.softmax(1)
            inter = (probs * onehot).sum((0, 2, 3))
            union = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
            dice = 1 - ((2 * inter + 1) / (union + 1)).mean()
            loss = F.cross_entropy(logits, mask) + dice
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss

        return step

    ref_plain = ref_step(False)
    runs["reference"] = [measure(ref_plain)]
    ref_cl = ref_step(True) if cuda else None
    if ref_cl is not None:
        runs["reference_channels_last"] = [measure(ref_cl)]
    for _ in range(1, int(p["rounds"])):  # interleaved rounds: best of each, so drift hits all alike
        runs["ours"].append(measure(ours_step))
        runs["reference"].append(measure(ref_plain))
        if ref_cl is not None:
            runs["reference_channels_last"].append(measure(ref_cl))

    def best(rs: list[dict]) -> dict:
        top = max(rs, key=lambda r: r["steps_per_s"] if _finite(r["steps_per_s"]) else -1)
        return {**top, "losses_finite": all(r["losses_finite"] for r in rs), "rounds": rs}

    f["ours"] = best(runs["ours"])
    f["reference"] = best(runs["reference"])
    if "reference_channels_last" in runs:
        f["reference_channels_last"] = best(runs["reference_channels_last"])
    res.check("reference_loss_finite", f["reference"]["losses_finite"], hard=True)
    if p.get("dry_run"):
        f["ratio_ours_over_reference"] = None
        f["ratio_note"] = (f"dry run: ours is {p['backbone']}, the reference {p['smp_encoder']} at {s} px; a ratio of "
                           "those would mean nothing")
        return
    ratio = f["ours"]["steps_per_s"] / f["reference"]["steps_per_s"]
    f["ratio_ours_over_reference"] = round(ratio, 3)
    if "reference_channels_last" in f:
        f["ratio_ours_over_reference_channels_last"] = round(f["ours"]["steps_per_s"] / f["reference_channels_last"]["steps_per_s"], 3)
    f["ratio_goal"] = 1.5
    res.check("ratio_at_least_1_5", ratio >= 1.5)


def w_vit(p: dict, res: Result) -> None:
    import torch

    from fmuia.model import build_model
    from fmuia.tasks import get_task

    f = res.figures
    dev = torch.device(p["device"] if p["device"] != "cuda" else "cuda:0")
    amp = _amp_dtype(dev)
    spec = get_task(p["task"])
    b, s = p["batch_size"], p["img_size"]
    f["setup"] = {"backbone": p["backbone"], "img_size": s, "batch_size": b, "task": spec.task_id, "device": str(dev),
                  "amp": "bf16" if amp is not None else None}
    x = torch.randn(b, 3, s, s, device=dev)
    target = _seg_target(spec, b, s, dev)

    def build():
        torch.manual_seed(0)
        return build_model([spec], backbone=p["backbone"], pretrained="none").to(dev).train()

    try:  # supported = builds and runs one training forward/backward at this size
        net = build()
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            raw = net(x, spec.task_id)
        from fmuia.training.losses import LOSSES

        loss, _ = LOSSES[spec.kind](raw, target)
        loss.backward()
    except Exception as exc:  # noqa: BLE001 - whatever the encoder cannot do yet
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        f["error"] = f"{type(exc).__name__}: {first}"
        raise Skip(f"not supported yet: build_model(..., backbone={p['backbone']!r}) at {s} px: {type(exc).__name__}: {first}") from None
    f["supported"] = True
    f["encoder_reductions"] = list(net.encoder.feature_info.reduction())
    del net
    for label, frozen in (("frozen", True), ("fine_tuned", False)):
        net = build()
        if frozen:
            for q in net.encoder.parameters():
                q.requires_grad_(False)
        trainable = [q for q in net.parameters() if q.requires_grad]
        step = _our_seg_step(net, spec, x, target, dev, clip=1.0, amp=amp, lr=p["lr"], params=trainable)
        _reset_mem(dev)
        sps, losses = _timed_steps(step, p["warmup"], p["steps"], dev)
        d = {"steps_per_s": round(sps, 3), "images_per_s": round(sps * b, 2), "losses": losses,
             "trainable_parameters": sum(q.numel() for q in trainable)}
        if dev.type == "cuda":
            d["peak_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated(dev) / GIB, 3)
        f[label] = d
        res.check(f"{label}_loss_finite", all(_finite(v) for v in losses), hard=True)
        del net, step
    if f["frozen"]["steps_per_s"] and f["fine_tuned"]["steps_per_s"]:
        f["speedup_frozen_over_fine_tuned"] = round(f["frozen"]["steps_per_s"] / f["fine_tuned"]["steps_per_s"], 3)


WORKERS = {"env": w_env, "train": w_train, "ddp_probe": w_ddp_probe, "predict_format": w_predict_format, "smp": w_smp,
           "vit": w_vit}


def run_worker(kind: str, params_path: str, result_path: str) -> int:
    res = Result(Path(result_path))
    res.save()
    params = json.loads(Path(params_path).read_text(encoding="utf-8"))
    try:
        WORKERS[kind](params, res)
    except Skip as exc:
        res.data.update(status="skipped", reason=str(exc))
        res.save()
        return 0
    except BaseException as exc:
        res.data.update(status="failed", reason=f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:400]}")
        res.save()
        traceback.print_exc()
        return 1
    res.data["status"] = "ok"
    res.save()
    return 0


# ------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the module docstring for the steps and the device-tool command.")
    ap.add_argument("--out", help="folder for gpu_check.json and gpu_check.log (nothing else is written there)")
    ap.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                    help="auto: CUDA when available (CPU for --dry-run)")
    ap.add_argument("--dry-run", action="store_true", help="the same steps with tiny settings (CPU unless --device cuda)")
    ap.add_argument("--work", default=None, help="scratch folder for data, runs and predictions [default: a temporary one]")
    ap.add_argument("--keep-work", action="store_true", help="keep the temporary scratch folder")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole run [default: 540; dry run 280]")
    ap.add_argument("--weights", default=None, help="a local timm weights file for the training steps' backbone")
    ap.add_argument("--set", action="append", metavar="STEP.KEY=VALUE", help="override one setting (repeatable)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.worker and not args.out:
        ap.error("--out DIR is required")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args.worker, args.params, args.result)
    check = Check(args)

    def on_signal(signum, _frame):  # the device tool's timeout, ^C: stop the step, keep what was measured
        check.kill_current()
        rec = check.current_rec
        if rec is not None and rec["status"] == "running":
            rec.update(status="timeout", reason=f"the whole run was stopped by signal {signum} during this step")
        check.say(f"[gpu_check] stopped by signal {signum}; results so far in {check.json_path}")
        check.close()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return check.run()
    finally:
        if not check.log.closed:
            check.close()


if __name__ == "__main__":
    sys.exit(main())
