"""Adversarial attacks watched cell by cell (paper A.9, Fig. 11).

:func:`pgd` runs an L∞ PGD attack and records the dense readout at every
iteration; :func:`resolve_class` turns a class name or id into an index;
:mod:`dense_readout.attacks.figures` draws Fig. 11 and the label-grid animation.

Example:
    >>> from dense_readout.attacks import resolve_class
    >>> resolve_class("sombrero", ["tabby, tabby cat", "sombrero"])
    1
"""

from .pgd import DEFAULT_ALPHA, DEFAULT_EPS, DEFAULT_STEPS, AttackTrace, pgd
from .targets import resolve_class

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_EPS",
    "DEFAULT_STEPS",
    "AttackTrace",
    "pgd",
    "resolve_class",
]
