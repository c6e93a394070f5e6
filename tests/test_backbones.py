"""Foundation backbones as the shared encoder: every family at the sizes asked for, NCHW features, the
simple pyramid for plain ViTs, frozen encoders, layer-wise LR decay and offline weights files.

Small configurations at random init (timm's ``test_*`` models, or real configs with small
``depth``/``embed_dim`` overrides), on the CPU.
"""

from __future__ import annotations

import math
import re

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

import fmuia.training.optim as optim_mod
from fmuia.errors import FmuiaError
from fmuia.inference import predict
from fmuia.model import build_model
from fmuia.model.checkpoint import load_for_inference, read_checkpoint
from fmuia.model.encoder import (
    build_encoder,
    check_input_size,
    check_out_indices,
    feature_modules,
    format_indices,
    to_nchw,
)
from fmuia.model.pyramid import SimplePyramid
from fmuia.tasks import PREDICTION_FILES, TaskKind, get_task
from fmuia.training.checkpoint import make_meta, save_checkpoint
from fmuia.training.losses import LOSSES
from fmuia.training.optim import param_groups

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASKS = ("cervix", "organ_cls", "thyroid_nodule_det", "IUGC")  # one per kind
SWIN = dict(depths=(1, 1, 1, 1), embed_dim=32, num_heads=(1, 2, 4, 8))
HIERA = dict(embed_dim=32, num_heads=1, stages=(1, 1, 1, 1))
DINO = dict(depth=2, embed_dim=64, num_heads=2)

# family: (timm name, small-config overrides, the two sizes it is trained at here)
FAMILIES = {
    "efficientnet": ("test_efficientnet", None, (64, 96)),
    "convnext": ("test_convnext", None, (64, 96)),
    "resnet": ("test_resnet", None, (64, 96)),
    "regnet": ("regnetx_002", None, (64, 96)),
    "mobilenet": ("mobilenetv4_conv_small_035", None, (64, 96)),
    "vit16": ("test_vit", {"depth": 2}, (224, 256)),
    "vit14": ("test_vit", {"depth": 2, "patch_size": 14}, (224, 256, 384)),  # 256, 384: run at 266, 392
    "dinov2": ("vit_small_patch14_reg4_dinov2", DINO, (224, 252)),
    "swin": ("swin_tiny_patch4_window7_224", SWIN, (224, 256)),
    "hiera": ("hiera_tiny_224", HIERA, (224, 256)),
    "maxvit": ("test_maxvit", None, (128, 192)),
}
CASES = [pytest.param(fam, size, id=f"{fam}-{size}") for fam, (_, _, sizes) in FAMILIES.items() for size in sizes]
# 384 px: the ViT and Swin sizes of the README, slower on one core
CASES += [pytest.param(fam, 384, id=f"{fam}-384", marks=pytest.mark.slow) for fam in ("vit16", "swin")]
CASES += [pytest.param("vit16", 250, id="vit16-250")]  # run at 256
# the size the encoder runs at, by hand: the next multiple of the patch for a plain ViT it does not divide
ENCODER_SIZE = {("vit14", 256): 266, ("vit14", 384): 392, ("vit16", 250): 256}


def specs():
    return [get_task(t) for t in TASKS]


def targets(b: int, s: int) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for spec in specs():
        if spec.kind is TaskKind.SEGMENTATION:
            out[spec.task_id] = {"mask": torch.randint(0, spec.num_classes, (b, s, s), generator=g)}
        elif spec.kind is TaskKind.CLASSIFICATION:
            out[spec.task_id] = {"label": torch.randint(0, spec.num_classes, (b,), generator=g)}
        elif spec.kind is TaskKind.DETECTION:
            lo = torch.rand(b, 2, generator=g) * 0.5
            out[spec.task_id] = {"box": torch.cat([lo, lo + 0.3], 1)}
        else:
            out[spec.task_id] = {"points": torch.rand(b, spec.num_classes, 2, generator=g),
                                 "valid": torch.ones(b, spec.num_classes, dtype=torch.bool)}
    return out


def total_loss(net, x, tgt, backward: bool = True) -> float:
    """The four kinds' losses summed; gradients accumulated one task at a time (as training does: per-task
    BatchNorm statistics are swapped in place between tasks, so one graph cannot span two tasks)."""
    total = 0.0
    for s in specs():
        loss = LOSSES[s.kind](net(x, s.task_id), tgt[s.task_id])[0]
        if backward:
            loss.backward()
        total += loss.item()
    return total


def assert_same_outputs(a, b):
    if isinstance(a, dict):
        for k in a:
            assert torch.equal(a[k], b[k]), k
    else:
        assert torch.equal(a, b)


@pytest.mark.parametrize(("family", "size"), CASES)
def test_family_builds_runs_every_head_trains_saves_and_reloads(family, size, tmp_path):
    name, kw, _ = FAMILIES[family]
    torch.manual_seed(0)
    net = build_model(specs(), name, img_size=size, backbone_kwargs=kw, fpn_channels=16, dropout=0.0)
    enc_size = ENCODER_SIZE.get((family, size), size)
    assert net.encoder_size == enc_size and net.config["fit_input"] is True
    x = torch.randn(2, 3, size, size)
    net.eval()
    # the deepest encoder map is NCHW with the channels timm declares, at the declared stride
    with torch.no_grad():
        feats = net.encoder(x)
    info = net.encoder.feature_info
    for f, c, r in zip(feats, info.channels(), info.reduction(), strict=True):
        assert f.shape[:2] == (2, c) and f.shape[-1] == math.ceil(size / r), (f.shape, c, r)
    with torch.no_grad():
        raw = {s.task_id: net(x, s.task_id) for s in specs()}
    seg, cls, det, reg = (raw[t] for t in TASKS)
    assert seg.shape == (2, get_task("cervix").num_classes, size, size)
    assert cls.shape == (2, get_task("organ_cls").num_classes)
    assert reg.shape == (2, 2 * get_task("IUGC").num_classes)
    fpn_stride = net.fpn.stride
    assert fpn_stride <= 4  # the heads keep a fine map: stride 4 (3.5 for a patch-14 pyramid)
    grid = round(enc_size / fpn_stride)  # 266 px at stride 3.5: 76
    assert det["obj"].shape == (2, grid, grid)
    for s in specs():
        out = net.postprocess(s.task_id, raw[s.task_id])
        for v in out.values():
            assert torch.isfinite(v).all() and ((v >= 0) & (v <= 1)).all()
    if family.startswith(("vit", "dinov2")):
        assert net.config["pyramid"] == "simple" and net.pyramid is not None
    else:
        assert net.config["pyramid"] == "none" and net.pyramid is None

    # two training steps on one batch: the loss falls
    net.train()
    opt = torch.optim.AdamW(param_groups(net, lr=1e-4, head_lr_scale=1.0, weight_decay=1e-4))
    tgt = targets(2, size)
    losses = []
    for step in range(3):
        opt.zero_grad(set_to_none=True)
        losses.append(total_loss(net, x, tgt, backward=step < 2))
        if step < 2:
            opt.step()
    assert losses[0] > losses[1] > losses[2], losses

    # saved and rebuilt from the checkpoint alone: identical outputs
    net.eval()
    path = save_checkpoint(tmp_path / "m.pt", net, make_meta(net, size))
    net2, meta = load_for_inference(path)
    assert meta["model_config"]["img_size"] == size and meta["model_config"]["backbone_kwargs"] == kw
    assert net2.encoder_size == enc_size
    with torch.no_grad():
        for s in specs():
            assert_same_outputs(net(x, s.task_id), net2(x, s.task_id))


# --- sizes -------------------------------------------------------------------------------------------

# fit: False for plain ViTs (with fit_input, the default, they take these sizes: see the next test);
# multi-scale families are refused with it on
@pytest.mark.parametrize(("name", "kw", "size", "fit", "expected"), [
    ("vit_small_patch14_dinov2", DINO, 256, False,
     "needs a multiple of 14 (its total stride); sizes that work near it: 252, 266"),
    ("vit_small_patch14_dinov2", DINO, 384, False,
     "needs a multiple of 14 (its total stride); sizes that work near it: 378, 392"),
    ("test_vit", {"depth": 2, "patch_size": 14}, 256, False, "sizes that work near it: 252, 266"),
    ("test_vit", {"depth": 2}, 250, False, "needs a multiple of 16 (its total stride); sizes that work near it: 240, 256"),
    ("test_maxvit", None, 240, True, "needs a multiple of 32 (its total stride); sizes that work near it: 224, 256"),
    ("hiera_tiny_224", HIERA, 240, True, "sizes that work near it: 224, 256"),
    ("swin_tiny_patch4_window7_224", SWIN, 250, True,
     "needs a multiple of 32 (its total stride); sizes that work near it: 224, 256"),
    ("test_efficientnet", None, 100, True,
     "needs a multiple of 32 (its total stride); sizes that work near it: 96, 128"),
])
def test_sizes_a_backbone_cannot_take_are_refused_with_the_sizes_that_work(name, kw, size, fit, expected):
    with pytest.raises(FmuiaError) as info:
        check_input_size(name, size, backbone_kwargs=kw, fit=fit)
    msg = info.value.message
    assert msg.startswith(f"--img-size {size}: backbone {name} ") and msg.endswith(expected), msg
    assert "\n" not in msg
    with pytest.raises(FmuiaError, match="needs a multiple|cannot take"):
        build_model(specs(), name, img_size=size, backbone_kwargs=kw, fit_input=fit)


@pytest.mark.parametrize(("name", "kw", "sizes"), [
    ("vit_small_patch14_dinov2", DINO, (224, 252, 518)),
    ("test_vit", None, (224, 240, 256, 384, 512)),
    ("swin_tiny_patch4_window7_224", SWIN, (224, 256, 288, 384, 512)),  # windows padded by timm
    ("hiera_tiny_224", HIERA, (224, 256, 384)),
    ("test_maxvit", None, (224, 256, 384)),
    ("test_convnext", None, (224, 256, 512)),
])
def test_sizes_that_work_pass(name, kw, sizes):
    for s in sizes:
        assert check_input_size(name, s, backbone_kwargs=kw) == s
        assert check_input_size(name, s, backbone_kwargs=kw, fit=True) == s  # a multiple: nothing to fit


@pytest.mark.parametrize(("name", "kw", "sizes"), [
    # (asked, run at): ceil(asked / patch) * patch, by hand
    ("vit_small_patch14_dinov2", DINO, ((256, 266), (384, 392), (512, 518), (100, 112))),
    ("test_vit", None, ((250, 256), (200, 208), (17, 32))),
    ("test_vit", {"patch_size": 14}, ((256, 266), (225, 238))),
])
def test_a_plain_vit_takes_any_size_at_the_next_multiple_of_its_patch(name, kw, sizes):
    for asked, run_at in sizes:
        assert check_input_size(name, asked, backbone_kwargs=kw, fit=True) == run_at


def test_the_input_is_resized_not_padded_to_the_patch_grid():
    """256 x 230 px into a patch-14 encoder: the encoder sees the image resized to 266 x 238 (19 x 17 tokens,
    spanning the whole image), exactly what it gives for that resized image; a multiple of 14 goes in as is."""
    torch.manual_seed(0)
    kw = {"depth": 1, "patch_size": 14}
    enc = build_encoder("test_vit", img_size=266, backbone_kwargs=kw, fit_input=True).eval()
    plain = build_encoder("test_vit", img_size=266, backbone_kwargs=kw).eval()
    plain.load_state_dict(enc.state_dict())
    x = torch.randn(1, 3, 256, 230)
    with torch.no_grad():
        got = enc(x)[-1]
        resized = torch.nn.functional.interpolate(x, size=(266, 238), mode="bilinear", align_corners=False)
        want = plain(resized)[-1]
        assert got.shape == (1, 64, 19, 17)
        torch.testing.assert_close(got, want)
        y = torch.randn(1, 3, 252, 224)
        torch.testing.assert_close(enc(y)[-1], plain(y)[-1])
    with pytest.raises(AssertionError, match="divisible by patch size"):  # without fit_input timm refuses it
        plain(x)
    # multi-scale encoders never resize: fit_input is ignored
    cnn = build_encoder("test_convnext", img_size=64, fit_input=True)
    assert not cnn._forward_pre_hooks


def test_bad_size_and_backbone_arguments():
    with pytest.raises(FmuiaError, match="not a timm model"):
        check_input_size("vit_nope_patch99", 224)
    with pytest.raises(FmuiaError, match="expected an integer of at least 16"):
        check_input_size("test_vit", 8)
    with pytest.raises(FmuiaError, match="expected an integer"):
        check_input_size("test_vit", "224")


# --- layouts ------------------------------------------------------------------------------------------

def test_to_nchw_by_hand():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)  # NCHW, C=3, H=4, W=5
    nhwc = x.permute(0, 2, 3, 1).contiguous()
    assert torch.equal(to_nchw(nhwc, "NHWC", 3, (4, 5)), x)
    assert torch.equal(to_nchw(x, "NCHW", 3, (4, 5)), x)
    assert torch.equal(to_nchw(nhwc, "NCHW", 3, (4, 5)), x)  # declared NCHW, delivered NHWC: caught by channels
    nlc = nhwc.reshape(2, 20, 3)
    assert torch.equal(to_nchw(nlc, "NLC", 3, (4, 5)), x)
    assert torch.equal(to_nchw(x.reshape(2, 3, 20), "NCL", 3, (4, 5)), x)
    # C == H == W: only the declaration can tell, and it is followed
    sq = torch.randn(1, 4, 4, 4)
    assert torch.equal(to_nchw(sq, "NHWC", 4, (4, 4)), sq.permute(0, 3, 1, 2))
    assert torch.equal(to_nchw(sq, "NCHW", 4, (4, 4)), sq)
    with pytest.raises(RuntimeError, match="does not fit"):
        to_nchw(nlc, "NLC", 3, (4, 4))


def test_swin_features_come_out_nchw_equal_to_timms_nhwc_permuted():
    torch.manual_seed(4)
    ref = timm.create_model("swin_tiny_patch4_window7_224", features_only=True, img_size=96, dynamic_img_size=True, **SWIN)
    torch.manual_seed(4)
    enc = build_encoder("swin_tiny_patch4_window7_224", img_size=96, backbone_kwargs=SWIN)
    assert enc.fmuia_layouts == ["NHWC"] * 4
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        want = [f.permute(0, 3, 1, 2) for f in ref.eval()(x)]
        got = enc.eval()(x)
    assert [tuple(g.shape) for g in got] == [(1, 32, 24, 24), (1, 64, 12, 12), (1, 128, 6, 6), (1, 256, 3, 3)]
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)


# --- the pyramid -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("stride", "grid"), [(16, 14), (14, 16), (16, 15)])
def test_simple_pyramid_levels(stride, grid):
    pyr = SimplePyramid([64], stride)
    assert pyr.reductions == [stride / 4, stride / 2, stride, 2 * stride]
    outs = pyr([torch.randn(2, 64, grid, grid)])
    assert [tuple(o.shape) for o in outs] == [(2, 16, 4 * grid, 4 * grid), (2, 32, 2 * grid, 2 * grid),
                                              (2, 64, grid, grid), (2, 64, grid // 2, grid // 2)]
    assert pyr.out_channels == [16, 32, 64, 64]


def test_pyramid_from_four_blocks_and_its_limits():
    torch.manual_seed(0)
    net = build_model(specs(), "test_vit", img_size=64, out_indices=[1, 3, 4, 5], fpn_channels=16)
    assert net.config["out_indices"] == [1, 3, 4, 5] and net.config["pyramid"] == "simple"
    assert net.encoder.feature_info.module_name() == ["blocks.1", "blocks.3", "blocks.4", "blocks.5"]
    calls = []
    hooks = [lvl.register_forward_hook(lambda m, i, o: calls.append(i[0].data_ptr())) for lvl in net.pyramid.levels]
    with torch.no_grad():
        feats = net.encoder(torch.randn(1, 3, 64, 64))
        net.pyramid(feats)
    for h in hooks:
        h.remove()
    assert calls == [f.data_ptr() for f in feats]  # level i from block i
    default = build_model(specs(), "test_vit", img_size=64, fpn_channels=16)
    assert default.config["out_indices"] == 1 and default.encoder.feature_info.module_name() == ["blocks.5"]
    with pytest.raises(FmuiaError, match="1 block .ViTDet. or 4"):
        build_model(specs(), "test_vit", img_size=64, out_indices=[3, 4, 5])
    with pytest.raises(FmuiaError, match="multi-scale already"):
        build_model(specs(), "test_convnext", img_size=64, pyramid="simple")
    with pytest.raises(FmuiaError, match="pyramid 'pyr'"):
        build_model(specs(), "test_vit", img_size=64, pyramid="pyr")
    plain = build_model(specs(), "test_vit", img_size=64, pyramid="none", fpn_channels=16)
    assert plain.pyramid is None and plain.fpn.stride == 16


def test_checkpoint_without_the_encoder_options_rebuilds_the_old_network(tmp_path):
    """A model_config written before img_size/pyramid/out_indices existed: no size to timm, no pyramid."""
    torch.manual_seed(2)
    old = build_model(specs(), "test_vit", img_size=None, pyramid="none", fpn_channels=16).eval()
    meta = make_meta(old, 64)
    for k in ("img_size", "pyramid", "out_indices", "backbone_kwargs", "fit_input"):
        meta["model_config"].pop(k)
    meta.pop("encoder_frozen")
    path = save_checkpoint(tmp_path / "old.pt", old, meta)
    net, _ = load_for_inference(path)
    assert net.pyramid is None and net.config["img_size"] is None and net.config["fit_input"] is False
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for s in specs():
            assert_same_outputs(old(x, s.task_id), net(x, s.task_id))


def test_checkpoint_without_fit_input_rebuilds_without_resizing(tmp_path):
    """A model_config written before fit_input existed (sizes were multiples of the patch then): the same
    network, and an input its patch does not divide is refused by timm as it was."""
    torch.manual_seed(3)
    kw = {"depth": 1, "patch_size": 14}
    net = build_model(specs(), "test_vit", img_size=112, backbone_kwargs=kw, fpn_channels=16).eval()
    meta = make_meta(net, 112)
    meta["model_config"].pop("fit_input")
    old, _ = load_for_inference(save_checkpoint(tmp_path / "m.pt", net, meta))
    assert old.config == {**net.config, "fit_input": False} and old.encoder_size == 112
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        for s in specs():
            assert_same_outputs(net(x, s.task_id), old(x, s.task_id))
        assert net(torch.randn(1, 3, 120, 120), "cervix").shape[-2:] == (120, 120)  # fit_input: any size
        with pytest.raises(AssertionError, match="divisible by patch size"):
            old(torch.randn(1, 3, 120, 120), "cervix")


@pytest.mark.parametrize(("key", "value"), [("img_size", "224"), ("out_indices", ["a"]), ("backbone_kwargs", [1]),
                                          ("fit_input", "yes")])
def test_ill_typed_encoder_options_in_a_checkpoint_are_one_line(tmp_path, key, value):
    net = build_model(specs(), "test_vit", img_size=64, fpn_channels=16)
    meta = make_meta(net, 64)
    meta["model_config"][key] = value
    path = save_checkpoint(tmp_path / "bad.pt", net, meta)
    with pytest.raises(FmuiaError, match=f"meta.model_config.{key}: expected"):
        read_checkpoint(path)


# --- freezing --------------------------------------------------------------------------------------

def test_frozen_encoder_gets_no_gradients_no_state_and_stays_in_eval_mode():
    torch.manual_seed(0)
    net = build_model(specs(), "test_convnext", img_size=64, fpn_channels=16, dropout=0.0)
    groups = param_groups(net, lr=1e-3, head_lr_scale=1.0, weight_decay=0.05)
    opt = torch.optim.AdamW(groups)
    net.freeze_encoder()
    assert net.encoder_frozen
    net.train()
    assert not net.encoder.training and all(not m.training for m in net.encoder.modules())
    assert net.fpn.training and net.heads.training
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    x, tgt = torch.randn(2, 3, 64, 64), targets(2, 64)
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        total_loss(net, x, tgt)
        assert all(p.grad is None for p in net.encoder.parameters())
        opt.step()
    after = net.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and per-task BN statistics
    enc_ids = {id(p) for p in net.encoder.parameters()}
    state_ids = {id(p) for p in opt.state}
    assert state_ids and not state_ids & enc_ids
    assert all(id(p) in state_ids for p in net.decoder_parameters() if p.requires_grad)
    names = [g["name"] for g in opt.param_groups]

    net.freeze_encoder(False)
    assert not net.encoder_frozen and net.encoder.training
    assert all(p.requires_grad for p in net.encoder.parameters())
    opt.zero_grad(set_to_none=True)
    total_loss(net, x, tgt)
    opt.step()
    assert [g["name"] for g in opt.param_groups] == names  # the group structure never changes
    assert enc_ids <= {id(p) for p in opt.state}
    first = next(n for n, _ in net.encoder.named_parameters())
    assert not torch.equal(before[first], net.encoder.state_dict()[first])
    net.eval()
    net.freeze_encoder(True)
    net.train(False)
    assert not net.encoder.training


# --- layer decay -------------------------------------------------------------------------------------

def test_layer_decay_groups_for_a_vit_by_hand():
    net = build_model(specs(), "test_vit", img_size=64, backbone_kwargs={"depth": 2}, fpn_channels=16)
    lr, d = 1e-3, 0.75
    groups = param_groups(net, lr=lr, head_lr_scale=10.0, weight_decay=0.05, layer_decay=d)
    by_name = {g["name"]: g for g in groups}
    assert [g["name"] for g in groups] == [
        "encoder.layer_0", "encoder.layer_0.no_decay", "encoder.layer_1", "encoder.layer_1.no_decay",
        "encoder.layer_2", "encoder.layer_2.no_decay", "heads", "heads.no_decay"]
    # stem (patch embedding, position embedding, class token) d^2, block 0 d, block 1 (the last) 1
    for i, scale in enumerate((d * d, d, 1.0)):
        for suffix in ("", ".no_decay"):
            g = by_name[f"encoder.layer_{i}{suffix}"]
            assert g["lr"] == pytest.approx(lr * scale) and g["lr_scale"] == pytest.approx(scale)
            assert g["weight_decay"] == (0.0 if suffix else 0.05)
    assert by_name["heads"]["lr"] == pytest.approx(10 * lr)
    params = dict(net.named_parameters())

    def members(group):
        return {n for n, p in params.items() if any(p is q for q in by_name[group]["params"])}

    assert members("encoder.layer_0") == {"encoder.model.patch_embed.proj.weight"}
    assert members("encoder.layer_0.no_decay") == {"encoder.model.patch_embed.proj.bias", "encoder.model.cls_token",
                                                  "encoder.model.pos_embed"}
    assert "encoder.model.blocks.1.attn.qkv.weight" in members("encoder.layer_2")
    assert "encoder.model.blocks.0.norm1.weight" in members("encoder.layer_1.no_decay")
    assert "fpn.fuse.0.weight" in members("heads") and "fpn.fuse.1.weight" in members("heads.no_decay")
    # every parameter in exactly one group
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(params)
    torch.optim.AdamW(groups)  # accepted as they are


def test_layer_decay_on_cnns_uses_timms_group_matcher_and_refuses_without_one(monkeypatch):
    net = build_model(specs(), "test_convnext", img_size=64, fpn_channels=16)
    groups = param_groups(net, lr=1.0, head_lr_scale=1.0, weight_decay=0.0, layer_decay=0.5)
    enc = [g for g in groups if g["name"].startswith("encoder.layer_")]
    layers = sorted({int(g["name"].split("_")[1].split(".")[0]) for g in enc})
    assert layers == list(range(len(layers))) and len(layers) == 1 + 1 + 2 + 4 + 2  # stem + blocks of [1, 2, 4, 2]
    assert {g["lr"] for g in enc} == {0.5 ** (layers[-1] - i) for i in layers}
    plain = param_groups(net, lr=1.0, head_lr_scale=2.0, weight_decay=0.1)
    assert [g["name"] for g in plain] == ["encoder", "encoder.no_decay", "heads", "heads.no_decay"]
    legacy = param_groups(net, lr=1.0, head_lr_scale=2.0, weight_decay=0.1, decay_exclusions=False)
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in legacy] == [("encoder", 1.0, 0.1), ("heads", 2.0, 0.1)]
    monkeypatch.setattr(optim_mod, "_reference", lambda net: torch.nn.Linear(1, 1))
    with pytest.raises(FmuiaError, match="no layer grouping .group_matcher. for backbone test_convnext"):
        param_groups(net, lr=1.0, head_lr_scale=1.0, weight_decay=0.0, layer_decay=0.75)
    with pytest.raises(FmuiaError, match="expected a number in"):
        param_groups(net, lr=1.0, head_lr_scale=1.0, weight_decay=0.0, layer_decay=1.5)


# --- weights files -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "kw", "size"), [
    ("test_vit", None, 96),  # made at 160 px (test_vit's default): position embedding resampled
    ("vit_small_patch14_reg4_dinov2", DINO, 224),  # made at 518 px
    ("vit_small_patch14_reg4_dinov2", DINO, 256),  # run at 266 px: a 19 x 19 grid
    ("swin_tiny_patch4_window7_224", SWIN, 256),
    ("hiera_tiny_224", HIERA, 256),  # Hiera's own filter does not resample: fmuia does
    ("test_convnext", None, 64),
    ("test_maxvit", None, 256),  # relative-position tables resized by timm's filter
])
def test_classification_weights_file_at_another_size_loads_offline(tmp_path, name, kw, size):
    torch.manual_seed(9)
    cls = timm.create_model(name, pretrained=False, **(kw or {}))  # as users download it: the classifier
    want = cls.state_dict()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in want.items()}, str(path))
    net = build_model(specs(), name, weights=str(path), img_size=size, backbone_kwargs=kw, fpn_channels=16)
    # timm's wrappers: "model." for ViT/Hiera, "stages_0" for "stages.0" in flattened CNN/Swin/MaxViT stages
    got = {re.sub(r"^([a-z]+)_(\d+)\.", r"\1.\2.", k.removeprefix("model.")): v
           for k, v in net.encoder.state_dict().items() if "task_running" not in k}
    equal = [k for k in got if k in want and torch.equal(got[k], want[k])]
    assert len(equal) > 0.9 * len(got) - 9, (len(equal), len(got))
    if isinstance(cls, timm.models.VisionTransformer):
        prefix = 0 if cls.no_embed_class else cls.num_prefix_tokens  # DINOv2: no embedding for the prefix tokens
        new = math.ceil(size / cls.patch_embed.patch_size[0])
        old = math.isqrt(want["pos_embed"].shape[1] - prefix)
        ref = resample_abs_pos_embed(want["pos_embed"], new_size=(new, new), old_size=(old, old),
                                     num_prefix_tokens=prefix, verbose=False)
        torch.testing.assert_close(got["pos_embed"], ref)
    if name.startswith("hiera"):
        assert got["pos_embed"].shape == (1, (size // 4) ** 2, 32)
    # and the network of that file trains and predicts like any other
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, size, size), "cervix").shape[-2:] == (size, size)


def test_feature_extractor_weights_file_loads_and_bad_files_are_refused(tmp_path):
    torch.manual_seed(1)
    src = build_encoder("swin_tiny_patch4_window7_224", img_size=224, backbone_kwargs=SWIN)
    path = tmp_path / "features.pth"
    torch.save(src.state_dict(), path)
    net = build_model(specs(), "swin_tiny_patch4_window7_224", weights=str(path), img_size=224, backbone_kwargs=SWIN)
    got = net.encoder.state_dict()
    assert all(torch.equal(got[k], v) for k, v in src.state_dict().items())

    partial = {k: v for i, (k, v) in enumerate(src.state_dict().items()) if i % 2}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(FmuiaError, match=r"could not load .* encoder tensors not in the file"):
        build_model(specs(), "swin_tiny_patch4_window7_224", weights=str(tmp_path / "partial.pth"), img_size=224,
                    backbone_kwargs=SWIN)
    other = timm.create_model("test_vit", pretrained=False)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    with pytest.raises(FmuiaError, match="could not load it into timm model 'test_convnext'"):
        build_model(specs(), "test_convnext", weights=str(tmp_path / "vit.safetensors"), img_size=64)
    (tmp_path / "junk.safetensors").write_bytes(b"nope")
    with pytest.raises(FmuiaError, match="could not load"):
        build_model(specs(), "test_convnext", weights=str(tmp_path / "junk.safetensors"), img_size=64)


# --- predict ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def four_task_test(tmp_path_factory):
    from fmuia.dataset.synth import synthesize

    out = tmp_path_factory.mktemp("four")
    synthesize(out, per_task=2, seed=3, tasks=list(TASKS), split=True)
    return out / "test"


@pytest.mark.parametrize("size", [126, 130])  # 130: not a multiple of 14, the encoder runs at 140
def test_predict_from_a_frozen_dinov2_pyramid_checkpoint(four_task_test, tmp_path, size):
    torch.manual_seed(0)
    net = build_model(specs(), "vit_small_patch14_reg4_dinov2", img_size=size, backbone_kwargs=DINO, fpn_channels=16)
    net.freeze_encoder()
    path = save_checkpoint(tmp_path / "best.pt", net, make_meta(net, size))
    assert read_checkpoint(path)["meta"]["encoder_frozen"] is True
    rebuilt, _ = load_for_inference(path)
    assert rebuilt.encoder_size == 14 * math.ceil(size / 14) and rebuilt.config == net.config
    counts = predict(four_task_test, tmp_path / "pred", path, device="cpu", workers=0, progress=False)
    assert sum(counts.values()) > 0
    for name in PREDICTION_FILES.values():
        assert (tmp_path / "pred" / name).is_file()
    assert list((tmp_path / "pred").rglob("*.png"))  # the segmentation masks


# --- out_indices: what timm can take, checked with the names of what it has ---------------------------

def test_feature_modules_and_out_indices_by_hand():
    assert feature_modules("test_vit", 64) == [f"blocks.{i}" for i in range(6)]
    assert feature_modules("test_vit", 64, {"depth": 2}) == ["blocks.0", "blocks.1"]
    assert feature_modules("test_convnext") == ["stages.0", "stages.1", "stages.2", "stages.3"]
    assert len(feature_modules("test_efficientnet")) == 5
    for oi in (1, 4, 6, [0], [-1], [-4, -3, -2, -1], [0, 2, 3, 5]):
        check_out_indices("test_vit", oi, img_size=64)
    for oi in (7, [6], [-7], [0, 2, 3, 9]):
        with pytest.raises(FmuiaError) as info:
            check_out_indices("test_vit", oi, img_size=64)
        assert info.value.message == (
            f"--out-indices {format_indices(oi)}: backbone test_vit has 6 feature maps to take (blocks.0 ... blocks.5): "
            "indices 0 to 5 (or -6 to -1), or one integer N from 1 to 6 for the last N")
    with pytest.raises(FmuiaError, match=r"^--out-indices 0,4: backbone test_convnext has 4 feature maps to take "
                                         r"\(stages.0 ... stages.3\): indices 0 to 3"):
        build_model(specs(), "test_convnext", img_size=64, out_indices=[0, 4])
    check_out_indices("test_vit", None, img_size=64)
    assert format_indices([2, 5, 8, 11]) == "2,5,8,11" and format_indices(4) == "4"
    # four blocks spread over a 12-block ViT: the suggestion the count error makes
    with pytest.raises(FmuiaError, match=r"these give 2; use --out-indices 1 \(the last block\) or 4 \(the last 4\), "
                                         r"or 4 spread over its 12 blocks: 2,5,8,11$"):
        build_model(specs(), "test_vit", img_size=64, backbone_kwargs={"depth": 12}, out_indices=2)


@pytest.mark.parametrize(("name", "kw", "size", "out_indices"), [
    ("test_convnext", None, 64, None),
    ("test_vit", {"depth": 4}, 64, [0, 1, 2, 3]),
    ("swin_tiny_patch4_window7_224", SWIN, 224, [1, 2, 3]),
])
def test_the_network_checked_on_the_meta_device_is_the_one_trained(name, kw, size, out_indices):
    """fmuia train checks its options on a meta-device build (fmuia.training.loop.network_on_meta): the same
    tensors, shapes and options as the real network."""
    from fmuia.training.config import DEFAULTS
    from fmuia.training.loop import network_on_meta

    opts = {**DEFAULTS, "backbone": name, "img_size": size, "out_indices": out_indices, "backbone_kwargs": kw,
            "fpn_channels": 16}
    meta_net = network_on_meta(opts, tasks=specs())
    torch.manual_seed(0)
    real = build_model(specs(), name, img_size=size, out_indices=out_indices, backbone_kwargs=kw, fpn_channels=16,
                       dropout=DEFAULTS["dropout"])
    a, b = meta_net.state_dict(), real.state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)
    assert {v.device.type for v in a.values()} == {"meta"}
    assert meta_net.config == real.config
