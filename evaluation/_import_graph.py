"""The static import graph of this repository's packages (read from the source, nothing imported).

Used to bundle the Codabench scoring program (every ``fmuia`` module the ``evaluation`` package
reaches) and by ``tests/test_layers.py`` to enforce which layer may import which.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

PACKAGES = ("fmuia", "evaluation", "submission")


def module_name(repo: Path, path: Path) -> str:
    """``fmuia/dataset/schema.py`` → ``fmuia.dataset.schema``; a package's ``__init__`` → the package."""
    parts = list(path.relative_to(repo).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_files(repo: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """``module name -> source file`` of every module of ``packages`` under ``repo``."""
    out: dict[str, Path] = {}
    for pkg in packages:
        for p in sorted((repo / pkg).rglob("*.py")):
            if "__pycache__" not in p.parts:
                out[module_name(repo, p)] = p
    return out


def imports_of(path: Path, module: str) -> set[str]:
    """Every absolute module name a source file imports, at any depth (functions included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)  # `from pkg import module`
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node, except the bodies of ``if TYPE_CHECKING:`` (imports for type hints only)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def graph(repo: Path, packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    """``module -> the modules of this repository it imports`` (names resolved to known modules)."""
    files = module_files(repo, packages)
    out: dict[str, set[str]] = {}
    for mod, path in files.items():
        deps = set()
        for name in imports_of(path, mod):
            # `import a.b.c` also imports the packages a and a.b
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in files and prefix != mod:
                    deps.add(prefix)
        out[mod] = deps
    return out


def closure(g: dict[str, set[str]], roots: Iterable[str]) -> set[str]:
    """Every module reachable from ``roots`` (included)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(g.get(m, ()))
    return seen


def third_party(repo: Path, modules: Iterable[str], packages: Iterable[str] = PACKAGES) -> set[str]:
    """Top-level names of the modules outside this repository that ``modules`` import."""
    files = module_files(repo, packages)
    own = set(packages)
    out: set[str] = set()
    for m in modules:
        for name in imports_of(files[m], m):
            top = name.split(".")[0]
            if top and top not in own:
                out.add(top)
    return out
