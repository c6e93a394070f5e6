"""``fmuia train --config FILE``: reading, checking, merging with flags, and the run's own config.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import fmuia.training
from fmuia.cli import main
from fmuia.dataset.synth import synthesize
from fmuia.errors import FmuiaError
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
