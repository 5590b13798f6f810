"""Canonizers: the temporary, reversible rewrites that make a model fit for LRP.

zennit's ``ResNetCanonizer`` only matches torchvision's ResNet blocks. In timm
models and in every other torchvision CNN the residual add (``x += shortcut``) is
plain autograd, so the relevance of a block's output is handed *in full* to both
the branch and the shortcut and the input relevance explodes (DESIGN.md §4
measured 247× on timm resnet18). The canonizers here, applied for the duration of
one LRP call and undone after it:

* :class:`BlockCanonizer`: the registered block forwards of every family
  (:func:`~dense_readout.lrp.families.block_rewrite`), which route residual adds
  through a zennit ``Sum`` and gates through a constant multiplication;
* :class:`MergeBatchNormPairs`: batch norms merged into the convolution that
  produces their input, found by tracing tensors (:func:`trace_batch_norm_pairs`;
  covers timm's ``BatchNormAct2d``, which zennit's ``SequentialMergeBatchNorm``
  misses because it is not a leaf);
* :class:`LayerNormCanonizer`: LayerNorm (``nn.LayerNorm`` and the channels-first
  ``LayerNorm2d`` of timm and torchvision) with a detached standard deviation, so it
  is a linear map of its input and the ``Norm`` (epsilon) rule applies (Ali et al.
  2022, "XAI for Transformers").

A family record lists which of them an LRP call applies
(:data:`~dense_readout.lrp.family.CANONIZERS`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from zennit.canonizers import AttributeCanonizer, Canonizer
from zennit.layer import Sum

from .families import block_rewrite

__all__ = [
    "BlockCanonizer",
    "LayerNormCanonizer",
    "MergeBatchNormPairs",
    "trace_batch_norm_pairs",
]


class BlockCanonizer(AttributeCanonizer):
    """Overrides the forward of every block with a registered rewrite and gives it a ``canonizer_sum``."""

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name: str, module: nn.Module) -> dict | None:
        rewrite = block_rewrite(module)
        if rewrite is None:
            return None
        mapping = {"forward": rewrite.forward.__get__(module), "canonizer_sum": Sum()}
        return mapping if rewrite.attributes is None else {**mapping, **rewrite.attributes(module)}

    def copy(self) -> BlockCanonizer:
        """A fresh canonizer of the same kind (zennit's ``Canonizer`` protocol)."""
        return BlockCanonizer()


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


def _merge(linear: Any, norm: Any) -> Callable[[], None]:
    """Fold ``norm`` into ``linear`` in place (an exact identity norm left); returns the undo.

    Parameters keep their identity (only ``.data`` is swapped), so nothing is left
    behind after the undo. zennit's own ``MergeBatchNorm`` is not used: 0.5.1 keeps
    a ``1/sqrt(1 + eps)`` factor in the merged norm (2 % over EfficientNet-Lite0 with
    TF's ``eps = 1e-3``), and 1.0 restores with ``object.__setattr__``, which leaves
    the merged bias of a bias-free convolution in ``state_dict`` (docs/lrp.md).
    ``linear`` and ``norm`` are typed ``Any``: their parameters are read as attributes.
    """
    keys = ("weight", "bias", "running_mean", "running_var")
    saved = {key: getattr(norm, key).data for key in keys}
    weight, had_bias = linear.weight.data, linear.bias is not None
    bias = linear.bias.data if had_bias else torch.zeros_like(saved["running_mean"])
    scale = saved["weight"] / torch.sqrt(saved["running_var"] + norm.eps)
    linear.weight.data = weight * scale[(slice(None),) + (None,) * (weight.dim() - 1)]
    if not had_bias:
        linear.bias = nn.Parameter(bias.clone())
    linear.bias.data = (bias - saved["running_mean"]) * scale + saved["bias"]
    identity = (1.0, 0.0, 0.0, 1.0 - norm.eps)  # weight, bias, mean, var: y = x exactly
    for key, value in zip(keys, identity, strict=True):
        getattr(norm, key).data = torch.full_like(saved[key], value)

    def undo() -> None:
        linear.weight.data = weight
        if had_bias:
            linear.bias.data = bias
        else:
            linear.bias = None
        for key in keys:
            getattr(norm, key).data = saved[key]

    return undo


class MergeBatchNormPairs(Canonizer):
    """Merge each batch norm into the linear layer of a known pair (see :func:`trace_batch_norm_pairs`).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)).eval()
        >>> x = torch.randn(1, 3, 8, 8)
        >>> with torch.no_grad():
        ...     before, keys = model(x), list(model.state_dict())
        ...     (merged,) = MergeBatchNormPairs([(model[0], model[1])]).apply(model)
        ...     same = torch.allclose(model(x), before, atol=1e-6)
        ...     merged.remove()
        >>> same, list(model.state_dict()) == keys, model[0].bias is None
        (True, True, True)
    """

    def __init__(self, pairs: Iterable[tuple[nn.Module, nn.Module]] = ()) -> None:
        super().__init__()
        self.pairs = list(pairs)
        self._undo: list[Callable[[], None]] = []

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        """Merge the batch norms of the pairs; returns the registered copy."""
        instance = self.copy()
        instance.register()
        return [instance]

    def register(self) -> None:
        """Merge each batch norm into its linear layer (undone by :meth:`remove`)."""
        self._undo = [_merge(linear, norm) for linear, norm in self.pairs]

    def remove(self) -> None:
        """Restore the original parameters, last merge first."""
        for undo in reversed(self._undo):
            undo()
        self._undo = []

    def copy(self) -> MergeBatchNormPairs:
        """A fresh canonizer for the same pairs (zennit's ``Canonizer`` protocol)."""
        return MergeBatchNormPairs(self.pairs)
