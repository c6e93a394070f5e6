"""Training the MH-MTL baseline: data, task-uniform sampling, losses per kind, optimizer groups, loop, DDP,
checkpoints, and the options (:mod:`fmuia.training.config`: defaults, types, ``--config FILE``)."""

from __future__ import annotations

from pathlib import Path


def train(data_root, out_dir, **options) -> Path:
    """Train on ``data_root``; write ``out_dir/best.pt``, ``out_dir/last.pt`` and metrics logs.

    Options are named like the ``fmuia train`` flags (see :func:`fmuia.training.loop.train`).
    Returns the path of the best checkpoint.
    """
    # Deferred: the loop pulls in torchvision and timm (~2 s measured, after torch), and this package is
    # imported for every submodule: fmuia.training.data or .sampler alone stay at ~30 ms.
    from fmuia.training.loop import train as _train

    return _train(data_root, out_dir, **options)


__all__ = ["train"]
