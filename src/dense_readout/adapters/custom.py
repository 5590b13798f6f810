"""Adapter for a custom network given as ``features=`` and ``head=``."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from ..errors import InputError, UnsupportedModelError
from .base import ModelAdapter


class CustomAdapter(ModelAdapter):
    """``features(x) -> B×C×h×w``; ``head`` is applied after average pooling and per cell.

    The image logits are ``head(mean_uv F)``: the model as a GAP classifier.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from dense_readout import DenseReadout
        >>> body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.ReLU())
        >>> head = nn.Linear(8, 5)
        >>> model = nn.Sequential(body, head).eval()
        >>> result = DenseReadout(model, features=body, head=head)(torch.randn(2, 3, 32, 32))
        >>> tuple(result.scores.shape), result.exact
        ((2, 5, 8, 8), True)
        >>> bool(torch.allclose(result.scores.mean(dim=(2, 3)), result.logits, atol=1e-5))
        True
    """

    name = "custom"

    def __init__(
        self,
        model: nn.Module,
        *,
        features: Callable[[Tensor], Tensor],
        head: nn.Module,
    ) -> None:
        super().__init__(model)
        if not callable(features):
            raise InputError("features= must be a callable mapping inputs to a B×C×h×w grid.")
        if not isinstance(head, nn.Module):
            raise InputError("head= must be an nn.Module applied to B×C feature vectors.")
        self.features = features
        self.head = head

    def forward_features(self, inputs: Tensor) -> Tensor:
        grid = self.features(inputs)
        if not isinstance(grid, Tensor) or grid.dim() != 4:
            shape = tuple(grid.shape) if isinstance(grid, Tensor) else type(grid).__name__
            raise UnsupportedModelError(
                f"features= must return a B×C×h×w tensor, got {shape}. For channels-last or "
                "token outputs, wrap it to permute/reshape to channels-first."
            )
        return grid

    def grid(self, native: Tensor, inputs: Tensor) -> Tensor:
        return native

    def image_logits(self, native: Tensor) -> Tensor:
        return self.head(native.mean(dim=(2, 3)))

    def head_cells(self, cells: Tensor) -> Tensor:
        return self.head(cells)

    def head_modules(self) -> list[nn.Module]:
        return [m for m in self.head.modules() if not list(m.children())]

    @property
    def num_classes(self) -> int:
        linears = [m for m in self.head.modules() if isinstance(m, nn.Linear)]
        if linears:
            return linears[-1].out_features
        return super().num_classes

    def target_layer(self) -> nn.Module:
        if isinstance(self.features, nn.Module):
            return self.features
        return super().target_layer()
