"""No import cycles among the modules of ``src/dense_readout``.

Every ``.py`` file under ``src/dense_readout`` is parsed (``ast``, nothing is
imported) and each ``import`` / ``from … import`` that names a module of the package
becomes an edge ``importer → imported``: absolute (``dense_readout.x``) and relative
(``from . import x``, ``from ..x import y``, ``from .x import y`` where ``y`` is itself
a module) alike. Two graphs are checked:

* **top level**: imports that run when the module is imported (module body,
  ``try``/``if`` blocks at module level; not ``if TYPE_CHECKING:``);
* **all**: the above plus imports inside functions and methods (the lazy imports
  the command line relies on, which cycle at run time just the same) and the
  typing-only ones under ``if TYPE_CHECKING:`` (a cycle for mypy and for readers).

What is not an edge: the package ``__init__`` that Python runs before a submodule
(``a.b.c`` implies ``a`` and ``a.b``) — a package re-exporting its own submodules
would otherwise be a "cycle" with each of them — and imports of other packages.
A cycle is a strongly connected component with more than one module (or a module
importing itself); the failure lists each one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "dense_readout"
ROOT = Path(__file__).resolve().parents[1] / "src" / PACKAGE


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """``dense_readout.x.y`` → its file, for every module and package under ``root``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(body: list[ast.stmt], top_level: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements of ``body``: module-level ones, or every one (``top_level=False``)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node):
            yield from _imports([*([] if top_level else node.body), *node.orelse], top_level)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if not top_level:
                yield from _imports(node.body, top_level)
        else:  # if/try/with/for blocks at this level run with the module
            for field in ("body", "orelse", "finalbody", "handlers"):
                yield from _imports(
                    [
                        s
                        for item in getattr(node, field, [])
                        for s in (item.body if isinstance(item, ast.ExceptHandler) else [item])
                    ],
                    top_level,
                )


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """Candidate modules one import statement names: for ``from base import name`` the
    submodule ``base.name`` (when there is one) or else ``base`` itself."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, *([base] if base else [])])
    return [f"{base}.{alias.name}|{base}" for alias in node.names]


def import_graph(top_level: bool, root: Path = ROOT) -> dict[str, set[str]]:
    """``module → modules of the package it imports`` (see the module docstring)."""
    files = module_files(root)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in _imports(tree.body, top_level):
            for candidates in _targets(node, name, path.name == "__init__.py"):
                target = next((t for t in candidates.split("|") if t in files), None)
                # an ancestor package is initialised already when this module runs
                if target is not None and (target == name or not name.startswith(f"{target}.")):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with a cycle (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_walk_sees_the_package():
    graph = import_graph(top_level=False)
    assert "dense_readout.cli" in graph and "dense_readout.readout" in graph
    # relative imports resolve: readout imports the adapters package
    assert "dense_readout.adapters" in graph["dense_readout.readout"]
    assert len(graph) > 100, len(graph)


@pytest.mark.parametrize("top_level", [True, False], ids=["top-level", "all"])
def test_no_import_cycles(top_level):
    found = cycles(import_graph(top_level))
    assert not found, "import cycles (each line one cycle):\n" + "\n".join(
        " <-> ".join(c) for c in found
    )


def test_a_cycle_is_found(tmp_path):
    """The oracle: planted cycles through a function-level relative import (b → a) and a
    typing-only one (c → a), invisible at top level, one component in the full graph."""
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from .a import A\n")
    (package / "a.py").write_text("from .sub import b\nfrom . import c\nA = 1\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("def f():\n    from ..a import A\n    return A\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"
    )
    assert cycles(import_graph(top_level=True, root=package)) == []
    assert cycles(import_graph(top_level=False, root=package)) == [
        [f"{PACKAGE}.a", f"{PACKAGE}.c", f"{PACKAGE}.sub.b"]
    ]
