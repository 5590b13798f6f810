"""Exceptions raised by dense-readout.

Every error the package raises on bad input or an unsupported model derives from
:class:`DenseReadoutError`, so callers can catch one class. Messages name the
problem and the fix.
"""

from __future__ import annotations


class DenseReadoutError(Exception):
    """Base class of every error raised by dense-readout."""


class InputError(DenseReadoutError, ValueError):
    """An input tensor, target or argument is malformed (shape, dtype, NaN, range)."""


class UnsupportedModelError(DenseReadoutError, TypeError):
    """No adapter can apply this model's head per cell; pass ``features=``/``head=``."""


class ImageLoadError(DenseReadoutError, OSError):
    """An image file is missing, unreadable, truncated or in an unsupported mode."""


class CheckpointError(DenseReadoutError, OSError):
    """Pretrained weights are missing or do not match the model."""


class DatasetError(DenseReadoutError, ValueError):
    """A dataset root, annotation file or record is missing or malformed."""


class MissingDependencyError(DenseReadoutError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class TrainingModeError(InputError):
    """The model is in training mode (dropout, batch statistics); call ``model.eval()``."""


class GradientsUnavailableError(DenseReadoutError):
    """A gradient-based method was asked to run where autograd is disabled (inference mode)."""
