"""Griffe extension for the API pages: the code's docstring habits, read as the site needs.

* ``Example:`` (the section title the code uses, which napoleon and ruff's Google
  convention accept) is read as griffe's ``Examples:`` section, so the doctests render
  as code blocks instead of an admonition of Markdown text.
* Sphinx roles (``:class:`~dense_readout.DenseReadout```, ``:func:`.data```) become
  code that links to the target's entry when the target is documented on the site
  (an optional cross-reference), and plain code otherwise (torch, private helpers).

Only the rendered text changes; the source keeps its docstrings.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import griffe

EXAMPLE_TITLE = re.compile(r"^Example(?: \((?P<what>[^)]*)\))?:[ \t]*$", re.M)
ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|obj|exc|const):`(?P<target>[^`]+)`")


def _relative(obj: griffe.Object, target: str) -> str:
    """``.data`` / ``..x`` relative to the package of ``obj``, as Python's imports."""
    module = obj if obj.is_module else obj.module
    base = module.path if module.is_package else module.path.rpartition(".")[0]
    dots = len(target) - len(target.lstrip("."))
    for _ in range(dots - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{target.lstrip('.')}"


def _resolve(obj: griffe.Object, target: str, collection: Any) -> str | None:
    """The full path of ``target`` seen from ``obj``, or None outside this package."""
    candidates = [_relative(obj, target)] if target.startswith(".") else [target]
    if not target.startswith("."):
        head, _, tail = target.partition(".")
        with contextlib.suppress(griffe.NameResolutionError, ValueError, AttributeError):
            # a name in scope (imported or defined in the module), as Python resolves it
            candidates.insert(0, obj.resolve(head) + (f".{tail}" if tail else ""))
    for path in candidates:
        try:
            collection.get_member(path)
        except (KeyError, ValueError, AttributeError, griffe.AliasResolutionError):
            continue
        return path
    return None


def _role(obj: griffe.Object, match: re.Match[str], collection: Any) -> str:
    target = match["target"].strip()
    short = target.startswith("~")
    target = target.lstrip("~")
    title = target.rsplit(".", 1)[-1] if short else target.lstrip(".")
    path = _resolve(obj, target, collection)
    if path is None:
        return f"`{title}`"
    return f'<autoref identifier="{path}" optional><code>{title}</code></autoref>'


def _examples_title(match: re.Match[str]) -> str:
    """``Example (what):`` -> ``Examples:`` with ``What:`` as the section's first line."""
    what = match["what"]
    return f"Examples:\n    {what[0].upper()}{what[1:]}:" if what else "Examples:"


def _objects(obj: griffe.Object) -> list[griffe.Object]:
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias:
            found.extend(_objects(member))  # type: ignore[arg-type]
    return found


class SiteDocstrings(griffe.Extension):
    """Rewrites each docstring of the loaded package once it is complete."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Rewrite ``Example:`` titles and Sphinx roles in every docstring of ``pkg``."""
        for obj in _objects(pkg):
            if obj.docstring is None:
                continue
            text = EXAMPLE_TITLE.sub(_examples_title, obj.docstring.value)
            text = ROLE.sub(lambda m, o=obj: _role(o, m, loader.modules_collection), text)
            obj.docstring.value = text
