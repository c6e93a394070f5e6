"""Checkpoints that load but lack fields, or carry fields this version does not know: one clear
line from predict, never a traceback."""

from __future__ import annotations

import logging

import pytest
import torch

from fmuia.cli import main
from fmuia.errors import FmuiaError
from fmuia.model import build_model
from fmuia.model.checkpoint import load_for_inference, read_checkpoint
from fmuia.tasks import get_task
from fmuia.training.checkpoint import make_meta, save_checkpoint


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    net = build_model([get_task("cervix"), get_task("organ_cls")], backbone="test_efficientnet", pretrained="none")
    path = tmp_path_factory.mktemp("ckpt") / "good.pt"
    save_checkpoint(path, net, make_meta(net, 64))
    return path


def _edited(good, tmp_path, edit) -> str:
    obj = torch.load(good, weights_only=True)
    edit(obj)
    out = tmp_path / "edited.pt"
    torch.save(obj, out)
    return str(out)


def _pop(key):
    return lambda o: o["meta"].pop(key)


def _set(key, value):
    return lambda o: o["meta"].__setitem__(key, value)


BROKEN = {
    "no_meta": (lambda o: o.pop("meta"), "no 'meta' block"),
    "no_weights": (lambda o: o.pop("model"), "no 'model' weights"),
    "no_backbone": (_pop("backbone"), "meta.backbone"),
    "no_img_size": (_pop("img_size"), "meta.img_size"),
    "img_size_text": (_set("img_size", "64"), "meta.img_size"),
    "no_tasks": (_pop("tasks"), "meta.tasks: expected a non-empty list"),
    "task_without_kind": (lambda o: o["meta"]["tasks"][0].pop("kind"), "meta.tasks[0]: not a task"),
    "task_unknown_kind": (lambda o: o["meta"]["tasks"][1].__setitem__("kind", "ranking"), "meta.tasks[1]: not a task"),
    "mean_wrong": (_set("mean", [0.5, 0.5]), "meta.mean"),
    "std_zero": (_set("std", [0.0, 1.0, 1.0]), "meta.std: expected positive"),
    "unknown_model_option": (lambda o: o["meta"]["model_config"].__setitem__("depth", 3), "unknown option(s) depth"),
    "version_text": (lambda o: o.__setitem__("format_version", "1"), "format_version"),
}


def test_good_checkpoint_loads(good):
    net, meta = load_for_inference(good)
    assert meta["img_size"] == 64 and set(net.tasks) == {"cervix", "organ_cls"}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_checkpoints_are_one_line(name, good, tmp_path, synth_split, capsys):
    edit, expected = BROKEN[name]
    path = _edited(good, tmp_path, edit)
    with pytest.raises(FmuiaError) as info:
        read_checkpoint(path)
    assert expected in info.value.message
    with pytest.raises(SystemExit) as code:
        main(["predict", "--data", str(synth_split / "test"), "--checkpoint", path, "--out", str(tmp_path / "p"),
              "--device", "cpu", "--workers", "0"])
    err = capsys.readouterr().err
    assert code.value.code == 2 and expected in err and "Traceback" not in err


def test_unknown_meta_fields_warn_and_load(good, tmp_path, caplog):
    path = _edited(good, tmp_path, _set("written_by_the_future", {"x": 1}))
    with caplog.at_level(logging.WARNING, logger="fmuia"):
        net, _ = load_for_inference(path)
    assert "written_by_the_future" in caplog.text and net is not None
