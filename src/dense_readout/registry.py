"""One registry type for every pluggable name in dense-readout.

Adapters, aggregation rules, compare methods, metrics, LRP composites and families,
box layouts, fills, recipes … are all kept in a :class:`Registry`. There are two
ways in, one per kind of thing:

* a thing that carries its own ``name`` (a class with a ``name`` attribute, a record
  such as a box layout or an LRP family) is added under that name with
  :meth:`Registry.add` (also a class decorator); the registry refuses to file it
  under any other name;
* a thing without one (a plain function, a factory) is registered under a name given
  with :meth:`Registry.register` (``@registry.register("name")``).

Each registry's public ``register_*`` function is one of these two calls, defined in
the module that creates the registry; the unknown-name error's hint names it there.
Look up with an error that lists the known names, list with :meth:`Registry.names`,
and undo with :meth:`Registry.unregister` or the :meth:`Registry.temporarily`
context manager (for tests and examples that must not leave a name behind).
Re-registering a name warns with :class:`RegistryOverwriteWarning` and replaces the
entry.

Every registry created in the package is listed by :func:`registries`, the way
timm's ``list_models()`` lists every model, so a test can iterate all of them.

Example:
    >>> from dense_readout.registry import Registry
    >>> colours = Registry("colour", listed=False)
    >>> @colours.register("red")
    ... def red():
    ...     return (1.0, 0.0, 0.0)
    >>> colours.names(), colours.get("red")()
    (['red'], (1.0, 0.0, 0.0))
    >>> with colours.temporarily("blue", lambda: (0.0, 0.0, 1.0)):
    ...     colours.names()
    ['blue', 'red']
    >>> colours.names()
    ['red']
    >>> colours.get("green")
    Traceback (most recent call last):
    ...
    dense_readout.registry.UnknownNameError: Unknown colour 'green'; known: red.

    Things that carry their name are added, not named again:

    >>> shapes = Registry("shape", listed=False)
    >>> @shapes.add
    ... class Square:
    ...     name = "square"
    >>> shapes.names(), shapes.get("square") is Square
    (['square'], True)
    >>> shapes.register("box", Square)
    Traceback (most recent call last):
    ...
    dense_readout.errors.InputError: The shape named 'square' cannot be registered as 'box': a thing that carries its name is registered under it, with Registry.add(thing).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar, overload

from .errors import InputError

__all__ = ["Registry", "RegistryOverwriteWarning", "UnknownNameError", "registries"]

T = TypeVar("T")

_ALL: dict[str, Registry[Any]] = {}


class UnknownNameError(InputError, KeyError):
    """A name was looked up that no registry entry has; the message lists the known ones.

    Example:
        >>> import torch
        >>> from dense_readout.aggregation import aggregate
        >>> from dense_readout.registry import UnknownNameError
        >>> try:
        ...     aggregate(torch.zeros(1, 1, 2, 2), "median-of-nothing")
        ... except UnknownNameError as error:
        ...     print("mean" in str(error))
        True
    """

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class RegistryOverwriteWarning(UserWarning):
    """A name was registered twice; the newer entry replaced the older one.

    Example:
        >>> import warnings
        >>> from dense_readout.registry import Registry, RegistryOverwriteWarning
        >>> rules = Registry("example rule", listed=False)
        >>> _ = rules.register("one")(lambda: 1)
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     _ = rules.register("one")(lambda: 2)
        >>> caught[0].category is RegistryOverwriteWarning, rules.get("one")()
        (True, 2)
    """


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` is used in messages, e.g. ``"aggregation rule"``).

    ``hint`` is appended to the unknown-name error (e.g. how to register your own).
    ``listed=False`` keeps a private registry (a test's, a user's) out of
    :func:`registries`.

    Example:
        >>> from dense_readout.registry import Registry
        >>> rules = Registry("example rule", listed=False)
        >>> @rules.register("double")
        ... def double(x):
        ...     return 2 * x
        >>> rules.names(), rules.get("double")(21)
        (['double'], 42)
    """

    def __init__(self, kind: str, *, hint: str = "", listed: bool = True) -> None:
        self.kind = kind
        self.hint = hint
        self._entries: dict[str, T] = {}
        if listed:
            if kind in _ALL:
                raise ValueError(f"A registry of kind {kind!r} exists already.")
            _ALL[kind] = self

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: Any = None) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator that does.

        For things without a name of their own (functions, factories); a thing whose
        ``name`` attribute differs from ``name`` is refused (use :meth:`add`).
        """
        if obj is None:

            def decorator(entry: T) -> T:
                self._add(name, entry)
                return entry

            return decorator
        self._add(name, obj)
        return obj

    def add(self, entry: T) -> T:
        """Register ``entry`` under its own ``entry.name`` and return it (a class decorator, too).

        The one way in for things that carry their name: classes with a ``name``
        attribute (adapters, metrics) and records (box layouts, recipes, LRP families).
        """
        name = getattr(entry, "name", None)
        if not isinstance(name, str) or not name:
            raise InputError(
                f"A {self.kind} added with Registry.add needs a non-empty string 'name' "
                f"attribute, {entry!r} has {name!r}; set it, or register a nameless "
                "function with Registry.register(name)."
            )
        self._add(name, entry)
        return entry

    def _check(self, name: str, entry: T) -> None:
        if not isinstance(name, str) or not name:
            raise InputError(f"A {self.kind} needs a non-empty string name, got {name!r}.")
        own = getattr(entry, "name", None)
        # one name per thing: an entry that names itself is only ever found by that name
        if isinstance(own, str) and own != name:
            raise InputError(
                f"The {self.kind} named {own!r} cannot be registered as {name!r}: a thing "
                "that carries its name is registered under it, with Registry.add(thing)."
            )

    def _add(self, name: str, entry: T) -> None:
        self._check(name, entry)
        if name in self._entries and self._entries[name] is not entry:
            warnings.warn(
                f"{self.kind} {name!r} was registered already; the new entry replaces it.",
                RegistryOverwriteWarning,
                stacklevel=4,
            )
        self._entries[name] = entry

    def get(self, name: str) -> T:
        """The entry registered under ``name``; :class:`UnknownNameError` lists the known names."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            known = ", ".join(self.names()) or "(none)"
            hint = f" {self.hint}" if self.hint else ""
            raise UnknownNameError(f"Unknown {self.kind} {name!r}; known: {known}.{hint}") from None

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its entry."""
        entry = self.get(name)
        del self._entries[name]
        return entry

    @contextmanager
    def temporarily(self, name: str, obj: T) -> Iterator[T]:
        """Register ``obj`` under ``name`` for the ``with`` block, then restore what was there."""
        self._check(name, obj)
        previous = self._entries.get(name)
        self._entries[name] = obj
        try:
            yield obj
        finally:
            if previous is None:
                self._entries.pop(name, None)
            else:
                self._entries[name] = previous

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs in registration order."""
        return list(self._entries.items())

    def __getitem__(self, name: str) -> T:
        """``registry[name]``, as the dicts the registries replaced allowed; same as :meth:`get`."""
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"


def registries() -> dict[str, Registry[Any]]:
    """Every registry created so far, by kind (import a subpackage to create its registries).

    Example:
        >>> import dense_readout.aggregation
        >>> from dense_readout.registry import registries
        >>> "aggregation rule" in registries()
        True
    """
    return dict(_ALL)
