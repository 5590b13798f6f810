"""Input checks shared by the readout and the integrations.

They turn the failures torch would report from deep inside a model (or not at
all, e.g. NaN inputs giving NaN maps) into one clear message with the fix.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .errors import InputError, TrainingModeError

__all__ = ["check_eval_mode", "check_images", "check_targets"]


def check_eval_mode(model: nn.Module, purpose: str = "the readout") -> None:
    """Raise :class:`TrainingModeError` if ``model`` is in training mode.

    Dropout and batch statistics would make ``purpose`` random and inconsistent with
    the model's logits. One message everywhere; ``DenseReadoutCAM`` alone follows
    pytorch-grad-cam's convention and switches the model to eval itself.

    Example:
        >>> from torch import nn
        >>> check_eval_mode(nn.Linear(2, 2).eval())  # passes silently
        >>> check_eval_mode(nn.Linear(2, 2).train(), "LRP")
        Traceback (most recent call last):
        ...
        dense_readout.errors.TrainingModeError: The model is in training mode: dropout and batch-norm statistics would make LRP random and inconsistent with the logits. Call model.eval() first.
    """
    if model.training:
        raise TrainingModeError(
            "The model is in training mode: dropout and batch-norm statistics would make "
            f"{purpose} random and inconsistent with the logits. Call model.eval() first."
        )


def check_images(inputs: object, channels: int = 3, spatial_dims: int = 2) -> Tensor:
    """Check a model input batch.

    A finite floating tensor of shape ``B×channels×H×W`` (``B×channels×T×H×W`` for
    video/volume models, ``spatial_dims=3``).

    Example:
        >>> import torch
        >>> from dense_readout.errors import InputError
        >>> from dense_readout.validation import check_images
        >>> x = torch.zeros(2, 3, 32, 32)
        >>> check_images(x) is x  # a valid batch comes back unchanged
        True
        >>> tuple(check_images(torch.zeros(1, 3, 4, 32, 32), spatial_dims=3).shape)  # a clip
        (1, 3, 4, 32, 32)
        >>> try:
        ...     check_images(torch.zeros(1, 32, 32, 3))
        ... except InputError as error:
        ...     print(error)
        Expected 3 input channels (dim 1), got 32 in shape (1, 32, 32, 3). It looks channels-last: use x.permute(0, 3, 1, 2).
    """
    axes = "H×W" if spatial_dims == 2 else "T×H×W"
    if not isinstance(inputs, Tensor):
        raise InputError(
            f"Expected a torch.Tensor of shape B×{channels}×{axes}, got {type(inputs).__name__}. "
            "Convert images with dense_readout.load_image(...) and the model's preprocessing."
        )
    if inputs.dim() != 2 + spatial_dims:
        hint = (
            " Add a batch dimension with x.unsqueeze(0)."
            if inputs.dim() == 1 + spatial_dims
            else ""
        )
        raise InputError(
            f"Expected a {2 + spatial_dims}-D batch B×{channels}×{axes}, got shape "
            f"{tuple(inputs.shape)}.{hint}"
        )
    if inputs.shape[1] != channels:
        hint = ""
        if inputs.shape[-1] == channels:
            hint = " It looks channels-last: use x.permute(0, 3, 1, 2)."
        elif inputs.shape[1] in (1, 4):
            hint = " Convert grayscale/RGBA images to RGB first (load_image does this)."
        raise InputError(
            f"Expected {channels} input channels (dim 1), got {inputs.shape[1]} "
            f"in shape {tuple(inputs.shape)}.{hint}"
        )
    if not inputs.is_floating_point():
        raise InputError(
            f"Expected a floating-point tensor, got {inputs.dtype}. Scale uint8 images to "
            "[0, 1] with x.float() / 255 and normalise them with the model's mean/std."
        )
    if inputs.numel() == 0:
        raise InputError(f"The input batch is empty (shape {tuple(inputs.shape)}).")
    if not torch.isfinite(inputs).all():
        bad = int((~torch.isfinite(inputs)).sum())
        raise InputError(
            f"The input contains {bad} NaN/Inf values; the readout would be NaN. "
            "Check the image loading and normalisation."
        )
    return inputs


def check_targets(
    target: int | Sequence[int] | Tensor | None, batch_size: int, num_classes: int
) -> Tensor:
    """Normalise a target spec to a ``B`` int64 tensor of class indices in range.

    Accepts an int (broadcast), a sequence or a 0-/1-D tensor of length B.

    Example:
        >>> import torch
        >>> from dense_readout.errors import InputError
        >>> from dense_readout.validation import check_targets
        >>> check_targets(4, batch_size=3, num_classes=10).tolist()  # one int for every image
        [4, 4, 4]
        >>> check_targets(torch.tensor([[1], [2]]), batch_size=2, num_classes=10).tolist()
        [1, 2]
        >>> try:
        ...     check_targets([1, 10], batch_size=2, num_classes=10)
        ... except InputError as error:
        ...     print(error)
        target [1, 10] out of range: the model has 10 classes (valid indices 0..9).
    """
    if target is None:
        raise InputError("A target class is required here (an int or one per image).")
    if isinstance(target, bool):
        raise InputError("target must be a class index, not a bool.")
    if isinstance(target, int):
        index = torch.full((batch_size,), target, dtype=torch.long)
    else:
        try:
            index = torch.as_tensor(target)
        except (TypeError, ValueError) as error:
            raise InputError(f"Cannot read target {target!r} as class indices: {error}") from None
        if index.is_floating_point() or index.dtype == torch.bool:
            raise InputError(f"target must hold integer class indices, got dtype {index.dtype}.")
        index = index.long().flatten().cpu()
        if index.numel() == 1:
            index = index.expand(batch_size).clone()
        elif index.numel() != batch_size:
            raise InputError(
                f"Got {index.numel()} targets for a batch of {batch_size} images; "
                "give one target per image or a single int for all."
            )
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_classes):
        raise InputError(
            f"target {index.tolist()} out of range: the model has {num_classes} classes "
            f"(valid indices 0..{num_classes - 1})."
        )
    return index
