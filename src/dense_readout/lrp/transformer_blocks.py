"""LRP forwards of transformer blocks (timm ViT/DeiT/Swin, torchvision ViT/Swin), CP-LRP.

Each block forward is the library's own, line by line, with the residual adds
as zennit ``Sum`` modules (one per add: a zennit rule keeps only one call's
input, so the second add of a block gets its own ``canonizer_sum_mlp``), layer
scales as constants (:func:`~dense_readout.lrp.canonizers.pass_multiply`) and the
attention computed by the CP-LRP forwards of :mod:`dense_readout.lrp.cp_lrp`
(attention weights constant, relevance through the values). LayerNorms are made
linear by :class:`~dense_readout.lrp.canonizers.LayerNormCanonizer` and GELUs pass
relevance (zennit's ``Pass`` rule), as in Ali et al. (2022).

:data:`SUPPORTED_TRANSFORMERS` names the families; :func:`transformer_refusal`
says why a model with attention cannot be refined (an attention module or the
block holding it without a registered forward, or a gated MLP).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn
from zennit.layer import Sum

from .canonizers import block_forward, pass_multiply, register_block, residual_sum
from .cp_lrp import (
    mha_self_attention,
    mha_value_attributes,
    swin_window_attention_forward,
    timm_attention_forward,
    torchvision_window_attention_forward,
    values_attributes,
)

__all__ = [
    "SUPPORTED_TRANSFORMERS",
    "register_transformer_blocks",
    "timm_pos_embed",
    "timm_swin_block_forward",
    "timm_vit_block_forward",
    "torchvision_encoder_block_forward",
    "torchvision_encoder_forward",
    "torchvision_swin_block_forward",
    "transformer_refusal",
]

#: The transformer families LRP refines (CP-LRP), for messages and docs.
SUPPORTED_TRANSFORMERS = (
    "timm VisionTransformer (ViT/DeiT with [CLS] or distillation token, registers, "
    "global_pool='avg' with or without fc_norm; LayerNorm and plain GELU MLPs), timm "
    "SwinTransformer, torchvision vit_* and swin_t/s/b (Swin V1)"
)


def _second_sum(self: Any, *summands: Tensor) -> Tensor:
    return cast(Sum, self.canonizer_sum_mlp)(torch.stack(summands, dim=-1))


def _two_sums(block: nn.Module) -> dict:
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
        >>> from dense_readout.lrp.canonizers import block_forward_matches
        >>> block = timm.create_model("vit_tiny_patch16_224", depth=1, img_size=32, patch_size=8)
        >>> block, x = block.eval(), torch.randn(1, 3, 32, 32)
        >>> block_forward_matches(block, x)
        True
    """
    own = type(self)._pos_embed
    with torch.no_grad():
        constant = own(self, torch.zeros_like(x))
    return residual_sum(self, own(self, x) - constant, constant)


def _pos_embed_attributes(model: nn.Module) -> dict:
    return {"_pos_embed": timm_pos_embed.__get__(model)}


def timm_vit_block_forward(self: Any, x: Tensor, **kwargs: Any) -> Tensor:
    """``timm.models.vision_transformer.Block``: two residual Sums, layer scales constant.

    Example:
        >>> import timm, torch
        >>> from dense_readout.lrp.canonizers import block_forward_matches
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
        >>> from dense_readout.lrp.canonizers import block_forward_matches
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
        >>> from dense_readout.lrp.canonizers import block_forward_matches
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
        >>> from dense_readout.lrp.canonizers import block_forward_matches
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
        >>> from dense_readout.lrp.canonizers import block_forward_matches
        >>> from torchvision.models.swin_transformer import SwinTransformerBlock
        >>> block = SwinTransformerBlock(8, 2, [2, 2], [1, 1]).eval()
        >>> x = torch.randn(1, 4, 4, 8)
        >>> block_forward_matches(block, x)
        True
    """
    x = residual_sum(self, x, self.stochastic_depth(self.attn(self.norm1(x))))
    return _second_sum(self, x, self.stochastic_depth(self.mlp(self.norm2(x))))


# -- registration and support ---------------------------------------------------------------


def _mha_block_attributes(block: nn.Module) -> dict:
    return {**_two_sums(block), **mha_value_attributes(block)}


def register_transformer_blocks() -> None:
    """Register the block and attention forwards above (a no-op for missing libraries).

    Runs on import; registering the same entries again changes nothing.

    Example:
        >>> from dense_readout.lrp.canonizers import registered_blocks
        >>> register_transformer_blocks()
        >>> "timm.models.vision_transformer.Block" in registered_blocks()
        True
    """
    try:
        from timm.models import swin_transformer as timm_swin
        from timm.models import vision_transformer as timm_vit
        from timm.models.deit import VisionTransformerDistilled
    except ImportError:  # pragma: no cover - timm missing or reorganised
        pass
    else:
        register_block(timm_vit.Block, attributes=_two_sums)(timm_vit_block_forward)
        for model_type in (timm_vit.VisionTransformer, VisionTransformerDistilled):
            # the model's own forward; only _pos_embed is replaced
            register_block(model_type, attributes=_pos_embed_attributes)(model_type.forward)
        register_block(timm_vit.Attention, attributes=values_attributes)(timm_attention_forward)
        register_block(timm_swin.SwinTransformerBlock, attributes=_two_sums)(
            timm_swin_block_forward
        )
        register_block(timm_swin.WindowAttention, attributes=values_attributes)(
            swin_window_attention_forward
        )
    try:
        from torchvision.models import swin_transformer as tv_swin
        from torchvision.models import vision_transformer as tv_vit
    except ImportError:  # pragma: no cover - torchvision missing
        return
    register_block(tv_vit.Encoder)(torchvision_encoder_forward)
    register_block(tv_vit.EncoderBlock, attributes=_mha_block_attributes)(
        torchvision_encoder_block_forward
    )
    register_block(tv_swin.SwinTransformerBlock, attributes=_two_sums)(
        torchvision_swin_block_forward
    )
    register_block(tv_swin.ShiftedWindowAttention, attributes=values_attributes)(
        torchvision_window_attention_forward
    )


# blocks whose registered forward computes their nn.MultiheadAttention itself (CP-LRP)
_INLINE_ATTENTION = ("torchvision.models.vision_transformer.EncoderBlock",)

# Modules a supported transformer may contain besides registered blocks: containers,
# linear maps, LayerNorms, activations, pass-through layers (eval mode), heads.
_ALLOWED_TYPES = (
    nn.Sequential,
    nn.ModuleList,
    nn.Linear,
    nn.Conv2d,
    nn.LayerNorm,
    nn.Dropout,
    nn.Identity,
    nn.Flatten,
    nn.AdaptiveAvgPool2d,
    nn.Softmax,
    nn.GELU,
)
_ALLOWED_NAMES = frozenset(
    {
        "timm.layers.adaptive_avgmax_pool.FastAdaptiveAvgPool",
        "timm.layers.adaptive_avgmax_pool.SelectAdaptivePool2d",
        "timm.layers.classifier.ClassifierHead",
        "timm.layers.drop.DropPath",
        "timm.layers.layer_scale.LayerScale",
        "timm.layers.mlp.Mlp",
        "timm.layers.patch_dropout.PatchDropout",
        "timm.layers.patch_embed.PatchEmbed",
        "timm.layers.activations.GELU",
        "timm.layers.activations.GELUTanh",
        "timm.layers.activations.QuickGELU",
        "timm.models.deit.VisionTransformerDistilled",
        "timm.models.swin_transformer.PatchMerging",
        "timm.models.swin_transformer.SwinTransformer",
        "timm.models.swin_transformer.SwinTransformerStage",
        "timm.models.vision_transformer.LayerScale",  # timm < 1.0.12
        "timm.models.vision_transformer.VisionTransformer",
        "torchvision.models.swin_transformer.PatchMerging",
        "torchvision.models.swin_transformer.SwinTransformer",
        "torchvision.models.vision_transformer.Encoder",
        "torchvision.models.vision_transformer.MLPBlock",
        "torchvision.models.vision_transformer.VisionTransformer",
        "torchvision.ops.misc.MLP",
        "torchvision.ops.misc.Permute",
        "torchvision.ops.stochastic_depth.StochasticDepth",
    }
)


def _qualified(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _is_attention(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.MultiheadAttention)
        or "Attention" in type(module).__name__
        or hasattr(module, "fused_attn")  # timm computes attention in these
    )


def _attention_problem(module: nn.Module, block: nn.Module | None) -> str | None:
    handled = block is not None and (
        block_forward(module) is not None or _qualified(block) in _INLINE_ATTENTION
    )
    if block is None or block_forward(block) is None or not handled:
        where = type(block).__name__ if block is not None else "the model"
        return f"attention module {type(module).__name__} in block {where} has no CP-LRP forward"
    return None


def _module_problem(module: nn.Module) -> str | None:
    if (
        block_forward(module) is not None
        or isinstance(module, _ALLOWED_TYPES)
        or _qualified(module) in _ALLOWED_NAMES
    ):
        return None
    return (
        f"it contains {_qualified(module)}, which the CP-LRP rules here do not cover (a "
        "gated MLP, another norm or block type)"
    )


def transformer_refusal(model: nn.Module) -> str | None:
    """Why LRP cannot refine ``model``'s attention, or None (no attention, or all supported).

    Every attention module needs a registered CP-LRP forward (or a block whose
    registered forward computes it) inside a block with a registered forward (which
    routes the residual adds through ``Sum`` modules), and every other module of a
    model with attention must be a registered block or a known linear, LayerNorm,
    activation, container or pass-through type (so gated MLPs, RMSNorm or hybrid CNN
    stems are refused, not silently mis-propagated).

    Example:
        >>> import timm
        >>> from torch import nn
        >>> vit = timm.create_model("vit_tiny_patch16_224", depth=1, img_size=32, num_classes=3)
        >>> transformer_refusal(vit) is None
        True
        >>> layer = nn.TransformerEncoderLayer(16, 2, batch_first=True)
        >>> print(transformer_refusal(nn.Sequential(layer)))  # doctest: +ELLIPSIS
        attention module MultiheadAttention in block TransformerEncoderLayer has no CP-LRP ...
    """
    if not any(_is_attention(module) for module in model.modules()):
        return None
    parents = {id(child): parent for parent in model.modules() for child in parent.children()}
    modules = list(model.modules())
    problems = [_attention_problem(m, parents.get(id(m))) for m in modules if _is_attention(m)]
    problems += [_module_problem(m) for m in modules if not _is_attention(m)]
    problem = next((p for p in problems if p is not None), None)
    return None if problem is None else f"{problem} (supported: {SUPPORTED_TRANSFORMERS})"


register_transformer_blocks()
