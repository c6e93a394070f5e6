"""DDP on CPU: two gloo processes launched by torchrun, exactly as ``torchrun -m fmuia train`` runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from fmuia.dataset.synth import synthesize
from fmuia.training.checkpoint import read_checkpoint
from fmuia.training.sampler import TaskBatchSampler

TASKS = ["cervix", "organ_cls", "uterine_fibroid_det", "IUGC"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_torchrun_two_cpu_processes(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")

    root = synthesize(tmp_path / "root", per_task=4, seed=2, tasks=TASKS)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "fmuia", "train", "--data", str(root), "--out", str(out), "--backbone", "test_efficientnet",
        "--pretrained", "none", "--img-size", "64", "--epochs", "2", "--steps-per-epoch", "4", "--batch-size", "2",
        "--workers", "0", "--device", "cpu", "--seed", "4", "--quiet",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("best checkpoint:") == 1  # only rank 0 prints and writes

    log = json.loads((out / "metrics.json").read_text())
    d = log["distributed"]
    assert d["world_size"] == 2
    ranks = d["last_epoch_tasks_by_rank"]
    assert len(ranks) == 2 and ranks[0] == ranks[1] and len(ranks[0]) == 4
    # and it is the sampler's task sequence for the last epoch
    sampler = TaskBatchSampler({t: [0] for t in sorted(TASKS)}, 2, 4, seed=4)
    sampler.set_epoch(1)
    assert ranks[0] == sampler.task_sequence()
    checksums = d["param_checksum_by_rank"]
    assert checksums[0] == checksums[1]  # weights stayed in sync
    assert len(log["epochs"]) == 2 and all(e["train_loss"] is not None for e in log["epochs"])
    meta = read_checkpoint(out / "last.pt")
    assert len(meta["train_state"]["rng"]) == 2  # one RNG state per rank for exact resume
    assert (out / "best.pt").is_file() and (out / "metrics.csv").is_file()
