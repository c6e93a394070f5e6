"""Predict from Python: a checkpoint + a data root -> the official prediction folder.

Standalone (no arguments, no network, under a minute on CPU): makes a tiny synthetic dataset in
a temporary folder, builds a tiny untrained network and saves it as a checkpoint, then predicts
the hidden-test split twice -- once through :func:`fmuia.inference.predict` (what ``fmuia predict``
runs) and once through :func:`fmuia.inference.predict_with_model` with an in-memory network --
and checks the folder the way a participant would before uploading.

With a real run, replace the checkpoint with ``RUN_DIR/best.pt`` from ``fmuia train``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from fmuia.check import check_predictions
from fmuia.dataset import load_root
from fmuia.dataset.synth import synthesize
from fmuia.inference import predict, predict_with_model
from fmuia.model import build_model
from fmuia.model.checkpoint import load_for_inference
from fmuia.tasks import get_task
from fmuia.training.checkpoint import make_meta, save_checkpoint

TASKS = ["fetal_head", "breast_3cls", "thyroid_nodule_det", "fetal_femur"]  # one task per kind


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = synthesize(work / "data", per_task=6, seed=0, tasks=TASKS, split=True)

        # A checkpoint as `fmuia train` writes it (here: a tiny untrained network).
        net = build_model([get_task(t) for t in TASKS], backbone="test_efficientnet", pretrained="none")
        ckpt = save_checkpoint(work / "tiny.pt", net, make_meta(net, img_size=64))

        # 1. The one-call API: the same as `fmuia predict --data ... --out ... --checkpoint ...`.
        counts = predict(data / "test", work / "preds", ckpt, batch_size=8, device="auto", workers=0, progress=False)
        print("predictions per task:", counts)

        # 2. The lower-level API: bring your own network (anything with forward(images, task_id)
        #    and postprocess(task_id, raw)) and its meta (img_size, tasks).
        net, meta = load_for_inference(ckpt, device="cpu")
        root = load_root(data / "test")
        counts_tta = predict_with_model(root, net, meta, work / "preds_tta", tta=True, device="cpu", workers=0, progress=False)
        print("with mirror TTA (mirror-safe tasks):", sum(counts_tta.values()), "predictions")

        report = check_predictions(work / "preds", data / "test")
        print(report.verdict())
        preds = work / "preds"
        for f in sorted(preds.glob("*.json")):
            print("  wrote", f.name)
        print("  wrote", len(list(preds.rglob("*.png"))), "segmentation PNGs, e.g.", next(preds.rglob("*.png")).relative_to(preds))
        if not report.ok:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
