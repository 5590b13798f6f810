"""DenseReadoutCAM: the pytorch-grad-cam integration.

Oracles: on GAP + linear models the bias-free readout CAM *is* GradCAM and
HiResCAM at the grid layer (both compute (Z_k - b_k)/N before ReLU/min-max);
raw maps equal an independent DenseReadout computation; per-cell targets equal
per-cell softmax/logits computed from the readout result.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

pytest.importorskip("pytorch_grad_cam")

from pytorch_grad_cam import FinerCAM, GradCAM, HiResCAM
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.metrics.road import ROADMostRelevantFirst
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputReST,
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
    RawScoresOutputTarget,
)

from dense_readout import DenseReadout
from dense_readout.errors import InputError
from dense_readout.gradcam import DenseReadoutCAM, IgnoredTargetLayerWarning


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return timm.create_model("resnet18", num_classes=10).eval()


@pytest.fixture(scope="module")
def resnet_readout(resnet):
    """One DenseReadout per model: building it probes the model (a few forwards)."""
    return DenseReadout(resnet)


@pytest.fixture(scope="module")
def embedded_readout(embedded):
    return DenseReadout(embedded.model)


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    return timm.create_model(
        "swin_tiny_patch4_window7_224",
        num_classes=7,
        embed_dim=24,
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 1, 1),
    ).eval()


def _vit(**kwargs):
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        num_classes=6,
        img_size=64,
        depth=2,
        embed_dim=48,
        num_heads=2,
        **kwargs,
    ).eval()


def _batch(size: int, count: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(count, 3, size, size, generator=generator)


def _equivalence_case(model, x, classes, readout=None):
    targets = [ClassifierOutputTarget(k) for k in classes]
    with DenseReadoutCAM(model, include_bias=False, readout=readout) as cam:
        ours = cam(x, targets)
        layer, transform = cam.target_layers[0], cam.reshape_transform
    with GradCAM(model, [layer], reshape_transform=transform) as grad_cam:
        reference = grad_cam(x, targets)
    with HiResCAM(model, [layer], reshape_transform=transform) as hires_cam:
        hires = hires_cam(x, targets)
    return ours, reference, hires


def test_bias_free_readout_cam_equals_gradcam_and_hirescam_resnet18(resnet, resnet_readout):
    ours, gradcam, hirescam = _equivalence_case(resnet, _batch(128), [3, 8], resnet_readout)
    assert ours.shape == (2, 128, 128) and ours.dtype == np.float32
    assert np.abs(ours - gradcam).max() < 1e-4
    assert np.abs(ours - hirescam).max() < 1e-4
    assert ours.max() > 0.99  # min-max normalised, not all zero


def test_bias_free_readout_cam_equals_gradcam_and_hirescam_embedded(embedded, embedded_readout):
    model = embedded.model
    x = _batch(160)
    classes = [285, 967]
    ours, gradcam, hirescam = _equivalence_case(model, x, classes, embedded_readout)
    assert np.abs(ours - gradcam).max() < 1e-4
    assert np.abs(ours - hirescam).max() < 1e-4


def test_bias_is_the_only_difference_on_the_embedded_model(embedded, embedded_readout):
    """Raw maps with and without the bias differ by b_k exactly (so the ReLU clips differently)."""
    model = embedded.model
    x = _batch(160, 1)
    target = [ClassifierOutputTarget(285)]
    with (
        DenseReadoutCAM(model, readout=embedded_readout) as with_bias,
        DenseReadoutCAM(model, include_bias=False, readout=embedded_readout) as without,
    ):
        raw_with = (with_bias(x, target), with_bias.last_raw_cams)[1]
        raw_without = (without(x, target), without.last_raw_cams)[1]
    bias = model.classifier.bias[target[0].category]
    assert torch.allclose(raw_with - raw_without, bias.expand_as(raw_with), atol=1e-4)


def test_raw_maps_and_label_grid_equal_an_independent_readout(resnet, resnet_readout):
    x = _batch(128)
    result = resnet_readout(x)
    with DenseReadoutCAM(resnet, readout=resnet_readout) as cam:
        cam(x, [ClassifierOutputTarget(2), ClassifierOutputTarget(6)])
        assert torch.allclose(cam.last_raw_cams, result.class_map([2, 6]), atol=1e-5)
        assert torch.equal(cam.label_grid(), result.labels())
        assert torch.allclose(cam.last_scores, result.scores, atol=1e-5)


def test_targets_none_means_top_class(resnet, resnet_readout):
    x = _batch(128)
    top = resnet(x).argmax(1).tolist()
    with DenseReadoutCAM(resnet, readout=resnet_readout) as cam:
        default = cam(x, None)
        explicit = cam(x, [ClassifierOutputTarget(k) for k in top])
    assert np.array_equal(default, explicit)


def test_library_targets_are_evaluated_per_cell(resnet, resnet_readout):
    x = _batch(128)
    result = resnet_readout(x)
    with DenseReadoutCAM(resnet, readout=resnet_readout) as cam:
        cam(x, [ClassifierOutputSoftmaxTarget(4)] * 2)
        softmax = cam.last_raw_cams
        cam(x, [ClassifierOutputReST(4)] * 2)
        rest = cam.last_raw_cams
    probabilities = result.probabilities()[:, 4]
    assert torch.allclose(softmax, probabilities, atol=1e-5)
    # ReST = logit - cross-entropy = logit + log p, per cell
    expected = result.scores[:, 4] + torch.log(probabilities)
    assert torch.allclose(rest, expected, atol=1e-4)


def test_swin_defaults_work_and_equal_gradcam(swin):
    x = _batch(224)
    ours, gradcam, _ = _equivalence_case(swin, x, [1, 5])
    assert ours.shape == (2, 224, 224)
    assert np.abs(ours - gradcam).max() < 1e-4
    with DenseReadoutCAM(swin) as cam:
        cam(x, None)
        assert torch.equal(cam.label_grid(), DenseReadout(swin)(x).labels())
        assert tuple(cam.label_grid().shape) == (2, 7, 7)


def test_vit_cls_model_defaults_work():
    model = _vit()
    x = _batch(64)
    with DenseReadoutCAM(model) as cam:
        maps = cam(x, None)
        assert maps.shape == (2, 64, 64)
        assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
        assert torch.equal(cam.label_grid(), DenseReadout(model)(x).labels())


def test_vit_avg_pool_without_fc_norm_equals_gradcam():
    """Token grid + reshape transform from the adapter: same oracle as the CNNs."""
    model = _vit(global_pool="avg", class_token=False, fc_norm=False)
    ours, gradcam, hirescam = _equivalence_case(model, _batch(64), [0, 3])
    assert np.abs(ours - gradcam).max() < 1e-4
    assert np.abs(ours - hirescam).max() < 1e-4


def test_eigen_smooth_equals_hirescam_eigen_smooth(resnet, resnet_readout):
    """Per-cell contributions W_k * h are N x HiResCAM's grads * activations."""
    x = _batch(128)
    targets = [ClassifierOutputTarget(1), ClassifierOutputTarget(9)]
    with DenseReadoutCAM(resnet, include_bias=False, readout=resnet_readout) as cam:
        ours = cam(x, targets, eigen_smooth=True)
        layer = cam.target_layers[0]
    with HiResCAM(resnet, [layer]) as hires:
        reference = hires(x, targets, eigen_smooth=True)
    assert np.abs(ours - reference).max() < 1e-3


def test_visualisation_and_metrics_accept_the_maps(resnet, resnet_readout):
    x = _batch(64)
    targets = [ClassifierOutputTarget(3)] * 2
    with DenseReadoutCAM(resnet, readout=resnet_readout) as cam:
        maps = cam(x, targets)
        smooth = cam(x, targets, aug_smooth=True)
    assert smooth.shape == maps.shape
    rgb = (x[0].permute(1, 2, 0).numpy() - x.min().item()) / (x.max() - x.min()).item()
    overlay = show_cam_on_image(rgb.astype(np.float32), maps[0], use_rgb=True)
    assert overlay.shape == (64, 64, 3) and overlay.dtype == np.uint8
    change = CamMultImageConfidenceChange()(x, maps, targets, resnet)
    road = ROADMostRelevantFirst(percentile=80)(x, maps, targets, resnet)
    assert change.shape == (2,) and np.isfinite(change).all()
    assert road.shape == (2,) and np.isfinite(road).all()


def test_finercam_can_wrap_it(resnet, resnet_readout):
    x = _batch(64)
    cam = FinerCAM(
        resnet, [resnet_readout.adapter.target_layer()], None, base_method=DenseReadoutCAM
    )
    maps = cam(x, None)
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all()


def test_works_in_inference_mode(resnet, resnet_readout):
    x = _batch(64)
    with DenseReadoutCAM(resnet, readout=resnet_readout) as cam:
        expected = cam(x, None)
        with torch.inference_mode():
            assert np.array_equal(cam(x, None), expected)


# -- bad input ------------------------------------------------------------------------


def test_target_count_mismatch_is_an_error(resnet, resnet_readout):
    with DenseReadoutCAM(resnet, readout=resnet_readout) as cam:
        with pytest.raises(InputError, match="1 targets for a batch of 2"):
            cam(_batch(64), [ClassifierOutputTarget(1)])


def test_target_without_per_cell_value_is_an_error(resnet, resnet_readout):
    with DenseReadoutCAM(resnet, readout=resnet_readout) as cam:
        with pytest.raises(InputError, match="one value per row"):
            cam(_batch(64), [RawScoresOutputTarget()] * 2)


def test_wrong_target_layer_is_an_error(resnet, resnet_readout):
    with pytest.raises(InputError, match=r"outputs the grid.*get_submodule\('layer4'\)"):
        DenseReadoutCAM(resnet, [resnet.layer3], readout=resnet_readout)


# -- target_layers as pytorch-grad-cam users write them -----------------------------------


@pytest.fixture(scope="module")
def tv_resnet():
    """torchvision resnet18: its blocks do not zero-init, so layer4[-2] differs from the grid."""
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


def test_several_target_layers_use_the_grid_layer_and_warn(tv_resnet):
    x = _batch(64)
    layers = [tv_resnet.layer4[-1], tv_resnet.layer4[-2]]  # pytorch-grad-cam's own test list
    with pytest.warns(IgnoredTargetLayerWarning, match=r"ignoring .*get_submodule\('layer4.0'\)"):
        cam = DenseReadoutCAM(tv_resnet, layers)
    with cam, DenseReadoutCAM(tv_resnet) as default:
        assert cam.target_layers == [tv_resnet.layer4[-1]]
        assert np.array_equal(cam(x, None), default(x, None))
        assert torch.equal(cam.last_raw_cams, default.last_raw_cams)


def test_a_layer_with_the_grid_width_but_not_the_grid_is_refused(tv_resnet):
    """layer4[-2] has the head's 512 channels; its output is not the grid (RefineCAM builds this)."""
    with pytest.raises(InputError, match=r"none of the target layers.*get_submodule\('layer4'\)"):
        DenseReadoutCAM(tv_resnet, [tv_resnet.layer4[-2]])
    from pytorch_grad_cam.refine_cam import RefineCAM

    with pytest.raises(InputError, match="layer4.0"):
        RefineCAM(
            tv_resnet, [tv_resnet.layer4[-1], tv_resnet.layer4[-2]], base_method=DenseReadoutCAM
        )


@pytest.mark.parametrize("channels", [1, 4])
def test_one_and_four_channel_models(channels):
    """pytorch-grad-cam's test_one_channel model: conv1 replaced, target_layers=[layer4]."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    model.conv1 = torch.nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.eval()
    x = torch.randn(3, channels, 96, 96, generator=torch.Generator().manual_seed(0))
    targets = [ClassifierOutputTarget(k) for k in (1, 2, 3)]
    with DenseReadoutCAM(model, [model.layer4], include_bias=False) as cam:
        ours = cam(x, targets)
    with GradCAM(model, [model.layer4]) as grad_cam:
        reference = grad_cam(x, targets)
    assert ours.shape == (3, 96, 96)
    assert np.abs(ours - reference).max() < 1e-4


@pytest.mark.parametrize("channels", [1, 4])
def test_timm_models_with_other_input_widths(channels):
    """timm's adapter probes in its constructor: with the first conv's in_channels."""
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=5, in_chans=channels).eval()
    x = torch.randn(2, channels, 64, 64, generator=torch.Generator().manual_seed(0))
    with DenseReadoutCAM(model) as cam:
        maps = cam(x, None)
        assert torch.equal(cam.label_grid(), DenseReadout(model)(x).labels())
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all()


def test_bias_removal_needs_an_affine_head():
    model = timm.create_model("convnext_atto", num_classes=5).eval()
    with pytest.raises(InputError, match="affine head"):
        DenseReadoutCAM(model, include_bias=False)


def test_bad_images_are_rejected(resnet, resnet_readout):
    with DenseReadoutCAM(resnet, readout=resnet_readout) as cam:
        with pytest.raises(InputError, match="4-D"):
            cam(torch.randn(3, 64, 64), None)


def test_nonlinear_head_model_defaults_work():
    """ConvNeXt's LayerNorm head: the readout is the head per cell; raw maps equal DenseReadout's."""
    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", num_classes=5).eval()
    readout = DenseReadout(model)
    x = _batch(64)
    with DenseReadoutCAM(model, readout=readout) as cam:
        maps = cam(x, [ClassifierOutputTarget(1), ClassifierOutputTarget(2)])
        assert maps.shape == (2, 64, 64)
        assert torch.allclose(cam.last_raw_cams, readout(x).class_map([1, 2]), atol=1e-5)
