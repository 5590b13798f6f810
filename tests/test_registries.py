"""Every registry of the package, iterated the way timm's tests iterate ``list_models()``.

All registries share one type (:class:`dense_readout.registry.Registry`); this file
imports every module of the package, so a registry added anywhere is found here.
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings

import pytest

import dense_readout
from dense_readout.errors import InputError
from dense_readout.registry import (
    Registry,
    RegistryOverwriteWarning,
    UnknownNameError,
    registries,
)

for _module in pkgutil.walk_packages(dense_readout.__path__, "dense_readout."):
    importlib.import_module(_module.name)

ALL = registries()

# The registries the package is known to have; a new one is welcome, a lost one is a bug.
EXPECTED_KINDS = {
    "model adapter",
    "aggregation rule",
    "method",
    "benchmark metric",
    "threshold cell score",
    "occlusion fill",
    "box layout",
    "recipe",
    "localization metric",
    "LRP family",  # one record per family (blocks, canonizers, composite): lrp.families
    "LRP composite",
    "compare benchmark metric",
    "export source",
    "pseudo-label ground truth",
}


def test_every_known_registry_exists():
    assert set(ALL) >= EXPECTED_KINDS, f"missing: {EXPECTED_KINDS - set(ALL)}"


@pytest.mark.parametrize("kind", sorted(ALL))
def test_registry_entries_resolve_by_name(kind):
    registry = ALL[kind]
    assert isinstance(registry, Registry)
    names = registry.names()
    assert names, f"registry {kind!r} is empty"
    assert names == sorted(set(names))
    assert len(registry) == len(names)
    for name in names:
        assert name in registry
        assert registry.get(name) is dict(registry.items())[name]


@pytest.mark.parametrize("kind", sorted(ALL))
def test_unknown_name_lists_the_known_ones(kind):
    registry = ALL[kind]
    with pytest.raises(UnknownNameError) as caught:
        registry.get("no-such-entry-xyz")
    message = str(caught.value)
    assert "no-such-entry-xyz" in message
    assert all(name in message for name in registry.names())
    assert isinstance(caught.value, InputError) and isinstance(caught.value, KeyError)


@pytest.mark.parametrize("kind", sorted(ALL))
def test_temporarily_restores_the_registry(kind):
    registry = ALL[kind]
    before = registry.items()
    first = registry.names()[0]
    sentinel = object()
    with registry.temporarily(first, sentinel):  # type: ignore[arg-type]
        assert registry.get(first) is sentinel
    with registry.temporarily("temporary-entry", sentinel):  # type: ignore[arg-type]
        assert "temporary-entry" in registry
    assert registry.items() == before


def test_overwrite_warns_and_unregister_removes():
    registry: Registry[int] = Registry("test-only registry", listed=False)
    assert "test-only registry" not in registries()
    registry.register("a", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry.register("a", 1)  # the same object again: no warning
    with pytest.warns(RegistryOverwriteWarning, match="'a'"):
        registry.register("a", 2)
    assert registry.get("a") == 2
    assert registry.unregister("a") == 2
    assert "a" not in registry and registry.names() == []
    with pytest.raises(UnknownNameError, match=r"known: \(none\)"):
        registry.unregister("a")
    with pytest.raises(InputError, match="non-empty string"):
        registry.register("", 3)

    @registry.register("decorated")
    def _entry() -> int:
        return 4

    assert registry.get("decorated")() == 4  # type: ignore[operator]


def test_two_registries_of_one_kind_are_refused():
    with pytest.raises(ValueError, match="exists already"):
        Registry("aggregation rule")
