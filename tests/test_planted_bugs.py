"""Assertions that were missing: each test here makes one plausible bug fail.

A review put small bugs into the newer modules one at a time (issue 25, item 7); these
survived the suite. Each test names the bug it catches, and checks the behaviour
against an independent computation rather than against the implementation:

* structural adapter: split at the *last* usable global pool (not the first), and a
  pool over a single cell is not a grid; ``pooled * pooled`` after the pool is not affine;
* Quantus ``explain``: the default map includes the head's bias;
* ``DenseReadoutCAM(target_layers=[grid layer])`` on a transformer keeps the adapter's
  token → grid transform;
* Captum's convergence delta for all classes is ``|mean Z − logits|.amax(1)``;
* the patch index names the cell ``(row, col)`` on a non-square grid;
* PGD's perturbation reaches both ``−ε`` and ``+ε``;
* MaxBoxAcc counts an IoU of exactly ``δ`` as correct;
* the synthetic per-image Loc. averages over images that have foreground cells only.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dense_readout import DenseReadout

# -- structural adapter -------------------------------------------------------------------


class _Body(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())


class PoolTwiceKeepdim(nn.Module):
    """``mean(keepdim)`` then ``adaptive_avg_pool2d(·, 1)``: the second pool sees one cell."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = _Body(), nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.body(x).mean((2, 3), keepdim=True)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(pooled, 1), 1))


class PoolThenGrid(nn.Module):
    """Two usable pools on real grids: pool, spread the vector over a learned 3×3 grid, conv,
    pool again. The head after the *second* pool is the per-cell head."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = _Body(), nn.Linear(8, 5)
        self.grid = nn.Parameter(torch.randn(1, 8, 3, 3))
        self.mix = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.body(x).mean((2, 3))
        spread = torch.relu(self.mix(first[:, :, None, None] + self.grid))
        return self.head(spread.mean((2, 3)))


class SquaredTail(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = _Body(), nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.body(x).mean((2, 3))
        return self.head(pooled * pooled)


def test_structural_split_is_at_the_last_pool_over_a_real_grid():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    model = PoolThenGrid().eval()
    result = DenseReadout(model)(x)  # the first pool's grid would be 16×16
    assert result.grid_size == (3, 3) and result.exact
    with torch.no_grad():
        assert torch.allclose(result.logits, model(x), atol=1e-5)
        spread = torch.relu(model.mix(model.body(x).mean((2, 3))[:, :, None, None] + model.grid))
        cells = model.head(spread.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(result.scores, cells, atol=1e-5, rtol=1e-5)


def test_a_pool_over_one_cell_is_not_the_grid():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    model = PoolTwiceKeepdim().eval()
    result = DenseReadout(model)(x)
    assert result.grid_size == (16, 16), "the readout split at the 1×1 pool, not the grid's"
    with torch.no_grad():
        cells = model.head(model.body(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        assert torch.allclose(result.logits, model(x), atol=1e-5)
    torch.testing.assert_close(result.scores, cells, atol=1e-5, rtol=1e-5)


def test_a_squared_pooled_vector_is_not_affine_and_says_so_before_any_call():
    readout = DenseReadout(SquaredTail().eval())
    assert readout.exact is False
    assert "mul" in readout.adapter.exactness_note()


# -- Quantus explain ------------------------------------------------------------------------


def test_quantus_explain_includes_the_bias_by_default():
    pytest.importorskip("quantus")
    from dense_readout.quantus import explain

    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=4).eval()
    with torch.no_grad():
        model.fc.bias.copy_(torch.tensor([5.0, -3.0, 8.0, 1.0]))  # bias ≫ cell evidence
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    targets = np.array([2, 1])
    maps = explain(model, x, targets, resize=False)[:, 0]
    with torch.no_grad():
        features = model.forward_features(torch.from_numpy(x)).double()
        weight, bias = model.fc.weight.double(), model.fc.bias.double()
        z = torch.einsum("bchw,kc->bkhw", features, weight) + bias[None, :, None, None]
    expected = z[torch.arange(2), torch.from_numpy(targets)].numpy()
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-5)


# -- pytorch-grad-cam / Captum drop-ins on a transformer ----------------------------------------


@pytest.fixture(scope="module")
def cls_vit():
    torch.manual_seed(0)
    kwargs = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
    return timm.create_model("vit_tiny_patch16_224", num_classes=6, **kwargs).eval()


def test_explicit_grid_layer_of_a_vit_keeps_the_token_transform(cls_vit):
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from dense_readout.gradcam import DenseReadoutCAM

    x = torch.randn(2, 3, 32, 32)
    targets = [ClassifierOutputTarget(1), ClassifierOutputTarget(4)]
    with DenseReadoutCAM(cls_vit) as cam:
        default = cam(x, targets)
        layer = cam.dense_readout.adapter.target_layer()
    with DenseReadoutCAM(cls_vit, target_layers=[layer]) as cam:
        explicit = cam(x, targets)
    np.testing.assert_allclose(explicit, default, atol=1e-6)


def test_captum_delta_for_all_classes_is_the_largest_absolute_residual(cls_vit):
    pytest.importorskip("captum")
    from dense_readout.captum import DenseReadoutAttribution

    x = torch.randn(3, 3, 32, 32)
    _, delta = DenseReadoutAttribution(cls_vit).attribute(x, return_convergence_delta=True)
    result = DenseReadout(cls_vit)(x)
    with torch.no_grad():
        logits = cls_vit(x)
    residual = (result.scores.mean(dim=(2, 3)) - logits).abs().amax(dim=1)
    assert not result.exact and bool((residual > 1e-3).all())  # a [CLS] ViT: not exact
    torch.testing.assert_close(delta, residual, atol=1e-5, rtol=1e-5)


# -- patch index on a non-square grid -----------------------------------------------------------


def test_patch_index_names_cells_row_then_column_on_a_2x3_grid(tmp_path):
    pytest.importorskip("faiss")
    from dense_readout.patches import GridExtractor, PatchIndex, build_index, query_image
    from dense_readout.preprocessing import Preprocess

    torch.manual_seed(0)
    conv = nn.Conv2d(3, 16, 5, padding=2).eval()

    def features(x: torch.Tensor) -> torch.Tensor:  # a 2×3 grid of distinct vectors
        return F.adaptive_avg_pool2d(conv(x), (2, 3))

    paths = []
    for k in range(3):
        paths.append(tmp_path / f"{k}.png")
        Image.effect_noise((64, 64), 30 + 20 * k).convert("RGB").save(paths[-1])
    extract, prep = GridExtractor(conv, features=features), Preprocess(resize=64, crop=64)
    build_index(paths, tmp_path / "ix", extract, prep, model_name="conv", progress=False)
    index = PatchIndex.open(tmp_path / "ix")
    for cell in [(0, 2), (1, 0), (1, 2)]:
        hit = query_image(index, extract, prep, paths[1], cell=cell, k=1, model_name="conv").hits[0]
        assert (hit.image, hit.cell) == (1, cell)
        assert hit.similarity == pytest.approx(1.0, abs=1e-5)


# -- PGD ---------------------------------------------------------------------------------------


def test_pgd_perturbation_reaches_both_ends_of_the_budget():
    from dense_readout.attacks import pgd

    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=5).eval()
    x = torch.full((1, 3, 32, 32), 0.5)  # far from 0 and 1: the [0, 1] clamp never binds
    eps, alpha = 4 / 255, 1 / 255
    trace = pgd(model, x, target=3, true_class=0, eps=eps, alpha=alpha, steps=8,
                random_start=False)  # fmt: skip
    delta = trace.images[-1] - x
    assert float(delta.min()) == pytest.approx(-eps, abs=1e-6)
    assert float(delta.max()) == pytest.approx(eps, abs=1e-6)


# -- MaxBoxAcc -----------------------------------------------------------------------------------


def test_maxboxacc_counts_an_iou_of_exactly_delta():
    from dense_readout.localization import MaxBoxAcc, box_iou

    saliency = np.zeros((32, 32))
    saliency[0:10, 0:10] = 1.0  # the box x0, y0, x1, y1 = 0, 0, 9, 9: 100 pixels
    truth = np.array([[0, 0, 19, 9]])  # 200 pixels, containing it: IoU = 100 / 200
    assert box_iou(np.array([[0, 0, 9, 9]]), truth)[0, 0] == 0.5
    metric = MaxBoxAcc(iou_thresholds=(0.5,))
    metric.update(saliency, [truth])
    assert metric.compute().per_iou[0.5] == 1.0


# -- synthetic metrics ------------------------------------------------------------------------------


def test_per_image_loc_skips_images_without_foreground():
    from dense_readout.experiments.synthetic_metrics import SyntheticMetrics

    presence = torch.zeros(2, 3, 1, 2, dtype=torch.bool)
    presence[0, 1] = True  # image 0: both cells hold class 1; image 1: background only
    labels = torch.tensor([[[1, 1]], [[2, 0]]])
    metrics = SyntheticMetrics()
    metrics.update(torch.eye(3)[[1, 2]], labels, torch.tensor([1, 2]), presence)
    summary = metrics.summary()
    assert summary["loc"] == 100.0 and summary["loc_cell_pooled"] == 100.0
