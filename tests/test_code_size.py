"""Code-size rules of the code-health gate, checked on the source itself.

* no function in ``src/`` longer than 60 lines (docstring excluded) unless a
  ``# long:`` comment on its first body line says why;
* no module longer than 450 lines of code (docstrings excluded: a runnable example per
  public name is documentation, not size) unless its docstring says it holds ``one job``
  and why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dense_readout"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 450
FILES = sorted(SRC.rglob("*.py"))


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int]:
    """First and last line of the body without its docstring."""
    body = node.body
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
        and len(body) > 1
    ):
        body = body[1:]
    return body[0].lineno, node.end_lineno or body[-1].lineno


def _docstring_lines(tree: ast.Module) -> int:
    """Lines taken by the docstrings of the module, its classes and its functions."""
    total = 0
    for node in ast.walk(tree):
        kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        if isinstance(node, kinds) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                total += (first.end_lineno or first.lineno) - first.lineno + 1
    return total


def test_docstring_lines_are_counted_once_each():
    source = 'def f():\n    """One.\n\n    Two.\n    """\n    return 1\n'
    assert _docstring_lines(ast.parse(source)) == 4


def test_sources_found():
    assert len(FILES) > 40


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_functions_are_short_or_say_why(path):
    lines = path.read_text().splitlines()
    too_long = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        first, last = _body_lines(node)
        length = last - first + 1
        reason = any("# long:" in line for line in lines[node.lineno - 1 : first + 1])
        if length > MAX_FUNCTION_LINES and not reason:
            too_long.append(f"{node.name} (line {node.lineno}, {length} lines)")
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines without '# long:': {too_long}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_modules_are_small_or_hold_one_job(path):
    text = path.read_text()
    count = len(text.splitlines()) - _docstring_lines(ast.parse(text))
    if count <= MAX_MODULE_LINES:
        return
    docstring = ast.get_docstring(ast.parse(text)) or ""
    assert "one job" in docstring, (
        f"{path.name} has {count} lines (> {MAX_MODULE_LINES}); split it, or say in its "
        "docstring which one job it holds and why it is long"
    )
