"""The post-processing every compare method gets, and the images shown under the maps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError

__all__ = ["SIGNS", "check_sign", "display_images", "postprocess"]

SIGNS: dict[str, Callable[[Tensor], Tensor]] = {
    "positive": lambda maps: maps.clamp(min=0),
    "absolute": torch.abs,
    "all": lambda maps: maps,
}
"""Sign handling by name: ``positive`` (ReLU), ``absolute`` or ``all`` (keep the sign)."""


def check_sign(sign: str) -> None:
    """Raise :class:`InputError` unless ``sign`` is one of :data:`SIGNS`."""
    if sign not in SIGNS:
        raise InputError(f"sign must be one of {sorted(SIGNS)}, got {sign!r}.")


def postprocess(raw: Tensor, size: tuple[int, int], sign: str = "positive") -> Tensor:
    """The common post-processing: sign handling → bilinear resize → min–max per image.

    Example:
        >>> import torch
        >>> from dense_readout.compare import postprocess
        >>> maps = postprocess(torch.tensor([[[-1.0, 2.0], [0.0, 4.0]]]), (4, 4))
        >>> tuple(maps.shape), float(maps.min()), float(maps.max())
        ((1, 4, 4), 0.0, 1.0)
    """
    check_sign(sign)
    maps = torch.as_tensor(raw).detach().float().cpu()
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3:
        raise InputError(f"A method returned maps of shape {tuple(maps.shape)}; expected B×h×w.")
    maps = SIGNS[sign](maps)
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(
            maps.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False
        )[:, 0]
    low = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / span.clamp(min=1e-12), torch.zeros_like(maps))


def display_images(inputs: Tensor, display: Any = None) -> np.ndarray:
    """``B×H×W×3`` RGB in [0, 1] for the figure.

    ``display`` is a function mapping the batch to RGB, the RGB images themselves
    (``B×H×W×3`` or ``B×3×H×W``), or ``None`` (per-image min–max of ``inputs``).

    Example:
        >>> import torch
        >>> images = display_images(torch.randn(2, 3, 8, 8))
        >>> images.shape, float(images.min()), float(images.max())
        ((2, 8, 8, 3), 0.0, 1.0)
    """
    if display is None:
        images = inputs.detach().float().cpu()
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        span = (images.amax(dim=(1, 2, 3), keepdim=True) - low).clamp(min=1e-12)
        images = (images - low) / span
    elif callable(display):
        images = torch.as_tensor(display(inputs.detach().cpu())).float()
    else:
        images = torch.as_tensor(np.asarray(display)).float()
    if images.dim() == 4 and images.shape[1] == 3:
        images = images.permute(0, 2, 3, 1)
    if images.dim() != 4 or images.shape[-1] != 3:
        raise InputError(f"display images must be B×H×W×3 or B×3×H×W, got {tuple(images.shape)}.")
    return images.clamp(0, 1).numpy()
