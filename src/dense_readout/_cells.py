"""Shared plumbing of the integrations: a hooked layer output → readout scores.

Captum's and pytorch-grad-cam's conventions both hook the module whose output
is the grid; these helpers turn that output into ``Z`` (with or without the
head's bias) and check that the hooked layer really is the grid the head reads.
Private: the public entry points are :mod:`dense_readout.captum`,
:mod:`dense_readout.gradcam` and :mod:`dense_readout.compare`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .adapters import ModelAdapter
from .errors import InputError

__all__ = [
    "grid_from_layer_output",
    "head_bias",
    "head_channels",
    "head_is_affine",
    "require_affine",
    "scores_from_grid",
]


def head_is_affine(adapter: ModelAdapter) -> bool:
    """True when the pointwise head is affine per cell, so ``Z = W h + b`` has a bias ``b``."""
    return adapter.head_is_affine()


def head_bias(adapter: ModelAdapter, grid: Tensor) -> Tensor:
    """The head's bias ``b`` (``K``) as the readout of an all-zero cell.

    Raises :class:`InputError` when the head is not affine: then "the bias" is
    not defined (a LayerNorm or MLP head maps 0 to an input-dependent point).
    """
    require_affine(adapter)
    zero = grid.new_zeros(1, grid.shape[1], *(1,) * (grid.dim() - 2))
    with torch.no_grad():
        return adapter.readout(zero).flatten(1)[0]


def require_affine(adapter: ModelAdapter) -> None:
    """Raise :class:`InputError` unless the head is affine per cell (has a bias to remove)."""
    if not head_is_affine(adapter):
        raise InputError(
            f"include_bias=False needs an affine head, but the {adapter.name!r} adapter's head "
            "is nonlinear per cell (LayerNorm/MLP), so it has no separable bias. Keep "
            "include_bias=True for this model."
        )


def grid_from_layer_output(
    output: object,
    reshape_transform: Callable[[Tensor], Tensor] | None,
    channels: int | None = None,
    spatial_dims: int = 2,
) -> Tensor:
    """A hooked layer output as a ``B×C×h×w`` (``B×C×t×h×w``) grid, checked against the head."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, Tensor):
        raise InputError(f"The target layer returned {type(output).__name__}, not a tensor.")
    grid = reshape_transform(output) if reshape_transform is not None else output
    if grid.dim() != 2 + spatial_dims:
        axes = "h×w" if spatial_dims == 2 else "t×h×w"
        raise InputError(
            f"The target layer's output has shape {tuple(output.shape)} (after reshape_transform: "
            f"{tuple(grid.shape)}), not a B×C×{axes} grid. Leave target_layers/reshape_transform at "
            "their defaults (taken from the model adapter) or pass a reshape_transform."
        )
    if channels is not None and grid.shape[1] != channels:
        raise InputError(
            f"The target layer's grid has {grid.shape[1]} channels but the classifier head reads "
            f"{channels}: the dense readout is only defined on the layer the head is applied "
            "to. Leave target_layers at its default (the adapter's target_layer())."
        )
    return grid


def scores_from_grid(adapter: ModelAdapter, grid: Tensor, include_bias: bool = True) -> Tensor:
    """``Z`` (``B×K×h×w`` or ``B×K×t×h×w``) of a grid; ``include_bias=False`` gives ``Z − b``."""
    scores = adapter.readout(grid)
    if not include_bias:
        scores = scores - head_bias(adapter, grid).view(1, -1, *(1,) * (grid.dim() - 2))
    return scores


def head_channels(adapter: ModelAdapter) -> int | None:
    """Input width of the pointwise head, when the adapter can tell."""
    for module in adapter.head_modules():
        if isinstance(module, torch.nn.Linear):
            return int(module.in_features)
    return None
