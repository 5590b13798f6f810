"""CP-LRP for self-attention (Ali et al. 2022).

"XAI for Transformers: Better Explanations through Conservative Propagation", ICML.

Attention ``softmax(q kᵀ) v`` has no conservative LRP rule as it stands: the
softmax and the query-key product are not linear. CP-LRP treats the attention
weights ``p = softmax(q kᵀ)`` as *constants* of the forward pass (they are
detached), so relevance flows only through the value path; the mixing
``p @ v`` is then a linear map of the values whose rows sum to one, and the
epsilon rule on it conserves relevance. LayerNorm is made linear the same way
(its standard deviation detached, :class:`~dense_readout.lrp.canonizers.LayerNormCanonizer`),
the MLP's GELU passes relevance unchanged (zennit's ``Pass`` rule), and the
remaining operations are zennit-ruled linear layers and residual ``Sum`` modules.

This module holds the attention part: :class:`AttentionValues`, the module that
computes ``p @ v`` (so the composite gives it a rule: ``Norm``, the epsilon rule
without parameters, see :func:`~dense_readout.lrp.composites.extra_layer_map`),
and the CP-LRP forwards of timm's ``Attention`` and ``WindowAttention`` and of
torchvision's ``ShiftedWindowAttention``. They compute the module's own function
(``tests/test_lrp_registries.py`` checks it); only the gradient graph differs.
The blocks that call them are in :mod:`dense_readout.lrp.transformer_blocks`.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from .blocks import pass_multiply

__all__ = [
    "AttentionValues",
    "attend",
    "mha_self_attention",
    "swin_window_attention_forward",
    "timm_attention_forward",
    "torchvision_window_attention_forward",
    "values_attributes",
]


class AttentionValues(nn.Module):
    """``p @ v`` with the attention weights ``p`` treated as constants (CP-LRP).

    The input packs both: ``cat([p, v], dim=-1)`` of shape ``…×N×(N+D)`` (self-attention,
    so ``p`` is ``N×N``). zennit rules see one input tensor, the weights are detached
    inside, and the composite's ``Norm`` rule then gives the values
    ``R_v = v ⊙ pᵀ (R / (p v))``: the epsilon rule of the linear map ``v ↦ p v``.

    Example:
        >>> import torch
        >>> p = torch.softmax(torch.randn(1, 4, 4), dim=-1)
        >>> v = torch.randn(1, 4, 3)
        >>> out = AttentionValues()(torch.cat([p, v], dim=-1))
        >>> torch.allclose(out, p @ v)
        True
    """

    def forward(self, packed: Tensor) -> Tensor:
        """``P @ V`` of ``packed = [P, V]``, ``P`` detached (CP-LRP: attention as constant)."""
        tokens = packed.shape[-2]
        return packed[..., :tokens].detach() @ packed[..., tokens:]


def values_attributes(module: nn.Module) -> dict:
    """The attributes an attention forward needs during LRP: its :class:`AttentionValues`.

    Example:
        >>> from torch import nn
        >>> list(values_attributes(nn.Identity()))
        ['canonizer_values']
    """
    return {"canonizer_values": AttentionValues()}


def attend(module: nn.Module, scores: Tensor, values: Tensor) -> Tensor:
    """``softmax(scores) @ values`` with the softmax a constant, through ``module.canonizer_values``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> owner = nn.Module()
        >>> owner.canonizer_values = AttentionValues()
        >>> scores, v = torch.randn(2, 5, 5), torch.randn(2, 5, 3, requires_grad=True)
        >>> out = attend(owner, scores, v)
        >>> torch.allclose(out, scores.softmax(-1) @ v), out.requires_grad
        (True, True)
    """
    weights = scores.detach().softmax(dim=-1)
    mix = cast(AttentionValues, module.canonizer_values)
    return mix(torch.cat([weights.to(values.dtype), values], dim=-1))


def _scores(q: Tensor, k: Tensor, scale: float) -> Tensor:
    return (q.detach() * scale) @ k.detach().transpose(-2, -1)


def _no_masks(attn_mask: Any, is_causal: bool) -> None:
    if attn_mask is not None or is_causal:
        raise InputError(
            "LRP refinement of attention with attn_mask/is_causal is not supported: the "
            "readout's forward passes none. Call the model without them."
        )


# -- timm ----------------------------------------------------------------------------------


def timm_attention_forward(
    self: Any, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False
) -> Tensor:
    """``timm.layers.Attention`` (ViT, DeiT, registers): weights constant, value path ruled.

    timm's own forward, unfused; an output gate (``gated=True``) is a constant too.

    Example:
        >>> import torch
        >>> from timm.models.vision_transformer import Attention
        >>> attn, x = Attention(8, num_heads=2).eval(), torch.randn(1, 5, 8)
        >>> attn.canonizer_values = AttentionValues()
        >>> torch.allclose(timm_attention_forward(attn, x), attn(x), atol=1e-5)
        True
    """
    _no_masks(attn_mask, is_causal)
    batch, tokens, _ = x.shape
    head_dim = self.head_dim
    width = getattr(self, "attn_dim", self.num_heads * head_dim)
    gate = self.gate(x).sigmoid() if getattr(self, "gate", None) is not None else None
    qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = self.q_norm(q), self.k_norm(k)
    x = attend(self, _scores(q, k, self.scale), v)
    x = x.transpose(1, 2).reshape(batch, tokens, width)
    norm = getattr(self, "norm", None)
    if norm is not None:
        x = norm(x)
    if gate is not None:
        x = pass_multiply(x, gate)
    return self.proj_drop(self.proj(x))


def swin_window_attention_forward(self: Any, x: Tensor, mask: Tensor | None = None) -> Tensor:
    """CP-LRP forward of ``timm.models.swin_transformer.WindowAttention``.

    The relative position bias and the shift mask enter the (constant) weights only.

    Example:
        >>> import torch
        >>> from timm.models.swin_transformer import WindowAttention
        >>> attn, x = WindowAttention(8, num_heads=2, window_size=2).eval(), torch.randn(3, 4, 8)
        >>> attn.canonizer_values = AttentionValues()
        >>> torch.allclose(swin_window_attention_forward(attn, x), attn(x), atol=1e-5)
        True
    """
    windows, tokens, _ = x.shape
    qkv = self.qkv(x).reshape(windows, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    scores = _scores(q, k, self.scale) + self._get_rel_pos_bias()
    if mask is not None:
        count = mask.shape[0]
        scores = scores.view(-1, count, self.num_heads, tokens, tokens)
        scores = scores + mask.unsqueeze(1).unsqueeze(0)
        scores = scores.view(-1, self.num_heads, tokens, tokens)
    x = attend(self, scores, v).transpose(1, 2).reshape(windows, tokens, -1)
    return self.proj_drop(self.proj(x))


# -- torchvision ---------------------------------------------------------------------------


def mha_self_attention(block: nn.Module, attention: nn.MultiheadAttention, x: Tensor) -> Tensor:
    """``attention(x, x, x)[0]`` of a batch-first ``nn.MultiheadAttention``, CP-LRP style.

    The value projection runs through ``block.canonizer_value`` (an ``nn.Linear`` copy
    of the value rows of ``in_proj_weight``, see :func:`mha_value_attributes`), so it gets
    the composite's rule; queries and keys only feed the constant weights.

    Example:
        >>> import torch
        >>> from torchvision.models.vision_transformer import EncoderBlock
        >>> block, x = EncoderBlock(2, 8, 16, 0.0, 0.0).eval(), torch.randn(1, 5, 8)
        >>> for name, value in mha_value_attributes(block).items():
        ...     setattr(block, name, value)
        >>> ours = mha_self_attention(block, block.self_attention, x)
        >>> torch.allclose(ours, block.self_attention(x, x, x)[0], atol=1e-5)
        True
    """
    batch, tokens, width = x.shape
    heads = attention.num_heads
    weight, bias = attention.in_proj_weight, attention.in_proj_bias
    q, k = F.linear(x, weight[: 2 * width], None if bias is None else bias[: 2 * width]).chunk(
        2, -1
    )
    v = cast(nn.Linear, block.canonizer_value)(x)

    def split(t: Tensor) -> Tensor:
        return t.reshape(batch, tokens, heads, width // heads).transpose(1, 2)

    out = attend(block, _scores(split(q), split(k), (width // heads) ** -0.5), split(v))
    return attention.out_proj(out.transpose(1, 2).reshape(batch, tokens, width))


def mha_value_attributes(block: nn.Module) -> dict:
    """:func:`values_attributes` plus ``canonizer_value``.

    ``canonizer_value`` is the value projection of ``block.self_attention`` as an
    ``nn.Linear`` (a copy, made for one LRP call).

    Example:
        >>> from torchvision.models.vision_transformer import EncoderBlock
        >>> value = mha_value_attributes(EncoderBlock(2, 8, 16, 0.0, 0.0))["canonizer_value"]
        >>> tuple(value.weight.shape)
        (8, 8)
    """
    attention = cast(nn.MultiheadAttention, block.self_attention)
    weight, bias = attention.in_proj_weight, attention.in_proj_bias
    width = attention.embed_dim
    value = nn.Linear(width, width, bias=bias is not None).to(weight)
    with torch.no_grad():
        value.weight.copy_(weight[2 * width :])
        if bias is not None:
            value.bias.copy_(bias[2 * width :])
    return {**values_attributes(block), "canonizer_value": value}


def _shift_mask(padded: tuple[int, int], window: list[int], shift: list[int], like: Tensor):
    """The torchvision shifted-window attention mask (0 / -100), ``windows×N×N``."""
    mask = like.new_zeros(padded)
    h_slices = ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None))
    w_slices = ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None))
    count = 0
    for h in h_slices:
        for w in w_slices:
            mask[h[0] : h[1], w[0] : w[1]] = count
            count += 1
    mask = mask.view(padded[0] // window[0], window[0], padded[1] // window[1], window[1])
    mask = mask.permute(0, 2, 1, 3).reshape(-1, window[0] * window[1])
    mask = mask.unsqueeze(1) - mask.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def torchvision_window_attention_forward(self: Any, x: Tensor) -> Tensor:
    """``torchvision.models.swin_transformer.ShiftedWindowAttention`` (Swin V1).

    torchvision's functional ``shifted_window_attention`` with ``self.qkv`` and
    ``self.proj`` called as modules (the functional form bypasses their rules).

    Example:
        >>> import torch
        >>> from torchvision.models.swin_transformer import ShiftedWindowAttention
        >>> attn = ShiftedWindowAttention(8, [2, 2], [1, 1], num_heads=2).eval()
        >>> attn.canonizer_values, x = AttentionValues(), torch.randn(1, 4, 4, 8)
        >>> torch.allclose(torchvision_window_attention_forward(attn, x), attn(x), atol=1e-5)
        True
    """
    batch, height, width, channels = x.shape
    window, heads = list(self.window_size), self.num_heads
    pad_r = (window[1] - width % window[1]) % window[1]
    pad_b = (window[0] - height % window[0]) % window[0]
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    _, pad_h, pad_w, _ = x.shape
    shift = list(self.shift_size)
    if window[0] >= pad_h:
        shift[0] = 0
    if window[1] >= pad_w:
        shift[1] = 0
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    count = (pad_h // window[0]) * (pad_w // window[1])
    x = x.view(batch, pad_h // window[0], window[0], pad_w // window[1], window[1], channels)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch * count, window[0] * window[1], channels)
    tokens = x.shape[1]
    qkv = self.qkv(x).reshape(x.size(0), tokens, 3, heads, channels // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    scores = _scores(q, k, (channels // heads) ** -0.5) + self.get_relative_position_bias()
    if sum(shift) > 0:
        mask = _shift_mask((pad_h, pad_w), window, shift, x)
        scores = scores.view(-1, count, heads, tokens, tokens) + mask.unsqueeze(1).unsqueeze(0)
        scores = scores.view(-1, heads, tokens, tokens)
    x = attend(self, scores, v).transpose(1, 2).reshape(-1, tokens, channels)
    x = F.dropout(self.proj(x), p=self.dropout, training=self.training)
    x = x.view(batch, pad_h // window[0], pad_w // window[1], window[0], window[1], channels)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, pad_h, pad_w, channels)
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
    return x[:, :height, :width, :].contiguous()
