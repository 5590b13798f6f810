"""A class given by name or id → its index: one set of matching rules for every entry point.

Used by ``dense-readout explain --class``, ``dense-readout attack --target`` and
:func:`dense_readout.attacks.pgd` callers. A class description may hold several
comma-separated synonyms (ImageNet's ``"tabby, tabby cat"``). In order:

1. an integer id (``808`` or ``"808"``), checked against the number of classes;
2. a synonym or the whole description, ignoring case;
3. a unique prefix of a synonym (``"egypt"`` → ``"Egyptian cat"``);
4. a unique part of a description (``"bell"`` → ``"cowboy hat, ten-gallon hat, bell..."``).

Several matches at one step are refused with the candidates listed; no match
suggests close names.

Example:
    >>> from dense_readout.classes import resolve_class
    >>> names = ["tabby, tabby cat", "tiger cat", "Egyptian cat"]
    >>> resolve_class("Tabby Cat", names), resolve_class("2", names), resolve_class("egypt", names)
    (0, 2, 2)
    >>> resolve_class("cat", names, option="--class")
    Traceback (most recent call last):
    ...
    dense_readout.errors.InputError: --class cat matches 3 classes (tabby (0), tiger cat (1), Egyptian cat (2)); give the full name or the id.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from .errors import InputError

__all__ = ["resolve_class"]


def resolve_class(
    spec: str | int,
    class_names: Sequence[str] | None,
    num_classes: int | None = None,
    *,
    option: str | None = None,
) -> int:
    """Index of the class ``spec`` (an id or a name; rules in :mod:`dense_readout.classes`).

    Args:
        spec: ``808``, ``"808"``, ``"sombrero"``, ``"Tabby cat"``, ``"egypt"``.
        class_names: the model's class descriptions, or None (then only ids work).
        num_classes: number of classes (default: ``len(class_names)``).
        option: the command-line option the value came from, named in errors.

    Example:
        >>> from dense_readout.classes import resolve_class
        >>> resolve_class("sombero", ["tabby, tabby cat", "sombrero"])
        Traceback (most recent call last):
        ...
        dense_readout.errors.InputError: Class 'sombero': no class of this name. Did you mean: sombrero? Give a class name or an id in 0..1.
    """
    count = num_classes if num_classes is not None else len(class_names or ())
    if isinstance(spec, bool):
        raise InputError("A class must be a name or an integer id, not a bool.")
    text = str(spec).strip()
    who = f"{option} {text}" if option else f"Class {text!r}"
    if isinstance(spec, int) or text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < count:
            raise InputError(f"{who}: out of range, ids go from 0 to {count - 1}.")
        return index
    if not class_names:
        raise InputError(f"{who}: this model has no class names; give an id.")
    wanted = text.lower()
    synonyms = _synonyms(class_names)
    steps = (
        sorted({i for name, i in synonyms if name == wanted}),
        sorted({i for name, i in synonyms if name.startswith(wanted)}),
        [i for i, name in enumerate(class_names) if wanted in name.lower()],
    )
    for found in steps:
        if len(found) == 1:
            return found[0]
        if found:
            listed = ", ".join(f"{class_names[i].split(',')[0]} ({i})" for i in found[:8])
            more = ", ..." if len(found) > 8 else ""
            raise InputError(
                f"{who} matches {len(found)} classes ({listed}{more}); "
                "give the full name or the id."
            )
    unique = list(dict.fromkeys(name for name, _ in synonyms))
    close = difflib.get_close_matches(wanted, unique, n=3, cutoff=0.75)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise InputError(
        f"{who}: no class of this name.{hint} Give a class name or an id in 0..{count - 1}."
    )


def _synonyms(class_names: Sequence[str]) -> list[tuple[str, int]]:
    return [
        (part.strip().lower(), index)
        for index, name in enumerate(class_names)
        for part in [name, *name.split(",")]
        if part.strip()
    ]
