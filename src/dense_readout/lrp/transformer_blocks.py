"""LRP forwards of transformer blocks (timm ViT/DeiT/Swin, torchvision ViT/Swin), CP-LRP.

Each block forward is the library's own, line by line, with the residual adds
as zennit ``Sum`` modules (one per add: a zennit rule keeps only one call's
input, so the second add of a block gets its own ``canonizer_sum_mlp``), layer
scales as constants (:func:`~dense_readout.lrp.blocks.pass_multiply`) and the
attention computed by the CP-LRP forwards of :mod:`dense_readout.lrp.cp_lrp`
(attention weights constant, relevance through the values). LayerNorms are made
linear by :class:`~dense_readout.lrp.canonizers.LayerNormCanonizer` and GELUs pass
relevance (zennit's ``Pass`` rule), as in Ali et al. (2022).

The records that register these forwards are ``timm.vit``, ``timm.swin``,
``torchvision.vit`` and ``torchvision.swin`` in :mod:`dense_readout.lrp.family_records`;
:func:`dense_readout.lrp.support.transformer_refusal` says why another attention
model cannot be refined.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn
from zennit.layer import Sum

from .blocks import pass_multiply, residual_sum
from .cp_lrp import mha_self_attention, mha_value_attributes

__all__ = [
    "mha_block_attributes",
    "pos_embed_attributes",
    "timm_pos_embed",
    "timm_swin_block_forward",
    "timm_vit_block_forward",
    "torchvision_encoder_block_forward",
    "torchvision_encoder_forward",
    "torchvision_swin_block_forward",
    "two_sums",
]


def _second_sum(self: Any, *summands: Tensor) -> Tensor:
    return cast(Sum, self.canonizer_sum_mlp)(torch.stack(summands, dim=-1))


def two_sums(block: nn.Module) -> dict:
    """The second residual ``Sum`` of a block with two adds (``canonizer_sum_mlp``).

    Example:
        >>> from torch import nn
        >>> list(two_sums(nn.Identity()))
        ['canonizer_sum_mlp']
    """
    return {"canonizer_sum_mlp": Sum()}


def _scaled(layer_scale: nn.Module, x: Tensor) -> Tensor:
    """The timm ``LayerScale`` (``x * gamma``) as a constant scale; Identity passes."""
    gamma = getattr(layer_scale, "gamma", None)
    return x if gamma is None else pass_multiply(x, gamma)


# -- timm -----------------------------------------------------------------------------------


def timm_pos_embed(self: Any, x: Tensor) -> Tensor:
    """The timm ViT's own ``_pos_embed`` with its constants added through a Sum.

    The constants (position embedding, class and register tokens) take their share of
    relevance, as biases do.

    The model's method is called twice, on ``x`` and on zeros (the constant part), so every
    timm variant (``no_embed_class``, dynamic size, distillation token) is covered.

    Example:
        >>> import timm, torch
        >>> from dense_readout.lrp.checks import block_forward_matches
        >>> block = timm.create_model("vit_tiny_patch16_224", depth=1, img_size=32, patch_size=8)
        >>> block, x = block.eval(), torch.randn(1, 3, 32, 32)
        >>> block_forward_matches(block, x)
        True
    """
    own = type(self)._pos_embed
    with torch.no_grad():
        constant = own(self, torch.zeros_like(x))
    return residual_sum(self, own(self, x) - constant, constant)


def pos_embed_attributes(model: nn.Module) -> dict:
    """The timm ViT's ``_pos_embed`` replaced by :func:`timm_pos_embed` (bound to ``model``)."""
    return {"_pos_embed": timm_pos_embed.__get__(model)}


def timm_vit_block_forward(self: Any, x: Tensor, **kwargs: Any) -> Tensor:
    """``timm.models.vision_transformer.Block``: two residual Sums, layer scales constant.

    Example:
        >>> import timm, torch
        >>> from dense_readout.lrp.checks import block_forward_matches
        >>> vit = timm.create_model("vit_tiny_patch16_224", depth=1, img_size=32, patch_size=8)
        >>> block, x = vit.eval().blocks[0], torch.randn(1, 17, 192)
        >>> block_forward_matches(block, x)
        True
    """
    branch = self.drop_path1(_scaled(self.ls1, self.attn(self.norm1(x), **kwargs)))
    x = residual_sum(self, x, branch)
    branch = self.drop_path2(_scaled(self.ls2, self.mlp(self.norm2(x))))
    return _second_sum(self, x, branch)


def timm_swin_block_forward(self: Any, x: Tensor) -> Tensor:
    """``timm.models.swin_transformer.SwinTransformerBlock``: two residual Sums.

    Example:
        >>> import timm, torch
        >>> from dense_readout.lrp.checks import block_forward_matches
        >>> from timm.models.swin_transformer import SwinTransformerBlock
        >>> block = SwinTransformerBlock(8, (4, 4), num_heads=2, window_size=2, shift_size=1)
        >>> block, x = block.eval(), torch.randn(1, 4, 4, 8)
        >>> block_forward_matches(block, x)
        True
    """
    batch, height, width, channels = x.shape
    x = residual_sum(self, x, self.drop_path1(self._attn(self.norm1(x))))
    x = x.reshape(batch, -1, channels)
    x = _second_sum(self, x, self.drop_path2(self.mlp(self.norm2(x))))
    return x.reshape(batch, height, width, channels)


# -- torchvision ----------------------------------------------------------------------------


def torchvision_encoder_forward(self: Any, input: Tensor) -> Tensor:
    """CP-LRP forward of ``torchvision.models.vision_transformer.Encoder``.

    The position embedding is added through a Sum (it takes its share of relevance, as a
    bias does).

    Example:
        >>> import timm, torch
        >>> from dense_readout.lrp.checks import block_forward_matches
        >>> from torchvision.models.vision_transformer import Encoder
        >>> block = Encoder(5, 1, 2, 8, 16, 0.0, 0.0)
        >>> block, x = block.eval(), torch.randn(1, 5, 8)
        >>> block_forward_matches(block, x)
        True
    """
    x = residual_sum(self, input, self.pos_embedding.expand_as(input))
    return self.ln(self.layers(self.dropout(x)))


def torchvision_encoder_block_forward(self: Any, input: Tensor) -> Tensor:
    """``torchvision.models.vision_transformer.EncoderBlock``: CP-LRP self-attention, two Sums.

    Example:
        >>> import timm, torch
        >>> from dense_readout.lrp.checks import block_forward_matches
        >>> from torchvision.models.vision_transformer import EncoderBlock
        >>> block, x = EncoderBlock(2, 8, 16, 0.0, 0.0).eval(), torch.randn(1, 5, 8)
        >>> block_forward_matches(block, x)
        True
    """
    x = mha_self_attention(self, self.self_attention, self.ln_1(input))
    x = residual_sum(self, self.dropout(x), input)
    return _second_sum(self, x, self.mlp(self.ln_2(x)))


def torchvision_swin_block_forward(self: Any, x: Tensor) -> Tensor:
    """``torchvision.models.swin_transformer.SwinTransformerBlock`` (V1): two residual Sums.

    Example:
        >>> import timm, torch
        >>> from dense_readout.lrp.checks import block_forward_matches
        >>> from torchvision.models.swin_transformer import SwinTransformerBlock
        >>> block = SwinTransformerBlock(8, 2, [2, 2], [1, 1]).eval()
        >>> x = torch.randn(1, 4, 4, 8)
        >>> block_forward_matches(block, x)
        True
    """
    x = residual_sum(self, x, self.stochastic_depth(self.attn(self.norm1(x))))
    return _second_sum(self, x, self.stochastic_depth(self.mlp(self.norm2(x))))


# -- attributes set on the blocks while their forward is replaced --------------------------


def mha_block_attributes(block: nn.Module) -> dict:
    """Two residual Sums and the CP-LRP value path of ``block.self_attention`` (torchvision ViT).

    Example:
        >>> from torchvision.models.vision_transformer import EncoderBlock
        >>> sorted(mha_block_attributes(EncoderBlock(2, 8, 16, 0.0, 0.0)))
        ['canonizer_sum_mlp', 'canonizer_value', 'canonizer_values']
    """
    return {**two_sums(block), **mha_value_attributes(block)}
