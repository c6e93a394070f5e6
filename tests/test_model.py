"""The MH-MTL network: heads per kind, routing, postprocess ranges, per-task BN, checkpoints, weights files."""

from __future__ import annotations

import subprocess
import sys

import pytest
import timm
import torch

import fmuia.model.checkpoint as model_ckpt
import fmuia.training.checkpoint as train_ckpt
from fmuia.errors import FmuiaError
from fmuia.model import HEADS, build_model
from fmuia.model.checkpoint import load_for_inference, read_checkpoint
from fmuia.tasks import MIRROR_SAFE_DEFAULT, TaskKind, TaskSpec, get_task, list_tasks
from fmuia.training.checkpoint import make_meta, save_checkpoint

BACKBONE = "test_efficientnet"
SIZE = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_model(list_tasks(), BACKBONE).eval()


def one_per_kind() -> list[TaskSpec]:
    return [list_tasks(k)[0] for k in TaskKind]


def test_every_kind_has_a_head_class():
    assert set(HEADS) == set(TaskKind)
    assert len({HEADS[k] for k in TaskKind}) == 4


@pytest.mark.parametrize("kind", list(TaskKind), ids=lambda k: k.value)
def test_output_shapes_and_ranges_for_every_task_of_a_kind(net, kind):
    torch.manual_seed(1)
    x = torch.randn(2, 3, SIZE, SIZE)
    for spec in list_tasks(kind):
        with torch.no_grad():
            raw = net(x, spec.task_id)
        out = net.postprocess(spec.task_id, raw)
        n = spec.num_classes
        if kind is TaskKind.SEGMENTATION:
            assert raw.shape == (2, n, SIZE, SIZE)
            assert out["probs"].shape == (2, n, SIZE, SIZE)
            torch.testing.assert_close(out["probs"].sum(1), torch.ones(2, SIZE, SIZE))
        elif kind is TaskKind.CLASSIFICATION:
            assert raw.shape == (2, n)
            assert out["probs"].shape == (2, n)
            torch.testing.assert_close(out["probs"].sum(1), torch.ones(2))
        elif kind is TaskKind.DETECTION:
            assert raw["obj"].shape == (2, SIZE // 4, SIZE // 4)  # dense: one location per stride-4 cell
            assert raw["box"].shape == (2, 4, SIZE // 4, SIZE // 4)
            box, score = out["box"], out["score"]
            assert box.shape == (2, 4) and score.shape == (2,)
            assert ((box >= 0) & (box <= 1)).all() and (box[:, 2] >= box[:, 0]).all() and (box[:, 3] >= box[:, 1]).all()
            assert ((score > 0) & (score < 1)).all()
            # the chosen box is the one at the best-scoring location
            flat = raw["obj"].flatten(1).argmax(1)
            for b in range(2):
                i, j = divmod(int(flat[b]), SIZE // 4)
                torch.testing.assert_close(box[b], raw["box"][b, :, i, j].clamp(0, 1))
                torch.testing.assert_close(score[b], raw["obj"][b, i, j].sigmoid())
        else:
            assert raw.shape == (2, 2 * n)
            pts = out["points"]
            assert pts.shape == (2, n, 2) and ((pts >= 0) & (pts <= 1)).all()
        for v in out.values():
            assert v.dtype == torch.float32 and torch.isfinite(v).all()


def test_other_input_size_and_backbone():
    specs = one_per_kind()
    net = build_model(specs, "test_resnet").eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        seg = net(x, specs[0].task_id)
    assert seg.shape[-2:] == (96, 128)


def test_routing_cls_and_reg_skip_the_fpn(net):
    calls = []
    handle = net.fpn.register_forward_hook(lambda *a: calls.append(1))
    try:
        x = torch.randn(1, 3, SIZE, SIZE)
        with torch.no_grad():
            for t in ("organ_cls", "IUGC"):
                net(x, t)
            assert calls == []
            for t in ("cervix", "thyroid_nodule_det"):
                net(x, t)
            assert len(calls) == 2
    finally:
        handle.remove()


def test_unknown_task_is_a_clear_error(net):
    with pytest.raises(KeyError, match="no head"):
        net(torch.randn(1, 3, SIZE, SIZE), "nope")


def test_task_norm_keeps_statistics_per_task():
    specs = [get_task("organ_cls"), get_task("fetal_femur")]
    net = build_model(specs, BACKBONE).train()
    bn = net.encoder.bn1
    before = bn.task_running_mean.clone()
    with torch.no_grad():
        net(torch.randn(4, 3, SIZE, SIZE) * 3 + 5, "fetal_femur")  # only task 1's row may move
    torch.testing.assert_close(bn.task_running_mean[0], before[0])
    assert not torch.allclose(bn.task_running_mean[1], before[1])
    # eval mode uses that task's statistics
    net.eval()
    with torch.no_grad():
        net(torch.randn(1, 3, SIZE, SIZE), "organ_cls")
    torch.testing.assert_close(bn.running_mean, bn.task_running_mean[0])


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    specs = one_per_kind()
    torch.manual_seed(3)
    net = build_model(specs, BACKBONE)
    net.train()
    with torch.no_grad():  # move BN statistics away from their initial values
        for s in specs:
            net(torch.randn(2, 3, SIZE, SIZE), s.task_id)
    net.eval()
    path = save_checkpoint(tmp_path / "m.pt", net, make_meta(net, SIZE, epoch=3))
    net2, meta = load_for_inference(path)
    assert meta["backbone"] == BACKBONE and meta["img_size"] == SIZE and meta["epoch"] == 3
    assert [TaskSpec.from_dict(d) for d in meta["tasks"]] == specs
    assert len(meta["mean"]) == 3 and len(meta["std"]) == 3 and meta["fmuia_version"]
    assert not net2.training
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        for s in specs:
            a, b = net(x, s.task_id), net2(x, s.task_id)
            if isinstance(a, dict):
                for k in a:
                    assert torch.equal(a[k], b[k])
            else:
                assert torch.equal(a, b)


def test_bad_checkpoint_files_are_user_errors(tmp_path):
    with pytest.raises(FmuiaError, match="not found"):
        load_for_inference(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(FmuiaError, match="not a readable"):
        read_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(FmuiaError, match="not an fmuia checkpoint"):
        read_checkpoint(other)


def test_offline_weights_file_is_loaded(tmp_path):
    torch.manual_seed(11)
    ref = timm.create_model(BACKBONE, pretrained=False)  # the classification model, as timm ships weights
    path = tmp_path / "weights.pth"
    torch.save(ref.state_dict(), path)
    net = build_model([get_task("organ_cls")], BACKBONE, pretrained="none", weights=str(path))
    want = ref.state_dict()
    got = net.encoder.state_dict()
    shared = [k for k in got if k in want]
    assert len(shared) > 20 and "conv_stem.weight" in shared
    for k in shared:
        assert torch.equal(got[k], want[k]), k
    # per-task statistics start from the file's statistics
    torch.testing.assert_close(net.encoder.bn1.task_running_mean[0], want["bn1.running_mean"])
    # and a random init differs
    fresh = build_model([get_task("organ_cls")], BACKBONE, pretrained="none")
    assert not torch.equal(fresh.encoder.state_dict()["conv_stem.weight"], want["conv_stem.weight"])


def test_weights_file_errors(tmp_path):
    with pytest.raises(FmuiaError, match="not found"):
        build_model([get_task("organ_cls")], BACKBONE, weights=str(tmp_path / "nope.pth"))
    wrong = tmp_path / "resnet.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), wrong)
    with pytest.raises(FmuiaError, match="could not load"):
        build_model([get_task("organ_cls")], BACKBONE, weights=str(wrong))


def test_unreachable_hub_suggests_weights(monkeypatch):
    real = timm.create_model

    def offline(name, *args, pretrained=False, **kw):
        if pretrained:
            raise OSError("Name or service not known")
        return real(name, *args, pretrained=pretrained, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(FmuiaError, match="--weights FILE"):
        build_model([get_task("organ_cls")], BACKBONE, pretrained="imagenet")


def test_bad_backbone_and_pretrained_names():
    with pytest.raises(FmuiaError, match="not a timm model"):
        build_model([get_task("organ_cls")], "efficientnet_b99")
    with pytest.raises(FmuiaError, match="--pretrained"):
        build_model([get_task("organ_cls")], BACKBONE, pretrained="yes")


def test_incompatible_checkpoint_is_a_user_error(tmp_path):
    specs = one_per_kind()
    net = build_model(specs, BACKBONE)
    path = save_checkpoint(tmp_path / "m.pt", net, make_meta(net, SIZE))
    obj = read_checkpoint(path)
    name = next(iter(obj["model"]))
    obj["model"][name] = torch.zeros(7, 7)  # a model version whose first parameter had another shape
    torch.save(obj, tmp_path / "old.pt")
    with pytest.raises(FmuiaError, match="does not fit this version's model"):
        load_for_inference(tmp_path / "old.pt")


def test_checkpoint_written_before_task_policies_still_loads(tmp_path):
    """A checkpoint whose task dicts predate ``mirror_safe`` loads; the flags come from the kind defaults."""
    specs = [get_task("fetal_head_pos_cls"), get_task("cervix"), get_task("IUGC")]
    torch.manual_seed(5)
    net = build_model(specs, BACKBONE)
    meta = make_meta(net, SIZE)
    assert [d["mirror_safe"] for d in meta["tasks"]] == [False, True, False]
    meta["tasks"] = [{k: v for k, v in d.items() if k != "mirror_safe"} for d in meta["tasks"]]  # the old layout
    path = save_checkpoint(tmp_path / "old.pt", net, meta)
    net2, meta2 = load_for_inference(path)
    assert list(net2.tasks.values()) == specs
    assert [t.mirror_safe for t in net2.tasks.values()] == [MIRROR_SAFE_DEFAULT[t.kind] for t in specs]
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(net.eval()(x, "cervix"), net2(x, "cervix"))


def test_training_checkpoint_module_reexports_the_model_layer():
    for name in ("read_checkpoint", "load_for_inference", "build_from_meta", "FORMAT", "FORMAT_VERSION"):
        assert getattr(train_ckpt, name) is getattr(model_ckpt, name)


def test_inference_does_not_import_training():
    code = ("import sys, fmuia.inference, fmuia.model.checkpoint; "
            "print(sorted(m for m in sys.modules if m == 'fmuia.training' or m.startswith('fmuia.training.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
