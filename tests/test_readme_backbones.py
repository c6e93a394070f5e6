"""The ``fmuia train`` commands of README.md's "Foundation backbones" section stay true.

Each command is parsed by the real click command and resolved and checked by the library exactly as
``fmuia train`` does (``fmuia.training.train`` is replaced by a stand-in that stops after
``_resolve_options`` + ``_check_options``: no data is read, nothing is trained). ``DATA`` becomes an empty
folder, ``--out`` a folder under ``tmp_path`` and ``--weights FILE`` a file this test writes with every
tensor of the backbone's timm classification model (its names, shapes and dtypes, as users download it;
zeros: the check reads names and shapes, not values). The network is built on the meta device, so a
ViT-B or Swin-B costs no memory and no download.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

import fmuia.training
import fmuia.training.loop as loop
from fmuia.cli import main
from fmuia.cli.train import train as train_command
from fmuia.errors import FmuiaError
from fmuia.tasks import TaskKind
from fmuia.training.config import CHECKS, DEFAULTS

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "Foundation backbones"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def section_commands(text: str, title: str = SECTION) -> list[str] | None:
    """Every ``fmuia train`` command in the fenced code blocks of the section headed ``title`` (backslash
    continuations joined); ``None`` when there is no such heading. The section ends at the next heading
    of its level or above; ``#`` lines inside code fences are comments, not headings."""
    body: list[str] | None = None
    level = 0
    fence = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence and (m := re.match(r"(#{1,6})\s+(.*?)\s*#*\s*$", line)):
            if body is not None and len(m.group(1)) <= level:
                break
            if body is None and m.group(2) == title:
                body, level = [], len(m.group(1))
                continue
        if body is not None:
            body.append(line)
    if body is None:
        return None
    commands, fence, buf = [], False, ""
    for line in body:
        if line.lstrip().startswith("```"):
            fence, buf = not fence, ""
            continue
        if not fence:
            continue
        buf = f"{buf} {line.strip()}".strip()
        if buf.endswith("\\"):
            buf = buf[:-1].rstrip()
            continue
        if shlex.split(buf, comments=True)[:2] == ["fmuia", "train"]:
            commands.append(buf)
        buf = ""
    return commands


COMMANDS = section_commands(README.read_text(encoding="utf-8")) if README.is_file() else None
MISSING = f'README.md has no section headed "{SECTION}" yet: nothing to check'


def _params():
    if COMMANDS is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason=MISSING), id="no-section")]
    return [pytest.param(c, id=_words(c)[_words(c).index("--out") + 1] if "--out" in _words(c) else f"command-{i}")
            for i, c in enumerate(COMMANDS)]


def _words(command: str) -> list[str]:
    return shlex.split(command, comments=True)


def write_classification_weights(backbone: str, path: Path) -> Path:
    """A safetensors file with every tensor of ``backbone``'s timm classification model (zeros)."""
    with torch.device("meta"):
        model = timm.create_model(backbone, pretrained=False)
    save_file({k: torch.zeros(v.shape, dtype=v.dtype) for k, v in model.state_dict().items()}, str(path))
    return path


def test_section_extraction_by_hand():
    text = "\n".join([
        "# Title", "## Part", "### Foundation backbones", "prose `fmuia train` inline", "```bash",
        "# a comment, not a heading", "fmuia train --data DATA --out runs/a \\", "    --img-size 448   # trailing",
        "fmuia predict --data x", "python -m fmuia train --x", "```", "#### sub-heading: still the section",
        "```", "fmuia train --out runs/b", "```", "### Next", "```", "fmuia train --out runs/c", "```",
    ])
    assert section_commands(text) == ["fmuia train --data DATA --out runs/a --img-size 448   # trailing",
                                      "fmuia train --out runs/b"]
    assert section_commands(text, "Missing") is None
    assert section_commands("## Foundation backbones\nno commands\n") == []


def test_the_section_has_train_commands():
    if COMMANDS is None:
        pytest.skip(MISSING)
    assert COMMANDS, f'README.md section "{SECTION}" shows no `fmuia train` command'


@pytest.mark.parametrize("command", _params())
def test_readme_command_parses_resolves_passes_every_check_and_builds(command, tmp_path, monkeypatch):
    words = _words(command)[2:]
    backbone = words[words.index("--backbone") + 1] if "--backbone" in words else DEFAULTS["backbone"]
    data = tmp_path / "DATA"
    data.mkdir()
    args, i = [], 0
    while i < len(words):
        w = words[i]
        if w in ("--data", "--out", "--weights") and i + 1 < len(words):
            value = words[i + 1]
            if w == "--data":
                value = str(data)
            elif w == "--out":
                value = str(tmp_path / value)
            else:
                value = str(write_classification_weights(backbone, tmp_path / Path(value).name))
            args += [w, value]
            i += 2
        else:
            args.append(w)
            i += 1

    # the real parser: every flag known, every value of the right type
    params = train_command.make_context("train", list(args)).params

    seen: dict = {}

    def resolve_and_check(data_root, out_dir, **options):
        opts, state = loop._resolve_options(data_root, out_dir, dict(options))
        seen["opts"], seen["net"] = opts, loop._check_options(opts, resuming=state is not None)
        return Path(out_dir) / "best.pt"

    monkeypatch.setattr(fmuia.training, "train", resolve_and_check)
    main(["train", *args])  # a failed check would exit 2 with its one line
    opts, net = seen["opts"], seen["net"]

    assert opts["data_root"] == str(data) and opts["backbone"] == backbone
    given = {k: v for k, v in params.items() if k in DEFAULTS and v is not None}
    assert given, params
    for k, v in given.items():  # every flag of the command reaches the options as written (2,5,8,11: a list)
        assert opts[k] == CHECKS[k](v), k
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written

    # the network these options build, on the meta device: heads at the input size, a fused map at stride ~4
    assert {p.device.type for p in net.parameters()} == {"meta"}
    size = opts["img_size"]
    fused = []
    net.fpn.register_forward_hook(lambda m, i, o: fused.append(tuple(o.shape)))
    seg = next(t for t in net.tasks.values() if t.kind is TaskKind.SEGMENTATION)
    with torch.no_grad():
        out = net.eval()(torch.empty(1, 3, size, size, device="meta"), seg.task_id)
    assert tuple(out.shape) == (1, seg.num_classes, size, size)
    assert 3 <= net.fpn.stride <= 4 and fused == [(1, net.fpn.out_channels, round(size / net.fpn.stride),
                                                   round(size / net.fpn.stride))]
    single_scale = len(set(net.encoder.feature_info.reduction())) == 1
    assert (net.pyramid is not None) == single_scale == (net.config["pyramid"] == "simple")


def test_the_weights_branch_refuses_another_backbones_file_before_any_data_is_read(tmp_path, monkeypatch):
    """What the README commands' --weights check does, on a small family: a matching file passes, the file
    of another backbone is one line, both before the data root is opened."""
    monkeypatch.setattr(loop, "_load_samples", lambda *a, **k: pytest.fail("data read before the weights check"))
    good = write_classification_weights("test_convnext", tmp_path / "test_convnext.safetensors")
    other = write_classification_weights("test_vit", tmp_path / "test_vit.safetensors")
    opts, _ = loop._resolve_options(tmp_path, tmp_path / "o", dict(backbone="test_convnext", img_size=64, weights=good))
    assert loop._check_options(opts).config["backbone"] == "test_convnext"
    opts["weights"] = str(other)
    with pytest.raises(FmuiaError, match=r"^--weights .*test_vit.safetensors: could not load it into timm model "
                                         r"'test_convnext'") as info:
        fmuia.training.train(tmp_path, tmp_path / "run", backbone="test_convnext", img_size=64, weights=other)
    assert len(info.value.lines()) == 1
    assert loop._check_options(opts, resuming=True) is not None  # a resumed run takes its weights from last.pt
