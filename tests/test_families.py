"""Every supported family: shape, exactness and the pointwise-head oracle.

Oracles:
* exact families: mean_uv Z equals the logits of a *separate* plain ``model(x)``;
* every family: each cell of Z equals the model's own head applied to a grid (or
  token sequence) in which every position holds that one cell's vector — a second
  computation through the model's pooling path, not through the adapter's code.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

from dense_readout import DenseReadout

torch.manual_seed(0)

# (constructor, kwargs, expected grid, expected exact)
TIMM_FAMILIES = {
    "resnet18": ({}, (7, 7), True),
    "efficientnet_b0": ({}, (7, 7), True),
    "tf_efficientnet_lite0": ({}, (7, 7), True),
    "mobilenetv3_small_100": ({}, (7, 7), False),  # conv_head + Hardswish after pooling
    "regnetx_002": ({}, (7, 7), True),
    "densenet121": ({}, (7, 7), True),
    "convnext_atto": ({}, (7, 7), False),  # LayerNorm per cell
    "swin_tiny_patch4_window7_224": ({}, (7, 7), True),  # NHWC grid
    "maxvit_tiny_tf_224": ({}, (7, 7), False),
    "vit_tiny_patch16_224": ({}, (14, 14), False),  # [CLS]
    "deit_tiny_patch16_224": ({}, (14, 14), False),
    "deit_tiny_distilled_patch16_224": ({}, (14, 14), False),  # cls + dist tokens
    "vit_small_patch14_reg4_dinov2": ({"img_size": 224, "num_classes": 1000}, (16, 16), False),
    "vit_small_patch32_224": (
        {"class_token": False, "global_pool": "avg", "fc_norm": False},
        (7, 7),
        True,
    ),
    "beit_base_patch16_224": ({}, (14, 14), False),  # avg → fc_norm LayerNorm
}

TORCHVISION_FAMILIES = {
    "resnet50": ((7, 7), True),
    "efficientnet_b0": ((7, 7), True),
    "convnext_tiny": ((7, 7), False),
    "swin_t": ((7, 7), True),
    "vit_b_16": ((14, 14), False),
    "regnet_y_400mf": ((7, 7), True),
    "mobilenet_v2": ((7, 7), True),
    "mobilenet_v3_small": ((7, 7), False),
    "densenet121": ((7, 7), True),
}


def _tolerance(logits: torch.Tensor) -> float:
    return 1e-4 * max(1.0, float(logits.abs().max()))


def _timm_pointwise_oracle(
    model, native: torch.Tensor, u: int, v: int, prefix: int
) -> torch.Tensor:
    """The model's own forward_head on a map/sequence filled with one cell's vector."""
    if native.dim() == 4:
        if getattr(model, "output_fmt", "NCHW") == "NHWC":
            cell = native[:, u, v, :]
            filled = cell[:, None, None, :].expand_as(native)
        else:
            cell = native[:, :, u, v]
            filled = cell[:, :, None, None].expand_as(native)
        return model.forward_head(filled.contiguous())
    width = model.patch_embed.grid_size[1] if hasattr(model.patch_embed, "grid_size") else None
    token = native[:, prefix + u * width + v]
    return model.forward_head(token[:, None, :].expand_as(native).contiguous())


@pytest.mark.parametrize("name", sorted(TIMM_FAMILIES))
def test_timm_family(name):
    kwargs, grid, exact = TIMM_FAMILIES[name]
    model = timm.create_model(name, num_classes=kwargs.pop("num_classes", 11), **kwargs).eval()
    x = torch.randn(2, 3, 224, 224)
    readout = DenseReadout(model)
    result = readout(x)
    num_classes = model.num_classes
    assert tuple(result.scores.shape) == (2, num_classes, *grid)
    assert result.exact is exact and readout.exact is exact
    with torch.no_grad():
        reference = model(x)
        native = model.forward_features(x)
    # the logits come from the same pass and equal the plain forward
    torch.testing.assert_close(result.logits, reference, rtol=0, atol=_tolerance(reference))
    if exact:
        gap = (result.scores.mean(dim=(2, 3)) - reference).abs().max()
        assert gap <= _tolerance(reference)
    prefix = getattr(model, "num_prefix_tokens", 0)
    with torch.no_grad():
        for u, v in [(0, 0), (grid[0] - 1, grid[1] // 2), (grid[0] // 2, grid[1] - 1)]:
            oracle = _timm_pointwise_oracle(model, native, u, v, prefix)
            torch.testing.assert_close(result.scores[:, :, u, v], oracle, rtol=1e-4, atol=1e-4)


def _torchvision_pointwise_oracle(name, model, grid: torch.Tensor, u: int, v: int) -> torch.Tensor:
    cell = grid[:, :, u, v]
    if name == "vit_b_16":
        return model.heads(cell)
    filled = cell[:, :, None, None].expand_as(grid).contiguous()
    if name in ("resnet50", "regnet_y_400mf"):
        return model.fc(torch.flatten(model.avgpool(filled), 1))
    if name in ("mobilenet_v2", "densenet121"):
        return model.classifier(
            torch.flatten(torch.nn.functional.adaptive_avg_pool2d(filled, 1), 1)
        )
    if name == "swin_t":
        return model.head(model.flatten(model.avgpool(filled)))
    pooled = model.avgpool(filled)
    return model.classifier(pooled if name == "convnext_tiny" else torch.flatten(pooled, 1))


@pytest.mark.parametrize("name", sorted(TORCHVISION_FAMILIES))
def test_torchvision_family(name):
    grid_size, exact = TORCHVISION_FAMILIES[name]
    model = getattr(torchvision.models, name)(weights=None, num_classes=13).eval()
    x = torch.randn(2, 3, 224, 224)
    result = DenseReadout(model)(x)
    assert tuple(result.scores.shape) == (2, 13, *grid_size)
    assert result.exact is exact
    with torch.no_grad():
        reference = model(x)
    torch.testing.assert_close(result.logits, reference, rtol=0, atol=_tolerance(reference))
    if exact:
        assert (result.scores.mean(dim=(2, 3)) - reference).abs().max() <= _tolerance(reference)
    with torch.no_grad():
        for u, v in [(0, 0), (grid_size[0] - 1, 3)]:
            oracle = _torchvision_pointwise_oracle(name, model, result.features, u, v)
            torch.testing.assert_close(result.scores[:, :, u, v], oracle, rtol=1e-4, atol=1e-4)


def test_vit_avg_with_fc_norm_is_not_exact_but_pointwise():
    """Same architecture as the exact avg-pool ViT, plus fc_norm: exactness flips."""
    model = timm.create_model(
        "vit_small_patch32_224", class_token=False, global_pool="avg", num_classes=7
    ).eval()
    result = DenseReadout(model)(torch.randn(1, 3, 224, 224))
    assert result.exact is False
    assert "LayerNorm" in result.exactness_note


def test_non_square_input_grid():
    model = timm.create_model("resnet18", num_classes=5).eval()
    result = DenseReadout(model)(torch.randn(1, 3, 160, 256))
    assert result.grid_size == (5, 8)
    assert result.residual.max() < 1e-4
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=5, dynamic_img_size=True).eval()
    result = DenseReadout(vit)(torch.randn(1, 3, 160, 224))
    assert result.grid_size == (10, 14)
