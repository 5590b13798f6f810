"""compare(): same inputs, same targets, same post-processing for every method.

Oracles: on a GAP + linear model, after the common post-processing, the CAM
(Z_k - b_k), GradCAM, HiResCAM, XGradCAM and Captum's LayerGradCam give the
same map; the readout's raw map is DenseReadout.class_map; LayerGradCam's raw
map times N is the CAM's raw map.
"""

from __future__ import annotations

import matplotlib as mpl

mpl.use("Agg")

import numpy as np
import pytest
import timm
import torch
from torch import nn

pytest.importorskip("pytorch_grad_cam")
pytest.importorskip("captum")

from captum.attr import LayerGradCam, Saliency
from pytorch_grad_cam import GradCAM

from dense_readout import DenseReadout
from dense_readout.captum import DenseReadoutAttribution
from dense_readout.compare import (
    METHODS,
    GradientsUnavailableError,
    MethodRegistration,
    SaliencyMethod,
    available_methods,
    check_method_spec,
    compare,
    postprocess,
    register_method,
)
from dense_readout.errors import DenseReadoutError, InputError
from dense_readout.gradcam import DenseReadoutCAM
from dense_readout.registry import RegistryOverwriteWarning, UnknownNameError, registries


class TinyNet(nn.Module):
    """A GAP + linear CNN with 8 channels, so ScoreCAM/AblationCAM (one pass per channel) are cheap."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=4, padding=2),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(8, 5)
        self.num_classes = 5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = TinyNet().eval()
    return model, DenseReadout(model, features=model.features, head=model.head)


def _batch(count: int = 2, size: int = 48) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(4))


BUILT_IN = [
    "dense-readout",
    "cam",
    "dense-readout-cam",
    "gradcam",
    "hirescam",
    "gradcam++",
    "xgradcam",
    "layercam",
    "eigencam",
    "eigengradcam",
    "scorecam",
    "ablationcam",
    "layergradcam",
]


def test_every_built_in_method_runs_with_the_same_post_processing(tiny):
    model, readout = tiny
    assert set(BUILT_IN) <= set(available_methods())
    x = _batch()
    result = compare(model, x, [1, 3], methods=BUILT_IN, readout=readout)
    assert result.failures == {}
    assert list(result.maps) == BUILT_IN
    for name, maps in result.maps.items():
        assert maps.shape == (2, 48, 48), name
        assert float(maps.min()) >= 0 and float(maps.max()) <= 1, name
        assert result.seconds[name] > 0, name
    assert result.results["dense-readout"].classes_per_call == 5
    assert result.results["gradcam"].classes_per_call == 1
    # EigenCAM ignores the target: one call is every class's map (all-class cost = 1 call)
    assert result.results["eigencam"].classes_per_call is None
    other = compare(model, x, [0, 4], methods=["eigencam"], readout=readout).maps["eigencam"]
    assert torch.allclose(other, result.maps["eigencam"])
    # the GAP-linear equivalences survive the common post-processing
    for name in ("gradcam", "hirescam", "xgradcam", "layergradcam"):
        assert (result.maps[name] - result.maps["cam"]).abs().max() < 1e-5, name
    assert torch.allclose(result.maps["dense-readout-cam"], result.maps["dense-readout"], atol=1e-6)


def test_raw_maps_are_the_methods_own_signed_maps(tiny):
    model, readout = tiny
    x = _batch()
    result = compare(
        model, x, [2, 4], methods=["dense-readout", "cam", "layergradcam"], readout=readout
    )
    reference = readout(x)
    raw = result.results["dense-readout"].raw
    assert torch.allclose(raw, reference.class_map([2, 4]), atol=1e-6)
    assert raw.min() < 0  # signed: the ReLU only happens in post-processing
    bias = model.head.bias.detach()[[2, 4]].view(2, 1, 1)
    assert torch.allclose(result.results["cam"].raw, raw - bias, atol=1e-6)
    cells = raw.shape[-1] * raw.shape[-2]
    assert torch.allclose(result.results["layergradcam"].raw * cells, raw - bias, atol=1e-5)


def test_methods_by_class_callable_label_and_registry(tiny):
    model, readout = tiny
    x = _batch()

    def centre(inputs, targets):
        return torch.ones(inputs.shape[0], 4, 4)

    class Flat(SaliencyMethod):
        name, needs_gradients = "flat", False

        def __call__(self, inputs, targets):
            return torch.zeros(inputs.shape[0], 2, 2)

    @register_method("test-flat", "constant maps")
    def _flat(context):
        return Flat()

    try:
        _compare_every_kind_of_spec(model, readout, x, centre)
    finally:
        METHODS.unregister("test-flat")
    assert "test-flat" not in available_methods()


def _compare_every_kind_of_spec(model, readout, x, centre):
    methods = [
        GradCAM,
        DenseReadoutCAM,
        LayerGradCam,
        DenseReadoutAttribution,
        Saliency,
        centre,
        ("my label", "gradcam"),
        "test-flat",
    ]
    result = compare(model, x, 1, methods=methods, readout=readout)
    assert result.failures == {}
    assert list(result.maps) == [
        "GradCAM",
        "DenseReadoutCAM",
        "LayerGradCam",
        "DenseReadoutAttribution",
        "Saliency",
        "centre",
        "my label",
        "flat",
    ]
    assert torch.allclose(result.maps["GradCAM"], result.maps["my label"])
    assert torch.allclose(
        result.maps["DenseReadoutAttribution"], result.maps["DenseReadoutCAM"], atol=1e-6
    )
    assert result.results["DenseReadoutAttribution"].classes_per_call == 5
    assert result.results["Saliency"].raw.shape == (2, 48, 48)  # input attribution, channels summed
    assert float(result.maps["flat"].abs().max()) == 0.0  # constant map -> zeros


def test_a_failing_method_is_reported_not_fatal(tiny):
    model, readout = tiny

    def broken(inputs, targets):
        raise RuntimeError("boom")

    result = compare(model, _batch(), 0, methods=["dense-readout", broken], readout=readout)
    assert "dense-readout" in result.maps
    assert result.failures == {"broken": "RuntimeError: boom"}
    assert "failed: RuntimeError: boom" in result.table()
    with pytest.raises(DenseReadoutError, match="boom"):
        compare(model, _batch(), 0, methods=[broken], readout=readout, errors="raise")


def test_layergradcam_on_a_channels_last_model_is_reported():
    torch.manual_seed(0)
    swin = timm.create_model(
        "swin_tiny_patch4_window7_224",
        num_classes=4,
        embed_dim=24,
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 1, 1),
    ).eval()
    result = compare(swin, _batch(1, 224), 2, methods=["dense-readout", "gradcam", "layergradcam"])
    assert set(result.maps) == {"dense-readout", "gradcam"}
    assert "channels-first" in result.failures["layergradcam"]


def test_gradient_methods_in_inference_mode_are_reported_clearly(tiny):
    model, readout = tiny
    x = _batch()
    with torch.inference_mode():
        result = compare(
            model,
            x,
            1,
            methods=["dense-readout", "eigencam", "gradcam", "layergradcam"],
            readout=readout,
        )
        assert set(result.maps) == {"dense-readout", "eigencam"}
        assert set(result.failures) == {"gradcam", "layergradcam"}
        assert "inference_mode" in result.failures["gradcam"]
        assert result.failures["gradcam"].startswith("GradientsUnavailableError")
        with pytest.raises(DenseReadoutError, match="inference_mode"):
            compare(model, x, 1, methods=["gradcam"], readout=readout, errors="raise")


def test_gradient_methods_work_under_no_grad_and_with_frozen_weights(tiny):
    model, readout = tiny
    x = _batch()
    expected = compare(model, x, 1, methods=["gradcam"], readout=readout).maps["gradcam"]
    with torch.no_grad():
        under_no_grad = compare(model, x, 1, methods=["gradcam"], readout=readout)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    try:
        frozen = compare(model, x, 1, methods=["gradcam", "layergradcam"], readout=readout)
    finally:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
    assert under_no_grad.failures == {} and frozen.failures == {}
    assert torch.allclose(under_no_grad.maps["gradcam"], expected)
    assert torch.allclose(frozen.maps["gradcam"], expected)


def test_targets_none_uses_the_top_class_and_sign_options(tiny):
    model, readout = tiny
    x = _batch()
    top = model(x).argmax(1)
    result = compare(model, x, None, methods=["dense-readout"], readout=readout)
    assert torch.equal(result.targets, top)
    positive = compare(model, x, [2, 4], methods=["dense-readout"], readout=readout)
    raw = positive.results["dense-readout"].raw
    assert raw.min() < 0 < raw.max()
    signed = compare(model, x, [2, 4], methods=["dense-readout"], readout=readout, sign="all")
    assert torch.allclose(signed.maps["dense-readout"], postprocess(raw, (48, 48), "all"))
    assert torch.allclose(
        positive.maps["dense-readout"], postprocess(raw.clamp(min=0), (48, 48), "all")
    )
    assert not torch.allclose(signed.maps["dense-readout"], positive.maps["dense-readout"])
    absolute = postprocess(raw, (48, 48), "absolute")
    assert torch.allclose(absolute, postprocess(raw.abs(), (48, 48), "positive"))


def test_postprocess_resizes_and_normalises():
    raw = torch.tensor([[[-1.0, 1.0], [3.0, 1.0]]])
    maps = postprocess(raw, (8, 8))
    assert maps.shape == (1, 8, 8) and float(maps.min()) == 0.0 and float(maps.max()) == 1.0
    # bilinear with align_corners=False keeps the corner pixels at the corner cells' values
    assert float(maps[0, -1, 0]) == pytest.approx(1.0) and float(maps[0, 0, 0]) == pytest.approx(
        0.0
    )


def test_figure_has_the_image_then_one_panel_per_method(tiny, tmp_path):
    model, readout = tiny
    result = compare(
        model,
        _batch(),
        [1, 2],
        methods=["dense-readout", "gradcam"],
        readout=readout,
        display=torch.rand(2, 3, 48, 48),
    )
    figure = result.figure(class_names=[f"c{i}" for i in range(5)])
    assert len(figure.axes) == 2 * 3
    assert figure.axes[0].get_title() == "c1" and figure.axes[1].get_title().startswith(
        "dense-readout"
    )
    path = tmp_path / "side_by_side.png"
    result.save_figure(str(path))
    assert path.stat().st_size > 1000


# -- bad input --------------------------------------------------------------------------


def test_unknown_method_name_is_an_error_before_anything_runs(tiny):
    model, readout = tiny
    calls = []

    def spy(inputs, targets):
        calls.append(1)
        return torch.zeros(inputs.shape[0], 2, 2)

    with pytest.raises(InputError, match="Unknown method 'gradkam'.*gradcam"):
        compare(model, _batch(), 1, methods=[spy, "gradkam"], readout=readout)
    assert calls == []


def test_target_count_mismatch_is_an_error(tiny):
    model, readout = tiny
    with pytest.raises(InputError, match="3 targets for a batch of 2"):
        compare(model, _batch(), [1, 2, 3], methods=["gradcam"], readout=readout)


def test_bad_options_are_errors(tiny):
    model, readout = tiny
    with pytest.raises(InputError, match="sign"):
        compare(model, _batch(), 1, methods=["cam"], readout=readout, sign="relu")
    with pytest.raises(InputError, match="errors"):
        compare(model, _batch(), 1, methods=["cam"], readout=readout, errors="ignore")
    with pytest.raises(InputError, match="neither a pytorch-grad-cam BaseCAM"):
        compare(model, _batch(), 1, methods=[np.ndarray], readout=readout)


# -- the method registry ----------------------------------------------------------------


def test_methods_live_in_the_package_registry():
    assert registries()["method"] is METHODS
    assert available_methods() == {
        name: METHODS.get(name).description for name in sorted(METHODS.names())
    }
    assert list(available_methods()) == sorted(available_methods())
    assert "Selvaraju" in available_methods()["gradcam"]
    assert GradientsUnavailableError.__module__ == "dense_readout.errors"


def test_unknown_names_raise_the_registry_error_with_a_hint():
    with pytest.raises(UnknownNameError, match="Unknown method 'gradkam'.*register_method"):
        check_method_spec("gradkam")
    with pytest.raises(InputError, match="Unknown method 'nope'"):
        check_method_spec(("label", "nope"))


def test_register_method_normalises_names_and_warns_on_overwrite(tiny):
    model, readout = tiny

    class Flat(SaliencyMethod):
        name, needs_gradients = "flat", False

        def __call__(self, inputs, targets):
            return torch.zeros(inputs.shape[0], 2, 2)

    try:
        register_method("Test_Flat", "first")(lambda context: Flat())
        assert available_methods()["test-flat"] == "first"
        with pytest.warns(RegistryOverwriteWarning, match="test-flat"):
            register_method("test-flat", "second")(lambda context: Flat())
        assert available_methods()["test-flat"] == "second"
        result = compare(model, _batch(), 1, methods=["TEST_FLAT"], readout=readout)
        assert list(result.maps) == ["flat"] and result.failures == {}
    finally:
        METHODS.unregister("test-flat")
    with METHODS.temporarily("test-flat", MethodRegistration(lambda context: Flat(), "tmp")):
        assert available_methods()["test-flat"] == "tmp"
    assert "test-flat" not in METHODS
