"""Progress without a terminal: plain lines for train, validate and predict; bars on a terminal."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import torch

from fmuia.cli import main
from fmuia.dataset.schema import load_root
from fmuia.dataset.synth import synthesize
from fmuia.errors import FmuiaError
from fmuia.inference import _task_batches, predict
from fmuia.model import build_model
from fmuia.progress import Progress, format_duration, format_train_line, format_val_line, resolve_mode
from fmuia.training import train
from fmuia.training.checkpoint import make_meta, save_checkpoint

TINY = dict(backbone="test_efficientnet", pretrained="none", img_size=64, workers=0, device="cpu")
ONE_PER_KIND = ["breast_lesion", "breast_2cls", "thyroid_nodule_det", "fetal_femur"]
ETA = r"\d+:\d\d:\d\d"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("FMUIA_PROGRESS", raising=False)


# ---- the mode --------------------------------------------------------------------------------------


def test_mode_from_argument_environment_and_terminal(monkeypatch):
    assert resolve_mode(None, Terminal()) == "bars"
    assert resolve_mode(True, io.StringIO()) == "lines"
    assert resolve_mode("auto", io.StringIO()) == "lines"
    assert resolve_mode(False, Terminal()) == "none"
    assert resolve_mode("LINES", Terminal()) == "lines"
    assert resolve_mode("bars", io.StringIO()) == "bars"
    monkeypatch.setenv("FMUIA_PROGRESS", "lines")
    assert resolve_mode(None, Terminal()) == "lines"  # the environment beats the terminal
    assert resolve_mode("bars", io.StringIO()) == "bars"  # an explicit mode beats the environment
    assert resolve_mode(False, io.StringIO()) == "none"  # --quiet always wins
    monkeypatch.setenv("FMUIA_PROGRESS", "auto")
    assert resolve_mode(None, Terminal()) == "bars"
    monkeypatch.setenv("FMUIA_PROGRESS", "loud")
    with pytest.raises(FmuiaError, match="FMUIA_PROGRESS='loud'"):
        resolve_mode(None, io.StringIO())
    with pytest.raises(FmuiaError, match="--progress 'loud'"):
        resolve_mode("loud", io.StringIO())


@pytest.mark.parametrize("seconds, text", [(0, "0:00:00"), (100, "0:01:40"), (3731, "1:02:11"), (90061, "25:01:01"),
                                           (59.6, "0:01:00"), (None, "?"), (float("inf"), "?"), (-1, "?")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_train_and_val_line_text():
    line = format_train_line(3, 20, 1200, 8000, {"segmentation": 0.41234, "classification": 1.0333, "det": 0.88},
                             41.25, {"enc": 8.1e-5, "heads": 8.1e-4}, 3731)
    assert line == ("epoch 3/20 step 1200/8000 loss seg=0.412 cls=1.03 det=0.88 img/s=41.2 "
                    "lr enc=8.1e-05 heads=8.1e-04 eta 1:02:11")
    assert format_train_line(1, 2, 1, 5, {}, None, {}, None) == "epoch 1/2 step 1/5 eta ?"
    val = format_val_line(3, 20, {"seg_DSC": 0.7123, "cls_AUC": None, "reg_MRE": 12.345}, 0.63, True, 12)
    assert val == "epoch 3/20 val seg_DSC=0.712 reg_MRE=12.3 composite=0.63 (best) time 0:00:12"
    assert format_val_line(1, 2, {}, None, False) == "epoch 1/2 val composite=?"


# ---- the display -----------------------------------------------------------------------------------


def test_lines_every_n_and_every_interval_and_at_close():
    out, clock = io.StringIO(), Clock()
    p = Progress(10, "predict", mode="lines", every=3, interval=30.0, stream=out, unit="img", noun="images", clock=clock)
    written = []
    for _ in range(10):
        clock.t += 2.0  # 2 s per unit: 0.5 units/s
        written.append(p.update(1))
    # multiples of 3 (3, 6, 9); the 10th is left to close(); no 30 s gap
    assert [i + 1 for i, w in enumerate(written) if w] == [3, 6, 9]
    p.close()
    lines = out.getvalue().splitlines()
    assert lines == ["predict 3/10 images 0.5 img/s eta 0:00:14", "predict 6/10 images 0.5 img/s eta 0:00:08",
                     "predict 9/10 images 0.5 img/s eta 0:00:02", "predict 10/10 images 0.5 img/s in 0:00:20"]
    p.close()  # twice is once
    assert len(out.getvalue().splitlines()) == 4


def test_interval_line_when_n_is_not_reached_and_batches_crossing_multiples():
    out, clock = io.StringIO(), Clock()
    p = Progress(100, "validate", mode="lines", every=None, interval=30.0, stream=out, clock=clock, leave=False)
    clock.t += 29.0
    assert not p.update(1)
    clock.t += 1.0
    assert p.update(1)  # 30 s since the start
    clock.t += 29.9
    assert not p.update(1)  # 29.9 s since the last line
    p.close()  # leave=False: no final line
    assert len(out.getvalue().splitlines()) == 1

    out = io.StringIO()
    p = Progress(100, "predict", mode="lines", every=10, interval=None, stream=out, clock=clock)
    assert [p.update(n) for n in (4, 4, 4, 9, 25, 50)] == [False, False, True, True, True, True]  # 12, 21, 46, 96
    assert not p.update(4)  # 100: the end, reported by close()
    assert len(out.getvalue().splitlines()) == 4


def test_lines_use_the_callers_text_and_none_writes_nothing():
    out = io.StringIO()
    p = Progress(4, "x", mode="lines", every=2, stream=out)
    for i in range(4):
        p.update(1, line=lambda i=i: f"custom {i}")
    p.write("note")
    p.close("final")
    assert out.getvalue().splitlines() == ["custom 1", "note", "final"]
    out = io.StringIO()
    p = Progress(4, "x", mode="none", every=1, stream=out)
    for _ in range(4):
        p.update(1)
    p.write("note")
    p.close("final")
    assert out.getvalue() == ""


def test_terminal_gets_a_bar_not_lines():
    term = Terminal()
    p = Progress(6, "epoch 1/2", mode="auto", every=1, stream=term, unit="step")
    assert p.mode == "bars"
    for _ in range(6):
        assert not p.update(1, postfix={"loss": "0.5"}, line=lambda: "LINE")
    p.close("epoch done")
    text = term.getvalue()
    assert "\r" in text and "6/6" in text and "step" in text and "LINE" not in text  # tqdm redraws in place
    assert text.rstrip().endswith("epoch done")


# ---- training and predict, without a terminal --------------------------------------------------------


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("progress") / "root", per_task=3, seed=3, tasks=ONE_PER_KIND)


LINE = re.compile(rf"^epoch (\d+)/2 step (\d+)/5 (?:loss ((?:\w+=\S+ ?)+) )?img/s=[\d.]+ lr enc=(\S+) heads=(\S+) "
                  rf"eta ({ETA})( time {ETA})?$")


def test_training_without_a_terminal_prints_lines(small_root, tmp_path, capsys):
    run = tmp_path / "run"
    train(small_root, run, **TINY, epochs=2, steps_per_epoch=5, batch_size=2, log_every=2, val=small_root, seed=1)
    err = capsys.readouterr().err.splitlines()
    hist = json.loads((run / "metrics.json").read_text())["epochs"]
    steps = [m for m in map(LINE.match, err) if m]
    # steps 2 and 4 every epoch, then the epoch's end (5/5) with its time
    assert [(int(m[1]), int(m[2]), m[7] is not None) for m in steps] == [
        (1, 2, False), (1, 4, False), (1, 5, True), (2, 2, False), (2, 4, False), (2, 5, True)]
    for m, row in zip([m for m in steps if m[7]], hist, strict=True):
        losses = dict(kv.split("=") for kv in m[3].split())
        want = {abbrev: f"{row[f'train_loss_{kind}']:.3g}" for kind, abbrev in
                (("segmentation", "seg"), ("classification", "cls"), ("detection", "det"), ("regression", "reg"))
                if row[f"train_loss_{kind}"] is not None}
        assert losses == want  # the kinds trained in the epoch, with their mean losses
        assert (m[4], m[5]) == (f"{row['lr_encoder']:.1e}", f"{row['lr_heads']:.1e}")
    vals = [line for line in err if re.match(r"^epoch \d/2 val ", line)]
    assert len(vals) == 2
    # the run's last step: only the last validation is left, estimated by the one before
    assert steps[-1][6] == vals[0].rsplit(" time ", 1)[1]
    for line, row in zip(vals, hist, strict=True):
        assert f"composite={row['val_composite']:.3g}" in line and f"seg_DSC={row['val_seg_DSC']:.3g}" in line
        assert ("(best)" in line) == row["best"]
        assert re.search(rf" time {ETA}$", line)
    assert err[0].startswith("train 4 task(s) 12 images (val 12) test_efficientnet 64px on cpu")


def test_quiet_training_prints_nothing(small_root, tmp_path, capsys):
    train(small_root, tmp_path / "run", **TINY, epochs=1, steps_per_epoch=2, batch_size=2, val_fraction=0.0,
          progress=False, log_every=1)
    assert capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from fmuia.tasks import get_task

    torch.manual_seed(0)
    net = build_model([get_task(t) for t in ONE_PER_KIND], backbone="test_efficientnet", pretrained="none", fpn_channels=16)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", net, make_meta(net, 64))


def test_predict_lines_follow_the_batches(small_root, checkpoint, tmp_path, capsys):
    samples = load_root(small_root).samples
    n = len(samples)
    predict(small_root, tmp_path / "p", checkpoint, batch_size=2, device="cpu", workers=0, log_every=5)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("predict ")]
    # expected from the batches: a line when the count crosses a multiple of 5, before the last image
    done, want = 0, []
    for b in _task_batches(samples, 2):
        before, done = done, done + len(b)
        if done // 5 > before // 5 and done < n:
            want.append(done)
    assert want  # the case is not empty
    counts = [int(re.match(rf"^predict (\d+)/{n} images [\d.]+ img/s eta {ETA}$", line)[1]) for line in err[:-1]]
    assert counts == want
    assert re.match(rf"^predict {n}/{n} images [\d.]+ img/s in {ETA}$", err[-1])


def test_cli_predict_progress_flags(small_root, checkpoint, tmp_path, capsys):
    args = ["predict", "--data", str(small_root), "--checkpoint", str(checkpoint), "--device", "cpu", "--workers", "0"]
    main([*args, "--out", str(tmp_path / "a"), "--quiet"])
    assert capsys.readouterr().err == ""
    main([*args, "--out", str(tmp_path / "b"), "--log-every", "1", "--batch-size", "4"])
    err = capsys.readouterr().err.splitlines()
    n = len(load_root(small_root).samples)
    assert len(err) == len(_task_batches(load_root(small_root).samples, 4))  # one line per batch, the last at the end
    assert err[-1].startswith(f"predict {n}/{n} images")
