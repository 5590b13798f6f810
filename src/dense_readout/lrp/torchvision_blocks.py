"""LRP forwards of torchvision's residual, gating and dense blocks (the family records list them).

zennit's own canonizers only cover torchvision's ResNet blocks (whose forwards the
``torchvision.resnet`` record in :mod:`dense_readout.lrp.family_records` uses). Every other torchvision CNN adds its
shortcut inside the block's ``forward`` (``result += input``), so plain autograd
hands a block's whole relevance to *both* summands, and its squeeze-excite gates
send relevance into the gating branch. Each function below is torchvision's
(0.29) forward of one block type with two substitutions, as in
:mod:`dense_readout.lrp.timm_blocks`: the residual add becomes
:func:`~dense_readout.lrp.blocks.residual_sum` (a zennit ``Sum``, Norm rule)
and a gate or layer scale becomes :func:`~dense_readout.lrp.blocks.pass_multiply`
(a constant; relevance passes to the gated signal). ``tests/test_lrp_registries.py``
checks that each computes the block's own function.

DenseNet needs no rule for its concatenations (``torch.cat`` only routes
relevance); its layer forward is registered so that ``memory_efficient=True``
models do not recompute the bottleneck under gradient checkpointing, which would
run zennit's hooks twice.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from .blocks import pass_multiply, residual_sum

__all__ = [
    "cn_block_forward",
    "dense_layer_forward",
    "mbconv_forward",
    "mnasnet_residual_forward",
    "mobilenet_v2_residual_forward",
    "mobilenet_v3_residual_forward",
    "res_bottleneck_forward",
    "squeeze_excitation_forward",
]


def mbconv_forward(self: Any, input: Tensor) -> Tensor:
    """EfficientNet's ``MBConv`` and ``FusedMBConv``: ``stochastic_depth(block(x)) + x`` as a Sum."""
    result = self.block(input)
    if self.use_res_connect:
        result = residual_sum(self, self.stochastic_depth(result), input)
    return result


def mobilenet_v2_residual_forward(self: Any, x: Tensor) -> Tensor:
    """``torchvision.models.mobilenetv2.InvertedResidual``: ``x + conv(x)`` as a Sum."""
    if self.use_res_connect:
        return residual_sum(self, x, self.conv(x))
    return self.conv(x)


def mobilenet_v3_residual_forward(self: Any, input: Tensor) -> Tensor:
    """``torchvision.models.mobilenetv3.InvertedResidual``: ``block(x) + x`` as a Sum."""
    result = self.block(input)
    if self.use_res_connect:
        result = residual_sum(self, result, input)
    return result


def mnasnet_residual_forward(self: Any, input: Tensor) -> Tensor:
    """``torchvision.models.mnasnet._InvertedResidual``: ``layers(x) + x`` as a Sum."""
    if self.apply_residual:
        return residual_sum(self, self.layers(input), input)
    return self.layers(input)


def squeeze_excitation_forward(self: Any, input: Tensor) -> Tensor:
    """``torchvision.ops.SqueezeExcitation`` (EfficientNet, MobileNetV3, RegNetY): a constant gate."""
    return pass_multiply(input, self._scale(input))


def cn_block_forward(self: Any, input: Tensor) -> Tensor:
    """ConvNeXt's ``CNBlock``: ``layer_scale`` as a constant, ``branch + input`` as a Sum."""
    result = pass_multiply(self.block(input), self.layer_scale)
    result = self.stochastic_depth(result)
    return residual_sum(self, result, input)


def res_bottleneck_forward(self: Any, x: Tensor) -> Tensor:
    """RegNet's ``ResBottleneckBlock``: ``activation(shortcut + f(x))`` with the add as a Sum."""
    shortcut = self.proj(x) if self.proj is not None else x
    return self.activation(residual_sum(self, shortcut, self.f(x)))


def dense_layer_forward(self: Any, input: Tensor | list[Tensor]) -> Tensor:
    """DenseNet's ``_DenseLayer`` without gradient checkpointing (the same function)."""
    features = [input] if isinstance(input, Tensor) else input
    new_features = self.conv2(self.relu2(self.norm2(self.bn_function(features))))
    if self.drop_rate > 0:
        new_features = F.dropout(new_features, p=self.drop_rate, training=self.training)
    return new_features
