"""Class given by name or id → class index (the package's one resolver, re-exported here).

Example:
    >>> from dense_readout.attacks.targets import resolve_class
    >>> resolve_class("sombrero", ["tabby, tabby cat", "sombrero"])
    1
"""

from __future__ import annotations

from ..classes import resolve_class

__all__ = ["resolve_class"]
