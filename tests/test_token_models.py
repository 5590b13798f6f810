"""GAP over a token sequence (issue 23): timm Mixer/ResMLP/LeViT/Twins/EfficientFormer/
MViTv2/Hiera and Hugging Face MobileViT/PVTv2/FocalNet/Data2Vec-Vision.

Oracles (random init, float64, the last head layer re-drawn so the logits are O(1)):
* exact families: ``mean(Z)`` equals a separate plain ``model(x)`` within a rounding
  bound derived from the sums involved; non-exact ones are flagged and really differ;
* timm: every cell of Z equals the model's own ``forward_head`` on a sequence in which
  every patch token holds that cell's vector (its mean is that vector: a second
  computation through the model's pooling, not the adapter's one-token path).
"""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from dense_readout import DenseReadout, UnsupportedModelError

EPS64 = torch.finfo(torch.float64).eps

# name -> (timm kwargs, input size, exact)
TIMM_TOKEN_FAMILIES = {
    "mixer_s16_224": ({"img_size": 64}, 64, True),  # MlpMixer (mixer_b16_224's class)
    "resmlp_12_224": ({"img_size": 64}, 64, True),
    "levit_128s": ({}, 224, True),  # BatchNorm1d + Linear, two heads averaged: affine
    "twins_svt_small": ({"img_size": 64}, 64, True),
    "efficientformer_l1": ({}, 224, True),
    "mvitv2_tiny": ({}, 224, True),
    "hiera_tiny_224": ({}, 224, False),  # LayerNorm after the pool
}


def _spread_head(model: nn.Module) -> None:
    """timm/HF zero-init or shrink the classifier; re-draw every Linear after the features
    (the modules named head/classifier) at scale 1 so the identity is not checked on zeros."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and any(
                part in name for part in ("head", "classifier")
            ):
                module.weight.normal_(0, 1)
                if module.bias is not None:
                    module.bias.normal_(0, 1)


def _bound(result) -> float:
    """Both sides sum C products per token and N tokens: (C + N)·eps·Σ|terms| each."""
    channels = result.features.shape[1]
    cells = result.features[0, 0].numel()
    scale = max(float(result.scores.abs().max()), float(result.logits.abs().max()), 1.0)
    terms = channels * float(result.features.abs().max()) + 1.0
    return 4 * (channels + cells) * EPS64 * terms * scale


def _timm(name: str) -> tuple[nn.Module, torch.Tensor]:
    kwargs, size, _ = TIMM_TOKEN_FAMILIES[name]
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=5, **kwargs).double().eval()
    _spread_head(model)
    return model, torch.randn(2, 3, size, size, dtype=torch.float64)


@pytest.mark.parametrize("name", TIMM_TOKEN_FAMILIES)
def test_timm_token_sequence_families(name):
    model, x = _timm(name)
    readout = DenseReadout(model)
    result = readout(x)
    exact = TIMM_TOKEN_FAMILIES[name][2]
    assert result.adapter == "timm" and result.exact is exact, result.exactness_note
    with torch.no_grad():
        logits = model(x)
        gap = float((result.scores.mean(dim=(2, 3)) - logits).abs().max())
        if exact:
            assert gap <= _bound(result)
        else:
            assert "LayerNorm" in result.exactness_note and gap > 1e3 * _bound(result)
        # pointwise oracle: the model's own head on a sequence of copies of one cell
        native = readout.adapter.forward_features(x)
        prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
        height, width = result.grid_size
        for u, v in [(0, 0), (height - 1, width - 1), (height // 2, 0)]:
            cell = result.features[:, :, u, v]
            copies = cell[:, None, :].expand(-1, height * width, -1)
            sequence = torch.cat([native[:, :prefix], copies], dim=1)
            expected = model.forward_head(sequence)
            assert torch.allclose(result.scores[:, :, u, v], expected, rtol=1e-9, atol=1e-9)


# timm families whose forward_features already computed the class token (CaiT's
# class-attention blocks, ConViT's late class token): name -> (timm kwargs, input size)
CLASS_TOKEN_FAMILIES = {
    "cait_xxs24_224": ({"img_size": 64, "depth": 2}, 64),
    "convit_tiny": ({"img_size": 64, "depth": 2, "local_up_to_layer": 1}, 64),
}


@pytest.mark.parametrize("name", CLASS_TOKEN_FAMILIES)
def test_class_token_families_are_the_cls_control_and_say_so(name):
    """The head reads only the class token: a mean-of-patches probe passes trivially, so the
    structure once looked exact (residual 0.5 of the logits). Now: not exact before a run,
    and Z is the model's own head with each patch token in the class token's place."""
    kwargs, size = CLASS_TOKEN_FAMILIES[name]
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=5, **kwargs).double().eval()
    _spread_head(model)
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    readout = DenseReadout(model)
    assert readout.exact is False and "[CLS] control" in readout.adapter.exactness_note()
    result = readout(x)
    assert result.exact is False and "class token" in result.exactness_note
    with torch.no_grad():
        native = readout.adapter.forward_features(x)
        patches = native[:, model.num_prefix_tokens :]
        # oracle: head(norm'd patch token) through the model's own head, not forward_head
        expected = model.head(patches).transpose(1, 2).reshape(result.scores.shape)
        assert torch.allclose(result.scores, expected, rtol=1e-9, atol=1e-9)
        # and the image logits still come from the class token
        assert torch.allclose(result.logits, model(x), rtol=1e-9, atol=1e-9)
        # Z varies over the cells (a head on a constant token would give a flat map)
        assert float(result.scores.std(dim=(2, 3)).min()) > 1e-3


def test_a_head_that_does_not_average_tokens_is_refused_with_the_reason():
    model = timm.create_model("mixer_s32_224", num_classes=3, img_size=64, global_pool="")
    with pytest.raises(UnsupportedModelError, match="through their mean"):
        DenseReadout(model.eval())


def _hf(name: str) -> tuple[nn.Module, int]:
    transformers = pytest.importorskip("transformers")
    configs = {
        "MobileViT": (
            transformers.MobileViTConfig(
                num_labels=5,
                image_size=64,
                hidden_sizes=[16, 24, 32],
                neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32],
            ),
            64,
        ),
        "PvtV2": (
            transformers.PvtV2Config(
                num_labels=5,
                hidden_sizes=[8, 16, 24, 32],
                num_attention_heads=[1, 1, 1, 1],
                depths=[1, 1, 1, 1],
                mlp_ratios=[2, 2, 2, 2],
            ),
            64,
        ),
        "FocalNet": (
            transformers.FocalNetConfig(
                num_labels=5, image_size=64, embed_dim=16, depths=[1, 1], focal_levels=[2, 2]
            ),
            64,
        ),
        "Data2VecVision": (
            transformers.Data2VecVisionConfig(
                num_labels=5,
                image_size=32,
                patch_size=8,
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=64,
                use_mean_pooling=True,
            ),
            32,
        ),
    }
    config, size = configs[name]
    model_class = getattr(transformers, f"{name}ForImageClassification")
    torch.manual_seed(0)
    model = model_class(config).double().eval()
    _spread_head(model)
    return model, size


# name -> (adapter, grid, exact)
HF_FAMILIES = {
    "MobileViT": ("hf-mobilevit", (2, 2), True),
    "PvtV2": ("hf-pvt-v2", (2, 2), True),
    "FocalNet": ("hf-swin", (8, 8), True),  # Swin's layout: patch 4, halved per stage
    "Data2VecVision": ("hf-beit", (4, 4), False),  # BEiT's head: LayerNorm after the mean
}


@pytest.mark.parametrize("name", HF_FAMILIES)
def test_hugging_face_families(name):
    model, size = _hf(name)
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    result = DenseReadout(model)(x)
    adapter, grid, exact = HF_FAMILIES[name]
    assert (result.adapter, result.grid_size, result.exact) == (adapter, grid, exact)
    with torch.no_grad():
        gap = float((result.scores.mean(dim=(2, 3)) - model(x).logits).abs().max())
    if exact:
        assert gap <= _bound(result)
    else:
        assert gap > 1e3 * _bound(result)
