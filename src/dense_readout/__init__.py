"""dense-readout: per-cell class evidence of GAP classifiers, for every class at once.

Example:
    >>> import timm, torch
    >>> from dense_readout import DenseReadout
    >>> model = timm.create_model("resnet18", num_classes=10).eval()
    >>> result = DenseReadout(model)(torch.randn(1, 3, 224, 224))
    >>> result.scores.shape
    torch.Size([1, 10, 7, 7])
"""

from .adapters import ModelAdapter, register_adapter
from .aggregation import aggregate, register_aggregation
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
from .readout import DenseReadout, ReadoutResult

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "DatasetError",
    "DenseReadout",
    "DenseReadoutError",
    "GradientsUnavailableError",
    "ImageLoadError",
    "InputError",
    "ModelAdapter",
    "ReadoutResult",
    "TrainingModeError",
    "UnsupportedModelError",
    "__version__",
    "aggregate",
    "register_adapter",
    "register_aggregation",
]

from .images import load_image
from .preprocessing import Preprocess
from .pretrained import load_pretrained

__all__ += ["Preprocess", "load_image", "load_pretrained"]
