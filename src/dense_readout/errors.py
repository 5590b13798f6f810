"""Exceptions raised by dense-readout.

Every error the package raises on bad input or an unsupported model derives from
:class:`DenseReadoutError`, so callers can catch one class. Messages name the
problem and the fix.
"""

from __future__ import annotations


class DenseReadoutError(Exception):
    """Base class of every error raised by dense-readout.

    Example:
        >>> import timm, torch
        >>> from dense_readout import DenseReadout, DenseReadoutError
        >>> model = timm.create_model("resnet18", num_classes=3).eval()
        >>> try:
        ...     DenseReadout(model)(torch.randn(3, 64, 64))  # no batch axis
        ... except DenseReadoutError as error:
        ...     print(type(error).__name__)
        InputError
    """


class InputError(DenseReadoutError, ValueError):
    """An input tensor, target or argument is malformed (shape, dtype, NaN, range).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from dense_readout import DenseReadout, InputError
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> try:
        ...     DenseReadout(model.eval())(torch.full((1, 3, 16, 16), float("nan")))
        ... except InputError as error:
        ...     print(isinstance(error, ValueError))
        True
    """


class UnsupportedModelError(DenseReadoutError, TypeError):
    """No adapter can apply this model's head per cell; pass ``features=``/``head=``.

    Example:
        >>> from torch import nn
        >>> from dense_readout import DenseReadout, UnsupportedModelError
        >>> try:
        ...     DenseReadout(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2)).eval())
        ... except UnsupportedModelError as error:
        ...     print("features=" in str(error))
        True
    """


class ImageLoadError(DenseReadoutError, OSError):
    """An image file is missing, unreadable, truncated or in an unsupported mode.

    Example:
        >>> from dense_readout import ImageLoadError, load_image
        >>> try:
        ...     load_image("no-such-photo.jpg")
        ... except ImageLoadError as error:
        ...     print(type(error).__name__, isinstance(error, OSError))
        ImageLoadError True
    """


class CheckpointError(DenseReadoutError, OSError):
    """Pretrained weights are missing or do not match the model.

    Example:
        >>> from dense_readout import CheckpointError, load_pretrained
        >>> try:
        ...     load_pretrained("resnet18")  # no embedded weights, and nothing is downloaded
        ... except CheckpointError as error:
        ...     print("checkpoint=" in str(error), isinstance(error, OSError))
        True True
    """


class DatasetError(DenseReadoutError, ValueError):
    """A dataset root, annotation file or record is missing or malformed.

    Example:
        >>> from dense_readout import DatasetError
        >>> from dense_readout.evaluation.datasets import read_synset_mapping
        >>> try:
        ...     read_synset_mapping("no-such-folder/LOC_synset_mapping.txt")
        ... except DatasetError as error:
        ...     print("not found" in str(error), isinstance(error, ValueError))
        True True
    """


class MissingDependencyError(DenseReadoutError, ImportError):
    """An optional dependency is not installed; the message names the extra to install.

    Example:
        >>> from dense_readout.errors import MissingDependencyError
        >>> from dense_readout._optional import require
        >>> try:
        ...     require("no_such_module_xyz", extra="viz", purpose="figures")
        ... except MissingDependencyError as error:
        ...     print("dense-readout[viz]" in str(error), isinstance(error, ImportError))
        True True
    """


class TrainingModeError(InputError):
    """The model is in training mode (dropout, batch statistics); call ``model.eval()``.

    Example:
        >>> import timm, torch
        >>> from dense_readout import DenseReadout, TrainingModeError
        >>> model = timm.create_model("resnet18", num_classes=3)  # still in training mode
        >>> try:
        ...     DenseReadout(model)(torch.randn(1, 3, 64, 64))
        ... except TrainingModeError as error:
        ...     print("model.eval()" in str(error))
        True
    """


class GradientsUnavailableError(DenseReadoutError):
    """A gradient-based method was asked to run where autograd is disabled (inference mode).

    Example:
        >>> import timm, torch
        >>> from dense_readout.compare import compare
        >>> model = timm.create_model("resnet18", num_classes=3).eval()
        >>> with torch.inference_mode():  # autograd cannot record here
        ...     result = compare(model, torch.randn(1, 3, 64, 64), 0, methods=["dense-readout", "gradcam"])
        >>> sorted(result.maps), result.failures["gradcam"].split(":")[0]
        (['dense-readout'], 'GradientsUnavailableError')
    """


class ExactnessWarning(UserWarning):
    """The model's structure looked exact, but mean(Z) missed the logits on this input.

    :class:`~dense_readout.DenseReadout` then returns ``exact=False`` with the measured
    gap in ``exactness_note`` instead of a decomposition it cannot vouch for.

    Example:
        >>> import warnings
        >>> from dense_readout.errors import ExactnessWarning
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warnings.warn("mean(Z) misses the logits by 0.4", ExactnessWarning)
        >>> caught[0].category.__name__
        'ExactnessWarning'
    """
