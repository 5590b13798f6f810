"""Optional dependencies: import them on use, with an error that names the extra to install.

matplotlib (figures) and the embedded weights packages are extras, not hard
dependencies: the readout itself needs only torch, timm and numpy.

Example:
    >>> from dense_readout._optional import require
    >>> require("math", extra="none", purpose="arithmetic").sqrt(4.0)
    2.0
    >>> require("no_such_module_xyz", extra="viz", purpose="figures")
    Traceback (most recent call last):
    ...
    dense_readout.errors.MissingDependencyError: figures need the Python package 'no_such_module_xyz', which is not installed: pip install 'dense-readout[viz]'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

__all__ = ["require", "require_matplotlib"]


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.split(".")[0]
        if error.name is not None and error.name != top and not error.name.startswith(top + "."):
            raise  # the module exists but one of *its* imports failed: show that
        raise MissingDependencyError(
            f"{purpose} need the Python package {top!r}, which is not installed: "
            f"pip install 'dense-readout[{extra}]'"
        ) from None


def require_matplotlib() -> ModuleType:
    """matplotlib, or :class:`MissingDependencyError` naming the ``viz`` extra."""
    return require("matplotlib", extra="viz", purpose="figures")
