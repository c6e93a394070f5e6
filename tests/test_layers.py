"""The layer rules, read from the source (every import, function-local ones included).

- nothing imports the command line (``fmuia.cli``) but its own entry points;
- ``evaluation`` never imports torch, timm, the model, training or inference, nor ``submission``;
- ``submission`` never imports training;
- inference does not import training;
- the torch-free core (what ``fmuia check`` and ``fmuia evaluate`` load) reaches no torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from evaluation import _import_graph as ig

REPO = Path(__file__).resolve().parents[1]
GRAPH = ig.graph(REPO)
HEAVY = {"torch", "timm", "torchvision"}
TORCH_FREE_CORE = ["fmuia.tasks", "fmuia.dataset", "fmuia.formats", "fmuia.predfolder", "fmuia.check",
                   "fmuia.console", "fmuia.resize", "fmuia.dataset.masks", "fmuia.pack"]


def _under(mod: str, pkg: str) -> bool:
    return mod == pkg or mod.startswith(pkg + ".")


def _violations(sources: list[str], forbidden: list[str]) -> list[str]:
    return [f"{m} imports {d}" for m in sources for d in sorted(GRAPH[m]) if any(_under(d, f) for f in forbidden)]


def test_graph_sees_the_packages():
    assert "evaluation.scoring.engine" in GRAPH and "fmuia.dataset.schema" in GRAPH["evaluation.scoring.engine"]
    assert "fmuia.cli" in GRAPH and len(GRAPH) > 60


def test_nothing_imports_the_cli():
    users = [m for m in GRAPH if not _under(m, "fmuia.cli") and m != "fmuia.__main__"]
    assert _violations(users, ["fmuia.cli"]) == []


def test_evaluation_stays_below_the_model():
    mods = [m for m in GRAPH if _under(m, "evaluation")]
    assert _violations(mods, ["fmuia.model", "fmuia.training", "fmuia.inference", "fmuia.demo", "submission"]) == []
    assert ig.third_party(REPO, mods) & HEAVY == set()


def test_codabench_program_needs_only_its_declared_packages():
    # what the scoring image installs (evaluation.codabench.REQUIREMENTS), by import name; tqdm is
    # imported only for a progress bar on a terminal, which the scoring program never asks for
    from evaluation.codabench import REQUIREMENTS

    declared = {"numpy", "scipy", "sklearn", "PIL", "pycocotools", "matplotlib", "numba", "llvmlite", "tqdm"}
    assert {"scikit-learn", "Pillow"} <= set(REQUIREMENTS)
    reach = ig.closure(GRAPH, ["evaluation.codabench"])
    needed = ig.third_party(REPO, reach) - set(sys.stdlib_module_names) - {"__future__"}
    assert needed <= declared, sorted(needed - declared)


def test_submission_never_imports_training():
    mods = [m for m in GRAPH if _under(m, "submission")]
    assert _violations(mods, ["fmuia.training", "fmuia.model", "fmuia.inference"]) == []


def test_inference_does_not_import_training():
    assert _violations(["fmuia.inference"], ["fmuia.training"]) == []


@pytest.mark.parametrize("root", TORCH_FREE_CORE)
def test_torch_free_core(root):
    reach = ig.closure(GRAPH, [root])
    assert ig.third_party(REPO, reach) & HEAVY == set(), sorted(reach)
    assert not any(_under(m, "fmuia.model") or _under(m, "fmuia.training") for m in reach)


def test_relative_imports_resolve(tmp_path):
    pkg = tmp_path / "pkg" / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("from ..b import x\nimport os\ndef f():\n    from pkg.sub import a as _\n")
    (tmp_path / "pkg" / "b.py").write_text("x = 1\n")
    g = ig.graph(tmp_path, ("pkg",))
    assert g["pkg.sub"] == {"pkg", "pkg.sub.a"}
    assert g["pkg.sub.a"] == {"pkg", "pkg.b", "pkg.sub"}
    assert ig.third_party(tmp_path, ["pkg.sub.a"], ("pkg",)) == {"os"}
