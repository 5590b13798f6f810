"""DESIGN.md section 3: the readout against Captum's and pytorch-grad-cam's CAMs.

For a GAP + linear model, class k, at the final feature layer:
* CAM = Z_k - b_k;
* captum LayerGradCam(model, layer).attribute(x, target=k) = (Z_k - b_k) / N (N = h·w);
* pytorch-grad-cam GradCAM and HiResCAM = their own min-max scaling and resize of
  ReLU(Z_k - b_k).
These are independent computations (gradients through the model) of what the
readout computes in one forward pass.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from dense_readout import DenseReadout

captum_attr = pytest.importorskip("captum.attr")
grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.image import scale_cam_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


def _models(embedded):
    torch.manual_seed(0)
    return {
        "resnet18": timm.create_model("resnet18", num_classes=20).eval(),
        "tf_efficientnet_lite0 (embedded weights)": embedded.model,
    }


def _bias(model) -> torch.Tensor:
    return model.get_classifier().bias.detach()


@pytest.fixture(scope="module")
def cases(embedded):
    torch.manual_seed(3)
    x = torch.randn(2, 3, 224, 224)
    out = {}
    for name, model in _models(embedded).items():
        readout = DenseReadout(model)
        out[name] = (model, readout, readout(x), x)
    return out


@pytest.mark.parametrize("name", ["resnet18", "tf_efficientnet_lite0 (embedded weights)"])
def test_layer_gradcam_is_readout_minus_bias_over_n(cases, name):
    model, readout, result, x = cases[name]
    layer = readout.adapter.target_layer()
    targets = [3, 17]
    attribution = captum_attr.LayerGradCam(model, layer).attribute(
        x, target=targets, relu_attributions=False
    )
    n = result.grid_size[0] * result.grid_size[1]
    expected = (result.class_map(targets) - _bias(model)[targets].view(-1, 1, 1)) / n
    torch.testing.assert_close(attribution.squeeze(1), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["GradCAM", "HiResCAM"])
@pytest.mark.parametrize("name", ["resnet18", "tf_efficientnet_lite0 (embedded weights)"])
def test_gradcam_and_hirescam_are_relu_readout(cases, name, method):
    model, readout, result, x = cases[name]
    cam_class = getattr(grad_cam, method)
    targets = [5, 11]
    with cam_class(model=model, target_layers=[readout.adapter.target_layer()]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(k) for k in targets])
    cam_space = (result.class_map(targets) - _bias(model)[targets].view(-1, 1, 1)).clamp(min=0)
    # BaseCAM min-max scales and resizes per layer, then min-max scales the layer mean again
    expected = scale_cam_image(scale_cam_image(cam_space.numpy().astype(np.float32), (224, 224)))
    assert maps.shape == (2, 224, 224)
    np.testing.assert_allclose(maps, expected, atol=1e-4)
