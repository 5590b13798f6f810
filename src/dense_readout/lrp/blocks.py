"""What a registered LRP block forward is made of: a residual Sum, a constant gate, a record.

A block forward (:mod:`dense_readout.lrp.timm_blocks`,
:mod:`~dense_readout.lrp.torchvision_blocks`, :mod:`~dense_readout.lrp.transformer_blocks`)
is the library's own ``forward`` with two substitutions: the residual add becomes
:func:`residual_sum` (a zennit ``Sum``, so the Norm rule splits relevance in
proportion to the summands) and a multiplicative gate or layer scale becomes
:func:`pass_multiply` (the gate is a constant; relevance passes to the gated signal).
:class:`BlockRewrite` pairs a block type with its forward; a family record
(:class:`~dense_readout.lrp.family.LRPFamily`) lists its rewrites.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn
from zennit.layer import Sum

__all__ = ["BlockRewrite", "block_name", "pass_multiply", "residual_sum"]


class _PassMultiply(torch.autograd.Function):
    """``x * scale`` whose backward hands the incoming relevance to ``x`` unchanged."""

    @staticmethod
    def forward(ctx, inputs: Tensor, scale: Tensor) -> Tensor:
        ctx.scale_shape = scale.shape
        ctx.scale_grad = scale.requires_grad
        return inputs * scale

    @staticmethod
    def backward(ctx, grad: Tensor):
        # The gate gets an explicit zero (not None): zennit's hooks on the gate branch
        # must see a defined gradient, or their stored grad_output is None.
        zero = (grad * 0).sum_to_size(ctx.scale_shape) if ctx.scale_grad else None
        return grad, zero


def pass_multiply(inputs: Tensor, scale: Tensor) -> Tensor:
    """Multiply by a gate or scale that LRP treats as a constant (relevance passes to ``inputs``).

    Example:
        >>> import torch
        >>> x = torch.ones(2, requires_grad=True)
        >>> y = pass_multiply(x, torch.tensor([3.0, 0.5]))
        >>> y.sum().backward(); x.grad.tolist()
        [1.0, 1.0]
    """
    return _PassMultiply.apply(inputs, scale)


def residual_sum(module: nn.Module, *summands: Tensor) -> Tensor:
    """Add ``summands`` through ``module.canonizer_sum`` (a zennit ``Sum`` with a Norm rule).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from zennit.layer import Sum
        >>> block = nn.Module()
        >>> block.canonizer_sum = Sum()  # what BlockCanonizer sets during an LRP call
        >>> residual_sum(block, torch.ones(2), torch.full((2,), 2.0)).tolist()
        [3.0, 3.0]
    """
    # BlockCanonizer sets canonizer_sum; nn.Module.__getattr__ is typed Tensor | Module
    sum_layer = cast(Sum, module.canonizer_sum)
    return sum_layer(torch.stack(summands, dim=-1))


def block_name(block_type: type) -> str:
    """The qualified name of ``block_type``, e.g. ``timm.models.resnet.BasicBlock``.

    Example:
        >>> from torch import nn
        >>> block_name(nn.Linear)
        'torch.nn.modules.linear.Linear'
    """
    return f"{block_type.__module__}.{block_type.__qualname__}"


@dataclass(frozen=True)
class BlockRewrite:
    """An LRP forward: ``forward(self, x)`` replaces the forward of ``block_type`` during a call.

    The forward must compute the same function as the block's own and route
    residual additions through :func:`residual_sum` and constant gates through
    :func:`pass_multiply`; ``tests/test_lrp_registries.py`` checks the equality for
    every registered block type. ``attributes(block) -> dict`` sets more attributes
    on the block while the forward is replaced (removed after): a module called
    twice in one forward needs one zennit ``Sum`` per call, since a zennit rule
    keeps only one call's input.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from zennit.layer import Sum
        >>> from dense_readout.lrp import BlockRewrite, residual_sum
        >>> class Residual(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.conv = nn.Conv2d(4, 4, 3, padding=1)
        ...     def forward(self, x):
        ...         return x + self.conv(x)
        >>> def lrp_forward(self, x):  # the same function, the addition made visible to LRP
        ...     return residual_sum(self, x, self.conv(x))
        >>> rewrite = BlockRewrite(Residual, lrp_forward)
        >>> block = Residual()
        >>> block.canonizer_sum = Sum()  # what the canonizer sets while the rewrite is active
        >>> x = torch.randn(1, 4, 5, 5)
        >>> rewrite.name.endswith("Residual"), torch.allclose(rewrite.forward(block, x), block(x), atol=1e-6)
        (True, True)
    """

    block_type: type
    forward: Callable[..., Tensor]
    attributes: Callable[[nn.Module], dict] | None = None

    @property
    def name(self) -> str:
        """:func:`block_name` of the block type."""
        return block_name(self.block_type)
