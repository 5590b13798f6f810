"""LRP forwards of timm's residual and gating blocks (the family records list them).

Each function re-implements the ``forward`` of one timm block type (timm 1.0)
line by line, with two substitutions: the residual add ``x + shortcut`` becomes
:func:`~dense_readout.lrp.blocks.residual_sum` (a zennit ``Sum``, so the Norm
rule splits relevance between the summands) and a multiplicative gate or layer
scale becomes :func:`~dense_readout.lrp.blocks.pass_multiply` (relevance
passes to the gated signal). Everything else, including the order of the calls,
is timm's, so the function computed is the same; ``tests/test_lrp_registries.py``
checks that for every registered block type on random input. The records that use
them are in :mod:`dense_readout.lrp.family_records`.

:class:`~dense_readout.lrp.canonizers.BlockCanonizer` binds the forward to a
block instance for the duration of an LRP call; ``self`` is that block.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .blocks import pass_multiply, residual_sum

__all__ = [
    "basic_block_forward",
    "bottleneck_forward",
    "convnext_block_forward",
    "depthwise_separable_forward",
    "effective_se_forward",
    "inverted_residual_forward",
    "se_module_forward",
    "squeeze_excite_forward",
]


# -- ResNet (timm.models.resnet) --------------------------------------------------------


def basic_block_forward(self: Any, x: Tensor) -> Tensor:
    """``timm.models.resnet.BasicBlock``: ``act2(branch(x) + shortcut)`` with the add as a Sum."""
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


def bottleneck_forward(self: Any, x: Tensor) -> Tensor:
    """``timm.models.resnet.Bottleneck``: ``act3(branch(x) + shortcut)`` with the add as a Sum."""
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


# -- EfficientNet / MobileNetV3 (timm.models._efficientnet_blocks) -------------------------


def depthwise_separable_forward(self: Any, x: Tensor) -> Tensor:
    """``DepthwiseSeparableConv``: depthwise, SE, pointwise; the skip (if any) as a Sum."""
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


def inverted_residual_forward(self: Any, x: Tensor) -> Tensor:
    """``InvertedResidual``: expand, depthwise, SE, project; the skip (if any) as a Sum."""
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


def squeeze_excite_forward(self: Any, x: Tensor) -> Tensor:
    """EfficientNet's ``SqueezeExcite``: ``x * gate(...)`` with the gate treated as a constant."""
    x_se = x.mean((2, 3), keepdim=True)
    x_se = self.conv_reduce(x_se)
    x_se = self.act1(x_se)
    x_se = self.conv_expand(x_se)
    return pass_multiply(x, self.gate(x_se))


# -- squeeze-excite layers (timm.layers.squeeze_excite) -----------------------------------


def se_module_forward(self: Any, x: Tensor) -> Tensor:
    """``SEModule`` (SE-ResNet, ByobNet, NFNet): the gate treated as a constant."""
    x_se = x.mean((2, 3), keepdim=True)
    if self.add_maxpool:
        x_se = 0.5 * x_se + 0.5 * x.amax((2, 3), keepdim=True)
    x_se = self.fc1(x_se)
    x_se = self.act(self.bn(x_se))
    x_se = self.fc2(x_se)
    return pass_multiply(x, self.gate(x_se))


def effective_se_forward(self: Any, x: Tensor) -> Tensor:
    """``EffectiveSEModule`` (one-layer SE of VoVNet/ResNet 'ese'): the gate treated as a constant."""
    x_se = x.mean((2, 3), keepdim=True)
    if self.add_maxpool:
        x_se = 0.5 * x_se + 0.5 * x.amax((2, 3), keepdim=True)
    x_se = self.fc(x_se)
    return pass_multiply(x, self.gate(x_se))


# -- ConvNeXt (timm.models.convnext) --------------------------------------------------------


def convnext_block_forward(self: Any, x: Tensor) -> Tensor:
    """``ConvNeXtBlock``: layer scale ``gamma`` as a constant, ``branch + shortcut`` as a Sum."""
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
