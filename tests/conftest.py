"""Shared fixtures: synthetic data roots made once per session by ``fmuia.dataset.synth``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A labelled data root: all 27 tasks, 4 images each (read-only: copy before mutating)."""
    from fmuia.dataset.synth import synthesize

    out = tmp_path_factory.mktemp("synth") / "root"
    synthesize(out, per_task=4, seed=0)
    return out


@pytest.fixture(scope="session")
def synth_split(tmp_path_factory) -> Path:
    """A split synthetic set: ``train/`` (labelled), ``test/`` (no labels), ``labels/`` (test's labels)."""
    from fmuia.dataset.synth import synthesize

    out = tmp_path_factory.mktemp("synth_split")
    synthesize(out, per_task=6, seed=1, split=True)
    return out


@pytest.fixture(scope="module")
def root(synth_root):
    """``synth_root`` loaded as a :class:`~fmuia.dataset.DataRoot`."""
    from fmuia.dataset import load_root

    return load_root(synth_root)


@pytest.fixture(scope="module")
def perfect(root, tmp_path_factory) -> Path:
    """A perfect prediction folder for ``root`` (oracle predictions; read-only: use ``pred``)."""
    from fmuia.formats import write_predictions
    from fmuia.oracle import oracle_predictions

    out = tmp_path_factory.mktemp("perfect") / "pred"
    write_predictions(out, oracle_predictions(root))
    return out


@pytest.fixture
def pred(perfect, tmp_path) -> Path:
    """A private, writable copy of the perfect prediction folder."""
    out = tmp_path / "pred"
    shutil.copytree(perfect, out)
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tiny tensors: more only add contention on a shared machine.
    (torch is imported here, not at the top: most test modules never need it.)"""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
