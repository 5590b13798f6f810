"""Why LRP refuses a model: a family's refusal, an unlisted torchvision CNN, uncovered attention.

:func:`refuse_unsupported` is what :class:`~dense_readout.lrp.LRPReadout` calls
before anything else. It reads the family registry
(:mod:`dense_readout.lrp.families`): a torchvision CNN module no family covers is
refused (its blocks may add shortcuts or gate inside ``forward``, which would break
conservation silently), as is a family carrying a ``refusal``, a token-grid adapter
the model's family does not list, a Hugging Face ``transformers`` model, and any
attention model with a module the CP-LRP forwards do not cover
(:func:`transformer_refusal`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from .._outputs import TRANSFORMERS_LRP_REFUSAL, is_transformers_model
from ..errors import UnsupportedModelError
from .families import FAMILIES, block_rewrite, family_of

if TYPE_CHECKING:
    from ..readout import DenseReadout

__all__ = [
    "SUPPORTED_TRANSFORMERS",
    "check_torchvision",
    "refuse_unsupported",
    "torchvision_refusal",
    "transformer_refusal",
]

#: The transformer families LRP refines (CP-LRP), for messages and docs.
SUPPORTED_TRANSFORMERS = (
    "timm VisionTransformer (ViT/DeiT with [CLS] or distillation token, registers, "
    "global_pool='avg' with or without fc_norm; LayerNorm and plain GELU MLPs), timm "
    "SwinTransformer, torchvision vit_* and swin_t/s/b (Swin V1)"
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
        block_rewrite(module) is not None or _qualified(block) in _INLINE_ATTENTION
    )
    if block is None or block_rewrite(block) is None or not handled:
        where = type(block).__name__ if block is not None else "the model"
        return f"attention module {type(module).__name__} in block {where} has no CP-LRP forward"
    return None


def _module_problem(module: nn.Module) -> str | None:
    if (
        block_rewrite(module) is not None
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


def torchvision_refusal(model: nn.Module, custom_split: bool = False) -> str | None:
    """Why LRP refuses torchvision CNN ``model``, or None (also for non-torchvision models).

    ``custom_split``: the caller passed ``features=``/``head=``, which lifts a refusal
    whose family names a ``split``.

    Example:
        >>> import torchvision
        >>> model = torchvision.models.mnasnet0_5(weights=None)
        >>> torchvision_refusal(model).startswith("the structural adapter reads MNASNet")
        True
        >>> torchvision_refusal(model, custom_split=True) is None
        True
    """
    module = type(model).__module__
    family = family_of(model)
    if family is None:
        if not module.startswith("torchvision.models."):
            return None
        known = ", ".join(FAMILIES.names())
        return (
            f"no LRP rule set is registered for {module} (its blocks may add shortcuts or "
            f"gate inside forward, which would break conservation silently). Known families: "
            f"{known}; add one with dense_readout.lrp.register_family(LRPFamily(...))"
        )
    if family.supported or (custom_split and family.split is not None):
        return None
    return family.refusal


def check_torchvision(model: nn.Module, custom_split: bool = False) -> None:
    """Raise :class:`~dense_readout.errors.UnsupportedModelError` with :func:`torchvision_refusal`'s reason.

    Example:
        >>> import torchvision
        >>> check_torchvision(torchvision.models.resnet18(weights=None))  # supported: no error
        >>> check_torchvision(torchvision.models.mnasnet0_5(weights=None))
        Traceback (most recent call last):
        ...
        dense_readout.errors.UnsupportedModelError: LRP refinement does not support MNASNet: ...
    """
    reason = torchvision_refusal(model, custom_split)
    if reason:
        raise UnsupportedModelError(
            f"LRP refinement does not support {type(model).__name__}: {reason}."
        )


def _token_problem(readout: DenseReadout) -> str | None:
    from ..adapters import TokenGridAdapter

    if not isinstance(readout.adapter, TokenGridAdapter):
        return None
    family = family_of(readout.model)
    if family is not None and readout.adapter.name in family.tokens:
        return None
    return f"its token adapter {readout.adapter.name!r} has no LRP support"


def refuse_unsupported(readout: DenseReadout) -> None:
    """Raise :class:`~dense_readout.errors.UnsupportedModelError` if LRP cannot refine ``readout``'s model.

    Example:
        >>> import timm
        >>> from dense_readout import DenseReadout
        >>> refuse_unsupported(DenseReadout(timm.create_model("resnet18", num_classes=2)))
    """
    model = readout.model
    if is_transformers_model(model):  # HF blocks add their shortcuts inside forward
        raise UnsupportedModelError(TRANSFORMERS_LRP_REFUSAL.format(type(model).__name__))
    problem = transformer_refusal(model) or _token_problem(readout)
    if problem is not None:
        raise UnsupportedModelError(
            f"LRP refinement does not support {type(model).__name__}: {problem}. zennit has "
            "no rules for softmax attention; dense_readout.lrp refines the listed families "
            "with CP-LRP (attention weights and LayerNorm scale as constants). Use the "
            "readout itself or dense_readout.gradcam for this model."
        )
    check_torchvision(model, custom_split=readout.adapter.name == "custom")
