"""Training: label-safe augmentation, task-uniform sampler, losses, overfit, exact resume, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fmuia.cli import main
from fmuia.dataset.schema import Sample
from fmuia.dataset.synth import synthesize
from fmuia.errors import FmuiaError, SchemaError
from fmuia.tasks import TaskKind, TaskSpec, get_task, list_tasks
from fmuia.training import train
from fmuia.training.checkpoint import read_checkpoint
from fmuia.training.data import AugmentConfig, TaskDataset, collate
from fmuia.training.losses import LOSSES, centre_heatmap
from fmuia.training.sampler import TaskBatchSampler, parse_task_weights
from fmuia.transforms import IMAGENET_MEAN, IMAGENET_STD, preprocess

TINY = dict(backbone="test_efficientnet", pretrained="none", img_size=64, workers=0, progress=False, device="cpu")
ONE_PER_KIND = ["breast_lesion", "breast_2cls", "thyroid_nodule_det", "fetal_femur"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("train") / "root", per_task=3, seed=3, tasks=ONE_PER_KIND)


# ---- augmentation never breaks labels -----------------------------------------------------------


def _sample(tmp_path: Path, task_id: str, image: np.ndarray, label, mask_file: Path | None = None) -> Sample:
    f = tmp_path / f"{task_id}.png"
    Image.fromarray(image).save(f)
    return Sample(get_task(task_id), f.name, f, tmp_path / "x.csv", 2, None, mask_file, label if mask_file is None else mask_file)


def _unnormalize(img: torch.Tensor) -> np.ndarray:
    m = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    s = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (img * s + m).mean(0).numpy()


GEOMETRY_ONLY = AugmentConfig(p_geometric=1.0, p_photometric=0.0, scale=0.2, translate=0.1)


def test_plain_item_equals_shared_preprocess(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    s = _sample(tmp_path, "organ_cls", img, 2)
    ds = TaskDataset([s], 64, augment=None)
    task_id, x, target = ds[0]
    assert task_id == "organ_cls" and int(target["label"]) == 2
    np.testing.assert_allclose(x.numpy(), preprocess(img, 64), atol=1e-6)


def test_detection_box_moves_with_the_pixels(tmp_path):
    img = np.zeros((80, 100, 3), np.uint8)
    img[10:50, 20:60] = 255  # pixels [20, 60) x [10, 50): the box (20, 10, 60, 50)
    s = _sample(tmp_path, "thyroid_nodule_det", img, (20.0, 10.0, 60.0, 50.0))
    ds = TaskDataset([s], 64, augment=GEOMETRY_ONLY)
    sides = set()
    for seed in range(24):
        _, x, t = ds[(0, seed)]
        bright = np.argwhere(_unnormalize(x) > 0.5)
        (y0, x0), (y1, x1) = bright.min(0), bright.max(0) + 1
        want = t["box"].numpy() * 64
        np.testing.assert_allclose([x0, y0, x1, y1], want, atol=1.6)
        sides.add(bool((want[0] + want[2]) / 2 < 32))
    assert sides == {True, False}  # flips happen for detection and the label follows


def test_segmentation_mask_moves_with_the_pixels(tmp_path):
    img = np.zeros((90, 120, 3), np.uint8)
    mask = np.zeros((90, 120), np.uint8)
    yy, xx = np.mgrid[:90, :120]
    blob = ((xx - 40) / 25.0) ** 2 + ((yy - 50) / 18.0) ** 2 < 1
    img[blob], mask[blob] = 255, 1
    mf = tmp_path / "mask.png"
    Image.fromarray(mask).save(mf)
    s = _sample(tmp_path, "breast_lesion", img, None, mask_file=mf)
    ds = TaskDataset([s], 64, augment=GEOMETRY_ONLY)
    for seed in range(12):
        _, x, t = ds[(0, seed)]
        agree = ((_unnormalize(x) > 0.5) == (t["mask"].numpy() == 1)).mean()
        assert agree > 0.98, (seed, agree)


def test_landmarks_move_with_the_pixels(tmp_path):
    img = np.zeros((100, 100, 3), np.uint8)
    pts = [(30.0, 40.0), (75.0, 60.0)]
    for x, y in pts:
        img[int(y) - 3 : int(y) + 3, int(x) - 3 : int(x) + 3] = 255  # a dot centred on the point
    s = _sample(tmp_path, "fetal_femur", img, tuple(pts))
    ds = TaskDataset([s], 64, augment=GEOMETRY_ONLY)
    for seed in range(12):
        _, x, t = ds[(0, seed)]
        im = _unnormalize(x)
        assert bool(t["valid"].all())
        for px, py in t["points"].numpy() * 64:
            assert im[int(py), int(px)] > 0.5


def test_classification_is_never_flipped(tmp_path):
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, :16] = 255  # bright on the left only
    s = _sample(tmp_path, "fetal_head_pos_cls", img, 3)
    ds = TaskDataset([s], 64, augment=GEOMETRY_ONLY)
    for seed in range(16):
        _, x, t = ds[(0, seed)]
        im = _unnormalize(x)
        assert im[:, :32].mean() > im[:, 32:].mean()
        assert int(t["label"]) == 3


def _left_bright_sample(tmp_path: Path, spec: TaskSpec) -> Sample:
    """A sample of ``spec`` whose image is bright on its left quarter, with a label valid for its kind."""
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, :16] = 255
    if spec.kind is TaskKind.SEGMENTATION:
        mf = tmp_path / f"{spec.task_id}_mask.png"
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(mf)
        return _sample(tmp_path, spec.task_id, img, None, mask_file=mf)
    label = {
        TaskKind.CLASSIFICATION: spec.num_classes - 1,
        TaskKind.DETECTION: (28.0, 28.0, 36.0, 36.0),
        TaskKind.REGRESSION: tuple((30.0 + k, 32.0) for k in range(spec.num_classes)),
    }[spec.kind]
    return _sample(tmp_path, spec.task_id, img, label)


@pytest.mark.parametrize("spec", list_tasks(), ids=lambda s: s.task_id)
def test_augmentation_flips_exactly_the_mirror_safe_tasks(tmp_path, spec):
    """A mirror-unsafe task is never flipped; a mirror-safe one is (about half the time)."""
    ds = TaskDataset([_left_bright_sample(tmp_path, spec)], 64, augment=GEOMETRY_ONLY)
    flipped = 0
    for seed in range(16):
        _, x, _ = ds[(0, seed)]
        im = _unnormalize(x)
        flipped += bool(im[:, 32:].mean() > im[:, :32].mean())  # zoom and shift alone never move it across
    if spec.mirror_safe:
        assert 0 < flipped < 16
    else:
        assert flipped == 0


def test_flip_kinds_narrows_flips_to_kinds(tmp_path):
    spec = get_task("organ_cls")
    assert spec.mirror_safe
    for kinds, may in ((None, True), (frozenset({TaskKind.CLASSIFICATION}), True), (frozenset({TaskKind.DETECTION}), False),
                       (frozenset(), False)):
        assert AugmentConfig(flip_kinds=kinds).may_flip(spec) is may
    assert not AugmentConfig().may_flip(get_task("fetal_head_pos_cls"))


def test_augmentation_is_repeatable_per_seed(tmp_path):
    rng = np.random.default_rng(1)
    s = _sample(tmp_path, "organ_cls", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), 1)
    ds = TaskDataset([s], 32, augment=AugmentConfig())
    assert torch.equal(ds[(0, 5)][1], ds[(0, 5)][1])
    assert not torch.equal(ds[(0, 5)][1], ds[(0, 6)][1])


# ---- sampler ------------------------------------------------------------------------------------


def _indices():
    return {"a": list(range(0, 10)), "b": list(range(10, 13)), "c": list(range(13, 30))}


def test_sampler_one_task_per_batch_same_on_every_rank():
    samplers = [TaskBatchSampler(_indices(), 4, 50, seed=3, rank=r, world_size=2) for r in range(2)]
    owner = {i: t for t, v in _indices().items() for i in v}
    for epoch in (0, 1):
        for s in samplers:
            s.set_epoch(epoch)
        b0, b1 = list(samplers[0]), list(samplers[1])
        assert len(b0) == len(b1) == 50
        seq = samplers[0].task_sequence()
        assert seq == samplers[1].task_sequence()
        for step, (x, y) in enumerate(zip(b0, b1, strict=True)):
            tasks = {owner[i] for i, _ in x} | {owner[i] for i, _ in y}
            assert tasks == {seq[step]}
            if seq[step] != "b":  # pools of >= 8 samples: the two ranks' slices are disjoint
                assert not ({i for i, _ in x} & {i for i, _ in y})
            assert len({sd for _, sd in x} | {sd for _, sd in y}) == 8  # distinct augmentation seeds
    assert set(seq) == {"a", "b", "c"}


def test_sampler_repeatable_by_seed_and_epoch():
    a = TaskBatchSampler(_indices(), 2, 20, seed=1)
    b = TaskBatchSampler(_indices(), 2, 20, seed=1)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)


def test_task_weights():
    sizes = {"cervix": 5, "organ_cls": 20, "IUGC": 3}
    kinds = {t: get_task(t).kind for t in sizes}
    assert parse_task_weights(None, sizes, kinds) == {"cervix": 1.0, "organ_cls": 1.0, "IUGC": 1.0}
    assert parse_task_weights("size", sizes, kinds) == {"cervix": 5.0, "organ_cls": 20.0, "IUGC": 3.0}
    w = parse_task_weights("segmentation=2, IUGC=0", sizes, kinds)
    assert w == {"cervix": 2.0, "organ_cls": 1.0, "IUGC": 0.0}
    s = TaskBatchSampler({"cervix": [0, 1], "organ_cls": [2, 3], "IUGC": [4, 5]}, 1, 300, w)
    seq = s.task_sequence()
    assert "IUGC" not in seq
    assert 0.55 < seq.count("cervix") / len(seq) < 0.78  # expected 2/3
    for bad in ("cervix", "cervix=x", "nosuchtask=1", "cervix=-1"):
        with pytest.raises(FmuiaError):
            parse_task_weights(bad, sizes, kinds)


# ---- losses -------------------------------------------------------------------------------------


def test_centre_heatmap_peaks_at_the_centre_cell():
    heat = centre_heatmap(torch.tensor([[0.25, 0.5, 0.75, 1.0]]), 16, 16)
    assert heat.shape == (1, 16, 16)
    i, j = divmod(int(heat.flatten().argmax()), 16)
    assert (i, j) == (12, 8) and float(heat[0, i, j]) == 1.0
    assert float(heat[0, 0, 0]) < 1e-3


def test_losses_finite_and_lower_for_the_right_answer():
    torch.manual_seed(0)
    b, s = 2, 32
    mask = torch.zeros(b, s, s, dtype=torch.long)
    mask[:, 8:20, 10:24] = 1
    good = torch.nn.functional.one_hot(mask, 2).permute(0, 3, 1, 2).float() * 10
    seg = LOSSES[TaskKind.SEGMENTATION]
    assert seg(good, {"mask": mask})[0] < seg(torch.zeros(b, 2, s, s), {"mask": mask})[0]

    cls = LOSSES[TaskKind.CLASSIFICATION]
    y = torch.tensor([0, 2])
    assert cls(torch.eye(3)[y] * 10, {"label": y})[0] < cls(torch.zeros(b, 3), {"label": y})[0]

    reg = LOSSES[TaskKind.REGRESSION]
    pts = torch.tensor([[[0.2, 0.3], [0.7, 0.8]]]).repeat(b, 1, 1)
    valid = torch.tensor([[True, False]]).repeat(b, 1)
    logits = torch.logit(pts).flatten(1)
    wrong_missing = logits.clone()
    wrong_missing[:, 2:] = 5.0  # the missing landmark is ignored
    assert float(reg(wrong_missing, {"points": pts, "valid": valid})[0]) < 1e-6
    assert float(reg(torch.zeros(b, 4), {"points": pts, "valid": valid})[0]) > 0.1

    det = LOSSES[TaskKind.DETECTION]
    gt = torch.tensor([[0.25, 0.5, 0.75, 1.0]] * b)
    h = w = 16
    heat = centre_heatmap(gt, h, w)
    perfect = {"obj": torch.where(heat >= 1, 10.0, -10.0), "box": gt.view(b, 4, 1, 1).expand(b, 4, h, w).clone()}
    poor = {"obj": torch.zeros(b, h, w), "box": torch.full((b, 4, h, w), 0.5)}
    lp, parts = det(perfect, {"box": gt})
    lq, _ = det(poor, {"box": gt})
    assert math.isfinite(float(lq)) and float(lp) < 0.01 < float(lq)
    assert set(parts) == {"focal", "l1", "giou"}
    # negatives are trained: a confident wrong location costs more than a quiet map
    wrong = {"obj": torch.where(heat >= 1, -10.0, 10.0), "box": perfect["box"]}
    assert det(wrong, {"box": gt})[0] > lq


# ---- the training loop ----------------------------------------------------------------------------


def _history(run: Path) -> list[dict]:
    return json.loads((run / "metrics.json").read_text())["epochs"]


@pytest.mark.slow
def test_tiny_overfit_reaches_near_perfect_training_metrics(small_root, tmp_path):
    """Three images per kind, validated on themselves: losses fall, metrics become near perfect."""
    best = train(
        small_root, tmp_path / "run", **TINY, epochs=4, steps_per_epoch=100, batch_size=3, lr=1e-3,
        augment=False, dropout=0.0, val=small_root, seed=0,
    )
    hist = _history(tmp_path / "run")
    assert len(hist) == 4 and best == tmp_path / "run" / "best.pt" and best.is_file()
    for kind in TaskKind:
        losses = [h[f"train_loss_{kind.value}"] for h in hist]
        assert all(math.isfinite(v) for v in losses)
        assert losses[-1] < 0.5 * losses[0], (kind, losses)
    last = hist[-1]
    assert last["val_seg_DSC"] > 0.9  # 64 px masks upsampled to ~200 px images
    assert last["val_cls_Accuracy"] == 1.0
    assert last["val_det_IoU"] > 0.8
    assert last["val_reg_MRE"] < 6.0  # pixels, images ~200 px wide
    assert last["val_composite"] > 0.9
    csv_text = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert csv_text[0].startswith("epoch,") and len(csv_text) == 5
    meta = read_checkpoint(best)["meta"]
    assert meta["backbone"] == "test_efficientnet" and meta["img_size"] == 64
    assert {t["task_id"] for t in meta["tasks"]} == set(ONE_PER_KIND)


def test_resume_continues_exactly(small_root, tmp_path):
    opts = dict(TINY, epochs=3, steps_per_epoch=4, batch_size=2, lr=1e-3, val=small_root, seed=5)
    train(small_root, tmp_path / "full", **opts)
    train(small_root, tmp_path / "part", **opts, stop_after_epochs=1)
    assert len(_history(tmp_path / "part")) == 1
    with pytest.raises(FmuiaError, match="differs"):
        train(None, None, resume=tmp_path / "part", lr=0.5)
    main(["train", "--resume", str(tmp_path / "part"), "--quiet"])  # through the CLI

    full, part = _history(tmp_path / "full"), _history(tmp_path / "part")
    assert len(part) == 3
    for a, b in zip(full, part, strict=True):
        assert a["train_loss"] == b["train_loss"]
        assert a["val_composite"] == b["val_composite"]
    sa = read_checkpoint(tmp_path / "full" / "last.pt")["model"]
    sb = read_checkpoint(tmp_path / "part" / "last.pt")["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cli_requires_data_and_out(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", "x"])
    assert exc.value.code == 2
    assert "--data and --out are required" in capsys.readouterr().err


def test_user_errors(small_root, tmp_path):
    with pytest.raises(FmuiaError, match="multiple of 32"):
        train(small_root, tmp_path / "r", **dict(TINY, img_size=50))
    with pytest.raises(FmuiaError, match="--tasks"):
        train(small_root, tmp_path / "r", **TINY, tasks="organ_cls")
    with pytest.raises(TypeError, match="unknown training option"):
        train(small_root, tmp_path / "r", **TINY, learning_rate=1)


def test_collate_refuses_mixed_tasks():
    item = ("a", torch.zeros(3, 4, 4), {"label": torch.tensor(0)})
    with pytest.raises(RuntimeError, match="one task"):
        collate([item, ("b", *item[1:])])


def test_mask_with_out_of_range_class_is_a_located_error(tmp_path):
    mask = np.zeros((20, 20), np.uint8)
    mask[5:10, 5:10] = 255  # a 0/255 mask for a 2-class task
    mf = tmp_path / "m.png"
    Image.fromarray(mask).save(mf)
    s = _sample(tmp_path, "breast_lesion", np.zeros((20, 20, 3), np.uint8), None, mask_file=mf)
    with pytest.raises(SchemaError, match=r"x.csv:2: .*value 255; expected class indices 0..1"):
        TaskDataset([s], 32)[0]


def test_loader_workers_do_not_change_the_run(small_root, tmp_path):
    opts = dict(TINY, epochs=1, steps_per_epoch=3, batch_size=2, val_fraction=0.0, seed=2)
    train(small_root, tmp_path / "w0", **opts)
    train(small_root, tmp_path / "w2", **{**opts, "workers": 2})
    assert _history(tmp_path / "w0")[0]["train_loss"] == _history(tmp_path / "w2")[0]["train_loss"]
