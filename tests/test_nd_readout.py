"""The readout over 3-D grids (video clips, volumes): exactness per family, the result's
methods on ``B×K×t×h×w``, and the Captum / pytorch-grad-cam drop-ins on 5-D inputs.

Oracles: ``mean(Z) == logits`` in float64 within a rounding bound derived from the
sums involved; the class map against direct indexing; the CAM against an
independent ``scale_cam_image`` of the readout's class map.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import video as tv_video
from torchvision.models.video import mvit

from dense_readout import DenseReadout
from dense_readout.errors import InputError

EPS64 = torch.finfo(torch.float64).eps


def _tiny_mvit(num_classes: int = 5) -> nn.Module:
    blocks = [
        mvit.MSBlockConfig(1, 16, 16, [3, 3, 3], [3, 3, 3], [1, 1, 1], [1, 2, 2]),
        mvit.MSBlockConfig(1, 16, 32, [3, 3, 3], [3, 3, 3], [1, 2, 2], [1, 1, 1]),
    ]
    return mvit.MViT(
        spatial_size=(32, 32),
        temporal_size=4,
        block_setting=blocks,
        residual_pool=True,
        residual_with_cls_embed=False,
        rel_pos_embed=True,
        proj_after_attn=True,
        num_classes=num_classes,
    )


def _s3d(kernel: tuple[int, int, int] = (1, 2, 2)) -> nn.Module:
    model = tv_video.s3d(num_classes=5)
    model.avgpool = nn.AvgPool3d(kernel, stride=1)  # the built 2×7×7 window needs 224 px clips
    return model


def _monai(name: str) -> nn.Module:
    nets = pytest.importorskip("monai.networks.nets")
    builders = {
        "densenet121": lambda: nets.DenseNet121(spatial_dims=3, in_channels=1, out_channels=3),
        "resnet10": lambda: nets.resnet10(spatial_dims=3, n_input_channels=1, num_classes=3),
        "efficientnet-b0": lambda: nets.EfficientNetBN(
            "efficientnet-b0", spatial_dims=3, in_channels=1, num_classes=3, pretrained=False
        ),
    }
    return builders[name]()


# name -> (builder, input shape C×T×H×W, adapter, exact)
FAMILIES = {
    "r3d_18": (lambda: tv_video.r3d_18(num_classes=5), (3, 8, 32, 32), "torchvision-video-resnet"),
    "mc3_18": (lambda: tv_video.mc3_18(num_classes=5), (3, 8, 32, 32), "torchvision-video-resnet"),
    "r2plus1d_18": (
        lambda: tv_video.r2plus1d_18(num_classes=5),
        (3, 8, 32, 32),
        "torchvision-video-resnet",
    ),
    "swin3d_t": (lambda: tv_video.swin3d_t(num_classes=5), (3, 4, 64, 64), "torchvision-swin3d"),
    "s3d": (_s3d, (3, 8, 64, 64), "torchvision-s3d"),
    "monai-densenet121": (lambda: _monai("densenet121"), (1, 32, 64, 64), "structural"),
    "monai-resnet10": (lambda: _monai("resnet10"), (1, 16, 32, 32), "structural"),
    "monai-efficientnet-b0": (lambda: _monai("efficientnet-b0"), (1, 32, 64, 64), "structural"),
}


def _spread_head(model: nn.Module) -> None:
    """Random-init heads give logits near 0; scale the last weighted layer to ~1 so the
    identity is checked on numbers that are not all rounding noise."""
    weighted = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv3d))]
    with torch.no_grad():
        last = weighted[-1]
        last.weight.normal_(0, 1)
        if last.bias is not None:
            last.bias.normal_(0, 1)


def _rounding_bound(result) -> float:
    """|mean(Z) - logits| bound in float64: both sides sum C products per cell and N cells,
    so each is within (C + N)·eps·Σ|terms| of the exact value; Σ|terms| ≤ C·max|F|·max|W|
    + |b|, bounded here by (C·max|F| + 1)·max|Z-scale| via the largest |Z| and |F|."""
    channels = result.features.shape[1]
    cells = result.features[0, 0].numel()
    weight = float(result.features.abs().max()) * channels + 1.0
    scale = max(float(result.scores.abs().max()), float(result.logits.abs().max()), 1.0)
    return 4 * (channels + cells) * EPS64 * weight * scale


@pytest.mark.parametrize("name", FAMILIES)
def test_mean_of_z_is_the_logits_in_float64(name):
    build, shape, adapter = FAMILIES[name]
    torch.manual_seed(0)
    model = build().double().eval()
    _spread_head(model)
    x = torch.randn(2, *shape, dtype=torch.float64)
    result = DenseReadout(model)(x)
    assert result.adapter == adapter
    assert result.spatial_dims == 3 and result.scores.dim() == 5
    assert result.exact, result.exactness_note
    gap = float((result.scores.mean(dim=(2, 3, 4)) - result.logits).abs().max())
    assert gap <= _rounding_bound(result)
    with torch.no_grad():  # the readout's logits are the model's own
        assert torch.allclose(result.logits, model(x), rtol=1e-10, atol=1e-10)


def test_s3d_off_its_window_size_is_flagged_and_really_differs():
    torch.manual_seed(0)
    model = _s3d((1, 2, 2)).double().eval()
    _spread_head(model)
    result = DenseReadout(model)(torch.randn(1, 3, 16, 96, 96, dtype=torch.float64))
    assert result.grid_size == (2, 3, 3) and not result.exact
    assert "sliding" in result.exactness_note
    assert float(result.residual_abs.max()) > 1e3 * _rounding_bound(result)


def test_mvit_class_token_model_is_a_control_not_exact():
    torch.manual_seed(0)
    model = _tiny_mvit().eval()
    readout = DenseReadout(model)
    x = torch.randn(1, 3, 4, 32, 32)
    result = readout(x)
    assert readout.adapter.name == "torchvision-mvit" and not result.exact
    assert result.grid_size == readout.adapter.token_grid() == (2, 4, 4)
    with torch.no_grad():
        assert torch.allclose(result.logits, model(x), atol=1e-5)
    assert float(result.residual.max()) > 1e-3  # the class token is not the patches' mean


def test_layernorm_after_a_3d_pool_is_flagged_not_exact():
    model = nn.Sequential(
        nn.Conv3d(1, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
        nn.LayerNorm(6), nn.Linear(6, 3),
    ).eval()  # fmt: skip
    result = DenseReadout(model)(torch.randn(2, 1, 6, 8, 8))
    assert not result.exact and "LayerNorm" in result.exactness_note
    assert float(result.residual.max()) > 1e-3


@pytest.fixture(scope="module")
def r3d():
    torch.manual_seed(0)
    model = tv_video.r3d_18(num_classes=6).eval()
    x = torch.randn(2, 3, 8, 32, 32)
    return model, x, DenseReadout(model)(x)


def test_result_methods_on_a_5d_grid(r3d):
    result = r3d[2]
    scores = result.scores
    assert result.grid_size == tuple(scores.shape[2:]) and result.input_size == (8, 32, 32)
    class_map = result.class_map([1, 4])
    assert torch.equal(class_map[0], scores[0, 1]) and torch.equal(class_map[1], scores[1, 4])
    assert torch.equal(result.labels(), scores.argmax(dim=1))
    values, classes = result.topk(2)
    assert values.shape == (2, 2, *result.grid_size)
    assert torch.equal(classes[:, 0], result.labels())
    assert torch.allclose(result.aggregate("mean"), result.logits, atol=1e-5)
    assert torch.equal(result.aggregate("max"), scores.flatten(2).amax(dim=2))
    up = result.upsample(maps=class_map, mode="nearest")
    factors = [n // m for n, m in zip(result.input_size, result.grid_size, strict=True)]
    blocks = class_map
    for axis, factor in enumerate(factors, start=1):
        blocks = blocks.repeat_interleave(factor, dim=axis)
    assert torch.equal(up, blocks)
    assert result.upsample(mode="bilinear").shape == (2, 6, 8, 32, 32)  # trilinear on 3-D


def test_frame_is_a_2d_result_of_that_slice(r3d):
    result = r3d[2]
    frame = result.frame(0)
    assert frame.spatial_dims == 2 and torch.equal(frame.scores, result.scores[:, :, 0])
    assert not frame.exact and frame.input_size == (32, 32)
    with pytest.raises(InputError, match="out of range"):
        result.frame(result.grid_size[0])
    with pytest.raises(InputError, match="frame"):
        result.to_html()


def test_wrong_input_rank_and_sizes_are_our_errors(r3d):
    model, x, result = r3d
    with pytest.raises(InputError, match="5-D batch"):
        DenseReadout(model)(x[:, :, 0])
    with pytest.raises(InputError, match=r"\(T, H, W\)"):
        result.upsample(size=(32, 32))


def _cam_oracle(class_map: torch.Tensor, size: tuple[int, ...]) -> np.ndarray:
    from pytorch_grad_cam.utils.image import scale_cam_image

    relu = torch.relu(class_map).numpy()
    return scale_cam_image(relu, size[::-1])  # BaseCAM passes sizes last axis first


@pytest.mark.parametrize("name", ["r3d_18", "monai-densenet121"])
def test_cam_and_captum_drop_ins_give_the_readout_class_map(name):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from dense_readout.captum import DenseReadoutAttribution
    from dense_readout.gradcam import DenseReadoutCAM

    build, shape, _ = FAMILIES[name]
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(2, *shape)
    result = DenseReadout(model)(x)
    class_map = result.class_map([1, 2])
    with DenseReadoutCAM(model) as cam:
        maps = cam(x, targets=[ClassifierOutputTarget(1), ClassifierOutputTarget(2)])
        assert torch.allclose(cam.last_raw_cams, class_map, atol=1e-5)
        assert torch.equal(cam.label_grid(), result.labels())
    assert maps.shape == (2, *shape[1:])
    assert np.allclose(maps, _cam_oracle(class_map, tuple(shape[1:])), atol=1e-5)
    explainer = DenseReadoutAttribution(model)
    attribution = explainer.attribute(x, target=[1, 2])
    assert attribution.shape == (2, 1, *result.grid_size)
    assert torch.allclose(attribution[:, 0], class_map, atol=1e-5)
    every_class = explainer.attribute(x)
    assert torch.allclose(every_class, result.scores, atol=1e-5)
    resized = explainer.attribute(x, target=[1, 2], interpolate_to_input=True)
    assert torch.equal(resized[:, 0], result.upsample(maps=class_map, mode="nearest"))
