"""evaluation.metrics against independent references: SimpleITK, scikit-learn, OpenCV, brute force
on tiny arrays and hand-worked cases, edge cases included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.distance import cdist
from sklearn.metrics import f1_score, matthews_corrcoef, roc_auc_score

from evaluation import metrics as M
from evaluation.metrics import _distance, _search
from fmuia.resize import resize_nearest_opencv


def sitk_hd(a: np.ndarray, b: np.ndarray) -> float:
    f = sitk.HausdorffDistanceImageFilter()
    f.Execute(sitk.GetImageFromArray(a.astype(np.uint8) * 255), sitk.GetImageFromArray(b.astype(np.uint8) * 255))
    return f.GetHausdorffDistance()


def brute_directed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """d(p, b) for every pixel p of a, by all pairwise distances."""
    pa, pb = np.argwhere(a), np.argwhere(b)
    return cdist(pa, pb).min(axis=1)


def random_masks(rng, h, w):
    a = rng.random((h, w)) < rng.uniform(0.01, 0.3)
    b = rng.random((h, w)) < rng.uniform(0.01, 0.3)
    return a, b


# ---- Dice --------------------------------------------------------------------------------------

def test_dice_hand_worked():
    p = np.array([[1, 1, 0], [0, 0, 0]], bool)
    g = np.array([[1, 0, 0], [1, 0, 0]], bool)
    assert M.dice(p, g) == pytest.approx(2 * 1 / 4)
    assert M.dice(p, p) == 1.0
    assert M.dice(p, ~p) == 0.0


def test_dice_edge_cases():
    z = np.zeros((3, 4), bool)
    one = z.copy()
    one[1, 2] = True
    assert M.dice(z, z) == 1.0  # both empty
    assert M.dice(one, z) == 0.0 and M.dice(z, one) == 0.0  # one empty
    assert M.dice(one, one) == 1.0  # single pixel
    with pytest.raises(ValueError):
        M.dice(z, np.zeros((4, 3), bool))


# ---- Hausdorff ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_hausdorff_matches_simpleitk_random(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(3, 60, 2)  # non-square
    a, b = random_masks(rng, h, w)
    a[0, 0] = b[-1, -1] = True
    assert M.hausdorff(a, b) == pytest.approx(sitk_hd(a, b), abs=1e-9)


def test_hausdorff_far_apart_objects_force_the_second_pass():
    # a small false positive far from the object: the first crop has no object pixel in reach
    a = np.zeros((300, 420), bool)
    b = np.zeros((300, 420), bool)
    b[40:80, 50:90] = True
    a[40:80, 50:90] = True
    a[270:273, 400:405] = True
    assert M.hausdorff(a, b) == pytest.approx(sitk_hd(a, b), abs=1e-9)
    # a thin background-like set: huge sets, small disagreement
    assert M.hausdorff(~a, ~b) == pytest.approx(sitk_hd(~a, ~b), abs=1e-9)
    # distance just beyond the first margin (16 px) along one side only
    c = b.copy()
    c[60, 110] = True
    assert M.hausdorff(c, b) == pytest.approx(sitk_hd(c, b), abs=1e-9)


def test_hausdorff_single_pixels_and_edge_cases():
    a = np.zeros((5, 7), bool)
    b = np.zeros((5, 7), bool)
    a[0, 0] = True
    b[4, 6] = True
    assert M.hausdorff(a, b) == pytest.approx(math.hypot(4, 6))
    assert M.hausdorff(a, a) == 0.0
    z = np.zeros((5, 7), bool)
    assert M.hausdorff(z, z) == 0.0  # both empty
    assert M.hausdorff(a, z) == math.inf  # one empty: the caller's value
    assert M.hausdorff(z, b, empty_value=M.diagonal(z.shape)) == pytest.approx(math.hypot(5, 7))


@pytest.mark.parametrize("seed", range(8))
def test_directed_distances_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    h, w = rng.integers(2, 50, 2)
    a, b = random_masks(rng, h, w)
    b[rng.integers(0, h), rng.integers(0, w)] = True
    got = np.sort(M.directed_distances(a, b))
    ref = brute_directed(a & ~b, b) if (a & ~b).any() else np.zeros(0)
    np.testing.assert_allclose(got, np.sort(ref), atol=1e-12)


def test_directed_distances_empty_target_is_an_error():
    a = np.ones((3, 3), bool)
    with pytest.raises(ValueError):
        M.directed_distances(a, np.zeros((3, 3), bool))
    assert M.directed_distances(a, a).size == 0


def edt_hd95(a, b):
    """HD95 from full-image Euclidean distance transforms (scipy), for sets too big for cdist."""
    from scipy.ndimage import distance_transform_edt

    return max(np.percentile(distance_transform_edt(~b)[a], 95), np.percentile(distance_transform_edt(~a)[b], 95))


def brute_hd95(a, b):
    d1 = cdist(np.argwhere(a), np.argwhere(b)).min(axis=1)
    d2 = cdist(np.argwhere(b), np.argwhere(a)).min(axis=1)
    return max(np.percentile(d1, 95), np.percentile(d2, 95))


@pytest.mark.parametrize("seed", range(6))
def test_hd95_brute_force(seed):
    rng = np.random.default_rng(200 + seed)
    h, w = rng.integers(4, 40, 2)
    a, b = random_masks(rng, h, w)
    a[0, 0] = b[0, 0] = True  # a shared pixel: distance 0 in both directions
    assert M.hd95(a, b) == pytest.approx(brute_hd95(a, b), abs=1e-9)


def test_hd95_edge_cases_and_bound():
    z = np.zeros((6, 6), bool)
    a = z.copy()
    a[2, 2] = True
    assert M.hd95(z, z) == 0.0
    assert M.hd95(a, z, empty_value=7.0) == 7.0
    assert M.hd95(a, a) == 0.0
    rng = np.random.default_rng(5)
    a, b = random_masks(rng, 30, 20)
    assert M.hd95(a, b) <= M.hausdorff(a, b) + 1e-12


def test_percentile_with_zeros_matches_numpy():
    rng = np.random.default_rng(0)
    for n_zero in (0, 1, 5, 50):
        for n in (1, 2, 7, 100):
            d = rng.random(n) * 10
            for q in (0, 50, 95, 99.5, 100):
                ref = np.percentile(np.concatenate([np.zeros(n_zero), d]), q)
                assert _distance._percentile_with_zeros(d, n_zero, q) == pytest.approx(ref, abs=1e-12)


# ---- per-class over label maps --------------------------------------------------------------

def reference_per_class(pred, gt, c):
    diag = math.hypot(*pred.shape)
    dice, hd = [], []
    for k in range(c):
        p, g = pred == k, gt == k
        s = p.sum() + g.sum()
        dice.append(1.0 if s == 0 else 2.0 * (p & g).sum() / s)
        if not p.any() and not g.any():
            hd.append(0.0)
        elif not p.any() or not g.any():
            hd.append(diag)
        else:
            hd.append(sitk_hd(p, g))
    return np.array(dice), np.array(hd)


@pytest.mark.parametrize("seed", range(5))
def test_per_class_metrics_match_reference(seed):
    rng = np.random.default_rng(300 + seed)
    c = int(rng.integers(2, 6))
    h, w = rng.integers(20, 90, 2)
    gt = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for k in range(1, c):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(2, 15)
        gt[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = k
    pred = np.roll(gt, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
    noise = rng.random((h, w)) < 0.01
    pred[noise] = rng.integers(0, c + 2, noise.sum())  # includes out-of-range values
    m = M.per_class_metrics(pred, gt, c, with_hd95=True)
    fast = M.per_class_metrics(pred, gt, c)  # the Hausdorff-only (pruned, cropped) path
    d_ref, h_ref = reference_per_class(pred, gt, c)
    for got in (m, fast):
        np.testing.assert_allclose(got.dice, d_ref, atol=1e-12)
        np.testing.assert_allclose(got.hd, h_ref, atol=1e-9)
    assert fast.hd95 is None
    for k in range(c):
        p, g = pred == k, gt == k
        if p.any() and g.any():
            assert m.hd95[k] == pytest.approx(brute_hd95(p, g), abs=1e-9)


def test_per_class_metrics_far_errors_use_exact_fallbacks():
    """Distances beyond the ring search: a far false-positive blob (k-d tree path), a large missed
    region inside the background (cropped EDT path), scattered specks."""
    h, w = 160, 210
    gt = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    gt[(yy - 60) ** 2 + (xx - 70) ** 2 < 45**2] = 1
    gt[(yy - 120) ** 2 + (xx - 170) ** 2 < 20**2] = 2
    pred = gt.copy()
    pred[(yy - 60) ** 2 + (xx - 70) ** 2 < 44**2] = 0  # class 1 shrunk to a thin ring: big interior miss
    pred[(yy - 60) ** 2 + (xx - 70) ** 2 < 4**2] = 1
    pred[140:146, 20:27] = 2  # far false positive of class 2
    rng = np.random.default_rng(3)
    specks = rng.random((h, w)) < 0.002
    pred[specks] = rng.integers(0, 3, int(specks.sum()))
    m = M.per_class_metrics(pred, gt, 3, with_hd95=True)
    d_ref, h_ref = reference_per_class(pred, gt, 3)
    for got in (m, M.per_class_metrics(pred, gt, 3)):
        np.testing.assert_allclose(got.dice, d_ref, atol=1e-12)
        np.testing.assert_allclose(got.hd, h_ref, atol=1e-9)
    assert m.hd.max() > 3 * _search.RING_RADIUS
    for k in range(3):
        assert m.hd95[k] == pytest.approx(edt_hd95(pred == k, gt == k), abs=1e-9)


def test_max_min_d2_chunks_and_kdtree_agree_with_brute_force():
    rng = np.random.default_rng(2)
    q = rng.integers(0, 3000, (3000, 2))
    b = rng.integers(0, 3000, (3000, 2))  # 9M pairs: the k-d tree branch
    ref = int((cdist(q, b, "sqeuclidean").min(axis=1)).max())
    assert _search._max_min_d2(q[:, 0], q[:, 1], b[:, 0], b[:, 1], 0) == ref
    small = _search._max_min_d2(q[:2000, 0], q[:2000, 1], b[:, 0], b[:, 1], 0)  # chunked brute force
    assert small == int((cdist(q[:2000], b, "sqeuclidean").min(axis=1)).max())
    assert _search._max_min_d2(q[:5, 0], q[:5, 1], b[:, 0], b[:, 1], 10**9) == 10**9


@pytest.mark.parametrize("case", ["foreground_everywhere", "touching_borders", "no_background"])
def test_per_class_metrics_crop_edge_cases(case):
    """The Hausdorff-only path works on the box of non-zero pixels: check the boxes that fill
    the image, touch its borders, or where class 0 is the small one."""
    rng = np.random.default_rng(11)
    h, w = 37, 53
    gt = np.ones((h, w), np.uint8)
    if case == "foreground_everywhere":
        gt[5:12, 7:30] = 0  # class 0 is a small island in class 1
    elif case == "touching_borders":
        gt[:] = 0
        gt[0:10, 0:8] = 1
        gt[30:, 45:] = 2
    else:
        gt[:, 20:] = 2
    pred = np.roll(gt, (2, -3), axis=(0, 1))
    pred[rng.random((h, w)) < 0.01] = 0
    d_ref, h_ref = reference_per_class(pred, gt, 3)
    got = M.per_class_metrics(pred, gt, 3)
    np.testing.assert_allclose(got.dice, d_ref, atol=1e-12)
    np.testing.assert_allclose(got.hd, h_ref, atol=1e-9)


def test_per_class_metrics_absent_classes_and_one_class():
    gt = np.zeros((8, 5), np.uint8)
    gt[2:4, 1:3] = 1
    pred = gt.copy()
    m = M.per_class_metrics(pred, gt, 4)  # classes 2 and 3 absent from both
    assert m.dice.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert m.hd.tolist() == [0.0, 0.0, 0.0, 0.0]
    pred[0, 0] = 3  # class 3 only in the prediction: diagonal
    m = M.per_class_metrics(pred, gt, 4)
    assert m.dice[3] == 0.0 and m.hd[3] == pytest.approx(math.hypot(8, 5))
    one = M.per_class_metrics(np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8), 1)
    assert one.dice.tolist() == [1.0] and one.hd.tolist() == [0.0]
    # a value outside 0..C-1 in the prediction belongs to no class
    weird = np.full((3, 3), 200, np.uint8)
    m = M.per_class_metrics(weird, np.zeros((3, 3), np.uint8), 2)
    assert m.dice.tolist() == [0.0, 1.0]


# ---- resize --------------------------------------------------------------------------------

def test_resize_nearest_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    for _ in range(200):
        sh, sw, dh, dw = (int(v) for v in rng.integers(1, 300, 4))
        a = rng.integers(0, 256, (sh, sw), dtype=np.uint8)
        ref = cv2.resize(a, (dw, dh), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(resize_nearest_opencv(a, dh, dw), ref)


def test_resize_nearest_hand_worked():
    a = np.arange(3)[None, :]
    # 3 -> 7 columns: src = floor(x * 3/7) = 0,0,0,1,1,2,2
    assert resize_nearest_opencv(a, 1, 7).tolist() == [[0, 0, 0, 1, 1, 2, 2]]
    assert resize_nearest_opencv(a, 1, 3) is a


# ---- detection and regression -------------------------------------------------------------

def test_iou_hand_worked():
    assert M.iou_xyxy([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert M.iou_xyxy([0, 0, 2, 2], [0, 0, 2, 2]) == 1.0
    assert M.iou_xyxy([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0  # disjoint
    assert M.iou_xyxy([0, 0, 1, 1], [1, 0, 2, 1]) == 0.0  # touching edges
    assert M.iou_xyxy([1, 1, 1, 1], [1, 1, 1, 1]) == 0.0  # union 0


def test_radial_errors_hand_worked():
    assert M.radial_errors([0, 0, 3, 4], [[0, 0], [0, 0]]).tolist() == [0.0, 5.0]
    assert M.mean_radial_error([[1, 1]], [[4, 5]]) == 5.0
    assert math.isnan(M.mean_radial_error(np.zeros((0, 2)), np.zeros((0, 2))))


# ---- classification --------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_confusion_metrics_match_sklearn(seed):
    rng = np.random.default_rng(400 + seed)
    c = int(rng.integers(2, 7))
    n = int(rng.integers(1, 60))
    y = rng.integers(0, c, n)
    p = np.where(rng.random(n) < 0.5, y, rng.integers(0, c, n))
    cm = M.confusion_matrix(y, p, c)
    assert M.accuracy(cm) == pytest.approx(np.mean(y == p))
    np.testing.assert_allclose(M.f1_per_class(cm), f1_score(y, p, labels=list(range(c)), average=None, zero_division=0))
    assert M.f1_macro(cm) == pytest.approx(f1_score(y, p, average="macro", zero_division=0))
    assert M.f1_weighted(cm) == pytest.approx(f1_score(y, p, average="weighted", zero_division=0))
    assert M.mcc(cm) == pytest.approx(matthews_corrcoef(y, p), abs=1e-12)


def test_invalid_predictions_are_wrong_for_no_class():
    y = np.array([0, 1, 1, 2, 2, 2])
    p = np.array([0, -1, 1, 2, -1, 0])  # -1: no valid prediction
    cm = M.confusion_matrix(y, p, 3)
    assert M.accuracy(cm) == pytest.approx(3 / 6)
    assert M.mcc(cm) == pytest.approx(matthews_corrcoef(y, p))  # sklearn sees -1 as a class
    present = [0, 1, 2]
    assert M.f1_macro(cm) == pytest.approx(f1_score(y, p, labels=present, average="macro", zero_division=0))
    assert M.f1_weighted(cm) == pytest.approx(f1_score(y, p, labels=present, average="weighted", zero_division=0))
    all_invalid = M.confusion_matrix(y, np.full(6, -1), 3)
    assert M.accuracy(all_invalid) == 0.0 and M.f1_macro(all_invalid) == 0.0 and M.mcc(all_invalid) == 0.0


def test_classification_edge_cases():
    empty = M.confusion_matrix(np.zeros(0, int), np.zeros(0, int), 3)
    assert M.accuracy(empty) == 0.0 and M.f1_macro(empty) == 0.0 and M.f1_weighted(empty) == 0.0
    assert M.mcc(empty) == 0.0
    one_class = M.confusion_matrix(np.ones(4, int), np.ones(4, int), 2)
    assert M.mcc(one_class) == matthews_corrcoef([1] * 4, [1] * 4) == 0.0
    assert M.f1_per_class(one_class).tolist() == [0.0, 1.0]  # class 0 absent: zero_division = 0


@pytest.mark.parametrize("seed", range(5))
def test_auc_binary_matches_sklearn_with_ties_and_weights(seed):
    rng = np.random.default_rng(500 + seed)
    n = int(rng.integers(2, 80))
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1
    s = np.round(rng.random(n), 1)  # many ties
    assert M.auc_binary(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    w = rng.integers(0, 4, n).astype(float)
    w[0] = w[1] = 1
    assert M.auc_binary(y, s, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)


def test_auc_edge_cases():
    assert math.isnan(M.auc_binary([1, 1, 1], [0.1, 0.2, 0.3]))  # one class: undefined
    assert M.auc_binary([0, 1], [0.5, 0.5]) == 0.5  # uniform scores
    assert M.auc_binary([0, 1], [0.9, 0.1]) == 0.0


def test_auc_ovr_macro_matches_sklearn_and_skips_absent_classes():
    rng = np.random.default_rng(7)
    y = np.array([0, 1, 2, 2, 1, 0, 2, 1])
    probs = rng.random((8, 3))
    probs /= probs.sum(axis=1, keepdims=True)
    ref = roc_auc_score(y, probs, multi_class="ovr", average="macro")
    assert M.auc_ovr_macro(y, probs, 3) == pytest.approx(ref, abs=1e-12)
    # class 3 absent: sklearn refuses; we average over the classes where AUC is defined
    probs4 = np.c_[probs, np.zeros(8)]
    assert M.auc_ovr_macro(y, probs4, 4) == pytest.approx(ref, abs=1e-12)
    assert math.isnan(M.auc_ovr_macro(np.zeros(3, int), np.ones((3, 2)) / 2, 2))


def test_per_class_metrics_salt_and_pepper_many_classes():
    """Pathological masks (every pixel a random class): both paths agree with SimpleITK."""
    rng = np.random.default_rng(4)
    gt = rng.integers(0, 30, (200, 200)).astype(np.uint8)
    pred = rng.integers(0, 30, (200, 200)).astype(np.uint8)
    fast = M.per_class_metrics(pred, gt, 30)
    full = M.per_class_metrics(pred, gt, 30, with_hd95=True)
    np.testing.assert_allclose(fast.hd, full.hd, atol=1e-12)
    for k in (0, 17):
        assert fast.hd[k] == pytest.approx(sitk_hd(pred == k, gt == k), abs=1e-9)


def test_foreground_mean_hand_worked():
    assert M.foreground_mean([0.9, 0.5, 0.7]) == pytest.approx(0.6)  # background 0.9 left out
    assert M.foreground_mean([1.0]) == 0.0  # no foreground class
    np.testing.assert_allclose(M.foreground_mean(np.array([[1.0, 0.2, 0.4], [0.0, 1.0, 0.0]])), [0.3, 0.5])
    assert M.foreground_mean(np.ones((3, 1))).tolist() == [0.0, 0.0, 0.0]
