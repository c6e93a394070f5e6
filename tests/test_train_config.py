"""``fmuia train --config FILE``: reading, checking, merging with flags, and the run's own config.yaml."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import fmuia.training
from fmuia.cli import main
from fmuia.dataset.synth import synthesize
from fmuia.errors import FmuiaError
from fmuia.model.checkpoint import read_checkpoint
from fmuia.tasks import TaskKind
from fmuia.training.config import (
    CHECKS,
    DEFAULTS,
    FILE_KEYS,
    config_dict,
    merge_options,
    options_from_config,
    read_config,
    write_config,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_every_option_has_a_check_and_the_defaults_pass_it(tmp_path):
    assert set(CHECKS) == set(FILE_KEYS) == {"data", "out", *DEFAULTS}
    opts = {**DEFAULTS, "data_root": "d", "out_dir": "o"}
    back = read_config(write_config(tmp_path / "c.yaml", opts))
    assert back == config_dict(opts) and list(back) == list(FILE_KEYS)


def test_yaml_and_json_values(tmp_path):
    y = _write(tmp_path / "c.yaml", "data: d\nimg_size: 224\nlr: 1e-4\nhead-lr-scale: 5\nlayer_decay: 0.75\n"
                                    "freeze_encoder: true\ntasks: cervix, IUGC\nchannels_last: null\nprogress: LINES\n"
                                    "task_weights: {segmentation: 2, IUGC: 0.5}\n")
    got = read_config(y)
    assert got == {"data": "d", "img_size": 224, "lr": 1e-4, "head_lr_scale": 5.0, "layer_decay": 0.75,
                   "freeze_encoder": True, "tasks": ["cervix", "IUGC"], "channels_last": None, "progress": "lines",
                   "task_weights": {"segmentation": 2.0, "IUGC": 0.5}}
    assert isinstance(got["head_lr_scale"], float)
    j = _write(tmp_path / "c.json", json.dumps({"epochs": 3, "amp": "bf16", "unfreeze_after": 2, "weights": None}))
    assert read_config(j) == {"epochs": 3, "amp": "bf16", "unfreeze_after": 2, "weights": None}
    assert read_config(_write(tmp_path / "c.txt", '{"epochs": 4}')) == {"epochs": 4}  # JSON is YAML
    assert read_config(_write(tmp_path / "empty.yaml", "# nothing\n")) == {}


@pytest.mark.parametrize("text, match", [
    ("img_sizes: 224\n", r"c.yaml: unknown key 'img_sizes' \(did you mean 'img_size'\?\); known keys: data, out, "),
    ("resume: runs/x\n", r"c.yaml: unknown key 'resume'"),
    ("img_size: big\n", r"c.yaml: key 'img_size': expected an integer, got 'big'"),
    ("epochs: 2.5\n", r"key 'epochs': expected an integer, got 2.5"),
    ("batch_size: true\n", r"key 'batch_size': expected an integer, got True"),
    ("lr: fast\n", r"key 'lr': expected a number, got 'fast'"),
    ("lr: .nan\n", r"key 'lr': expected a finite number"),
    ("augment: 'yes'\n", r"key 'augment': expected true or false, got 'yes'"),
    ("amp: fp8\n", r"key 'amp': expected one of auto, bf16, fp16, none, got 'fp8'"),
    ("progress: loud\n", r"key 'progress': expected one of auto, bars, lines, none"),
    ("tasks: [1, 2]\n", r"key 'tasks': expected a list of names"),
    ("pretrained: yes\n", r"key 'pretrained': expected one of imagenet, none, got True"),
    ("data: ''\n", r"key 'data': expected a non-empty string"),
    ("- epochs\n", r"c.yaml: expected a mapping of option names to values, found list"),
    ("epochs: [1\n", r"c.yaml:2: not valid YAML"),
])
def test_bad_files_are_one_line_errors_naming_file_and_key(tmp_path, text, match):
    with pytest.raises(FmuiaError, match=match) as info:
        read_config(_write(tmp_path / "c.yaml", text))
    assert len(info.value.lines()) == 1


def test_bad_json_names_its_line(tmp_path):
    with pytest.raises(FmuiaError, match=r"c.json:2: not valid JSON"):
        read_config(_write(tmp_path / "c.json", '{"epochs": 1,\n "lr": }'))
    with pytest.raises(FmuiaError, match="cannot read"):
        read_config(tmp_path / "missing.yaml")


def test_flags_override_the_file_and_unset_flags_do_not(tmp_path):
    assert merge_options({"lr": 0.1, "epochs": 3}, {"lr": 0.2, "epochs": None, "seed": 4}) == {"lr": 0.2, "epochs": 3, "seed": 4}
    c = _write(tmp_path / "c.yaml", "data: d\nout: o\nlr: 0.1\n")
    assert options_from_config(c, {"out": "o2", "lr": None}) == {"data": "d", "out": "o2", "lr": 0.1}


class Spy:
    def __init__(self):
        self.calls = []

    def __call__(self, data, out, **options):
        self.calls.append((data, out, options))
        return Path(out or "run") / "best.pt"


def test_cli_reads_the_file_and_flags_win(tmp_path, monkeypatch, capsys):
    spy = Spy()
    monkeypatch.setattr(fmuia.training, "train", spy)
    c = _write(tmp_path / "c.yaml", f"data: {tmp_path}\nout: {tmp_path / 'o'}\nepochs: 7\nlayer_decay: 0.75\nfreeze_encoder: true\n")
    main(["train", "--config", str(c), "--epochs", "3", "--no-freeze-encoder", "--amp", "none", "--no-channels-last",
          "--log-every", "10", "--quiet"])
    data, out, opts = spy.calls[-1]
    assert (data, out) == (str(tmp_path), str(tmp_path / "o"))
    assert opts["epochs"] == 3 and opts["freeze_encoder"] is False and opts["layer_decay"] == 0.75
    assert opts["amp"] == "none" and opts["channels_last"] is False and opts["log_every"] == 10
    assert opts["progress"] == "none"
    main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--freeze-encoder", "--unfreeze-after", "2"])
    opts = spy.calls[-1][2]
    assert opts["freeze_encoder"] is True and opts["unfreeze_after"] == 2 and opts["lr"] is None  # unset: the default


def test_cli_config_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fmuia.training, "train", Spy())
    bad = _write(tmp_path / "bad.yaml", "img_size: big\n")
    with pytest.raises(SystemExit) as info:
        main(["train", "--config", str(bad)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"{bad}: key 'img_size'" in err and "Traceback" not in err
    nodata = _write(tmp_path / "nodata.yaml", "epochs: 2\n")
    with pytest.raises(SystemExit) as info:
        main(["train", "--config", str(nodata), "--out", str(tmp_path / "o")])
    assert info.value.code == 2 and "--data and --out are required" in capsys.readouterr().err


# ---- the run folder's config.yaml reproduces the run ---------------------------------------------------


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("config") / "root", per_task=3, seed=3,
                      tasks=["breast_lesion", "breast_2cls", "thyroid_nodule_det", "fetal_femur"])


def _log(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_config_yaml_round_trip_reproduces_the_run(small_root, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    main(["train", "--data", str(small_root), "--out", str(a), "--backbone", "test_efficientnet", "--pretrained", "none",
          "--img-size", "64", "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "2", "--lr", "0.001",
          "--seed", "7", "--device", "cpu", "--workers", "0", "--val", str(small_root), "--quiet",
          "--freeze-encoder", "--unfreeze-after", "1"])
    cfg = yaml.safe_load((a / "config.yaml").read_text())
    assert cfg["out"] == str(a) and cfg["data"] == str(small_root) and cfg["lr"] == 0.001 and cfg["unfreeze_after"] == 1
    assert set(cfg) == set(FILE_KEYS)

    with pytest.raises(SystemExit) as info:  # into the folder it came from: refused, nothing overwritten
        main(["train", "--config", str(a / "config.yaml"), "--quiet"])
    assert info.value.code == 2

    main(["train", "--config", str(a / "config.yaml"), "--out", str(b)])
    la, lb = _log(a), _log(b)
    assert {k: v for k, v in la["options"].items() if k != "out_dir"} == {k: v for k, v in lb["options"].items() if k != "out_dir"}
    assert lb["options"]["out_dir"] == str(b)
    cb = yaml.safe_load((b / "config.yaml").read_text())
    assert {**cb, "out": str(a)} == cfg
    for ea, eb in zip(la["epochs"], lb["epochs"], strict=True):
        for k in ("train_loss", "train_loss_segmentation", "val_composite", "val_seg_DSC", "lr_encoder", "lr_heads"):
            assert ea[k] == eb[k], k
    assert len(la["epochs"]) == 2


def test_config_with_resume_continues_the_run(small_root, tmp_path, capsys):
    part = tmp_path / "part"
    fmuia.training.train(small_root, part, backbone="test_efficientnet", pretrained="none", img_size=64, workers=0,
                         device="cpu", progress=False, epochs=2, steps_per_epoch=2, batch_size=2, val_fraction=0.0,
                         stop_after_epochs=1)
    assert len(_log(part)["epochs"]) == 1
    text = (part / "config.yaml").read_text()
    assert "\nlr: 0.0001\n" in text
    changed = _write(tmp_path / "changed.yaml", text.replace("\nlr: 0.0001\n", "\nlr: 0.5\n"))
    with pytest.raises(SystemExit) as info:  # a resumed run keeps its options: the file is checked against them
        main(["train", "--config", str(changed), "--resume", str(part)])
    assert info.value.code == 2 and "option lr=0.5 differs from the run's 0.0001" in capsys.readouterr().err
    main(["train", "--config", str(part / "config.yaml"), "--resume", str(part)])  # stop_after_epochs: 1 again
    assert [e["epoch"] for e in _log(part)["epochs"]] == [1, 2]


# ---- the encoder options: pyramid, out_indices, backbone_kwargs ----------------------------------------


def test_pyramid_choices_are_the_models():
    from fmuia.model.pyramid import PYRAMID_CHOICES as MODEL_CHOICES
    from fmuia.training.config import PYRAMID_CHOICES

    assert PYRAMID_CHOICES == MODEL_CHOICES
    assert DEFAULTS["pyramid"] == "auto" and DEFAULTS["out_indices"] is None and DEFAULTS["backbone_kwargs"] is None


def test_encoder_options_in_a_file(tmp_path):
    c = _write(tmp_path / "c.yaml", "pyramid: Simple\nout_indices: 2,5,8,11\n"
                                    "backbone_kwargs: {drop_path_rate: 0.1, depths: [1, 1]}\n")
    assert read_config(c) == {"pyramid": "simple", "out_indices": [2, 5, 8, 11],
                              "backbone_kwargs": {"drop_path_rate": 0.1, "depths": [1, 1]}}
    for text, want in [("out_indices: 4\n", 4), ("out_indices: [-4, -3, -2, -1]\n", [-4, -3, -2, -1]),
                       ("out_indices: '11,'\n", [11]), ("out_indices: ' 1, 3 ,4,5'\n", [1, 3, 4, 5]),
                       ("out_indices: null\n", None), ("out_indices: '4'\n", 4)]:
        assert read_config(_write(tmp_path / "o.yaml", text)) == {"out_indices": want}, text
    # a tuple from the library comes back as a list: config.yaml stays plain YAML
    opts = {**DEFAULTS, "data_root": "d", "out_dir": "o", "out_indices": (1, 2, 3, 4),
            "backbone_kwargs": {"depths": (1, 1, 1, 1), "drop_path_rate": 0.1}}
    back = read_config(write_config(tmp_path / "w.yaml", opts))
    assert back["out_indices"] == [1, 2, 3, 4] and back["backbone_kwargs"] == {"depths": [1, 1, 1, 1], "drop_path_rate": 0.1}


@pytest.mark.parametrize("text, match", [
    ("pyramid: fpn\n", r"key 'pyramid': expected one of auto, none, simple, got 'fpn'"),
    ("out_indices: 0\n", r"key 'out_indices': expected an integer N \(the last N features\) or feature indices"),
    ("out_indices: -1\n", r"key 'out_indices': expected an integer N"),
    ("out_indices: 'a,b'\n", r"key 'out_indices': expected an integer N"),
    ("out_indices: [1, true]\n", r"key 'out_indices': expected an integer N"),
    ("out_indices: []\n", r"key 'out_indices': expected an integer N"),
    ("out_indices: 2.5\n", r"key 'out_indices': expected an integer N"),
    ("backbone_kwargs: [drop_path_rate]\n", r"key 'backbone_kwargs': expected a mapping of timm model arguments"),
    ("backbone_kwargs: {img_size: 224}\n", r"without 'img_size' \(set by the option img_size\)"),
    ("backbone_kwargs: {features_only: false}\n", r"without 'features_only' \(fmuia sets it\)"),
    ("backbone_kwargs: {pretrained: true}\n", r"without 'pretrained' \(set by the option pretrained / weights\)"),
])
def test_bad_encoder_options_in_a_file(tmp_path, text, match):
    with pytest.raises(FmuiaError, match=match) as info:
        read_config(_write(tmp_path / "c.yaml", text))
    assert len(info.value.lines()) == 1


def test_cli_passes_pyramid_and_out_indices(tmp_path, monkeypatch):
    spy = Spy()
    monkeypatch.setattr(fmuia.training, "train", spy)
    c = _write(tmp_path / "c.yaml", "backbone_kwargs: {drop_path_rate: 0.1}\nout_indices: 4\npyramid: none\n")
    main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--pyramid", "simple",
          "--out-indices", "2,5,8,11", "--config", str(c)])
    opts = spy.calls[-1][2]
    assert opts["pyramid"] == "simple" and opts["out_indices"] == "2,5,8,11"  # the flags win over the file
    assert opts["backbone_kwargs"] == {"drop_path_rate": 0.1}  # file only
    main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    opts = spy.calls[-1][2]
    assert opts["pyramid"] is None and opts["out_indices"] is None and "backbone_kwargs" not in opts


# checked before any data is read: _load_samples must never run
@pytest.mark.parametrize("options, match", [
    (dict(backbone="test_vit", img_size=32, out_indices="2,5,8,11"),
     r"^--out-indices 2,5,8,11: backbone test_vit has 6 feature maps to take \(blocks.0 ... blocks.5\): "
     r"indices 0 to 5 \(or -6 to -1\), or one integer N from 1 to 6 for the last N$"),
    (dict(backbone="test_vit", img_size=32, out_indices=7), r"^--out-indices 7: backbone test_vit has 6 feature maps"),
    (dict(backbone="test_vit", img_size=32, out_indices="0,1,2"),
     r"^--out-indices 0,1,2: the simple pyramid takes 1 block \(ViTDet\) or 4 \(one per level\); these give 3; "
     r"use --out-indices 1 \(the last block\) or 4 \(the last 4\), or 4 spread over its 6 blocks: 0,2,3,5$"),
    (dict(backbone="test_convnext", img_size=64, out_indices="0,4"), r"^--out-indices 0,4: backbone test_convnext has 4"),
    (dict(backbone="test_convnext", img_size=64, pyramid="simple"),
     r"^--pyramid simple: backbone test_convnext is multi-scale already \(strides 4, 8, 16, 32\); "
     r"use --pyramid auto or none$"),
    (dict(pyramid="fpn"), r"^--pyramid 'fpn': expected one of auto, none, simple$"),
    (dict(out_indices="1;2"), r"^--out-indices '1;2': expected an integer N"),
    (dict(backbone_kwargs={"img_size": 64}), r"^backbone_kwargs \{'img_size': 64\}: expected a mapping .* without 'img_size'"),
    (dict(backbone="test_vit", img_size=32, backbone_kwargs={"drop_path": 0.1}),
     r"unexpected keyword argument 'drop_path'"),
    (dict(backbone="test_convnext", img_size=40), r"^--img-size 40: backbone test_convnext needs a multiple of 32"),
    (dict(weights="missing.safetensors"), r"^--weights missing.safetensors: file not found"),
])
def test_encoder_option_errors_come_before_any_data_is_read(tmp_path, monkeypatch, options, match):
    import fmuia.training.loop as loop

    def no_data(*a, **k):
        raise AssertionError("data read before the options were checked")

    monkeypatch.setattr(loop, "_load_samples", no_data)
    monkeypatch.chdir(tmp_path)
    opts = {"backbone": "test_efficientnet", "pretrained": "none", "img_size": 64, "device": "cpu", **options}
    with pytest.raises(FmuiaError, match=match) as info:
        fmuia.training.train(tmp_path / "no-data-here", tmp_path / "run", **opts)
    assert len(info.value.lines()) == 1
    assert not (tmp_path / "run").exists()


def test_layer_decay_without_timms_grouping_is_refused_before_any_data_is_read(tmp_path, monkeypatch):
    import fmuia.training.loop as loop
    import fmuia.training.optim as optim

    monkeypatch.setattr(loop, "_load_samples", lambda *a, **k: pytest.fail("data read before the options were checked"))
    monkeypatch.setattr(optim, "_reference", lambda net: torch.nn.Linear(1, 1))  # a timm model without group_matcher
    with pytest.raises(FmuiaError, match=r"^--layer-decay: timm gives no layer grouping \(group_matcher\) for backbone "
                                         r"test_convnext; train it without --layer-decay$"):
        fmuia.training.train(tmp_path, tmp_path / "run", backbone="test_convnext", pretrained="none", img_size=64,
                             layer_decay=0.75)
    opts, _ = loop._resolve_options(tmp_path, tmp_path / "run", dict(backbone="test_convnext", img_size=64))
    loop._check_options(opts)  # without --layer-decay the same backbone passes


def test_check_options_returns_the_network_on_the_meta_device(tmp_path):
    import fmuia.training.loop as loop

    opts, _ = loop._resolve_options(tmp_path, tmp_path / "o", dict(backbone="test_vit", img_size=64, out_indices="-4,-3,-2,-1"))
    assert opts["out_indices"] == [-4, -3, -2, -1]
    net = loop._check_options(opts)
    assert {p.device.type for p in net.parameters()} == {"meta"}
    assert net.config["pyramid"] == "simple" and net.config["out_indices"] == [-4, -3, -2, -1]
    assert net.encoder.feature_info.module_name() == ["blocks.2", "blocks.3", "blocks.4", "blocks.5"]
    assert net.fpn.stride == 4 and len(net.heads) == len(TaskKind)


# ---- a run trained with --out-indices: recorded, kept on resume, rebuilt by predict ----------------------


@pytest.fixture(scope="module")
def vit_run(small_root, tmp_path_factory) -> Path:
    """One of two epochs of a test_vit run with a pyramid from four blocks (flags) and drop_path (file)."""
    run = tmp_path_factory.mktemp("vit") / "run"
    cfg = _write(run.parent / "c.yaml", "stop_after_epochs: 1\nbackbone_kwargs: {drop_path_rate: 0.1}\n")
    main(["train", "--config", str(cfg), "--data", str(small_root), "--out", str(run), "--backbone", "test_vit",
          "--pretrained", "none", "--img-size", "32", "--out-indices", "1,3,4,5", "--epochs", "2",
          "--steps-per-epoch", "2", "--batch-size", "2", "--device", "cpu", "--workers", "0", "--quiet"])
    return run


def test_encoder_options_are_recorded(vit_run):
    cfg = yaml.safe_load((vit_run / "config.yaml").read_text())
    assert cfg["out_indices"] == [1, 3, 4, 5] and cfg["pyramid"] == "auto"
    assert cfg["backbone_kwargs"] == {"drop_path_rate": 0.1}
    obj = read_checkpoint(vit_run / "last.pt")
    assert obj["train_state"]["options"]["out_indices"] == [1, 3, 4, 5]
    model = obj["meta"]["model_config"]
    assert model["pyramid"] == "simple" and model["out_indices"] == [1, 3, 4, 5]  # auto resolved by the model
    assert model["backbone_kwargs"] == {"drop_path_rate": 0.1}
    assert _log(vit_run)["options"]["out_indices"] == [1, 3, 4, 5]


def test_predict_rebuilds_the_network_trained_with_out_indices(vit_run, tmp_path):
    from fmuia.inference import predict
    from fmuia.model.checkpoint import load_for_inference

    net, meta = load_for_inference(vit_run / "best.pt")  # strict load: every tensor of the run fits
    assert net.encoder.feature_info.module_name() == ["blocks.1", "blocks.3", "blocks.4", "blocks.5"]
    assert net.pyramid is not None and net.pyramid.inputs == 4
    assert net.encoder.model.blocks[1].drop_path1.drop_prob == pytest.approx(0.02)  # 0.1 spread over 6 blocks
    ref = read_checkpoint(vit_run / "best.pt")["model"]
    got = net.state_dict()
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
    test = synthesize(tmp_path / "test", per_task=2, seed=5, tasks=["breast_lesion", "breast_2cls"])
    counts = predict(test, tmp_path / "pred", vit_run / "best.pt", device="cpu", workers=0, progress=False)
    assert sum(counts.values()) == 4


def test_encoder_options_may_not_change_on_resume(vit_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(vit_run, run)
    for flags, what in [(["--out-indices", "4"], "option out_indices=4 differs from the run's [1, 3, 4, 5]"),
                        (["--pyramid", "none"], "option pyramid='none' differs from the run's 'auto'")]:
        with pytest.raises(SystemExit) as info:
            main(["train", "--resume", str(run), "--quiet", *flags])
        assert info.value.code == 2 and what in capsys.readouterr().err
    other = _write(tmp_path / "other.yaml", "backbone_kwargs: {drop_path_rate: 0.2}\n")
    with pytest.raises(SystemExit):
        main(["train", "--resume", str(run), "--config", str(other), "--quiet"])
    assert "option backbone_kwargs={'drop_path_rate': 0.2} differs" in capsys.readouterr().err
    # the same indices written another way are the same option: the run continues
    main(["train", "--resume", str(run), "--out-indices", " 1,3, 4,5", "--quiet"])
    assert [e["epoch"] for e in _log(run)["epochs"]] == [1, 2]
    assert read_checkpoint(run / "last.pt")["meta"]["model_config"]["out_indices"] == [1, 3, 4, 5]
