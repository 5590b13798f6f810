"""LRP refinement of transformer cells with CP-LRP (dense_readout.lrp, issue 14).

Oracles: conservation to 1 % on bias-free random-init models of every supported
family; linearity in the starting relevance (class map = sum of its cells); the
canonized model computes the model's own function; an independent, zennit-free
gradient×input on a hand-written CP-LRP forward of a timm ViT (LRP-0 equals
gradient×input once attention weights and LayerNorm scales are constants and the
GELU passes relevance), with biases; the model is left exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import SwinTransformer, VisionTransformer

from dense_readout import DenseReadout
from dense_readout.errors import InputError, UnsupportedModelError
from dense_readout.lrp import LRPReadout
from lrp_support import assert_pristine, snapshot

TINY = {"epsilon": 1e-9, "stabilizer": 1e-9}


def _timm_vit(**kwargs) -> Callable[[], nn.Module]:
    base = {"depth": 2, "img_size": 32, "patch_size": 8, "num_classes": 5}
    return lambda: timm.create_model("vit_tiny_patch16_224", **base, **kwargs)


def _timm_swin() -> nn.Module:
    return timm.create_model(
        "swin_tiny_patch4_window7_224",
        depths=(2, 2),
        num_heads=(2, 2),
        embed_dim=16,
        img_size=32,
        window_size=4,
        num_classes=5,
    )


def _torchvision_vit() -> nn.Module:
    model = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=5,
    )  # fmt: skip
    nn.init.normal_(model.heads.head.weight, std=0.2)  # torchvision zero-inits the head
    return model


def _torchvision_swin() -> nn.Module:
    return SwinTransformer([4, 4], 16, [2, 2], [2, 2], [4, 4], num_classes=5)


FAMILIES: dict[str, Callable[[], nn.Module]] = {
    "timm vit [CLS]": _timm_vit(),
    # vit_*_reg4_dinov2 style: registers, layer scale, no position embedding on prefix tokens
    "timm vit registers + layer scale": _timm_vit(
        reg_tokens=4, init_values=0.5, no_embed_class=True
    ),
    "timm vit avg + fc_norm": _timm_vit(class_token=False, global_pool="avg"),
    "timm vit avg, no fc_norm": _timm_vit(class_token=False, global_pool="avg", fc_norm=False),
    "timm swin": _timm_swin,
    "torchvision vit": _torchvision_vit,
    "torchvision swin": _torchvision_swin,
}

# learned constants added to the tokens: biases in LRP's sense
_CONSTANTS = ("cls_token", "reg_token", "pos_embed", "class_token", "pos_embedding")


def build(family: str, seed: int = 0, zero_biases: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    model = FAMILIES[family]().eval()
    if zero_biases:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.endswith("bias") or name.split(".")[-1] in _CONSTANTS:
                    parameter.zero_()
    return model


def images(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# -- conservation and linearity ----------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_bias_free_transformers_conserve_relevance_within_one_percent(family):
    model = build(family, zero_biases=True)
    lrp = LRPReadout(model, composite_options=TINY)
    assert lrp.composite_name == "cp_lrp"
    x = images()
    for cell in [(0, 0), (2, 3)]:
        result = lrp.cell(x, cell=cell)
        assert result.relevance.shape == (2, 1, 32, 32)
        assert torch.allclose(result.conservation, torch.ones(2), atol=0.01), result.conservation
    whole = lrp.class_map(x, target=1)
    assert torch.allclose(whole.conservation, torch.ones(2), atol=0.01), whole.conservation


def test_without_the_cp_lrp_canonizers_conservation_fails():
    model = build("timm vit [CLS]", zero_biases=True)
    plain = LRPReadout(model, "cp_lrp", composite_options=TINY, canonize=False)
    result = plain.cell(images(), cell=(1, 1))
    assert (result.conservation - 1).abs().max() > 0.05, result.conservation


@pytest.mark.parametrize("family", FAMILIES)
def test_class_map_is_the_sum_of_its_cells(family):
    model = build(family)  # with biases: linearity does not need conservation
    lrp = LRPReadout(model)
    x = images()
    whole = lrp.class_map(x, target=3)
    parts = lrp.cells(x, target=3)
    assert parts.relevance.shape == (2, 4, 4, 32, 32)
    total = parts.relevance.sum(dim=(1, 2)).unsqueeze(1)
    assert torch.allclose(whole.relevance, total, atol=1e-4 * float(total.abs().max()))
    assert torch.allclose(whole.start, parts.start.sum(dim=(1, 2)), rtol=1e-5)
    single = lrp.cell(x, cell=(3, 1), target=3)
    assert torch.allclose(parts.cell(3, 1), single.relevance, atol=1e-4 * float(total.abs().max()))


def test_vectorised_cells_equal_expanded_cells():
    lrp = LRPReadout(build("timm vit registers + layer scale"))
    x = images()
    which = [(0, 1), (2, 2)]
    expand = lrp.cells(x, which=which)
    vmap = lrp.cells(x, which=which, strategy="vmap")
    scale = float(expand.relevance.abs().max())
    assert torch.allclose(vmap.relevance, expand.relevance, atol=1e-5 * scale)


# -- the canonizers keep the function; the model is left unchanged --------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_cp_lrp_forward_equals_the_models_own_forward(family):
    model = build(family)
    x = images()
    with torch.no_grad():
        reference = model(x)
        scores = DenseReadout(model)(x).scores
    lrp = LRPReadout(model)
    with torch.no_grad(), lrp.context(x):
        assert any("forward" in vars(m) for m in model.modules())  # canonized in here
        canonized = model(x)
        canonized_scores = lrp._scores(x)
    scale = float(reference.abs().max())
    assert torch.allclose(canonized, reference, rtol=1e-4, atol=1e-5 * scale)
    assert torch.allclose(
        canonized_scores, scores, rtol=1e-4, atol=1e-5 * float(scores.abs().max())
    )
    assert torch.allclose(lrp.cell(x, cell=(1, 2)).scores, scores, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_model_unchanged_after_every_call_and_after_errors(family):
    model = build(family)
    x = images()
    before = snapshot(model, x)
    lrp = LRPReadout(model)
    lrp.cell(x, cell=(0, 1))
    lrp.class_map(x, target=2)
    lrp.cells(x, which=[(0, 0), (3, 3)])
    assert_pristine(model, before)
    with pytest.raises(InputError):
        lrp.cell(x, cell=(0, 0), target=99)  # fails inside the LRP context
    assert_pristine(model, before)


# -- independent oracle: gradient × input on a hand-written CP-LRP forward ---------------------


class _PassGELU(torch.autograd.Function):
    """GELU whose gradient is gelu(z)/z: gradient×input then hands relevance on unchanged."""

    @staticmethod
    def forward(ctx, z):
        out = F.gelu(z)
        ctx.save_for_backward(out / z)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved_tensors[0]


def _layer_norm(norm: nn.LayerNorm, t: torch.Tensor) -> torch.Tensor:
    centred = t - t.mean(dim=-1, keepdim=True)
    scale = torch.sqrt(t.var(dim=-1, unbiased=False, keepdim=True) + norm.eps).detach()
    return centred / scale * norm.weight + norm.bias


def _cp_vit_cell_score(model, x, k: int, u: int, v: int) -> torch.Tensor:
    """Z[k, u, v] of a timm [CLS] ViT, written out with CP-LRP's constants (no zennit)."""
    t = model.patch_embed(x)
    t = torch.cat([model.cls_token.expand(len(x), -1, -1), t], dim=1) + model.pos_embed
    for block in model.blocks:
        attn, h = block.attn, _layer_norm(block.norm1, t)
        qkv = attn.qkv(h).reshape(*h.shape[:2], 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        weights = (qkv[0] * attn.scale @ qkv[1].transpose(-2, -1)).softmax(-1).detach()
        mixed = (weights @ qkv[2]).transpose(1, 2).reshape(h.shape)
        t = t + attn.proj(mixed)
        t = t + block.mlp.fc2(_PassGELU.apply(block.mlp.fc1(_layer_norm(block.norm2, t))))
    t = _layer_norm(model.norm, t)[:, 1:]
    return model.head(t[:, u * 4 + v])[:, k]


def test_lrp_equals_gradient_times_input_of_the_cp_lrp_graph_with_biases():
    model = build("timm vit [CLS]", seed=3)
    with torch.no_grad():  # biases and learned tokens that count: they absorb relevance
        model.pos_embed.normal_(0, 0.5)
        model.cls_token.normal_(0, 0.5)
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.uniform_(-0.1, 0.1)
    x = images(batch=1)
    result = LRPReadout(model, "epsilon", composite_options=TINY).cell(x, cell=(2, 1), target=4)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_cp_vit_cell_score(model, xg, 4, 2, 1).sum(), xg)
    expected = x * grad
    scale = float(expected.abs().max())
    assert torch.allclose(result.input_relevance, expected, atol=1e-3 * scale)
    assert abs(float(result.conservation[0]) - 1) > 1e-3  # the biases take their share


# -- what stays refused ------------------------------------------------------------------------


class _TorchEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 8, stride=8)
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)

    def forward(self, x):
        grid = self.embed(x)
        tokens = self.layer(grid.flatten(2).transpose(1, 2))
        return tokens.transpose(1, 2).reshape(grid.shape)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("test_vit4", "RmsNorm"), ("test_maxvit", "PartitionAttentionCl")],
)
def test_unsupported_attention_models_are_refused_with_the_reason(name, reason):
    if not timm.is_model(name):  # test-size models arrived after timm 1.0.10 (tox lowest)
        pytest.skip(f"timm {timm.__version__} has no {name}")
    with pytest.raises(UnsupportedModelError, match=reason) as error:
        LRPReadout(timm.create_model(name, num_classes=3).eval())
    assert "supported: timm VisionTransformer" in str(error.value)


def test_torch_encoder_layers_are_refused():
    body = _TorchEncoder().eval()
    with pytest.raises(UnsupportedModelError, match="TransformerEncoderLayer has no CP-LRP"):
        LRPReadout(body, features=body, head=nn.Linear(16, 3))
