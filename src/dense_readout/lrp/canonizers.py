"""Canonizers that make timm (and torchvision) blocks fit for LRP.

zennit's ``ResNetCanonizer`` only matches torchvision blocks. On timm models the
residual add (``x += shortcut``) is plain autograd, so the relevance of a block's
output is handed *in full* to both the branch and the shortcut and the input
relevance explodes (DESIGN.md §4 measured 247× on resnet18). This module rewrites,
temporarily and reversibly:

* **residual adds** of registered block types into ``stack → zennit Sum``, so the
  ``Norm`` rule splits relevance in proportion to each summand;
* **multiplicative gates** (squeeze-excite, ConvNeXt layer scale) into a
  multiplication whose backward passes relevance through unchanged (the gate is
  treated as a constant, the LRP-0 rule for a diagonal linear map), so no
  relevance leaks into the gating branch;
* **batch norms** into the convolution that produces their input, found by
  tracing which module output feeds which batch norm (works for timm's
  ``BatchNormAct2d``, which zennit's ``SequentialMergeBatchNorm`` misses because
  it is not a leaf);
* **LayerNorm** (``nn.LayerNorm`` and timm's ``LayerNorm2d``) into a version whose
  standard deviation is detached, so it is a linear map of its input and the
  ``Norm`` (epsilon) rule applies (Ali et al. 2022, "XAI for Transformers").

Block rewrites live in a :class:`~dense_readout.registry.Registry`, :data:`BLOCKS`
(:func:`register_block`), like zennit's composites: adding a family is adding one
forward function. The timm forwards are in :mod:`dense_readout.lrp.timm_blocks`
(registered on import of :mod:`dense_readout.lrp`); torchvision's ResNet blocks use
zennit's own canonized forwards (registered here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn
from zennit.canonizers import AttributeCanonizer, Canonizer, MergeBatchNorm
from zennit.layer import Sum

from ..registry import Registry

__all__ = [
    "BLOCKS",
    "BlockCanonizer",
    "BlockRewrite",
    "LayerNormCanonizer",
    "MergeBatchNormPairs",
    "block_forward",
    "block_forward_matches",
    "block_name",
    "pass_multiply",
    "register_block",
    "registered_blocks",
    "residual_sum",
    "trace_batch_norm_pairs",
]


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
    """Add ``summands`` through ``module.canonizer_sum`` (a zennit ``Sum`` with a Norm rule)."""
    # BlockCanonizer sets canonizer_sum; nn.Module.__getattr__ is typed Tensor | Module
    sum_layer = cast(Sum, module.canonizer_sum)
    return sum_layer(torch.stack(summands, dim=-1))


# -- block registry ---------------------------------------------------------------


@dataclass(frozen=True)
class BlockRewrite:
    """A registered LRP forward: ``forward(self, x)`` replaces the forward of ``block_type``."""

    block_type: type
    forward: Callable[..., Tensor]
    #: ``attributes(block) -> dict``: more attributes set on the block while the forward is
    #: replaced (e.g. a second ``Sum``, or modules that give an operation its LRP rule).
    attributes: Callable[[nn.Module], dict] | None = None


BLOCKS: Registry[BlockRewrite] = Registry(
    "LRP block",
    hint="Register a forward for your block type with dense_readout.lrp.register_block.",
)


def block_name(block_type: type) -> str:
    """The registry name of ``block_type``: its qualified name, e.g. ``timm.models.resnet.BasicBlock``."""
    return f"{block_type.__module__}.{block_type.__qualname__}"


def register_block(
    *block_types: type, attributes: Callable[[nn.Module], dict] | None = None
) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Decorator: ``forward(self, x)`` replaces the forward of ``block_types`` during LRP.

    The replacement must compute the same function as the original and route
    residual additions through :func:`residual_sum` and constant gates through
    :func:`pass_multiply`. ``tests/test_lrp_registries.py`` checks the equality
    for every registered block type.

    Each type is registered in :data:`BLOCKS` under :func:`block_name` (undo with
    ``BLOCKS.unregister(name)``); the canonizer looks a module up by its exact type.
    ``attributes(block)`` returns more attributes to set on the block while the
    forward is replaced (removed after): a module called twice in one forward needs
    one zennit ``Sum`` per call, since a zennit rule keeps only one call's input.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> class Block(nn.Module):
        ...     def __init__(self):
        ...         super().__init__(); self.conv = nn.Conv2d(4, 4, 3, padding=1)
        ...     def forward(self, x):
        ...         return self.conv(x) + x
        >>> @register_block(Block)
        ... def _block(self, x):
        ...     return residual_sum(self, self.conv(x), x)
        >>> block_forward(Block()) is _block, block_name(Block) in registered_blocks()
        (True, True)
        >>> BLOCKS.unregister(block_name(Block)).block_type is Block
        True
        >>> block_forward(Block()) is None
        True
    """

    def decorate(forward: Callable[..., Tensor]) -> Callable[..., Tensor]:
        for block_type in block_types:
            name, entry = block_name(block_type), BlockRewrite(block_type, forward, attributes)
            if name not in BLOCKS or BLOCKS.get(name) != entry:  # re-registering is a no-op
                BLOCKS.register(name, entry)
        return forward

    return decorate


def registered_blocks() -> list[str]:
    """Qualified names of the block types with an LRP forward (``BLOCKS.names()``)."""
    return BLOCKS.names()


def block_forward(module: nn.Module) -> Callable[..., Tensor] | None:
    """The registered LRP forward for ``module``'s exact type, or None."""
    name = block_name(type(module))
    if name not in BLOCKS:
        return None
    entry = BLOCKS.get(name)
    return entry.forward if entry.block_type is type(module) else None


class BlockCanonizer(AttributeCanonizer):
    """Overrides the forward of every registered block and gives it a ``canonizer_sum``."""

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name: str, module: nn.Module) -> dict | None:
        forward = block_forward(module)
        if forward is None:
            return None
        mapping = {"forward": forward.__get__(module), "canonizer_sum": Sum()}
        extra = BLOCKS.get(block_name(type(module))).attributes
        return mapping if extra is None else {**mapping, **extra(module)}

    def copy(self) -> BlockCanonizer:
        """A fresh canonizer of the same kind (zennit's ``Canonizer`` protocol)."""
        return BlockCanonizer()


# -- LayerNorm with a detached standard deviation ------------------------------------


def _channels_first_norm_types() -> tuple[type, ...]:
    try:
        from timm.layers import norm
    except ImportError:  # pragma: no cover - timm reorganised
        return ()
    # LayerNorm2dFp32 only exists in newer timm releases
    names = ("LayerNorm2d", "LayerNorm2dFp32")
    types = tuple(getattr(norm, name) for name in names if hasattr(norm, name))
    try:  # torchvision ConvNeXt's channels-first LayerNorm (a subclass of nn.LayerNorm)
        from torchvision.models.convnext import LayerNorm2d as TorchvisionLayerNorm2d
    except ImportError:  # pragma: no cover - torchvision missing
        return types
    return (*types, TorchvisionLayerNorm2d)


def _detached_layer_norm(self: nn.LayerNorm, x: Tensor) -> Tensor:
    channels_first = isinstance(self, _channels_first_norm_types())
    if channels_first:
        x = x.permute(0, 2, 3, 1)
    dims = tuple(range(-len(self.normalized_shape), 0))
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, unbiased=False, keepdim=True)
    out = (x - mean) / torch.sqrt(var + self.eps).detach()
    if self.weight is not None:
        out = out * self.weight
    if self.bias is not None:
        out = out + self.bias
    return out.permute(0, 3, 1, 2) if channels_first else out


class LayerNormCanonizer(AttributeCanonizer):
    """LayerNorm as a linear map: the standard deviation is treated as a constant."""

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name: str, module: nn.Module) -> dict | None:
        if isinstance(module, nn.LayerNorm):
            return {"forward": _detached_layer_norm.__get__(module)}
        return None

    def copy(self) -> LayerNormCanonizer:
        """A fresh canonizer of the same kind (zennit's ``Canonizer`` protocol)."""
        return LayerNormCanonizer()


# -- batch-norm merging by tracing ------------------------------------------------

_LINEAR_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def trace_batch_norm_pairs(
    run: Callable[[], object], root: nn.Module
) -> list[tuple[nn.Module, nn.Module]]:
    """``(linear, batch_norm)`` pairs where the batch norm's input *is* the linear's output.

    Found by running ``run()`` once with forward hooks (tensor identity, no name
    conventions), so it covers timm's ``BatchNormAct2d`` and any nesting. Batch
    norms fed by anything else (a sum, a pooling) are left alone.
    """
    produced: dict[int, nn.Module] = {}
    keep: list[Tensor] = []  # keep outputs alive so ids stay unique
    pairs: list[tuple[nn.Module, nn.Module]] = []
    seen: set[int] = set()

    def after_linear(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        if isinstance(output, Tensor):
            keep.append(output)
            produced[id(output)] = module

    def before_norm(module: nn.Module, inputs: tuple) -> None:
        if not inputs or not isinstance(inputs[0], Tensor):
            return
        source = produced.get(id(inputs[0]))
        if source is not None and id(module) not in seen:
            seen.add(id(module))
            pairs.append((source, module))

    handles = []
    for module in root.modules():
        if isinstance(module, _LINEAR_TYPES):
            handles.append(module.register_forward_hook(after_linear))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            handles.append(module.register_forward_pre_hook(before_norm))
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    # a linear feeding two batch norms cannot absorb both
    counts: dict[int, int] = {}
    for linear, _ in pairs:
        counts[id(linear)] = counts.get(id(linear), 0) + 1
    return [
        (linear, norm)
        for linear, norm in pairs
        if counts[id(linear)] == 1
        and getattr(norm, "running_mean", None) is not None
        and getattr(norm, "weight", None) is not None
    ]


class MergeBatchNormPairs(MergeBatchNorm):
    """Merge each batch norm into the linear layer of a known pair (see :func:`trace_batch_norm_pairs`)."""

    def __init__(self, pairs: Iterable[tuple[nn.Module, nn.Module]] = ()) -> None:
        super().__init__()
        self.pairs = list(pairs)

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        """One registered merge per ``(linear, norm)`` pair (zennit's ``Canonizer`` protocol)."""
        instances = []
        for linear, norm in self.pairs:
            instance = MergeBatchNorm.__new__(MergeBatchNormPairs)
            MergeBatchNormPairs.__init__(instance)
            instance.register([linear], norm)
            instances.append(instance)
        return instances

    def copy(self) -> MergeBatchNormPairs:
        """A fresh canonizer for the same pairs (zennit's ``Canonizer`` protocol)."""
        return MergeBatchNormPairs(self.pairs)

    @staticmethod
    def merge_batch_norm(modules, batch_norm) -> None:
        """The zennit merge, then an *exact* identity batch norm.

        zennit leaves ``running_var = 1``, so the merged norm still divides by
        ``sqrt(1 + eps)``: a 0.05 % error per layer with TF's ``eps = 1e-3``, 2 % over
        EfficientNet-Lite0. Setting ``running_var = 1 - eps`` removes it.
        """
        MergeBatchNorm.merge_batch_norm(modules, batch_norm)
        batch_norm.running_var.data = torch.full_like(
            batch_norm.running_var.data, 1.0 - batch_norm.eps
        )


# -- torchvision blocks: zennit's own canonized forwards ------------------------------


def _register_torchvision_blocks() -> None:
    try:
        from torchvision.models.resnet import BasicBlock, Bottleneck
        from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer
    except ImportError:  # pragma: no cover - torchvision missing
        return
    register_block(BasicBlock)(ResNetBasicBlockCanonizer.forward)
    register_block(Bottleneck)(ResNetBottleneckCanonizer.forward)


_register_torchvision_blocks()


def block_forward_matches(block: nn.Module, *inputs: Tensor, atol: float = 1e-5) -> bool:
    """Whether ``block``'s registered LRP forward matches its own forward.

    True if ``block`` computes the same output with its registered LRP forward as
    without it, and its own forward is back afterwards: the check for a new
    :func:`register_block` entry.

    Example:
        >>> import torch
        >>> from timm.models.resnet import BasicBlock
        >>> from dense_readout.lrp.canonizers import block_forward_matches
        >>> block_forward_matches(BasicBlock(8, 8).eval(), torch.randn(1, 8, 6, 6))
        True
    """
    canonizer = BlockCanonizer()
    canonizer.register(block, canonizer.attribute_map("", block))
    try:
        ours = block(*inputs)
    finally:
        canonizer.remove()
    return bool(torch.allclose(ours, block(*inputs), atol=atol)) and "forward" not in vars(block)
