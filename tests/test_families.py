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

from dense_readout import DenseReadout, InputError, UnsupportedModelError

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

# name: (constructor kwargs, input px, grid, exact, adapter). Small inputs where the
# model allows (maxvit_t needs 224: its partitions are 7×7 at every stage; torchvision
# ViT is built for one size).
_NO_AUX = {"aux_logits": False, "init_weights": False}
TORCHVISION_FAMILIES = {
    "resnet50": ({}, 128, (4, 4), True, "torchvision-resnet"),
    "resnext50_32x4d": ({}, 128, (4, 4), True, "torchvision-resnet"),
    "wide_resnet50_2": ({}, 128, (4, 4), True, "torchvision-resnet"),
    "efficientnet_b0": ({}, 128, (4, 4), True, "torchvision-efficientnet"),
    "efficientnet_v2_s": ({}, 128, (4, 4), True, "torchvision-efficientnet"),
    "convnext_tiny": ({}, 128, (4, 4), False, "torchvision-convnext"),
    "swin_t": ({}, 128, (4, 4), True, "torchvision-swin"),
    "swin_v2_t": ({}, 128, (4, 4), True, "torchvision-swin"),
    "vit_b_16": ({}, 224, (14, 14), False, "torchvision-vit"),
    "regnet_y_400mf": ({}, 128, (4, 4), True, "torchvision-regnet"),
    "regnet_x_400mf": ({}, 128, (4, 4), True, "torchvision-regnet"),
    "mobilenet_v2": ({}, 128, (4, 4), True, "torchvision-mobilenet-v2"),
    "mobilenet_v3_small": ({}, 128, (4, 4), False, "torchvision-mobilenet-v3"),
    "mobilenet_v3_large": ({}, 128, (4, 4), False, "torchvision-mobilenet-v3"),
    "densenet121": ({}, 128, (4, 4), True, "torchvision-densenet"),
    # structural adapter (no family adapter)
    "googlenet": (_NO_AUX, 128, (4, 4), True, "structural"),
    "inception_v3": (_NO_AUX, 160, (3, 3), True, "structural"),
    "shufflenet_v2_x1_0": ({}, 128, (4, 4), True, "structural"),
    "mnasnet0_5": ({}, 128, (4, 4), True, "structural"),
    "squeezenet1_1": ({}, 128, (7, 7), True, "structural"),  # the ReLU'd class map
    "maxvit_t": ({}, 224, (7, 7), False, "structural"),  # LayerNorm + Tanh MLP head
}

# The model's own tail (pooling + head) on a pre-pooling map, written from
# torchvision's forward code, independent of the adapters.
_GAP = torch.nn.functional.adaptive_avg_pool2d
_TORCHVISION_TAILS = {
    "resnet": lambda m, f: m.fc(torch.flatten(m.avgpool(f), 1)),
    "regnet": lambda m, f: m.fc(torch.flatten(m.avgpool(f), 1)),
    "mobilenet_v2": lambda m, f: m.classifier(torch.flatten(_GAP(f, 1), 1)),
    "densenet": lambda m, f: m.classifier(torch.flatten(_GAP(f, 1), 1)),
    "swin": lambda m, f: m.head(m.flatten(m.avgpool(f))),
    "convnext": lambda m, f: m.classifier(m.avgpool(f)),
    "efficientnet": lambda m, f: m.classifier(torch.flatten(m.avgpool(f), 1)),
    "mobilenet_v3": lambda m, f: m.classifier(torch.flatten(m.avgpool(f), 1)),
    "googlenet": lambda m, f: m.fc(m.dropout(torch.flatten(m.avgpool(f), 1))),
    "inception": lambda m, f: m.fc(torch.flatten(m.dropout(m.avgpool(f)), 1)),
    "shufflenet": lambda m, f: m.fc(f.mean([2, 3])),
    "mnasnet": lambda m, f: m.classifier(f.mean([2, 3])),
    "squeezenet": lambda m, f: torch.flatten(m.classifier[3](f), 1),
    "maxvit": lambda m, f: m.classifier(f),
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


def _torchvision_tail(name: str):
    if name.startswith(("resnet", "resnext", "wide_resnet")):
        return _TORCHVISION_TAILS["resnet"]
    return next(tail for key, tail in _TORCHVISION_TAILS.items() if name.startswith(key))


def _torchvision_pointwise_oracle(name, model, grid: torch.Tensor, u: int, v: int) -> torch.Tensor:
    """The model's own tail on a map filled with cell (u, v) (the head alone for ViT)."""
    cell = grid[:, :, u, v]
    if name == "vit_b_16":
        return model.heads(cell)
    filled = cell[:, :, None, None].expand_as(grid).contiguous()
    if name.startswith("swin"):  # the tail reads channels-first after model.permute
        return model.head(model.flatten(model.avgpool(filled)))
    return _torchvision_tail(name)(model, filled)


@pytest.fixture(scope="module")
def torchvision_models():
    """Each torchvision model built once for this module (random init, no download)."""
    cache: dict[str, torch.nn.Module] = {}

    def build(name: str) -> torch.nn.Module:
        if name not in cache:
            cache.clear()  # tests of one model run together: keep one model in memory
            torch.manual_seed(0)
            kwargs = TORCHVISION_FAMILIES[name][0]
            cache[name] = getattr(torchvision.models, name)(
                weights=None, num_classes=13, **kwargs
            ).eval()
        return cache[name]

    return build


@pytest.mark.parametrize("name", sorted(TORCHVISION_FAMILIES))
def test_torchvision_family(name, torchvision_models):
    _, size, grid_size, exact, adapter = TORCHVISION_FAMILIES[name]
    model = torchvision_models(name)
    torch.manual_seed(1)
    x = torch.randn(2, 3, size, size)
    readout = DenseReadout(model)
    result = readout(x)
    assert result.adapter == adapter
    assert tuple(result.scores.shape) == (2, 13, *grid_size)
    assert result.exact is exact and readout.exact is exact, result.exactness_note
    with torch.no_grad():
        reference = model(x)
    torch.testing.assert_close(result.logits, reference, rtol=0, atol=_tolerance(reference))
    if exact:
        assert (result.scores.mean(dim=(2, 3)) - reference).abs().max() <= _tolerance(reference)
        assert float(result.residual.max()) < 1e-4
    h, w = grid_size
    with torch.no_grad():
        for u, v in [(0, 0), (h - 1, w - 1), (h // 2, w - 1)]:
            oracle = _torchvision_pointwise_oracle(name, model, result.features, u, v)
            torch.testing.assert_close(result.scores[:, :, u, v], oracle, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["alexnet", "vgg11"])
def test_torchvision_flattened_grid_heads_are_refused(name):
    """AlexNet/VGG pool to a multi-cell grid and flatten it into the classifier: not GAP."""
    model = getattr(torchvision.models, name)(weights=None, num_classes=13).eval()
    with pytest.raises(UnsupportedModelError) as info:
        DenseReadout(model)
    message = str(info.value)
    assert "not a GAP model" in message and "flattened" in message and "features=" in message
    assert "AdaptiveAvgPool2d" in message and "Linear" in message  # names what it found


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


def test_fixed_size_vit_reads_out_at_the_input_size():
    """DINOv2-reg is built for 518 px; at 224 px timm alone asserts. The readout runs it as
    with dynamic_img_size=True (same logits as that model) and leaves the model unchanged."""
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch14_reg4_dinov2", num_classes=5, depth=2).eval()
    x = torch.randn(1, 3, 224, 224)
    with pytest.raises(AssertionError, match="518"):
        model(x)
    result = DenseReadout(model)(x)
    assert result.grid_size == (16, 16) and not result.exact
    dynamic = timm.create_model(
        "vit_small_patch14_reg4_dinov2", num_classes=5, depth=2, dynamic_img_size=True
    ).eval()
    dynamic.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(result.logits, dynamic(x), rtol=1e-5, atol=1e-5)
    assert model.patch_embed.strict_img_size and not model.dynamic_img_size  # restored
    with pytest.raises(InputError, match="multiple of the patch size 14×14"):
        DenseReadout(model)(torch.randn(1, 3, 100, 100))


def test_fixed_size_model_that_cannot_resize_names_the_size_and_the_fix():
    model = timm.create_model("beit_base_patch16_224", num_classes=3, img_size=64, depth=1)
    with pytest.raises(InputError) as info:
        DenseReadout(model.eval())(torch.randn(1, 3, 96, 96))
    message = str(info.value)
    assert "64×64" in message and "img_size=96" in message


def test_residual_is_relative_to_the_logits_scale():
    """timm inception_v3 at random init has logits ~1e11: float rounding leaves an absolute
    gap of ~1e4, which the relative residual shows as what it is (~1e-7)."""
    torch.manual_seed(0)
    model = timm.create_model("inception_v3", num_classes=5).eval()
    result = DenseReadout(model)(torch.randn(2, 3, 160, 160))
    scale = result.logits.abs().amax(dim=1)
    assert result.exact and float(scale.min()) > 1e6
    assert float(result.residual.max()) < 1e-5
    torch.testing.assert_close(result.residual, result.residual_abs / scale)
    assert float(result.residual_abs.max()) > 1.0  # the absolute value is still there


def test_fixed_size_swin_names_its_size_and_is_probed_at_it():
    small = {"num_classes": 3, "embed_dim": 24, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)}
    model = timm.create_model("swin_tiny_patch4_window7_224", **small).eval()
    with pytest.raises(InputError, match=r"expects 224×224 inputs, got 128×128.*img_size=128"):
        DenseReadout(model)(torch.randn(1, 3, 128, 128))
    built = timm.create_model("swin_tiny_patch4_window7_224", img_size=256, **small).eval()
    assert DenseReadout(built)(torch.randn(1, 3, 256, 256)).grid_size == (8, 8)


# -- models we cannot read out get our error, with the reason (issue 23) -------------------


def test_crossvit_list_of_class_tokens_is_refused_with_the_reason():
    model = timm.create_model("crossvit_tiny_240", num_classes=3).eval()
    with pytest.raises(UnsupportedModelError, match="one class token per branch"):
        DenseReadout(model)


def test_tresnet_space_to_depth_stem_is_probed_with_three_channels():
    model = timm.create_model("tresnet_m", num_classes=4).eval()
    readout = DenseReadout(model)
    assert readout.adapter.in_channels == 3  # its first conv reads 48 = 3·4² channels
    x = torch.randn(1, 3, 128, 128)
    result = readout(x)
    with torch.no_grad():
        assert torch.allclose(result.scores.mean(dim=(2, 3)), model(x), atol=1e-5)
    assert result.exact


def test_a_foreign_probe_failure_becomes_our_error_with_its_cause():
    from dense_readout.adapters import ADAPTERS, ModelAdapter, register_adapter

    class Fragile(torch.nn.Module):
        def forward(self, x):
            return x

    @register_adapter
    class Crashing(ModelAdapter):
        name = "crashing-test-adapter"
        priority = 1000

        @classmethod
        def matches(cls, model):
            return isinstance(model, Fragile)

        def __init__(self, model):
            raise RuntimeError("probe exploded")

    try:
        with pytest.raises(UnsupportedModelError, match="probe exploded") as info:
            DenseReadout(Fragile())
        assert isinstance(info.value.__cause__, RuntimeError)
    finally:
        ADAPTERS.unregister("crashing-test-adapter")


def test_a_model_failing_on_the_input_is_an_input_error():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(8), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 2),
    ).eval()  # fmt: skip
    readout = DenseReadout(model)
    with pytest.raises(InputError, match="itself does not run") as info:
        readout(torch.randn(1, 3, 6, 6))  # 4×4 after the conv: too small for the 8×8 pool
    assert isinstance(info.value.__cause__, RuntimeError)
