"""Every registered LRP block and composite, iterated like timm's tests iterate ``list_models()``.

Blocks: the registered forward (the block's own forward with the residual add
replaced by a zennit ``Sum`` and gates by :func:`pass_multiply`) must compute the
block's own function. Each block type is found inside small random-init models
(``BLOCK_SOURCES``), its input recorded with a forward pre-hook, and the block
run on that input with and without the registered forward. Batch-norm statistics,
affine parameters and layer scales are randomised first, so that no branch is
silenced by its initialisation (timm zero-inits the last BN of a ResNet block and
ConvNeXt's layer scale starts at 1e-6). A registered block type with no source
fails the test: adding a forward means adding a model that contains the block.

Composites: each registered name builds a zennit ``Composite`` and conserves
relevance (to 1 %) on a bias-free ReLU CNN, as ``tests/test_lrp.py`` checks for
``epsilon`` and ``epsilon_plus_flat``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
import timm
import torch
from timm.layers.squeeze_excite import EffectiveSEModule, SEModule
from timm.models import _efficientnet_blocks as eff
from timm.models import convnext
from timm.models.vision_transformer import Attention as TimmAttention
from torch import nn
from torchvision.models import convnext as tv_convnext
from torchvision.models import densenet as tv_densenet
from torchvision.models import efficientnet as tv_efficientnet
from torchvision.models import mnasnet as tv_mnasnet
from torchvision.models import mobilenetv2 as tv_mobilenetv2
from torchvision.models import mobilenetv3 as tv_mobilenetv3
from torchvision.models import regnet as tv_regnet
from torchvision.models import resnet as tv_resnet
from torchvision.models.swin_transformer import SwinTransformer as TorchvisionSwin
from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT
from zennit import composites as zc
from zennit.core import Composite

from dense_readout.errors import InputError
from dense_readout.lrp import (
    LRPFamily,
    LRPReadout,
    build_composite,
    register_composite,
    register_family,
    registered_blocks,
    registered_composites,
    residual_sum,
    rewrites,
)
from dense_readout.lrp.blocks import BlockRewrite, block_name
from dense_readout.lrp.canonizers import BlockCanonizer
from dense_readout.lrp.composites import COMPOSITES
from dense_readout.lrp.families import FAMILIES, block_rewrite
from dense_readout.registry import UnknownNameError, registries


@pytest.fixture(autouse=True)
def _no_names_left_behind():
    families, composites = FAMILIES.names(), COMPOSITES.names()
    yield
    assert FAMILIES.names() == families and COMPOSITES.names() == composites


def _rewrites_by_name() -> dict[str, BlockRewrite]:
    """Every registered rewrite by its block's qualified name (across the families)."""
    return {r.name: r for _, family in FAMILIES.items() for r in family.blocks}


# -- where each registered block type is found -------------------------------------------


def _timm(name: str, **kwargs) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, num_classes=3, **kwargs)


def _efficientnet_blocks() -> nn.Module:
    """Skip and no-skip, with and without SE, and the space-to-depth stem of both block types."""
    return nn.Sequential(
        eff.DepthwiseSeparableConv(16, 16, se_layer=eff.SqueezeExcite),
        eff.DepthwiseSeparableConv(16, 32, s2d=1),
        eff.InvertedResidual(32, 32, exp_ratio=2, se_layer=eff.SqueezeExcite),
        eff.InvertedResidual(32, 48, exp_ratio=2, s2d=1),
    )


def _convnext_blocks() -> nn.Module:
    """Without layer scale (timm.create_model drops ``ls_init_value=None``), one with a projection."""
    return nn.Sequential(
        convnext.ConvNeXtBlock(16, ls_init_value=None),
        convnext.ConvNeXtBlock(16, 32, conv_mlp=True, ls_init_value=None),
    )


def _se_layers() -> nn.Module:
    return nn.Sequential(
        SEModule(16),
        SEModule(16, add_maxpool=True, norm_layer=nn.BatchNorm2d),
        EffectiveSEModule(16),
        EffectiveSEModule(16, add_maxpool=True),
    )


def _torchvision_blocks() -> nn.Module:
    def downsample(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(tv_resnet.conv1x1(cin, cout, 2), nn.BatchNorm2d(cout))

    return nn.Sequential(
        tv_resnet.BasicBlock(16, 16),
        tv_resnet.BasicBlock(16, 32, stride=2, downsample=downsample(16, 32)),
        tv_resnet.Bottleneck(32, 8),
        tv_resnet.Bottleneck(32, 16, stride=2, downsample=downsample(32, 64)),
    )


def _torchvision_cnn_blocks() -> nn.Module:
    """Every registered torchvision CNN block, with and without its skip (16 channels in/out)."""
    bn = nn.BatchNorm2d
    mb, fused = tv_efficientnet.MBConvConfig, tv_efficientnet.FusedMBConvConfig
    v3 = tv_mobilenetv3.InvertedResidualConfig
    return nn.Sequential(
        tv_efficientnet.MBConv(mb(2, 3, 1, 16, 16, 1), 0.1, bn),  # skip, sigmoid SE
        tv_efficientnet.MBConv(mb(2, 3, 1, 16, 24, 1), 0.1, bn),
        tv_efficientnet.FusedMBConv(fused(2, 3, 1, 24, 24, 1), 0.1, bn),  # skip
        tv_efficientnet.FusedMBConv(fused(1, 3, 1, 24, 16, 1), 0.1, bn),
        tv_mobilenetv2.InvertedResidual(16, 16, 1, 2),  # skip
        tv_mobilenetv2.InvertedResidual(16, 24, 1, 2),
        tv_mobilenetv3.InvertedResidual(v3(24, 3, 48, 24, True, "HS", 1, 1, 1.0), bn),  # skip, SE
        tv_mobilenetv3.InvertedResidual(v3(24, 3, 48, 16, False, "RE", 1, 1, 1.0), bn),
        tv_mnasnet._InvertedResidual(16, 16, 3, 1, 3, 0.01),  # skip
        tv_mnasnet._InvertedResidual(16, 24, 3, 1, 3, 0.01),
        tv_regnet.ResBottleneckBlock(24, 24, 1, bn, nn.ReLU, 8, 1.0, 0.25),  # identity, SE
        tv_regnet.ResBottleneckBlock(24, 16, 1, bn, nn.ReLU, 8, 1.0, None),  # projection
        tv_convnext.CNBlock(16, 1e-6, 0.1),
        tv_densenet._DenseBlock(2, 16, 2, 8, 0.0, memory_efficient=True),  # list inputs
    )


_TIMM_ATTENTION_OPTIONS = inspect.signature(TimmAttention.__init__).parameters


def _timm_attention() -> nn.Module:
    """timm ``Attention`` with q/k norms, and a scale norm and an output gate where timm has
    them (timm 1.0.10, tox lowest, has neither)."""
    options = {key: True for key in ("gated", "scale_norm") if key in _TIMM_ATTENTION_OPTIONS}
    return TimmAttention(16, 2, qk_norm=True, norm_layer=nn.LayerNorm, **options)


def _timm_tiny_vit(**kwargs) -> Callable[[], nn.Module]:
    return _timm("vit_tiny_patch16_224", depth=1, img_size=32, patch_size=8, **kwargs)


def _torchvision_swin() -> nn.Module:
    return TorchvisionSwin([4, 4], 16, [2, 2], [2, 2], [4, 4], num_classes=3)


def _torchvision_vit() -> nn.Module:
    return TorchvisionViT(32, 8, 1, 2, 32, 64, num_classes=3)


#: (label, model factory, input shape)
BLOCK_SOURCES: list[tuple[str, Callable[[], nn.Module], tuple[int, ...]]] = [
    ("test_resnet", _timm("test_resnet"), (2, 3, 64, 64)),
    ("test_resnet se", _timm("test_resnet", block_args={"attn_layer": "se"}), (2, 3, 64, 64)),
    ("test_resnet ese", _timm("test_resnet", block_args={"attn_layer": "ese"}), (2, 3, 64, 64)),
    ("mobilenetv3_small_050", _timm("mobilenetv3_small_050"), (2, 3, 64, 64)),
    ("test_convnext", _timm("test_convnext"), (2, 3, 64, 64)),
    ("test_convnext conv_mlp", _timm("test_convnext", conv_mlp=True), (2, 3, 64, 64)),
    ("convnext blocks", _convnext_blocks, (2, 16, 8, 8)),
    ("efficientnet blocks", _efficientnet_blocks, (2, 16, 16, 16)),
    ("SE layers", _se_layers, (2, 16, 5, 5)),
    ("torchvision blocks", _torchvision_blocks, (2, 16, 8, 8)),
    ("vit tiny", _timm_tiny_vit(), (2, 3, 32, 32)),
    (
        "vit tiny registers, layer scale, no_embed_class",
        _timm_tiny_vit(init_values=1.0, reg_tokens=2, no_embed_class=True),
        (2, 3, 32, 32),
    ),
    ("timm attention", _timm_attention, (2, 5, 16)),
    (
        "swin tiny",
        _timm(
            "swin_tiny_patch4_window7_224",
            depths=(2, 1),
            num_heads=(2, 2),
            embed_dim=16,
            img_size=32,
            window_size=4,
        ),
        (2, 3, 32, 32),
    ),
    ("torchvision vit", _torchvision_vit, (2, 3, 32, 32)),
    ("torchvision swin", _torchvision_swin, (2, 3, 32, 32)),
    (
        "deit tiny distilled",
        _timm("deit_tiny_distilled_patch16_224", depth=1, img_size=32),
        (2, 3, 32, 32),
    ),
    ("torchvision CNN blocks", _torchvision_cnn_blocks, (2, 16, 8, 8)),
]

#: Optional branches of the registered forwards that the sources must reach.
BRANCHES: dict[str, list[tuple[str, Callable[[nn.Module], bool]]]] = {
    "timm.models.resnet.BasicBlock": [
        ("downsample", lambda b: b.downsample is not None),
        ("no downsample", lambda b: b.downsample is None),
        ("se", lambda b: b.se is not None),
        ("no se", lambda b: b.se is None),
    ],
    "timm.models.resnet.Bottleneck": [
        ("downsample", lambda b: b.downsample is not None),
        ("se", lambda b: b.se is not None),
    ],
    "timm.models._efficientnet_blocks.DepthwiseSeparableConv": [
        ("skip", lambda b: b.has_skip),
        ("no skip", lambda b: not b.has_skip),
        ("space to depth", lambda b: b.conv_s2d is not None),
    ],
    "timm.models._efficientnet_blocks.InvertedResidual": [
        ("skip", lambda b: b.has_skip),
        ("no skip", lambda b: not b.has_skip),
        ("space to depth", lambda b: b.conv_s2d is not None),
    ],
    "timm.models._efficientnet_blocks.SqueezeExcite": [
        ("sigmoid gate", lambda b: isinstance(b.gate, nn.Sigmoid)),
        ("hard-sigmoid gate", lambda b: isinstance(b.gate, nn.Hardsigmoid)),
    ],
    "timm.layers.squeeze_excite.SEModule": [
        ("max pool", lambda b: b.add_maxpool),
        ("mean only", lambda b: not b.add_maxpool),
        ("norm", lambda b: isinstance(b.bn, nn.BatchNorm2d)),
    ],
    "timm.layers.squeeze_excite.EffectiveSEModule": [
        ("max pool", lambda b: b.add_maxpool),
        ("mean only", lambda b: not b.add_maxpool),
    ],
    "timm.models.convnext.ConvNeXtBlock": [
        ("conv mlp", lambda b: b.use_conv_mlp),
        ("linear mlp", lambda b: not b.use_conv_mlp),
        ("layer scale", lambda b: b.gamma is not None),
        ("no layer scale", lambda b: b.gamma is None),
        ("projection shortcut", lambda b: not isinstance(b.shortcut, nn.Identity)),
    ],
    "torchvision.models.resnet.BasicBlock": [
        ("downsample", lambda b: b.downsample is not None),
        ("no downsample", lambda b: b.downsample is None),
    ],
    "torchvision.models.resnet.Bottleneck": [
        ("downsample", lambda b: b.downsample is not None),
        ("no downsample", lambda b: b.downsample is None),
    ],
    "torchvision.models.efficientnet.MBConv": [
        ("skip", lambda b: b.use_res_connect),
        ("no skip", lambda b: not b.use_res_connect),
    ],
    "torchvision.models.efficientnet.FusedMBConv": [
        ("skip", lambda b: b.use_res_connect),
        ("no skip", lambda b: not b.use_res_connect),
    ],
    "torchvision.models.mobilenetv2.InvertedResidual": [
        ("skip", lambda b: b.use_res_connect),
        ("no skip", lambda b: not b.use_res_connect),
    ],
    "torchvision.models.mobilenetv3.InvertedResidual": [
        ("skip", lambda b: b.use_res_connect),
        ("no skip", lambda b: not b.use_res_connect),
    ],
    "torchvision.models.mnasnet._InvertedResidual": [
        ("skip", lambda b: b.apply_residual),
        ("no skip", lambda b: not b.apply_residual),
    ],
    "torchvision.ops.misc.SqueezeExcitation": [
        ("sigmoid gate", lambda b: isinstance(b.scale_activation, nn.Sigmoid)),
        ("hard-sigmoid gate", lambda b: isinstance(b.scale_activation, nn.Hardsigmoid)),
    ],
    "torchvision.models.convnext.CNBlock": [("layer scale", lambda b: b.layer_scale is not None)],
    "torchvision.models.regnet.ResBottleneckBlock": [
        ("projection", lambda b: b.proj is not None),
        ("identity", lambda b: b.proj is None),
    ],
    "torchvision.models.densenet._DenseLayer": [
        ("memory efficient", lambda b: b.memory_efficient),
    ],
}
# CP-LRP transformer blocks and attention (dense_readout.lrp.transformer_blocks)
BRANCHES.update(
    {
        "timm.models.vision_transformer.Block": [
            ("layer scale", lambda b: hasattr(b.ls1, "gamma")),
            ("no layer scale", lambda b: isinstance(b.ls1, nn.Identity)),
        ],
        block_name(TimmAttention): [
            ("q/k norm", lambda b: not isinstance(b.q_norm, nn.Identity)),
            ("no q/k norm", lambda b: isinstance(b.q_norm, nn.Identity)),
            *(
                [("gate", lambda b: b.gate is not None)]
                if "gated" in _TIMM_ATTENTION_OPTIONS
                else []
            ),
        ],
        "timm.models.swin_transformer.SwinTransformerBlock": [
            ("shifted", lambda b: any(b.shift_size)),
            ("not shifted", lambda b: not any(b.shift_size)),
        ],
        "timm.models.swin_transformer.WindowAttention": [("window", lambda b: True)],
        "timm.models.vision_transformer.VisionTransformer": [
            ("class token", lambda b: b.cls_token is not None),
            ("registers", lambda b: b.reg_token is not None),
            ("no_embed_class", lambda b: b.no_embed_class),
            ("position embedding on prefix tokens", lambda b: not b.no_embed_class),
        ],
        "timm.models.deit.VisionTransformerDistilled": [("distillation token", lambda b: True)],
        "torchvision.models.vision_transformer.Encoder": [("position embedding", lambda b: True)],
        "torchvision.models.vision_transformer.EncoderBlock": [
            ("in-projection bias", lambda b: b.self_attention.in_proj_bias is not None),
        ],
        "torchvision.models.swin_transformer.SwinTransformerBlock": [
            ("shifted", lambda b: any(b.attn.shift_size)),
            ("not shifted", lambda b: not any(b.attn.shift_size)),
        ],
        "torchvision.models.swin_transformer.ShiftedWindowAttention": [
            ("shifted", lambda b: any(b.shift_size)),
        ],
    }
)

Found = dict[str, list[tuple[str, nn.Module, torch.Tensor]]]


def _randomise(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
        for name, parameter in model.named_parameters():
            if name.endswith(("gamma", "layer_scale")):
                parameter.uniform_(0.5, 1.5)
    return model.eval()


def _clone(x):
    """A detached copy of a block input: a tensor, or a list of them (DenseNet's layers)."""
    return [t.detach().clone() for t in x] if isinstance(x, list) else x.detach().clone()


@pytest.fixture(scope="module")
def block_instances() -> Found:
    """Registered name -> ``(where, block, recorded input)`` for every block in every source."""
    found: Found = {}
    for seed, (label, build, shape) in enumerate(BLOCK_SOURCES):
        torch.manual_seed(seed)
        model = _randomise(build())
        handles = []
        for path, module in model.named_modules():
            if block_rewrite(module) is None:
                continue

            def record(module, inputs, where=f"{label}: {path}"):
                entry = (where, module, _clone(inputs[0]))
                found.setdefault(block_name(type(module)), []).append(entry)

            handles.append(module.register_forward_pre_hook(record))
        with torch.no_grad():
            model(torch.randn(shape))
        for handle in handles:
            handle.remove()
    return found


def _registered_call(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``block(x)`` with the registered forward on this block only (as BlockCanonizer sets it)."""
    canonizer = BlockCanonizer()
    canonizer.register(block, canonizer.attribute_map("", block))
    try:
        assert "forward" in vars(block) and "canonizer_sum" in vars(block)["_modules"]
        return block(x)
    finally:
        canonizer.remove()


@pytest.mark.parametrize("name", registered_blocks())
def test_registered_block_forward_equals_the_blocks_own_forward(name, block_instances):
    instances = block_instances.get(name)
    assert instances, f"no instance of registered block {name}: add a model to BLOCK_SOURCES"
    entry = _rewrites_by_name()[name]
    for where, block, x in instances:
        assert block_rewrite(block) == entry, where
        with torch.no_grad():
            own = block(_clone(x))
            ours = _registered_call(block, _clone(x))
        assert "forward" not in vars(block), where  # removed again
        scale = float(own.abs().max())
        assert scale > 0, where
        assert torch.allclose(ours, own, rtol=1e-5, atol=1e-5 * scale), (
            where,
            float((ours - own).abs().max()),
        )


def test_block_sources_reach_every_optional_branch(block_instances):
    assert set(BRANCHES) == set(registered_blocks()), "list the optional branches of new blocks"
    for name, branches in BRANCHES.items():
        blocks = [block for _, block, _ in block_instances.get(name, [])]
        for branch, reached in branches:
            assert any(reached(block) for block in blocks), f"{name}: no instance with {branch}"


# -- composites ---------------------------------------------------------------------------


class BiasFreeCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=False),
            nn.ReLU(),
        )
        self.head = nn.Linear(12, 4, bias=False)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


@pytest.mark.parametrize("name", registered_composites())
def test_every_registered_composite_builds_and_conserves_on_a_bias_free_cnn(name):
    low, high = -torch.ones(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    assert isinstance(build_composite(name, low=low, high=high), Composite)
    torch.manual_seed(0)
    model = BiasFreeCNN().eval()
    lrp = LRPReadout(model, name, features=model.features, head=model.head, stabilizer=1e-9)
    x = torch.randn(2, 3, 16, 16)
    for cell in [(0, 0), (1, 2), (3, 3)]:
        result = lrp.cell(x, cell=cell)
        assert result.composite == name
        assert torch.allclose(result.conservation, torch.ones(2), atol=0.01), (cell, result)
    whole = lrp.class_map(x, target=1)
    assert torch.allclose(whole.conservation, torch.ones(2), atol=0.01), whole.conservation


# -- the registries themselves --------------------------------------------------------------


def test_lrp_registries_are_package_registries():
    assert registries()["LRP family"] is FAMILIES
    assert registries()["LRP composite"] is COMPOSITES
    assert "LRP block" not in registries()  # blocks live in their family's record
    assert registered_blocks() == sorted(_rewrites_by_name())
    assert registered_composites() == COMPOSITES.names()
    for name, family in FAMILIES.items():
        assert family.name == name and family.composite in COMPOSITES, name


def test_block_rewrites_are_looked_up_by_exact_type_not_by_name():
    def make_block_type() -> type:
        class Residual(nn.Module):
            def forward(self, x):
                return x + x

        return Residual

    first, second = make_block_type(), make_block_type()  # same qualified name, two types
    name = block_name(first)
    assert name == block_name(second) and name.endswith("<locals>.Residual")

    def forward(self, x):
        return residual_sum(self, x, x)

    with FAMILIES.temporarily(
        "test.residual", LRPFamily("test.residual", "t", blocks=rewrites({first: forward}))
    ):
        assert name in registered_blocks()
        assert block_rewrite(first()).forward is forward
        assert block_rewrite(second()) is None  # a name match alone does not apply a forward
    assert block_rewrite(first()) is None and name not in registered_blocks()


def test_register_family_refuses_clashes_and_unknown_canonizers():
    from timm.models.resnet import BasicBlock

    taken = LRPFamily("test.clash", "t", modules=("timm.models.resnet",))
    with pytest.raises(InputError, match="module timm.models.resnet is timm.resnet's"):
        register_family(taken)
    other = LRPFamily("test.clash", "t", blocks=rewrites({BasicBlock: lambda self, x: x}))
    with pytest.raises(InputError, match="BasicBlock has another forward in timm.resnet"):
        register_family(other)
    with pytest.raises(InputError, match="unknown canonizers"):
        register_family(LRPFamily("test.clash", "t", canonizers=("blocks", "mystery")))
    assert "test.clash" not in FAMILIES
    # sharing a block's own rewrite is allowed (timm EfficientNet and MobileNetV3 do)
    assert FAMILIES["timm.efficientnet"].blocks == FAMILIES["timm.mobilenetv3"].blocks


def test_register_composite_and_unknown_names():
    @register_composite("test_epsilon_only")
    def factory(layer_map, low, high, **kwargs):
        return zc.EpsilonPlusFlat(layer_map=layer_map, **kwargs)

    try:
        assert "test_epsilon_only" in registered_composites()
        assert COMPOSITES.get("test_epsilon_only") is factory
        built = build_composite("test_epsilon_only", low=torch.zeros(1), high=torch.ones(1))
        assert isinstance(built, zc.EpsilonPlusFlat)
    finally:
        COMPOSITES.unregister("test_epsilon_only")
    with pytest.raises(UnknownNameError, match="Unknown composite 'nope'") as error:
        build_composite("nope", low=torch.zeros(1), high=torch.ones(1))
    assert isinstance(error.value, InputError)
