"""--freeze-encoder / --unfreeze-after / --layer-decay in training: frozen weights, optimizer state, exact resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fmuia.training.loop as loop
from fmuia.dataset.synth import synthesize
from fmuia.errors import FmuiaError
from fmuia.training import train
from fmuia.training.checkpoint import load_for_inference, read_checkpoint

TINY = dict(backbone="test_efficientnet", pretrained="none", img_size=64, workers=0, progress=False, device="cpu")
RUN = dict(TINY, epochs=2, steps_per_epoch=3, batch_size=2, lr=1e-3, seed=3)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("freeze") / "root", per_task=3, seed=3,
                      tasks=["breast_lesion", "breast_2cls", "thyroid_nodule_det", "fetal_femur"])


@pytest.fixture
def built(monkeypatch):
    """Every network the loop builds, with a copy of its encoder's initial state."""
    nets: list = []
    original = loop.build_model

    def spy(*args, **kwargs):
        net = original(*args, **kwargs)
        nets.append((net, {k: v.clone() for k, v in net.encoder.state_dict().items()}))
        return net

    monkeypatch.setattr(loop, "build_model", spy)
    return nets


def _encoder(ckpt: Path) -> dict[str, torch.Tensor]:
    return {k[len("encoder."):]: v for k, v in read_checkpoint(ckpt)["model"].items() if k.startswith("encoder.")}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _optimizer_entries(net, opts: dict, ckpt: Path) -> tuple[int, int]:
    """(optimizer-state entries of encoder parameters, of the others), indices mapped through the loop's groups."""
    params = [p for g in loop._param_groups(net, opts) for p in g["params"]]
    enc = {id(p) for p in net.encoder.parameters()}
    state = read_checkpoint(ckpt)["train_state"]["optimizer"]["state"]
    n_enc = sum(1 for i in state if id(params[int(i)]) in enc)
    return n_enc, len(state) - n_enc


def _history(run: Path) -> list[dict]:
    return json.loads((run / "metrics.json").read_text())["epochs"]


def test_frozen_encoder_stays_bit_identical_and_has_no_optimizer_state(small_root, tmp_path, built):
    run = tmp_path / "frozen"
    train(small_root, run, **{**RUN, "epochs": 1}, freeze_encoder=True, val_fraction=0.0)
    (net, initial), = built
    assert _same(_encoder(run / "last.pt"), initial)  # weights and BatchNorm statistics
    n_enc, n_other = _optimizer_entries(net, {**loop.DEFAULTS, **RUN}, run / "last.pt")
    assert n_enc == 0 and n_other > 0
    row = _history(run)[0]
    n_encoder = sum(p.numel() for p in net.encoder.parameters())
    assert row["encoder_frozen"] is True
    assert row["trainable_params"] == sum(p.numel() for p in net.parameters()) - n_encoder
    opts = json.loads((run / "metrics.json").read_text())["options"]
    assert opts["freeze_encoder"] is True and opts["unfreeze_after"] is None
    best = read_checkpoint(run / "best.pt")
    assert best["meta"]["train_options"]["freeze_encoder"] is True
    rebuilt, meta = load_for_inference(run / "best.pt")  # what predict runs: the same network, same weights
    assert meta["model_config"]["img_size"] == 64
    assert _same({k: v for k, v in rebuilt.state_dict().items()}, best["model"])

    plain = tmp_path / "plain"
    train(small_root, plain, **{**RUN, "epochs": 1}, val_fraction=0.0)
    assert not _same(_encoder(plain / "last.pt"), initial)  # the same run without freezing moves it
    assert _optimizer_entries(built[1][0], {**loop.DEFAULTS, **RUN}, plain / "last.pt")[0] > 0
    assert _history(plain)[0]["optimizer_state_mb"] > row["optimizer_state_mb"]


def test_unfreeze_after_and_resume_across_the_boundary(small_root, tmp_path, built):
    opts = dict(RUN, freeze_encoder=True, unfreeze_after=1, val=small_root)
    train(small_root, tmp_path / "full", **opts)
    train(small_root, tmp_path / "part", **opts, stop_after_epochs=1)
    (_, init_full), (net_part, init_part) = built
    assert _same(init_full, init_part)
    assert _same(_encoder(tmp_path / "part" / "last.pt"), init_part)  # epoch 1: frozen
    assert _optimizer_entries(net_part, {**loop.DEFAULTS, **opts}, tmp_path / "part" / "last.pt")[0] == 0

    train(None, None, resume=tmp_path / "part")  # epoch 2 (0-based 1 == unfreeze_after): trained
    full, part = _history(tmp_path / "full"), _history(tmp_path / "part")
    assert [h["encoder_frozen"] for h in full] == [True, False] == [h["encoder_frozen"] for h in part]
    assert full[1]["trainable_params"] > full[0]["trainable_params"]
    for a, b in zip(full, part, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_composite"] == b["val_composite"]
    fa, fb = read_checkpoint(tmp_path / "full" / "last.pt"), read_checkpoint(tmp_path / "part" / "last.pt")
    assert fa["model"].keys() == fb["model"].keys() and all(torch.equal(fa["model"][k], fb["model"][k]) for k in fa["model"])
    assert not _same(_encoder(tmp_path / "full" / "last.pt"), init_full)  # epoch 2 moved the encoder
    sa, sb = fa["train_state"]["optimizer"]["state"], fb["train_state"]["optimizer"]["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    net_full = built[0][0]
    assert _optimizer_entries(net_full, {**loop.DEFAULTS, **opts}, tmp_path / "full" / "last.pt")[0] > 0

    with pytest.raises(FmuiaError, match="freeze_encoder=False differs"):
        train(None, None, resume=tmp_path / "part", freeze_encoder=False)


@pytest.mark.parametrize("options, match", [
    (dict(unfreeze_after=1), "--unfreeze-after 1: needs --freeze-encoder"),
    (dict(freeze_encoder=True, unfreeze_after=2), r"--unfreeze-after 2: expected a number of epochs from 1 to 1"),
    (dict(freeze_encoder=True, unfreeze_after=0), r"--unfreeze-after 0: expected"),
    (dict(layer_decay=0.0), r"--layer-decay 0.0: expected a number in \(0, 1\]"),
    (dict(layer_decay=1.5), r"--layer-decay 1.5"),
    (dict(log_every=0), "--log-every 0: expected a positive integer"),
    (dict(amp="fp8"), "--amp 'fp8': expected auto, bf16, fp16 or none"),
    (dict(progress="loud"), "--progress 'loud'"),
    (dict(img_size=50), "50"),
])
def test_option_errors(small_root, tmp_path, options, match):
    with pytest.raises(FmuiaError, match=match):
        train(small_root, tmp_path / "r", **{**RUN, **options})
    assert not (tmp_path / "r").exists()  # checked before anything is written


def test_layer_decay_groups_and_logged_rates(small_root, tmp_path):
    run = tmp_path / "ld"
    train(small_root, run, **{**RUN, "epochs": 1}, val_fraction=0.0, layer_decay=0.5)
    groups = read_checkpoint(run / "last.pt")["train_state"]["optimizer"]["param_groups"]
    enc = {g["name"]: g["lr"] for g in groups if g["name"].startswith("encoder.layer_")}
    layers = sorted({int(n.split("_")[1].split(".")[0]) for n in enc})
    assert len(layers) >= 3 and layers == list(range(len(layers)))
    top = max(enc.values())
    for name, group_lr in enc.items():
        i = int(name.split("_")[1].split(".")[0])
        assert group_lr == pytest.approx(top * 0.5 ** (len(layers) - 1 - i), rel=1e-12)
    heads = [g["lr"] for g in groups if g["name"].startswith("heads")]
    row = _history(run)[0]
    assert row["lr_encoder"] == top and row["lr_heads"] == max(heads) == pytest.approx(10 * top, rel=1e-12)


def test_resume_of_a_run_saved_before_the_new_options(small_root, tmp_path, monkeypatch):
    """A run saved by an earlier version (two optimizer groups, options without freeze/layer decay/log
    lines) resumes exactly: the same two groups again, the new options at their defaults."""
    legacy = loop.param_groups

    def two_groups(net, **kw):
        return legacy(net, **{**kw, "decay_exclusions": False})

    opts = dict(RUN, val_fraction=0.0)
    with monkeypatch.context() as m:
        m.setattr(loop, "param_groups", two_groups)
        train(small_root, tmp_path / "full", **opts)
        train(small_root, tmp_path / "part", **opts, stop_after_epochs=1)
    ckpt = tmp_path / "part" / "last.pt"
    obj = torch.load(ckpt, weights_only=True)
    assert [g["name"] for g in obj["train_state"]["optimizer"]["param_groups"]] == ["encoder", "heads"]
    for k in ("freeze_encoder", "unfreeze_after", "layer_decay", "log_every"):
        del obj["train_state"]["options"][k]
    obj["train_state"]["options"]["progress"] = False  # the old boolean
    torch.save(obj, ckpt)
    train(None, None, resume=tmp_path / "part")
    a, b = read_checkpoint(tmp_path / "full" / "last.pt"), read_checkpoint(ckpt)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [h["train_loss"] for h in _history(tmp_path / "full")] == [h["train_loss"] for h in _history(tmp_path / "part")]
    assert b["train_state"]["options"]["freeze_encoder"] is False and b["train_state"]["options"]["log_every"] == 50


def test_layer_decay_one_is_no_decay(small_root, tmp_path):
    train(small_root, tmp_path / "a", **{**RUN, "epochs": 1}, val_fraction=0.0)
    train(small_root, tmp_path / "b", **{**RUN, "epochs": 1}, val_fraction=0.0, layer_decay=1.0)
    a, b = _history(tmp_path / "a")[0], _history(tmp_path / "b")[0]
    assert a["train_loss"] == b["train_loss"] and a["lr_encoder"] == b["lr_encoder"]
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["options"]["layer_decay"] == 1.0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_torchrun_unfreeze_rewraps_ddp_and_only_rank0_prints(small_root, tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FMUIA_PROGRESS": "lines"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "fmuia", "train", "--data", str(small_root), "--out", str(out), "--backbone", "test_efficientnet",
        "--pretrained", "none", "--img-size", "64", "--epochs", "2", "--steps-per-epoch", "4", "--batch-size", "2",
        "--workers", "0", "--device", "cpu", "--seed", "4", "--freeze-encoder", "--unfreeze-after", "1",
        "--log-every", "2",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = json.loads((out / "metrics.json").read_text())
    d = log["distributed"]
    assert d["world_size"] == 2 and d["param_checksum_by_rank"][0] == d["param_checksum_by_rank"][1]
    assert [e["encoder_frozen"] for e in log["epochs"]] == [True, False]
    err = proc.stderr.splitlines()
    for epoch in (1, 2):  # one process prints
        assert sum(line.startswith(f"epoch {epoch}/2 step 2/4 ") for line in err) == 1
        assert sum(line.startswith(f"epoch {epoch}/2 step 4/4 ") for line in err) == 1
