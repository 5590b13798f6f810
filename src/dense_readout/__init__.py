"""dense-readout: per-cell class evidence of GAP classifiers, for every class at once.

Example:
    >>> import timm, torch
    >>> from dense_readout import DenseReadout
    >>> model = timm.create_model("resnet18", num_classes=10).eval()
    >>> result = DenseReadout(model)(torch.randn(1, 3, 224, 224))
    >>> result.scores.shape
    torch.Size([1, 10, 7, 7])
"""

from .errors import (
    CheckpointError,
    DatasetError,
    DenseReadoutError,
    ImageLoadError,
    InputError,
    UnsupportedModelError,
)
from .readout import DenseReadout, ReadoutResult
from .adapters import ModelAdapter, register_adapter
from .aggregation import aggregate, register_aggregation

__version__ = "0.1.0"

__all__ = [
    "DenseReadout",
    "ReadoutResult",
    "ModelAdapter",
    "register_adapter",
    "aggregate",
    "register_aggregation",
    "DenseReadoutError",
    "InputError",
    "UnsupportedModelError",
    "ImageLoadError",
    "CheckpointError",
    "DatasetError",
    "__version__",
]

from .images import load_image  # noqa: E402
from .preprocessing import Preprocess  # noqa: E402
from .pretrained import load_pretrained  # noqa: E402

__all__ += ["load_image", "Preprocess", "load_pretrained"]
