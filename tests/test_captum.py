"""DenseReadoutAttribution: the Captum integration.

Oracle: at the grid layer of a GAP + linear model, for N = h*w cells,
    attribute(x, k)                    == N * LayerGradCam(x, k) + b_k
    attribute(x, k, include_bias=False) == N * LayerGradCam(x, k)
(GradCAM's channel weights are the mean gradient W_k / N.) Target conventions
are checked against an independent DenseReadout computation.
"""

from __future__ import annotations

import matplotlib as mpl

mpl.use("Agg")

import pytest
import timm
import torch

pytest.importorskip("captum")

from captum.attr import LayerAttribution, LayerGradCam, NoiseTunnel
from captum.attr import visualization as viz
from captum.metrics import infidelity, sensitivity_max

from dense_readout import DenseReadout
from dense_readout.captum import DenseReadoutAttribution
from dense_readout.errors import InputError


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return timm.create_model("resnet18", num_classes=10).eval()


@pytest.fixture(scope="module")
def explainer(resnet):
    return DenseReadoutAttribution(resnet)


def _batch(size: int, count: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    return torch.randn(count, 3, size, size, generator=generator)


def _check_layergradcam_relation(explainer, model, bias, x, classes):
    ours = explainer.attribute(x, target=classes)
    ours_no_bias = explainer.attribute(x, target=classes, include_bias=False)
    reference = LayerGradCam(model, explainer.layer).attribute(x, target=classes)
    cells = ours.shape[-2] * ours.shape[-1]
    b = bias[classes].view(-1, 1, 1, 1)
    assert ours.shape == reference.shape == (x.shape[0], 1, *ours.shape[-2:])
    assert (ours_no_bias - cells * reference).abs().max() < 1e-5
    assert (ours - (cells * reference + b)).abs().max() < 1e-5
    assert (ours - ours_no_bias - b).abs().max() < 1e-5


def test_equals_n_times_layergradcam_plus_bias_resnet18(resnet, explainer):
    _check_layergradcam_relation(explainer, resnet, resnet.fc.bias.detach(), _batch(128), [3, 7])


def test_equals_n_times_layergradcam_plus_bias_embedded(embedded):
    model = embedded.model
    _check_layergradcam_relation(
        DenseReadoutAttribution(model), model, model.classifier.bias.detach(), _batch(160), [285, 1]
    )


def test_captum_target_conventions(resnet, explainer):
    x = _batch(96)
    scores = DenseReadout(resnet)(x).scores
    per_example = scores[[0, 1], [4, 6]].unsqueeze(1)
    same = scores[:, 4:5]
    for target in (4, torch.tensor(4), torch.tensor([4]), (4,)):
        assert torch.allclose(explainer.attribute(x, target=target), same, atol=1e-5)
    for target in ([4, 6], torch.tensor([4, 6]), [(4,), (6,)]):
        assert torch.allclose(explainer.attribute(x, target=target), per_example, atol=1e-5)
    # target=None: every class at once (extension, captum issue #612)
    assert torch.allclose(explainer.attribute(x), scores, atol=1e-5)


def test_relu_and_interpolation_match_captum_helpers(explainer):
    x = _batch(96)
    raw = explainer.attribute(x, target=2)
    assert torch.equal(explainer.attribute(x, target=2, relu_attributions=True), raw.clamp(min=0))
    upsampled = explainer.attribute(x, target=2, interpolate_to_input=True)
    # default: Captum's own default mode (nearest), so it equals LayerAttribution.interpolate
    assert torch.equal(upsampled, LayerAttribution.interpolate(raw, (96, 96)))
    assert torch.equal(upsampled, LayerAttribution.interpolate(raw, (96, 96), "nearest"))
    smooth = explainer.attribute(
        x, target=2, interpolate_to_input=True, interpolate_mode="bilinear"
    )
    assert torch.allclose(smooth, LayerAttribution.interpolate(raw, (96, 96), "bilinear"))
    assert not torch.allclose(smooth, upsampled)
    expanded = explainer.attribute(x, target=2, expand_to_inputs=True)
    assert expanded.shape == x.shape and torch.equal(expanded[:, 1], upsampled[:, 0])


def test_layer_must_output_the_grid():
    """An equivalent layer (same output as the adapter's) is accepted; another is refused,
    even with the same channel count (torchvision: timm zero-inits the last BN of each
    block, so an untrained timm layer4[0] really does output the grid)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = _batch(64)
    same = DenseReadoutAttribution(model, model.layer4[-1])
    reference = DenseReadoutAttribution(model).attribute(x, target=1)
    assert torch.allclose(same.attribute(x, target=1), reference)
    with pytest.raises(InputError, match=r"get_submodule\('layer4'\)"):
        DenseReadoutAttribution(model, model.layer4[0])  # 512 channels too, not the grid


def test_one_and_four_channel_torchvision_models():
    import torchvision

    for channels in (1, 4):
        model = torchvision.models.resnet18(weights=None, num_classes=5)
        model.conv1 = torch.nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
        model.eval()
        x = torch.randn(2, channels, 64, 64)
        maps = DenseReadoutAttribution(model).attribute(x, target=2)
        reference = LayerGradCam(model, model.layer4).attribute(x, target=2)
        assert maps.shape == (2, 1, 2, 2)
        bias = model.fc.bias.detach()[2]
        assert (maps - (4 * reference + bias)).abs().max() < 1e-4


def test_convergence_delta(resnet, explainer):
    assert explainer.has_convergence_delta() and not explainer.multiplies_by_inputs
    _, delta = explainer.attribute(_batch(96), target=[1, 2], return_convergence_delta=True)
    assert delta.shape == (2,) and delta.abs().max() < 1e-4  # exact model: mean(Z_k) = y_k


def test_convergence_delta_of_a_cls_token_vit_is_its_residual():
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", num_classes=5, img_size=64, depth=2, embed_dim=48, num_heads=2
    ).eval()
    x = _batch(64)
    result = DenseReadout(model)(x)
    attributions, delta = DenseReadoutAttribution(model).attribute(
        x, target=3, return_convergence_delta=True
    )
    assert attributions.shape == (2, 1, 4, 4)
    assert torch.allclose(attributions[:, 0], result.class_map(3), atol=1e-5)
    expected = result.scores[:, 3].mean(dim=(1, 2)) - result.logits[:, 3]
    assert torch.allclose(delta, expected, atol=1e-5) and delta.abs().min() > 1e-4


def test_swin_default_layer_and_transform():
    torch.manual_seed(0)
    model = timm.create_model(
        "swin_tiny_patch4_window7_224",
        num_classes=4,
        embed_dim=24,
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 1, 1),
    ).eval()
    x = _batch(224, 1)
    result = DenseReadout(model)(x)
    attributions = DenseReadoutAttribution(model).attribute(x, target=2)
    assert torch.allclose(attributions[:, 0], result.class_map(2), atol=1e-5)


def test_additional_forward_args_and_tuple_inputs(resnet):
    seen = []

    def forward(images, scale):
        seen.append(scale)
        return resnet(images) * scale

    explainer = DenseReadoutAttribution(forward, model=resnet)
    x = _batch(96)
    plain = DenseReadoutAttribution(resnet).attribute(x, target=1)
    (from_tuple,) = explainer.attribute((x,), target=1, additional_forward_args=(2.0,))
    assert seen == [2.0]
    assert torch.allclose(from_tuple, plain, atol=1e-6)  # Z reads the grid, not the scaled output


def test_noise_tunnel_wraps_it(explainer):
    x = _batch(64)
    smoothed = NoiseTunnel(explainer).attribute(
        x, nt_type="smoothgrad", nt_samples=2, stdevs=0.1, target=3
    )
    assert smoothed.shape == (2, 1, 2, 2) and torch.isfinite(smoothed).all()


def test_captum_metrics_and_visualisation(resnet, explainer):
    x = _batch(64)

    def perturb(inputs):
        noise = torch.randn(inputs.shape, generator=torch.Generator().manual_seed(3)) * 0.05
        return noise, inputs - noise

    attributions = explainer.attribute(x, target=3, expand_to_inputs=True)
    score = infidelity(
        resnet, perturb, x, attributions, target=3, n_perturb_samples=2, normalize=True
    )
    assert score.shape == (2,) and torch.isfinite(score).all()
    sensitivity = sensitivity_max(explainer.attribute, x, target=3, n_perturb_samples=2)
    assert sensitivity.shape == (2,) and torch.isfinite(sensitivity).all()
    # sensitivity of a map to its own input is 0 when the perturbation is 0, up to float
    # rounding: captum re-runs the batch repeated, and CPU kernels may block it differently
    zero = sensitivity_max(
        explainer.attribute, x, target=3, n_perturb_samples=2, perturb_radius=0.0
    )
    assert torch.allclose(zero, torch.zeros(2), atol=1e-5)
    upsampled = explainer.attribute(x, target=3, interpolate_to_input=True)
    image = (x[0].permute(1, 2, 0).numpy() - x.min().item()) / (x.max() - x.min()).item()
    figure, axis = viz.visualize_image_attr(
        upsampled[0].permute(1, 2, 0).numpy(),
        image,
        method="blended_heat_map",
        sign="all",
        use_pyplot=False,
    )
    assert figure is not None and axis is not None


# -- bad input ------------------------------------------------------------------------


def test_target_count_mismatch_is_an_error(explainer):
    with pytest.raises(InputError, match="3 targets for a batch of 2"):
        explainer.attribute(_batch(64), target=[1, 2, 3])


def test_long_tuple_target_is_an_error(explainer):
    with pytest.raises(InputError, match="1-tuple"):
        explainer.attribute(_batch(64), target=(1, 0, 0))


def test_layer_input_is_refused(explainer):
    with pytest.raises(InputError, match="attribute_to_layer_input"):
        explainer.attribute(_batch(64), target=1, attribute_to_layer_input=True)


def test_plain_function_needs_the_model(resnet):
    with pytest.raises(InputError, match="model=model"):
        DenseReadoutAttribution(lambda images: resnet(images))


def test_out_of_range_target_is_an_error(explainer):
    with pytest.raises(InputError, match="out of range"):
        explainer.attribute(_batch(64), target=10)
