"""Shared fixtures: synthetic data roots made once per session by ``fmuia.dataset.synth``."""

from __future__ import annotations

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
