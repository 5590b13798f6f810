"""The built-in LRP families: one :class:`~dense_readout.lrp.family.LRPFamily` record each.

Each record says, in one place, which model modules a family covers, the block
forwards it needs (:mod:`dense_readout.lrp.timm_blocks`,
:mod:`~dense_readout.lrp.torchvision_blocks`, :mod:`~dense_readout.lrp.transformer_blocks`),
its default composite, its token adapters and, where it cannot be refined, why.
:mod:`dense_readout.lrp.families` registers them; ``docs/lrp.md``'s family table is
printed from them (``python benchmarks/lrp_families_table.py``).
"""

from __future__ import annotations

from types import MappingProxyType

from timm.layers import squeeze_excite as timm_se
from timm.models import _efficientnet_blocks as eff
from timm.models import convnext as timm_convnext
from timm.models import resnet as timm_resnet
from timm.models import swin_transformer as timm_swin
from timm.models import vision_transformer as timm_vit
from timm.models.deit import VisionTransformerDistilled
from torchvision.models import (
    convnext,
    densenet,
    efficientnet,
    mnasnet,
    mobilenetv2,
    mobilenetv3,
    regnet,
    resnet,
)
from torchvision.models import swin_transformer as tv_swin
from torchvision.models import vision_transformer as tv_vit
from torchvision.ops import misc
from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer

from . import timm_blocks as tb
from . import torchvision_blocks as vb
from . import transformer_blocks as xb
from .cp_lrp import (
    swin_window_attention_forward,
    timm_attention_forward,
    torchvision_window_attention_forward,
    values_attributes,
)
from .family import LRPFamily, rewrites

__all__ = ["BUILTIN_FAMILIES"]

_MERGE = "batch norms merged into their convolutions"
_SE = "squeeze-excite gates as constants"
_PLAIN = (
    "convolutions, ReLU and max pools only (no blocks); not a GAP model, so only with "
    "features=model.features and a per-cell head of your own"
)
_CP_LRP = (
    "CP-LRP: attention weights and LayerNorm scale constant, relevance through the values; "
    "residual adds and learned tokens as Sums"
)
_TIMM_EFFICIENT = rewrites(
    {
        eff.DepthwiseSeparableConv: tb.depthwise_separable_forward,
        eff.InvertedResidual: tb.inverted_residual_forward,
        eff.SqueezeExcite: tb.squeeze_excite_forward,
    }
)
_TV_SE = rewrites({misc.SqueezeExcitation: vb.squeeze_excitation_forward})

_TIMM = (
    LRPFamily(
        "timm.resnet",
        "timm ResNet",
        modules=("timm.models.resnet",),
        blocks=rewrites(
            {
                timm_resnet.BasicBlock: tb.basic_block_forward,
                timm_resnet.Bottleneck: tb.bottleneck_forward,
                timm_se.SEModule: tb.se_module_forward,
                timm_se.EffectiveSEModule: tb.effective_se_forward,
            }
        ),
        rules=f"BasicBlock/Bottleneck residual Sums; SE gates constant; {_MERGE} (traced)",
    ),
    LRPFamily(
        "timm.efficientnet",
        "timm EfficientNet (and -Lite)",
        modules=("timm.models.efficientnet",),
        blocks=_TIMM_EFFICIENT,
        rules=f"DepthwiseSeparableConv/InvertedResidual Sums; SqueezeExcite constant; {_MERGE} "
        "(traced, BatchNormAct2d)",
    ),
    LRPFamily(
        "timm.mobilenetv3",
        "timm MobileNetV3",
        modules=("timm.models.mobilenetv3",),
        blocks=_TIMM_EFFICIENT,
        rules=f"as timm EfficientNet; {_MERGE} (traced)",
    ),
    LRPFamily(
        "timm.convnext",
        "timm ConvNeXt",
        modules=("timm.models.convnext",),
        blocks=rewrites({timm_convnext.ConvNeXtBlock: tb.convnext_block_forward}),
        composite="epsilon_gamma_box",
        rules="ConvNeXtBlock Sum, gamma constant; LayerNorm with detached std",
    ),
    LRPFamily(
        "timm.vit",
        "timm ViT/DeiT",
        modules=("timm.models.vision_transformer", "timm.models.deit"),
        blocks=rewrites(
            {
                timm_vit.Block: xb.timm_vit_block_forward,
                timm_vit.VisionTransformer: timm_vit.VisionTransformer.forward,
                VisionTransformerDistilled: VisionTransformerDistilled.forward,
                timm_vit.Attention: timm_attention_forward,
            },
            {
                timm_vit.Block: xb.two_sums,
                timm_vit.VisionTransformer: xb.pos_embed_attributes,
                VisionTransformerDistilled: xb.pos_embed_attributes,
                timm_vit.Attention: values_attributes,
            },
        ),
        composite="cp_lrp",
        tokens=("timm-vit",),
        rules=f"{_CP_LRP}; Block, Attention, _pos_embed",
    ),
    LRPFamily(
        "timm.swin",
        "timm Swin",
        modules=("timm.models.swin_transformer",),
        blocks=rewrites(
            {
                timm_swin.SwinTransformerBlock: xb.timm_swin_block_forward,
                timm_swin.WindowAttention: swin_window_attention_forward,
            },
            {
                timm_swin.SwinTransformerBlock: xb.two_sums,
                timm_swin.WindowAttention: values_attributes,
            },
        ),
        composite="cp_lrp",
        rules=f"{_CP_LRP}; relative position bias and shift mask inside the constant weights",
    ),
)

_TORCHVISION_CNN = (
    LRPFamily(
        "torchvision.resnet",
        "torchvision ResNet",
        modules=("torchvision.models.resnet",),
        blocks=rewrites(
            {
                resnet.BasicBlock: ResNetBasicBlockCanonizer.forward,
                resnet.Bottleneck: ResNetBottleneckCanonizer.forward,
            }
        ),
        rules=f"zennit's ResNet block forwards; {_MERGE}",
        builders=("resnet18",),
    ),
    LRPFamily(
        "torchvision.efficientnet",
        "torchvision EfficientNet (V1, V2)",
        modules=("torchvision.models.efficientnet",),
        blocks=rewrites(
            {efficientnet.MBConv: vb.mbconv_forward, efficientnet.FusedMBConv: vb.mbconv_forward}
        )
        + _TV_SE,
        rules=f"MBConv/FusedMBConv residual Sums; {_SE}; {_MERGE}",
        builders=("efficientnet_b0", "efficientnet_v2_s"),
    ),
    LRPFamily(
        "torchvision.mobilenetv2",
        "torchvision MobileNetV2",
        modules=("torchvision.models.mobilenetv2",),
        blocks=rewrites({mobilenetv2.InvertedResidual: vb.mobilenet_v2_residual_forward}),
        rules=f"InvertedResidual residual Sums; {_MERGE}",
        builders=("mobilenet_v2",),
    ),
    LRPFamily(
        "torchvision.mobilenetv3",
        "torchvision MobileNetV3",
        modules=("torchvision.models.mobilenetv3",),
        blocks=rewrites({mobilenetv3.InvertedResidual: vb.mobilenet_v3_residual_forward}) + _TV_SE,
        rules=f"InvertedResidual residual Sums; {_SE} (hard-sigmoid); {_MERGE}",
        builders=("mobilenet_v3_small", "mobilenet_v3_large"),
    ),
    LRPFamily(
        "torchvision.convnext",
        "torchvision ConvNeXt",
        modules=("torchvision.models.convnext",),
        blocks=rewrites({convnext.CNBlock: vb.cn_block_forward}),
        composite="epsilon_gamma_box",
        rules="CNBlock residual Sums, layer_scale constant; LayerNorm and channels-first "
        "LayerNorm2d with a detached standard deviation (Norm rule)",
        builders=("convnext_tiny",),
    ),
    LRPFamily(
        "torchvision.regnet",
        "torchvision RegNet (X, Y)",
        modules=("torchvision.models.regnet",),
        blocks=rewrites({regnet.ResBottleneckBlock: vb.res_bottleneck_forward}) + _TV_SE,
        rules=f"ResBottleneckBlock residual Sums; {_SE} (RegNetY); {_MERGE}",
        builders=("regnet_y_400mf", "regnet_x_400mf"),
    ),
    LRPFamily(
        "torchvision.densenet",
        "torchvision DenseNet",
        modules=("torchvision.models.densenet",),
        blocks=rewrites({densenet._DenseLayer: vb.dense_layer_forward}),
        rules="concatenations route relevance; batch norms after a concatenation pass relevance "
        "(zennit's BatchNorm Pass rule), the others merged; _DenseLayer without checkpointing",
        builders=("densenet121",),
    ),
)

_TORCHVISION_OTHER = (
    LRPFamily(
        "torchvision.googlenet",
        "torchvision GoogLeNet",
        modules=("torchvision.models.googlenet",),
        rules=f"structural adapter; concatenations route relevance; {_MERGE}",
        builders=("googlenet",),
        model_kwargs=MappingProxyType({"aux_logits": False, "init_weights": False}),
    ),
    LRPFamily(
        "torchvision.shufflenetv2",
        "torchvision ShuffleNetV2",
        modules=("torchvision.models.shufflenetv2",),
        rules=f"structural adapter; concatenations and channel shuffles route relevance; {_MERGE}",
        builders=("shufflenet_v2_x0_5",),
    ),
    LRPFamily(
        "torchvision.squeezenet",
        "torchvision SqueezeNet",
        modules=("torchvision.models.squeezenet",),
        rules="structural adapter; concatenations route relevance; no batch norms",
        builders=("squeezenet1_0",),
    ),
    LRPFamily(
        "torchvision.vgg",
        "torchvision VGG",
        modules=("torchvision.models.vgg",),
        composite="epsilon_gamma_box",
        rules=f"{_PLAIN}; {_MERGE} (the _bn variants)",
    ),
    LRPFamily(
        "torchvision.alexnet", "torchvision AlexNet", ("torchvision.models.alexnet",), rules=_PLAIN
    ),
    LRPFamily(
        "torchvision.mnasnet",
        "torchvision MNASNet",
        modules=("torchvision.models.mnasnet",),
        blocks=rewrites({mnasnet._InvertedResidual: vb.mnasnet_residual_forward}),
        rules=f"_InvertedResidual residual Sums; {_MERGE}",
        builders=("mnasnet0_5",),
        refusal=(
            "the structural adapter reads MNASNet through its torch.fx graph, where the "
            "residual adds of _InvertedResidual are graph operations that no canonizer "
            "reaches (relevance would not be conserved). Pass the split explicitly: "
            "LRPReadout(model, features=model.layers, head=model.classifier)"
        ),
        split=("layers", "classifier"),
    ),
    LRPFamily(
        "torchvision.inception",
        "torchvision Inception v3",
        modules=("torchvision.models.inception",),
        rules="none",
        builders=("inception_v3",),
        refusal=(
            "Inception blocks average-pool with F.avg_pool2d inside forward, a function "
            "zennit's Norm rule for pooling modules cannot reach, so the pooled branch "
            "gets gradient-weighted relevance and the sum is not conserved. Use GoogLeNet, "
            "a ResNet/EfficientNet, or the readout itself / dense_readout.gradcam"
        ),
        model_kwargs=MappingProxyType({"aux_logits": False, "init_weights": False}),
        min_size=75,
    ),
    LRPFamily(
        "torchvision.vit",
        "torchvision ViT",
        modules=("torchvision.models.vision_transformer",),
        blocks=rewrites(
            {
                tv_vit.Encoder: xb.torchvision_encoder_forward,
                tv_vit.EncoderBlock: xb.torchvision_encoder_block_forward,
            },
            {tv_vit.EncoderBlock: xb.mha_block_attributes},
        ),
        composite="cp_lrp",
        tokens=("torchvision-vit",),
        rules=f"{_CP_LRP}; Encoder (position embedding) and EncoderBlock, multi-head attention "
        "with the value rows of in_proj_weight as an nn.Linear",
    ),
    LRPFamily(
        "torchvision.swin",
        "torchvision Swin (V1)",
        modules=("torchvision.models.swin_transformer",),
        blocks=rewrites(
            {
                tv_swin.SwinTransformerBlock: xb.torchvision_swin_block_forward,
                tv_swin.ShiftedWindowAttention: torchvision_window_attention_forward,
            },
            {
                tv_swin.SwinTransformerBlock: xb.two_sums,
                tv_swin.ShiftedWindowAttention: values_attributes,
            },
        ),
        composite="cp_lrp",
        rules=f"{_CP_LRP}; ShiftedWindowAttention (relative position bias and shift mask constant)",
    ),
)

#: Every built-in family, in the order of the docs table.
BUILTIN_FAMILIES: tuple[LRPFamily, ...] = _TIMM + _TORCHVISION_CNN + _TORCHVISION_OTHER
