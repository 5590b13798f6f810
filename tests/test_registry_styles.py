"""One way to register per kind of thing, hints that name the defining module, no import side effects.

The rule (see :mod:`dense_readout.registry`):

* a thing that carries its own ``name`` (an adapter or metric class, a box layout,
  a recipe, an LRP family) goes in with ``Registry.add(thing)``, through a public
  ``register_x(thing)`` that returns it;
* a thing without one (a function, a factory) goes in with
  ``Registry.register(name)``, through a public decorator ``@register_x(name)``.

Each registry's unknown-name hint names its ``register_x`` in the module that
defines it (not a re-export), and no module calls a registry's ``register``/``add``
except that function. A registry added with a sixth style (a hint without a
register function, a ``(name, obj)``-only function, a registry filled directly
from another module, an entry filed under a name that is not its own) fails here.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dense_readout
from conftest import REPO, subprocess_env
from dense_readout.errors import InputError, MissingDependencyError
from dense_readout.registry import Registry, UnknownNameError, registries

for _module in pkgutil.walk_packages(dense_readout.__path__, "dense_readout."):
    importlib.import_module(_module.name)

ALL = registries()
SRC = REPO / "src" / "dense_readout"
HINT_FUNCTION = re.compile(r"(dense_readout(?:\.\w+)*)\.(register_\w+)")


def _register_function(registry: Registry[Any]) -> tuple[str, Callable[..., Any]]:
    """The ``module.register_x`` the unknown-name error of ``registry`` names."""
    with pytest.raises(UnknownNameError) as caught:
        registry.get("no-such-entry-xyz")
    found = HINT_FUNCTION.findall(str(caught.value))
    assert len(found) == 1, f"{registry.kind}: the hint should name one register_* function"
    module, function = found[0]
    return module, getattr(importlib.import_module(module), function)


def _carries_name(entry: object) -> bool:
    return isinstance(getattr(entry, "name", None), str)


@pytest.fixture
def restored():
    """Put every registry's entries (and their order) back after the test."""
    saved = {kind: dict(registry._entries) for kind, registry in ALL.items()}
    yield
    for kind, registry in ALL.items():
        registry._entries.clear()
        registry._entries.update(saved[kind])


@pytest.mark.parametrize("kind", sorted(ALL))
def test_the_hint_names_a_register_function_in_its_defining_module(kind):
    module, function = _register_function(ALL[kind])
    assert function.__module__ == module, (
        f"{kind}: the hint names {module}.{function.__name__}, a re-export of "
        f"{function.__module__}.{function.__name__}; name where it is defined"
    )
    # and that module is where the registry itself lives
    assert any(value is ALL[kind] for value in vars(importlib.import_module(module)).values())


@pytest.mark.parametrize("kind", sorted(ALL))
def test_entries_of_one_registry_are_one_kind_and_named_by_their_own_name(kind):
    registry = ALL[kind]
    named = [_carries_name(entry) for _, entry in registry.items()]
    assert all(named) or not any(named), f"{kind} mixes named and nameless entries"
    for key, entry in registry.items():
        if _carries_name(entry):
            assert key == entry.name, f"{kind}: {entry!r} is filed as {key!r}"


@pytest.mark.parametrize("kind", sorted(ALL))
def test_the_register_function_has_the_style_of_its_kind(kind, restored):
    registry = ALL[kind]
    _, register = _register_function(registry)
    parameters = list(inspect.signature(register).parameters.values())
    key, entry = registry.items()[0]
    if _carries_name(entry):
        # things that carry their name: register_x(thing) -> thing, filed under thing.name
        assert parameters[0].name != "name"
        assert [p for p in parameters if p.default is p.empty] == parameters[:1]
        registry.unregister(key)
        assert register(entry) is entry
        assert registry.get(key) is entry
    else:
        # nameless functions: @register_x(name) returns the function, filed under name
        assert parameters[0].name == "name", f"{kind}: {register.__name__}(name, ...)"

        def probe(*args: Any, **kwargs: Any) -> None:
            return None

        assert register("probe-entry")(probe) is probe
        assert "probe-entry" in registry


def test_a_thing_is_only_filed_under_its_own_name():
    shapes: Registry[type] = Registry("test shape", listed=False)

    class Square:
        name = "square"

    assert shapes.add(Square) is Square and shapes.names() == ["square"]
    for call in (
        lambda: shapes.register("box", Square),
        lambda: shapes.register("box")(Square),
        lambda: shapes.temporarily("box", Square).__enter__(),
    ):
        with pytest.raises(InputError, match="'square' cannot be registered as 'box'"):
            call()
    assert shapes.names() == ["square"]

    class Nameless:
        pass

    with pytest.raises(InputError, match="needs a non-empty string 'name'"):
        shapes.add(Nameless)
    shapes.register("nameless", Nameless)  # a thing without a name is named at registration
    assert shapes.get("nameless") is Nameless


def _registry_variables() -> dict[str, str]:
    """``{variable: module}`` of every module-level ``X = Registry(...)`` in src."""
    found = {}
    for path in SRC.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            value = getattr(node, "value", None)
            if (
                isinstance(node, (ast.Assign, ast.AnnAssign))
                and isinstance(value, ast.Call)
                and isinstance(value.func, ast.Name)
                and value.func.id == "Registry"
            ):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                found.update({t.id: str(path) for t in targets if isinstance(t, ast.Name)})
    return found


def _registration_calls(path: Path, variables: set[str]) -> list[tuple[str, str, int]]:
    """``(registry, enclosing function, line)`` of each ``REGISTRY.register/add(...)`` call."""
    calls = []

    def visit(node: ast.AST, function: str) -> None:
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("register", "add")
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in variables
        ):
            calls.append((node.func.value.id, function, node.lineno))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for decorator in node.decorator_list:  # evaluated where the def stands
                visit(decorator, function)
            inner = node.name if function == "<module>" else function  # top-level name
            for child in node.body:
                visit(child, inner)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(path.read_text()), "<module>")
    return calls


def test_registries_are_filled_only_through_their_register_functions():
    variables = _registry_variables()
    assert len(variables) == len(ALL), "every listed registry is a module-level variable"
    wrong = []
    for path in SRC.rglob("*.py"):
        for variable, function, line in _registration_calls(path, set(variables)):
            here = str(path) == variables[variable]
            if not (here and function.startswith("register_")):
                wrong.append(f"{path.relative_to(SRC)}:{line} {variable} in {function}")
    assert not wrong, "register through the module's register_* function: " + "; ".join(wrong)


def test_the_scan_sees_a_direct_registration(tmp_path):
    # the static check above is only worth something if it finds the old styles
    module = tmp_path / "old_style.py"
    module.write_text(
        "SOURCES = Registry('x')\n"
        "@SOURCES.register('folder')\n"
        "def folder(root): ...\n"
        "def register_source(name):\n"
        "    return SOURCES.register(name)\n"
    )
    calls = _registration_calls(module, {"SOURCES"})
    assert calls == [("SOURCES", "<module>", 2), ("SOURCES", "register_source", 5)]


def test_lrp_method_is_listed_without_importing_dense_readout_lrp():
    code = (
        "import sys, dense_readout.compare as compare\n"
        "assert 'lrp' in compare.available_methods(), compare.available_methods()\n"
        "assert 'dense_readout.lrp' not in sys.modules\n"
        "assert 'zennit' not in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_lrp_method_imports_the_lrp_package_when_built():
    pytest.importorskip("zennit")
    code = (
        "import sys, timm, torch\n"
        "from dense_readout import DenseReadout\n"
        "from dense_readout.compare import MethodContext, resolve_method\n"
        "torch.manual_seed(0)\n"
        "model = timm.create_model('resnet18', num_classes=3).eval()\n"
        "context = MethodContext(model=model, readout=DenseReadout(model))\n"
        "method = resolve_method('lrp', context)\n"
        "assert 'dense_readout.lrp' in sys.modules\n"
        "from dense_readout.lrp import LRPReadout\n"
        "x = torch.randn(2, 3, 64, 64)\n"
        "expected = LRPReadout(model).class_map(x, torch.tensor([0, 2])).relevance[:, 0]\n"
        "assert torch.allclose(method(x, torch.tensor([0, 2])), expected)\n"
        "print(type(method).__name__, tuple(expected.shape))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["LRPMethod", "(2,", "64,", "64)"]


def test_lrp_method_without_zennit_names_the_lrp_extra(monkeypatch):
    from dense_readout.compare import MethodContext, resolve_method

    monkeypatch.setitem(sys.modules, "zennit", None)  # as if zennit were not installed
    with pytest.raises(MissingDependencyError, match=r"dense-readout\[lrp\]"):
        resolve_method("lrp", MethodContext(model=None, readout=None))  # type: ignore[arg-type]
