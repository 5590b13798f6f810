"""Class given by name or id → class index, with errors that list close names."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from ..errors import InputError

__all__ = ["resolve_class"]


def resolve_class(
    spec: str | int, class_names: Sequence[str] | None, num_classes: int | None = None
) -> int:
    """Index of the class ``spec``: an id (``808``, ``"808"``) or a name.

    A name matches any comma-separated synonym of a class description, ignoring case
    (``"sombrero"`` and ``"Sombrero"`` match ``"sombrero"``); a unique prefix of a
    synonym matches too.

    Example:
        >>> names = ["tabby, tabby cat", "tiger cat", "sombrero"]
        >>> resolve_class("Tabby cat", names), resolve_class("2", names), resolve_class(1, names)
        (0, 2, 1)
        >>> resolve_class("sombero", names)
        Traceback (most recent call last):
        ...
        dense_readout.errors.InputError: Unknown class 'sombero'. Did you mean: sombrero? Give a class name or an id in 0..2.
    """
    count = num_classes if num_classes is not None else len(class_names or ())
    if isinstance(spec, bool):
        raise InputError("A class must be a name or an integer id, not a bool.")
    text = str(spec).strip()
    if isinstance(spec, int) or text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < count:
            raise InputError(f"Class id {index} is out of range: valid ids are 0..{count - 1}.")
        return index
    synonyms = _synonyms(class_names or ())
    wanted = text.lower()
    exact = sorted({i for name, i in synonyms if name == wanted})
    if len(exact) == 1:
        return exact[0]
    prefixed = sorted({i for name, i in synonyms if name.startswith(wanted)})
    if not exact and len(prefixed) == 1:
        return prefixed[0]
    candidates = exact or prefixed
    if candidates:
        listed = ", ".join(f"{i} ({class_names[i]})" for i in candidates[:8])  # type: ignore[index]
        raise InputError(f"Class name {text!r} is ambiguous: {listed}. Give the id instead.")
    close = difflib.get_close_matches(wanted, [name for name, _ in synonyms], n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise InputError(f"Unknown class {text!r}.{hint} Give a class name or an id in 0..{count - 1}.")


def _synonyms(class_names: Sequence[str]) -> list[tuple[str, int]]:
    return [
        (part.strip().lower(), index)
        for index, name in enumerate(class_names)
        for part in name.split(",")
        if part.strip()
    ]
