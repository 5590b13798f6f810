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

Block rewrites live in a registry (:func:`register_block`), like zennit's
composites: adding a family is adding one forward function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from zennit.canonizers import AttributeCanonizer, Canonizer, MergeBatchNorm
from zennit.layer import Sum

__all__ = [
    "BlockCanonizer",
    "LayerNormCanonizer",
    "MergeBatchNormPairs",
    "pass_multiply",
    "register_block",
    "registered_blocks",
    "residual_sum",
    "trace_batch_norm_pairs",
]


class _PassMultiply(torch.autograd.Function):
    """``x * scale`` whose backward hands the incoming relevance to ``x`` unchanged."""

    @staticmethod
    def forward(ctx, inputs: Tensor, scale: Tensor) -> Tensor:  # type: ignore[override]
        ctx.scale_shape = scale.shape
        ctx.scale_grad = scale.requires_grad
        return inputs * scale

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
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
    return module.canonizer_sum(torch.stack(summands, dim=-1))


# -- block registry ---------------------------------------------------------------

_BLOCKS: dict[type, Callable[..., Tensor]] = {}


def register_block(*block_types: type) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Decorator: ``forward(self, x)`` replaces the forward of ``block_types`` during LRP.

    The replacement must compute the same function as the original and route
    residual additions through :func:`residual_sum` and constant gates through
    :func:`pass_multiply`. Tests check the equality on every registered family.

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
    """

    def decorate(forward: Callable[..., Tensor]) -> Callable[..., Tensor]:
        for block_type in block_types:
            _BLOCKS[block_type] = forward
        return forward

    return decorate


def registered_blocks() -> list[str]:
    """Qualified names of the block types with an LRP forward."""
    return sorted(f"{t.__module__}.{t.__qualname__}" for t in _BLOCKS)


def _lookup(module: nn.Module) -> Callable[..., Tensor] | None:
    return _BLOCKS.get(type(module))


class BlockCanonizer(AttributeCanonizer):
    """Overrides the forward of every registered block and gives it a ``canonizer_sum``."""

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name: str, module: nn.Module) -> dict | None:
        forward = _lookup(module)
        if forward is None:
            return None
        return {"forward": forward.__get__(module), "canonizer_sum": Sum()}

    def copy(self) -> BlockCanonizer:
        return BlockCanonizer()


# -- LayerNorm with a detached standard deviation ------------------------------------


def _channels_first_norm_types() -> tuple[type, ...]:
    try:
        from timm.layers import norm
    except ImportError:  # pragma: no cover - timm reorganised
        return ()
    # LayerNorm2dFp32 only exists in newer timm releases
    names = ("LayerNorm2d", "LayerNorm2dFp32")
    return tuple(getattr(norm, name) for name in names if hasattr(norm, name))


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
        instances = []
        for linear, norm in self.pairs:
            instance = MergeBatchNorm.__new__(MergeBatchNormPairs)
            MergeBatchNormPairs.__init__(instance)
            instance.register([linear], norm)
            instances.append(instance)
        return instances

    def copy(self) -> MergeBatchNormPairs:
        return MergeBatchNormPairs(self.pairs)

    @staticmethod
    def merge_batch_norm(modules, batch_norm) -> None:
        """zennit's merge, then an *exact* identity batch norm.

        zennit leaves ``running_var = 1``, so the merged norm still divides by
        ``sqrt(1 + eps)``: a 0.05 % error per layer with TF's ``eps = 1e-3``, 2 % over
        EfficientNet-Lite0. Setting ``running_var = 1 - eps`` removes it.
        """
        MergeBatchNorm.merge_batch_norm(modules, batch_norm)
        batch_norm.running_var.data = torch.full_like(
            batch_norm.running_var.data, 1.0 - batch_norm.eps
        )


# -- registered block forwards -------------------------------------------------------


def _register_timm_blocks() -> None:
    try:
        from timm.layers import squeeze_excite as timm_se
        from timm.models import _efficientnet_blocks as eff
        from timm.models import convnext as timm_convnext
        from timm.models import resnet as timm_resnet
    except ImportError:  # pragma: no cover - timm missing
        return

    @register_block(timm_resnet.BasicBlock)
    def _timm_basic_block(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.drop_block(x)
        x = self.act1(x)
        x = self.aa(x)
        x = self.conv2(x)
        x = self.bn2(x)
        if self.se is not None:
            x = self.se(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act2(residual_sum(self, x, shortcut))

    @register_block(timm_resnet.Bottleneck)
    def _timm_bottleneck(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.act1(x)
        x = self.conv2(x)
        x = self.bn2(x)
        x = self.drop_block(x)
        x = self.act2(x)
        x = self.aa(x)
        x = self.conv3(x)
        x = self.bn3(x)
        if self.se is not None:
            x = self.se(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act3(residual_sum(self, x, shortcut))

    @register_block(eff.DepthwiseSeparableConv)
    def _timm_ds_conv(self, x: Tensor) -> Tensor:
        shortcut = x
        if getattr(self, "conv_s2d", None) is not None:
            x = self.conv_s2d(x)
            x = self.bn_s2d(x)
        x = self.conv_dw(x)
        x = self.bn1(x)
        x = self.aa(x)
        x = self.se(x)
        x = self.conv_pw(x)
        x = self.bn2(x)
        if self.has_skip:
            x = residual_sum(self, self.drop_path(x), shortcut)
        return x

    @register_block(eff.InvertedResidual)
    def _timm_inverted_residual(self, x: Tensor) -> Tensor:
        shortcut = x
        if getattr(self, "conv_s2d", None) is not None:
            x = self.conv_s2d(x)
            x = self.bn_s2d(x)
        x = self.conv_pw(x)
        x = self.bn1(x)
        x = self.conv_dw(x)
        x = self.bn2(x)
        x = self.aa(x)
        x = self.se(x)
        x = self.conv_pwl(x)
        x = self.bn3(x)
        if self.has_skip:
            x = residual_sum(self, self.drop_path(x), shortcut)
        return x

    @register_block(eff.SqueezeExcite)
    def _timm_squeeze_excite(self, x: Tensor) -> Tensor:
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.conv_reduce(x_se)
        x_se = self.act1(x_se)
        x_se = self.conv_expand(x_se)
        return pass_multiply(x, self.gate(x_se))

    @register_block(timm_se.SEModule)
    def _timm_se_module(self, x: Tensor) -> Tensor:
        x_se = x.mean((2, 3), keepdim=True)
        if self.add_maxpool:
            x_se = 0.5 * x_se + 0.5 * x.amax((2, 3), keepdim=True)
        x_se = self.fc1(x_se)
        x_se = self.act(self.bn(x_se))
        x_se = self.fc2(x_se)
        return pass_multiply(x, self.gate(x_se))

    @register_block(timm_se.EffectiveSEModule)
    def _timm_effective_se(self, x: Tensor) -> Tensor:
        x_se = x.mean((2, 3), keepdim=True)
        if self.add_maxpool:
            x_se = 0.5 * x_se + 0.5 * x.amax((2, 3), keepdim=True)
        x_se = self.fc(x_se)
        return pass_multiply(x, self.gate(x_se))

    @register_block(timm_convnext.ConvNeXtBlock)
    def _timm_convnext_block(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.conv_dw(x)
        if self.use_conv_mlp:
            x = self.norm(x)
            x = self.mlp(x)
        else:
            x = x.permute(0, 2, 3, 1)
            x = self.norm(x)
            x = self.mlp(x)
            x = x.permute(0, 3, 1, 2)
        if self.gamma is not None:
            x = pass_multiply(x, self.gamma.reshape(1, -1, 1, 1))
        return residual_sum(self, self.drop_path(x), self.shortcut(shortcut))


def _register_torchvision_blocks() -> None:
    try:
        from torchvision.models.resnet import BasicBlock, Bottleneck
        from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer
    except ImportError:  # pragma: no cover - torchvision missing
        return
    register_block(BasicBlock)(ResNetBasicBlockCanonizer.forward)
    register_block(Bottleneck)(ResNetBottleneckCanonizer.forward)


_register_timm_blocks()
_register_torchvision_blocks()
