"""``benchmarks/gpu_check.py --dry-run``: every step of the GPU check runs (or is skipped with a reason) on the CPU.

The GPU run itself happens on a device machine; this keeps the script from rotting in between.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
STEPS = ["env", "synth", "train_256", "train_512", "ddp", "predict", "predict_format", "check", "evaluate_strict",
         "evaluate_official", "smp_reference", "vit"]
MUST_BE_OK = ["env", "synth", "train_256", "train_512", "ddp", "predict", "predict_format", "check", "evaluate_strict",
              "evaluate_official"]


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@pytest.mark.slow
@pytest.mark.timeout(330)
def test_dry_run_covers_every_step(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--work", str(tmp_path / "work")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    report = out / "gpu_check.json"
    assert report.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(report.read_text())
    steps = data["steps"]
    detail = json.dumps({n: {k: steps[n].get(k) for k in ("status", "reason", "stderr_tail")} for n in steps}, indent=1)[-6000:]
    assert proc.returncode == 0, proc.stdout[-2000:] + detail

    # only the JSON and the log are written under --out (the device tool brings back at most 8 files)
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log"]
    assert data["mode"] == "dry-run" and data["device"] == "cpu" and data["finished"]
    assert list(steps) == STEPS  # every step, in the order
    for name, rec in steps.items():
        assert rec["status"] in ("ok", "skipped"), (name, detail)
        if rec["status"] == "skipped":
            assert rec["reason"], name  # never skipped silently
        assert _finite(rec["seconds"]), name
        # one line per finished step in the output
        assert any(line.startswith("[gpu_check]") and f" {name} " in line for line in proc.stdout.splitlines()), name
    for name in MUST_BE_OK:
        assert steps[name]["status"] == "ok", (name, detail)
        assert not data["summary"]["hard_checks_failed"], detail

    for name in ("train_256", "train_512"):
        f = steps[name]["figures"]
        assert f["train_losses"] and all(_finite(x) for x in f["train_losses"]), name
        assert steps[name]["checks"]["loss_finite"] and steps[name]["checks"]["checkpoint_loadable"]
        assert _finite(f["images_per_s_steady"]) and f["images_per_s_steady"] > 0
        # a GPU-only figure on the CPU: null, with the reason
        assert f["peak_memory_allocated_gib"] is None and f["peak_memory_note"]
        assert f["metrics_csv_rows"] == len(f["train_losses"])
    assert steps["train_256"]["figures"]["options"]["img_size"] != steps["train_512"]["figures"]["options"]["img_size"]

    ddp = steps["ddp"]
    assert ddp["checks"]["checkpoint_written"] and ddp["checks"]["checkpoint_loadable"]
    assert ddp["figures"]["backend"] == "gloo" and ddp["checks"]["all_reduce_correct"]
    assert all(_finite(x) for x in ddp["figures"]["ddp_losses"])
    assert any("torch.distributed.run" in c and "--nproc-per-node 1" in c for c in ddp["commands"])

    pred = steps["predict"]["figures"]
    assert pred["images"] == steps["synth"]["figures"]["counts"]["test"]["rows"]
    fmt = steps["predict_format"]
    assert fmt["checks"]["format_identical"], fmt["figures"].get("comparison")
    assert fmt["figures"]["comparison"]["masks"] > 0
    assert _finite(fmt["figures"]["forward_only"]["segmentation"]["images_per_s"])
    assert steps["check"]["checks"] == {"device_valid": True, "cpu_valid": True}
    assert steps["evaluate_strict"]["figures"]["aggregates"]

    smp = steps["smp_reference"]
    try:
        import segmentation_models_pytorch  # noqa: F401
    except ImportError:
        assert smp["status"] == "skipped" and "segmentation_models_pytorch" in smp["reason"]
    assert _finite(smp["figures"]["ours"]["steps_per_s"])  # our side is measured either way
    assert smp["figures"]["ratio_ours_over_reference"] is None and smp["figures"]["ratio_note"]  # no fake ratio
    vit = steps["vit"]
    if vit["status"] == "skipped":
        assert vit["reason"].startswith("not supported yet")
    else:
        assert all(_finite(x) for x in vit["figures"]["frozen"]["losses"] + vit["figures"]["fine_tuned"]["losses"])
