"""A deliberately plain reference implementation of OFFICIAL mode: the test oracle.

It follows the published challenge scorer step by step — pandas row loops over the CSVs,
``cv2.imread(..., IMREAD_GRAYSCALE)``, ``cv2.resize(..., INTER_NEAREST)``, per image and per class
a numpy Dice and SimpleITK's ``HausdorffDistanceImageFilter``, scikit-learn for classification —
with no vectorisation, cropping or parallelism. The one addition is the documented policy of
:mod:`evaluation.official` for entries the published script would crash on (they are ignored,
as if absent) so that malformed submissions can be compared too.

Only prediction *folders* are supported (not zips). Not part of the package: tests and
``benchmarks/bench_evaluate.py`` import it.
"""

from __future__ import annotations

import glob
import json
import math
import os
import warnings
from collections import defaultdict

import cv2
import numpy as np
import pandas as pd
import SimpleITK as sitk
from sklearn.metrics import f1_score, matthews_corrcoef, roc_auc_score

BAD_PROBS = "unusable"


def _load_csvs(data_root: str) -> tuple[str, pd.DataFrame, dict]:
    csv_path = os.path.join(data_root, "csv_files")
    files = sorted(glob.glob(os.path.join(csv_path, "*.csv")))
    df = pd.concat([pd.read_csv(f) for f in files], ignore_index=True).reset_index(drop=True)
    configs: dict = {}
    for _, row in df.iterrows():
        if row["task_id"] not in configs:
            configs[row["task_id"]] = {"task_name": row["task_name"], "num_classes": int(row["num_classes"])}
    return csv_path, df, configs


def _dice_and_hd(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> tuple[list, list]:
    dices, hds = [], []
    for c in range(num_classes):
        p = (pred == c).astype(np.uint8)
        g = (gt == c).astype(np.uint8)
        inter = np.sum(p * g)
        union = np.sum(p) + np.sum(g)
        dices.append(1.0 if union == 0 else (2.0 * inter) / union)
        if np.sum(p) == 0 and np.sum(g) == 0:
            hd = 0.0
        elif np.sum(p) == 0 or np.sum(g) == 0:
            h, w = pred.shape
            hd = np.sqrt(h**2 + w**2)
        else:
            f = sitk.HausdorffDistanceImageFilter()
            f.Execute(sitk.GetImageFromArray(p * 255), sitk.GetImageFromArray(g * 255))
            hd = f.GetHausdorffDistance()
        hds.append(hd)
    return dices, hds


def evaluate_segmentation(csv_path: str, df: pd.DataFrame, configs: dict, pred_root: str, task_ids: list) -> dict:
    out = {}
    for task_id in task_ids:
        task_data = df[df["task_id"] == task_id]
        n = configs[task_id]["num_classes"]
        per_dsc = [[] for _ in range(n)]
        per_hd = [[] for _ in range(n)]
        valid = 0
        for _, row in task_data.iterrows():
            if not pd.notna(row.get("mask_path")):
                continue
            gt = cv2.imread(os.path.normpath(os.path.join(csv_path, row["mask_path"])), cv2.IMREAD_GRAYSCALE)
            if gt is None:
                continue
            pred_path = os.path.join(pred_root, row["mask_path"].replace("../", ""))
            if not os.path.exists(pred_path):
                continue
            pred = cv2.imread(pred_path, cv2.IMREAD_GRAYSCALE)
            if pred is None:
                continue
            if pred.shape != gt.shape:
                pred = cv2.resize(pred, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_NEAREST)
            d, h = _dice_and_hd(pred, gt, n)
            for c in range(n):
                per_dsc[c].append(d[c])
                per_hd[c].append(h[c])
            valid += 1
        if valid == 0:
            out[task_id] = {"DSC": 0.0, "HD": 0.0, "num_samples": 0, "per_class": {}}
            continue
        cm = {f"class_{c}": {"DSC": float(np.mean(per_dsc[c])), "HD": float(np.mean(per_hd[c]))} for c in range(n)}
        fg_d = [cm[f"class_{c}"]["DSC"] for c in range(1, n)]
        fg_h = [cm[f"class_{c}"]["HD"] for c in range(1, n)]
        out[task_id] = {"DSC": float(np.mean(fg_d)) if fg_d else 0.0, "HD": float(np.mean(fg_h)) if fg_h else 0.0,
                        "num_samples": valid, "per_class": cm}
    return out


def _finite_list(v):
    if not isinstance(v, list):
        return None
    for x in v:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            return None
    return [float(x) for x in v]


def _read_json(pred_root: str, name: str):
    path = os.path.join(pred_root, name)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:  # as the published scorer: a BOM is an error
            data = json.load(f)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return data if isinstance(data, list) else None


def _keyed(pred) -> tuple | None:
    if not isinstance(pred, dict):
        return None
    if not isinstance(pred.get("task_id"), str) or not isinstance(pred.get("image_path"), str):
        return None
    return pred["task_id"], pred["image_path"]


def evaluate_classification(df, configs, pred_root, task_ids) -> dict:
    predictions = _read_json(pred_root, "classification_predictions.json")
    if predictions is None:
        return {}
    pred_dict: dict = defaultdict(dict)
    for pred in predictions:
        key = _keyed(pred)
        if key is None:
            continue
        c = pred.get("predicted_class")
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c != int(c):
            continue
        probs = pred.get("predicted_probs", None)
        if probs is not None:
            probs = _finite_list(probs)
            if probs is None:
                probs = BAD_PROBS
        pred_dict[key[0]][key[1]] = {"class": int(c), "probs": probs}
    out = {}
    for task_id in task_ids:
        task_data = df[df["task_id"] == task_id]
        n = configs[task_id]["num_classes"]
        y_true, y_pred, y_probs = [], [], []
        for _, row in task_data.iterrows():
            if row["image_path"] in pred_dict[task_id]:
                info = pred_dict[task_id][row["image_path"]]
                y_true.append(int(row["mask"]))
                y_pred.append(info["class"])
                if info["probs"] is not None:
                    y_probs.append(info["probs"])
        if not y_true:
            out[task_id] = {"AUC": 0.0, "Accuracy": 0.0, "F1_macro": 0.0, "F1_weighted": 0.0, "MCC": 0.0,
                            "num_samples": 0, "per_class": {}}
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y_true, y_pred = np.array(y_true), np.array(y_pred)
            acc = np.mean(y_true == y_pred)
            f1m = f1_score(y_true, y_pred, average="macro", zero_division=0)
            f1w = f1_score(y_true, y_pred, average="weighted", zero_division=0)
            mcc = matthews_corrcoef(y_true, y_pred)
            auc = 0.0
            if len(y_probs) == len(y_true) and BAD_PROBS not in y_probs and len({len(p) for p in y_probs}) == 1:
                probs = np.array(y_probs)
                try:
                    if n == 2:
                        auc = roc_auc_score(y_true, probs[:, 1])
                    elif n > 2:
                        auc = roc_auc_score(y_true, probs, average="macro", multi_class="ovr")
                except Exception:
                    auc = 0.0
                if np.isnan(auc):  # newer scikit-learn: nan instead of an exception
                    auc = 0.0
            per = f1_score(y_true, y_pred, average=None, zero_division=0)
        out[task_id] = {"AUC": float(auc), "Accuracy": float(acc), "F1_macro": float(f1m), "F1_weighted": float(f1w),
                        "MCC": float(mcc), "num_samples": len(y_true),
                        "per_class": {f"class_{c}": {"F1": float(per[c]) if c < len(per) else 0.0} for c in range(n)}}
    return out


def _iou(p, g) -> float:
    x1 = max(p[0], g[0])
    y1 = max(p[1], g[1])
    x2 = min(p[2], g[2])
    y2 = min(p[3], g[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    union = (p[2] - p[0]) * (p[3] - p[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
    return 0.0 if union == 0 else inter / union


def evaluate_detection(df, configs, pred_root, task_ids) -> dict:
    predictions = _read_json(pred_root, "detection_predictions.json")
    if predictions is None:
        return {}
    pred_dict: dict = defaultdict(dict)
    for pred in predictions:
        key = _keyed(pred)
        if key is None:
            continue
        box = _finite_list(pred.get("bbox_pixels"))
        if box is None or len(box) != 4:
            continue
        pred_dict[key[0]][key[1]] = box
    out = {}
    for task_id in task_ids:
        scores = []
        for _, row in df[df["task_id"] == task_id].iterrows():
            cols = ["x_min", "y_min", "x_max", "y_max"]
            if all(c in row and pd.notna(row[c]) for c in cols) and row["image_path"] in pred_dict[task_id]:
                scores.append(_iou(pred_dict[task_id][row["image_path"]], [float(row[c]) for c in cols]))
        out[task_id] = {"IoU": float(np.mean(scores)), "num_samples": len(scores)} if scores else {"IoU": 0.0, "num_samples": 0}
    return out


def evaluate_regression(df, configs, pred_root, task_ids) -> dict:
    predictions = _read_json(pred_root, "regression_predictions.json")
    if predictions is None:
        return {}
    pred_dict: dict = defaultdict(dict)
    for pred in predictions:
        key = _keyed(pred)
        if key is None:
            continue
        pts = _finite_list(pred.get("predicted_points_pixels"))
        k = configs[key[0]]["num_classes"] if key[0] in configs else None
        if pts is None or k is None or len(pts) not in (2, 2 * k):
            continue
        pred_dict[key[0]][key[1]] = pts
    out = {}
    for task_id in task_ids:
        k = configs[task_id]["num_classes"]
        scores = []
        for _, row in df[df["task_id"] == task_id].iterrows():
            gt = []
            for i in range(1, k + 1):
                col = f"point_{i}_xy"
                if col in row and pd.notna(row[col]):
                    gt.extend(json.loads(row[col]))
                else:
                    gt.extend([0, 0])
            if row["image_path"] in pred_dict[task_id]:
                p = np.array(pred_dict[task_id][row["image_path"]]).reshape(-1, 2)
                g = np.array(gt).reshape(-1, 2)
                scores.append(np.mean(np.sqrt(np.sum((p - g) ** 2, axis=1))))
        out[task_id] = {"MRE": float(np.mean(scores)), "num_samples": len(scores)} if scores else {"MRE": 0.0, "num_samples": 0}
    return out


def reference_evaluate(pred_root: str, data_root: str) -> dict:
    """The official results object for a prediction folder, computed the plain way."""
    csv_path, df, configs = _load_csvs(str(data_root))
    groups: dict = defaultdict(list)
    for task_id, cfg in configs.items():
        groups[cfg["task_name"]].append(task_id)
    pred_root = str(pred_root)
    results = {}
    if "segmentation" in groups:
        results["segmentation"] = evaluate_segmentation(csv_path, df, configs, pred_root, groups["segmentation"])
    if "classification" in groups:
        results["classification"] = evaluate_classification(df, configs, pred_root, groups["classification"])
    if "detection" in groups:
        results["detection"] = evaluate_detection(df, configs, pred_root, groups["detection"])
    if "Regression" in groups:
        results["regression"] = evaluate_regression(df, configs, pred_root, groups["Regression"])
    return results


def assert_results_close(a, b, tol: float = 1e-9, path: str = "") -> None:
    """Same keys everywhere, numbers equal within ``tol``; raises AssertionError with the path."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert set(a) == set(b), f"{path}: keys differ: {sorted(set(a) ^ set(b))}"
        for k in a:
            assert_results_close(a[k], b[k], tol, f"{path}/{k}")
        return
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        assert type(a) is type(b) or (isinstance(a, float) and isinstance(b, float)), f"{path}: types {type(a)} vs {type(b)}"
        assert math.isclose(a, b, rel_tol=0, abs_tol=tol), f"{path}: {a!r} != {b!r}"
        return
    assert a == b, f"{path}: {a!r} != {b!r}"
