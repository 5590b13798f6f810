"""dense-readout: per-cell class evidence of GAP classifiers, for every class at once.

The public names are imported on first use (PEP 562), so ``import dense_readout``
alone, and the command line's ``--help``, do not import torch.

Example:
    >>> import timm, torch
    >>> from dense_readout import DenseReadout
    >>> model = timm.create_model("resnet18", num_classes=10).eval()
    >>> result = DenseReadout(model)(torch.randn(1, 3, 224, 224))
    >>> result.scores.shape
    torch.Size([1, 10, 7, 7])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    CheckpointError,
    DatasetError,
    DenseReadoutError,
    GradientsUnavailableError,
    ImageLoadError,
    InputError,
    TrainingModeError,
    UnsupportedModelError,
)

if TYPE_CHECKING:  # the lazy names below, for type checkers and IDEs
    from .adapters import ModelAdapter, register_adapter
    from .aggregation import aggregate, register_aggregation
    from .images import load_image
    from .preprocessing import Preprocess
    from .pretrained import load_pretrained
    from .readout import DenseReadout, ReadoutResult

__version__ = "0.1.0"

# public name -> the submodule that defines it (imported on first access)
_LAZY = {
    "ModelAdapter": "adapters",
    "register_adapter": "adapters",
    "aggregate": "aggregation",
    "register_aggregation": "aggregation",
    "DenseReadout": "readout",
    "ReadoutResult": "readout",
    "load_image": "images",
    "Preprocess": "preprocessing",
    "load_pretrained": "pretrained",
}

__all__ = [
    "CheckpointError",
    "DatasetError",
    "DenseReadout",
    "DenseReadoutError",
    "GradientsUnavailableError",
    "ImageLoadError",
    "InputError",
    "ModelAdapter",
    "Preprocess",
    "ReadoutResult",
    "TrainingModeError",
    "UnsupportedModelError",
    "__version__",
    "aggregate",
    "load_image",
    "load_pretrained",
    "register_adapter",
    "register_aggregation",
]


def __getattr__(name: str) -> Any:
    """A public name from its submodule, or a submodule (``dense_readout.readout``)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name.startswith("__"):  # probes such as __wrapped__ are never submodules
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise  # the submodule exists but one of its imports is missing
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
