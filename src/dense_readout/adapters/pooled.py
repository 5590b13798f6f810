"""Shared adapters for the two shapes of classifier we support.

* :class:`PooledGridAdapter`: a 4-D grid (NCHW or NHWC) followed by a *tail*
  (pooling then head) that works on any spatial size. Applying the tail to each
  cell as a 1×1 image is the pointwise readout: average pooling of a 1×1 map is
  the identity, so the same code handles linear, LayerNorm and MLP heads.
* :class:`TokenGridAdapter`: a token sequence ``B×(prefix+N)×C`` whose patch
  tokens form the grid (ViT-like models).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..errors import UnsupportedModelError
from .base import ModelAdapter, executed_leaves

_PASS_THROUGH: tuple[type, ...] = (
    nn.Identity,
    nn.Flatten,
    nn.Dropout,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
)
try:  # timm's fast average pooling is pass-through on a 1×1 map too
    from timm.layers.adaptive_avgmax_pool import FastAdaptiveAvgPool

    _PASS_THROUGH += (FastAdaptiveAvgPool,)
except ImportError:  # pragma: no cover
    pass


class PooledGridAdapter(ModelAdapter):
    """A grid plus a tail ``pool → head`` that accepts a map of any size.

    Subclasses define ``forward_features`` and ``tail`` and set ``layout``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.adapters import PooledGridAdapter
        >>> body = nn.Conv2d(3, 8, 4, stride=4)
        >>> model = nn.Sequential(body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
        >>> class SequentialAdapter(PooledGridAdapter):
        ...     name = "sequential-example"
        ...     def forward_features(self, inputs):
        ...         return self.model[0](inputs)
        ...     def tail(self, native):
        ...         return self.model[1:](native)  # pool -> flatten -> linear, any grid size
        >>> adapter = SequentialAdapter(model)
        >>> [type(m).__name__ for m in adapter.head_modules()], adapter.is_exact()
        (['AdaptiveAvgPool2d', 'Flatten', 'Linear'], True)
        >>> DenseReadout(model, adapter=adapter)(torch.randn(1, 3, 16, 24)).scores.shape
        torch.Size([1, 5, 4, 6])
    """

    layout: str = "NCHW"  # layout of forward_features' output

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self._head_leaves: list[nn.Module] | None = None

    def tail(self, native: Tensor) -> Tensor:
        """Pooling and head on a native-layout map: ``B×K``."""
        raise NotImplementedError

    def grid(self, native: Tensor, inputs: Tensor) -> Tensor:
        rank = 2 + self.spatial_dims
        if native.dim() != rank:
            raise UnsupportedModelError(
                f"{type(self.model).__name__}: expected a {rank}-D feature grid, got shape "
                f"{tuple(native.shape)}; this model needs a token adapter or features=/head=."
            )
        return native.movedim(-1, 1) if self.layout == "NHWC" else native

    def image_logits(self, native: Tensor) -> Tensor:
        return self.tail(native)

    def _one_cell_shape(self, channels: int) -> tuple[int, ...]:
        ones = (1,) * self.spatial_dims
        return (-1, *ones, channels) if self.layout == "NHWC" else (-1, channels, *ones)

    def head_cells(self, cells: Tensor) -> Tensor:
        return self.tail(cells.reshape(self._one_cell_shape(cells.shape[1])))

    def readout(self, grid: Tensor) -> Tensor:
        linear = self._lone_linear()
        if linear is None:
            return super().readout(grid)
        # Fast path for pool → Linear heads: one K×C by C×(h·w) product per image,
        # channels-first in and out (no per-cell tail, no permute copies).
        batch, channels, *cells_shape = grid.shape
        scores = torch.matmul(linear.weight, grid.reshape(batch, channels, -1))
        if linear.bias is not None:
            scores = scores.add_(linear.bias[:, None])  # in place: no second B×K×N buffer
        return scores.view(batch, -1, *cells_shape)

    def _lone_linear(self) -> nn.Linear | None:
        """The head's only Linear if everything else is pass-through at inference."""
        if not hasattr(self, "_lone_linear_cache"):
            leaves = self.head_modules()
            linears = [m for m in leaves if isinstance(m, nn.Linear)]
            rest = [m for m in leaves if not isinstance(m, nn.Linear)]
            passthrough = all(isinstance(m, _PASS_THROUGH) for m in rest)
            self._lone_linear_cache = linears[0] if len(linears) == 1 and passthrough else None
        if self._lone_linear_cache is not None and self.model.training:
            return None  # dropout would act in training mode: take the generic path
        return self._lone_linear_cache

    def head_modules(self) -> list[nn.Module]:
        if self._head_leaves is None:
            channels = self._probe_channels()
            shape = tuple(abs(n) for n in self._one_cell_shape(channels))
            parameter = next(iter(self.model.parameters()))
            probe = parameter.new_zeros(shape)
            self._head_leaves = executed_leaves(lambda: self.tail(probe), self.model)
        return self._head_leaves

    def _probe_channels(self) -> int:
        for name in ("num_features", "head_hidden_size"):
            value = getattr(self.model, name, None)
            if isinstance(value, int) and value > 0:
                return value
        native = _run_no_grad(self.forward_features, self.probe_input())
        return int(native.shape[-1] if self.layout == "NHWC" else native.shape[1])


class TokenGridAdapter(ModelAdapter):
    """Patch tokens as the grid; the head applied to each patch token.

    Subclasses give ``num_prefix_tokens``, ``patch_size`` and ``head_cells``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.adapters import TokenGridAdapter
        >>> class TinyViT(nn.Module):
        ...     num_prefix_tokens = 1  # a class token before the patch tokens
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.patch, self.cls, self.fc = nn.Conv2d(3, 8, 4, stride=4), nn.Parameter(torch.zeros(1, 1, 8)), nn.Linear(8, 5)
        ...     def tokens(self, x):
        ...         patches = self.patch(x).flatten(2).transpose(1, 2)
        ...         return torch.cat([self.cls.expand(len(x), -1, -1), patches], dim=1)
        ...     def forward(self, x):
        ...         return self.fc(self.tokens(x)[:, 1:].mean(dim=1))  # mean of the patch tokens
        >>> class TinyViTAdapter(TokenGridAdapter):
        ...     name = "tinyvit-example"
        ...     def patch_size(self):
        ...         return (4, 4)
        ...     def forward_features(self, inputs):
        ...         return self.model.tokens(inputs)
        ...     def image_logits(self, native):
        ...         return self.model.fc(native[:, 1:].mean(dim=1))
        ...     def head_cells(self, cells):
        ...         return self.model.fc(cells)
        ...     def head_modules(self):
        ...         return [self.model.fc]
        >>> model = TinyViT().eval()
        >>> result = DenseReadout(model, adapter=TinyViTAdapter(model))(torch.randn(1, 3, 16, 24))
        >>> result.scores.shape, result.exact
        (torch.Size([1, 5, 4, 6]), True)
    """

    def num_prefix_tokens(self) -> int:
        return int(getattr(self.model, "num_prefix_tokens", 1))

    def patch_size(self) -> tuple[int, int]:
        raise NotImplementedError

    def grid(self, native: Tensor, inputs: Tensor) -> Tensor:
        patches = native[:, self.num_prefix_tokens() :]
        input_hw = (int(inputs.shape[-2]), int(inputs.shape[-1]))
        height, width = self.grid_size(patches.shape[1], input_hw)
        return patches.reshape(patches.shape[0], height, width, -1).permute(0, 3, 1, 2)

    def grid_size(self, tokens: int, input_size: tuple[int, int] | None = None) -> tuple[int, int]:
        """``(h, w)`` of ``tokens`` patch tokens for an input of ``input_size``."""
        if input_size is not None:
            ph, pw = self.patch_size()
            height, width = input_size[0] // ph, input_size[1] // pw
            if height * width == tokens:
                return height, width
        side = math.isqrt(tokens)
        if side * side == tokens:
            return side, side
        raise UnsupportedModelError(
            f"Cannot arrange {tokens} patch tokens into a grid for input size {input_size}; "
            "pass features=/head= for this model."
        )

    def reshape_transform(self) -> Callable[[Tensor], Tensor]:
        prefix = self.num_prefix_tokens()

        def tokens_to_grid(tokens: Tensor) -> Tensor:
            patches = tokens[:, prefix:]
            height, width = self.grid_size(patches.shape[1])
            return patches.reshape(patches.shape[0], height, width, -1).permute(0, 3, 1, 2)

        return tokens_to_grid


def _run_no_grad(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    with torch.no_grad():
        return fn(x)
