"""LRP refinement of readout cells (dense_readout.lrp).

Oracles: exact conservation on bias-free networks with the epsilon rule; an
independent, hook-free LRP-epsilon implementation on a small CNN with biases;
linearity of LRP in its starting relevance (class map = sum of its cells, batched
cells = one cell at a time); BaseCAM's min-max convention; measured concentration
on the embedded model.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from dense_readout import DenseReadout
from dense_readout.errors import DenseReadoutError, InputError, UnsupportedModelError
from dense_readout.lrp import (
    LRPReadout,
    LRPReadoutAttribution,
    LRPReadoutCAM,
    cell_patch_masks,
    outside_share,
    plot_cell_relevance,
    registered_composites,
    uniform_window_share,
    window_share,
)
from lrp_support import assert_pristine, snapshot

# -- small networks ------------------------------------------------------------------


class TinyCNN(nn.Module):
    """conv-ReLU-conv-ReLU grid (stride 4 overall) + linear head after GAP."""

    def __init__(self, bias: bool, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=bias),
            nn.ReLU(),
            nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=bias),
            nn.ReLU(),
        )
        self.head = nn.Linear(12, classes, bias=bias)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def tiny(bias: bool, seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    model = TinyCNN(bias).eval()
    if bias:
        with torch.no_grad():
            for module in model.modules():
                if getattr(module, "bias", None) is not None:
                    module.bias.uniform_(0.05, 0.3)
    return model


def tiny_lrp(model: TinyCNN, composite: str = "epsilon", **options) -> LRPReadout:
    return LRPReadout(
        model, composite, features=model.features, head=model.head, composite_options=options
    )


def manual_lrp_epsilon(
    model: TinyCNN, x: torch.Tensor, k: int, u: int, v: int, eps: float
) -> torch.Tensor:
    """LRP-epsilon written out layer by layer, no zennit, no hooks: relevance of Z[k,u,v]."""

    def stab(z):
        return z + eps * torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))

    conv1, conv2 = model.features[0], model.features[2]
    a0 = x.detach()
    z1 = conv1(a0).detach()
    a1 = z1.clamp(min=0)
    z2 = conv2(a1).detach()
    a2 = z2.clamp(min=0)
    cell = a2[:, :, u, v]  # B×C
    z = model.head(cell).detach()[:, k]
    # head: R_c = a_c w_kc R / stab(z), R = z
    r_cell = cell * model.head.weight[k].detach() * (z / stab(z)).unsqueeze(1)
    r2 = torch.zeros_like(a2)
    r2[:, :, u, v] = r_cell

    def through(conv, a_in, z_out, r_out):
        a_in = a_in.clone().requires_grad_(True)
        out = nn.functional.conv2d(
            a_in,
            conv.weight.detach(),
            conv.bias.detach() if conv.bias is not None else None,
            conv.stride,
            conv.padding,
        )
        s = (r_out / stab(z_out)).detach()
        (grad,) = torch.autograd.grad((out * s).sum(), a_in)
        return (a_in * grad).detach()

    r1 = through(conv2, a1, z2, r2)  # ReLU passes relevance unchanged
    return through(conv1, a0, z1, r1)


# -- conservation ---------------------------------------------------------------------


def test_bias_free_relu_cnn_conserves_each_cell_within_one_percent():
    model = tiny(bias=False)
    lrp = tiny_lrp(model, "epsilon", epsilon=1e-9)
    x = torch.randn(2, 3, 16, 16)
    for cell in [(0, 0), (1, 2), (3, 3)]:
        result = lrp.cell(x, cell=cell)
        assert result.relevance.shape == (2, 1, 16, 16)
        assert torch.allclose(result.conservation, torch.ones(2), atol=0.01), result.conservation
        # the start is the cell's score of its own top-1 class
        z = DenseReadout(model, features=model.features, head=model.head)(x).scores
        top = z[:, :, cell[0], cell[1]].max(dim=1).values
        assert torch.allclose(result.start, top, atol=1e-5)


def test_bias_free_conservation_holds_for_epsilon_plus_flat_too():
    model = tiny(bias=False)
    result = tiny_lrp(model, "epsilon_plus_flat").cell(torch.randn(2, 3, 16, 16), cell=(2, 1))
    assert torch.allclose(result.conservation, torch.ones(2), atol=0.01), result.conservation


def test_with_biases_matches_independent_lrp_and_deviation_is_the_bias_share():
    model = tiny(bias=True)
    x = torch.randn(1, 3, 16, 16)
    eps = 1e-9
    result = tiny_lrp(model, "epsilon", epsilon=eps).cell(x, cell=(1, 2))
    k = int(result.targets[0])
    expected = manual_lrp_epsilon(model, x, k, 1, 2, eps)
    assert torch.allclose(
        result.input_relevance, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max())
    )
    # biases absorb relevance: the documented deviation is measurable here, not zero
    assert abs(float(result.conservation[0]) - 1) > 0.02


# -- timm families: canonizers ------------------------------------------------------------


def _zero_biases(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "bias", None) is not None and isinstance(module.bias, torch.Tensor):
                module.bias.zero_()
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.zero_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize(
    "name", ["resnet18", "resnet26", "efficientnet_b0", "tf_efficientnet_lite0", "convnext_atto"]
)
def test_canonized_timm_blocks_conserve_relevance(name):
    torch.manual_seed(0)
    model = _zero_biases(timm.create_model(name, num_classes=5).eval())
    x = torch.randn(1, 3, 64, 64)
    lrp = LRPReadout(model, "epsilon", composite_options={"epsilon": 1e-9, "stabilizer": 1e-9})
    result = lrp.cell(x, cell=(1, 0))
    assert abs(float(result.conservation[0]) - 1) < 0.01, result.conservation
    # the canonized forward computes the model's own readout
    z = DenseReadout(model)(x).scores
    assert torch.allclose(result.scores, z, rtol=1e-4, atol=1e-4)


def test_without_canonizers_timm_residuals_break_conservation():
    torch.manual_seed(0)
    model = _zero_biases(timm.create_model("resnet18", num_classes=5).eval())
    x = torch.randn(1, 3, 64, 64)
    plain = LRPReadout(model, "epsilon", canonize=False).cell(x, cell=(0, 0))
    assert abs(float(plain.conservation[0]) - 1) > 0.5


# -- the model is left unchanged ------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "convnext_atto"])
def test_model_unchanged_after_every_call_and_after_errors(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    before = snapshot(model, x)
    lrp = LRPReadout(model)
    lrp.cell(x, cell=(0, 1))
    assert_pristine(model, before)
    if name == "resnet18":  # every entry point once (the machinery is shared)
        lrp.class_map(x, target=2)
        lrp.label_map(x)
        lrp.cells(x, which=[(0, 0), (1, 1)], strategy="vmap")
        assert_pristine(model, before)
    with pytest.raises(InputError):
        lrp.cell(x, cell=(0, 0), target=99)  # fails inside the LRP context
    assert_pristine(model, before)


# -- batching and linearity -------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet_setup():
    torch.manual_seed(1)
    model = timm.create_model("resnet18", num_classes=6).eval()
    return model, LRPReadout(model), torch.randn(2, 3, 64, 64)


@pytest.mark.parametrize("strategy", ["expand", "vmap"])
def test_batched_cells_equal_one_cell_at_a_time(resnet_setup, strategy):
    _model, lrp, x = resnet_setup
    cells = lrp.cells(x, strategy=strategy)
    assert cells.relevance.shape == (2, 2, 2, 64, 64)
    for u, v in [(0, 0), (1, 0), (1, 1)]:
        single = lrp.cell(x, cell=(u, v))
        assert torch.equal(single.targets, cells.classes[:, u, v])
        scale = float(single.relevance.abs().max())
        assert torch.allclose(cells.cell(u, v), single.relevance, atol=1e-4 * scale)
        assert torch.allclose(cells.conservation[:, u, v], single.conservation, atol=1e-3)


def test_class_map_is_the_sum_of_its_cells(resnet_setup):
    _model, lrp, x = resnet_setup
    k = 3
    whole = lrp.class_map(x, target=k)
    parts = lrp.cells(x, target=k)
    total = parts.relevance.sum(dim=(1, 2)).unsqueeze(1)
    assert torch.allclose(whole.relevance, total, atol=1e-4 * float(total.abs().max()))
    assert torch.allclose(whole.start, parts.start.sum(dim=(1, 2)), rtol=1e-5)


def test_label_map_groups_cells_by_their_top1_class(resnet_setup):
    _model, lrp, x = resnet_setup
    labels = lrp.label_map(x)
    cells = lrp.cells(x)
    assert labels.labels.shape == (2, 64, 64)
    assert torch.equal(labels.grid_labels, cells.classes)
    for b in range(2):
        for g, k in enumerate(labels.classes[b].tolist()):
            if k < 0:
                continue
            grouped = (cells.relevance[b] * (cells.classes[b] == k).view(2, 2, 1, 1)).sum(
                dim=(0, 1)
            )
            assert torch.allclose(
                labels.relevance[b, g], grouped, atol=1e-4 * float(grouped.abs().max())
            )
        # every pixel label is one of the grid's classes, the one with the largest relevance
        present = set(labels.classes[b][labels.classes[b] >= 0].tolist())
        assert set(labels.labels[b].unique().tolist()) <= present


# -- unsupported models and bad input -------------------------------------------------------------


# the test-size models arrived in timm after 1.0.10 (tox lowest): the nano ones there
_FULL_SIZE = {"test_maxvit": "maxvit_nano_rw_256", "test_coatnet": "coatnet_nano_rw_224"}


@pytest.mark.parametrize("name", ["test_maxvit", "test_coatnet"])
def test_attention_models_are_refused_with_the_reason(name):
    # ViT/DeiT/Swin are refined with CP-LRP (tests/test_lrp_transformers.py); MaxViT is not
    name = name if timm.is_model(name) else _FULL_SIZE[name]
    model = timm.create_model(name, num_classes=3).eval()
    with pytest.raises(UnsupportedModelError, match="attention"):
        LRPReadout(model)


def test_bad_arguments_raise_package_errors():
    model = tiny(bias=False)
    lrp = tiny_lrp(model)
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(InputError, match="outside"):
        lrp.cell(x, cell=(4, 0))
    with pytest.raises(InputError, match="out of range"):
        lrp.class_map(x, target=7)
    with pytest.raises(InputError, match="B×3×H×W|4-D"):
        lrp.cell(x[0], cell=(0, 0))
    with pytest.raises(InputError, match="Unknown composite"):
        tiny_lrp(model, "no_such_rule")
    with pytest.raises(InputError, match="strategy"):
        lrp.cells(x, strategy="fast")
    model.train()
    with pytest.raises(DenseReadoutError, match="eval"):
        lrp.cell(x, cell=(0, 0))


def test_registered_composites_include_zennits():
    names = registered_composites()
    for name in ["epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1", "epsilon"]:
        assert name in names


# -- diagnostics ---------------------------------------------------------------------------------


def test_patches_tile_the_image_and_shares_have_exact_values():
    masks = cell_patch_masks((3, 5), (30, 47))
    assert torch.equal(masks.sum(dim=(0, 1)), torch.ones(30, 47, dtype=torch.long))
    # relevance confined to each cell's own patch: nothing outside
    inside = masks.float().unsqueeze(0) * torch.rand(1, 3, 5, 30, 47)
    assert torch.allclose(outside_share(inside), torch.zeros(1, 3, 5), atol=1e-6)
    # uniform relevance: the outside share is 1 - patch area fraction
    uniform = torch.ones(1, 3, 5, 30, 47)
    area = masks.float().mean(dim=(-2, -1))
    assert torch.allclose(outside_share(uniform)[0], 1 - area, atol=1e-6)
    assert torch.allclose(
        window_share(uniform, radius=1)[0], uniform_window_share((3, 5), (30, 47), 1), atol=1e-6
    )


def test_relevance_concentrates_near_its_cell_on_the_embedded_model(embedded):
    from PIL import Image
    from skimage import data as skdata

    model, preprocess = embedded.model, embedded.preprocess
    x = preprocess(Image.fromarray(skdata.chelsea())).unsqueeze(0)
    which = [(1, 1), (3, 3), (5, 4)]
    cells = LRPReadout(model).cells(x, which=which)
    shares = window_share(cells.relevance, radius=1)
    uniform = uniform_window_share((7, 7), (224, 224), radius=1)
    measured = torch.stack([shares[0, u, v] for u, v in which])
    baseline = torch.stack([uniform[u, v] for u, v in which])
    # more relevance mass in the 3×3-cell window than a uniform spread would put there
    assert bool((measured > baseline).all()), (measured, baseline)
    assert float(measured.mean() / baseline.mean()) > 1.3


# -- integrations -------------------------------------------------------------------------------


def test_captum_attribution_matches_the_class_map_and_reports_delta(resnet_setup):
    _model, lrp, x = resnet_setup
    attribution = LRPReadoutAttribution(lrp)
    maps, delta = attribution.attribute(x, target=[1, 4], return_convergence_delta=True)
    direct = lrp.class_map(x, target=[1, 4])
    assert maps.shape == (2, 1, 64, 64) and maps.is_contiguous()
    assert torch.allclose(maps, direct.relevance)
    assert torch.allclose(delta, direct.relevance.sum(dim=(1, 2, 3)) - direct.start)
    full = attribution.attribute((x,), target=[1, 4], sum_channels=False)
    assert isinstance(full, tuple) and full[0].shape == x.shape
    assert torch.allclose(full[0].sum(dim=1, keepdim=True), direct.relevance, atol=1e-6)
    one = attribution.attribute(x[:1], target=1, cell=(1, 0))
    assert torch.allclose(one, lrp.cell(x[:1], (1, 0), 1).relevance)
    assert attribution.has_convergence_delta() and attribution.multiplies_by_inputs


def test_gradcam_style_map_is_minmax_of_relu_relevance(resnet_setup):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, lrp, x = resnet_setup
    cam = LRPReadoutCAM(model, [model.layer4[-1]], None, lrp=lrp)
    maps = cam(x, [ClassifierOutputTarget(2), ClassifierOutputTarget(5)])
    assert maps.shape == (2, 64, 64) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1
    raw = lrp.class_map(x, target=[2, 5]).relevance[:, 0].clamp(min=0).numpy()
    for b in range(2):
        expected = (raw[b] - raw[b].min()) / (1e-7 + (raw[b] - raw[b].min()).max())
        assert np.allclose(maps[b], expected, atol=1e-5)
    assert torch.allclose(cam.raw, lrp.class_map(x, target=[2, 5]).relevance[:, 0], atol=1e-6)
    with pytest.raises(InputError, match="one target per image"):
        cam(x, [ClassifierOutputTarget(2)])
    # no hooks left on the model by the CAM object
    assert all(not m._forward_hooks for m in model.modules())


def test_compare_registry_has_lrp(resnet_setup):
    from dense_readout.compare import MethodContext, available_methods, resolve_method

    model, lrp, x = resnet_setup
    assert "lrp" in available_methods()
    method = resolve_method("lrp", MethodContext(model=model, readout=lrp.readout))
    out = method(x, torch.tensor([0, 1]))
    assert torch.allclose(out, lrp.class_map(x, [0, 1]).relevance[:, 0])


def test_fig8_plot_has_two_panels_and_checks_shapes():
    fig = plot_cell_relevance(
        torch.rand(3, 32, 32),
        torch.tensor([[1, 2], [2, 2]]),
        torch.randn(32, 32),
        (1, 0),
        class_names=["a", "b", "c"],
    )
    assert len(fig.axes) == 3  # two panels and the colour bar
    with pytest.raises(InputError, match="must match"):
        plot_cell_relevance(
            torch.rand(3, 32, 32), torch.zeros(2, 2, dtype=torch.long), torch.randn(16, 16), (0, 0)
        )
    with pytest.raises(InputError, match="outside"):
        plot_cell_relevance(
            torch.rand(3, 32, 32), torch.zeros(2, 2, dtype=torch.long), torch.randn(32, 32), (2, 0)
        )


def test_single_cell_outside_share_agrees_with_the_cells_diagnostic(resnet_setup):
    _model, lrp, x = resnet_setup
    one = lrp.cell(x, cell=(1, 0))
    cells = lrp.cells(x, which=[(1, 0)])
    assert torch.allclose(one.outside_share(), outside_share(cells.relevance)[:, 1, 0], atol=1e-5)
    with pytest.raises(InputError, match="single-cell"):
        lrp.class_map(x, 0).outside_share()


def test_cli_lrp_writes_the_figure_and_reports(tmp_path, capsys):
    from dense_readout.cli import main

    assert main(["lrp", "no/such/file.jpg", "--out", str(tmp_path)]) == 1
    assert (
        main(["lrp", "skimage:chelsea", "--cell", "9", "9", "--out", str(tmp_path)]) == 2
    )  # outside the grid
    assert main(["lrp", "skimage:chelsea", "--cell", "3", "3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "cell (3, 3)" in out and "conservation=" in out
    assert (tmp_path / "chelsea_lrp_3_3.png").stat().st_size > 10_000
