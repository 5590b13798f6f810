"""ReadoutResult helpers, aggregation rules, custom networks, refusals and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from dense_readout import (
    DenseReadout,
    DenseReadoutError,
    InputError,
    ModelAdapter,
    UnsupportedModelError,
    register_adapter,
)
from dense_readout.adapters import registered_adapters
from dense_readout.adapters.base import ADAPTERS
from dense_readout.aggregation import aggregate


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return timm.create_model("resnet18", num_classes=10).eval()


@pytest.fixture(scope="module")
def result(resnet):
    return DenseReadout(resnet)(torch.randn(3, 3, 128, 160))


# -- helpers -------------------------------------------------------------------------
def test_probabilities_topk_labels(result):
    probs = result.probabilities()
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3, 4, 5))
    values, indices = result.topk(3)
    assert values.shape == indices.shape == (3, 3, 4, 5)
    assert torch.equal(indices[:, 0], result.labels())
    # top-k values really are sorted scores of those classes
    torch.testing.assert_close(values, result.scores.gather(1, indices))
    assert (values[:, :-1] >= values[:, 1:]).all()
    pv, pi = result.topk(2, probabilities=True)
    torch.testing.assert_close(pv, probs.gather(1, pi))


def test_class_map_per_image_targets(result):
    maps = result.class_map([1, 4, 9])
    assert maps.shape == (3, 4, 5)
    for b, k in enumerate([1, 4, 9]):
        assert torch.equal(maps[b], result.scores[b, k])
    assert torch.equal(result.class_map(2), result.scores[:, 2])
    assert torch.equal(result.class_map(torch.tensor([3, 3, 3])), result.scores[:, 3])


def test_upsample_to_input(result):
    up = result.upsample()
    assert up.shape == (3, 10, 128, 160)
    nearest = result.upsample(maps=result.class_map(0), mode="nearest")
    assert nearest.shape == (3, 128, 160)
    # nearest keeps each cell as a 32×32 block
    assert torch.equal(nearest[:, :32, :32], result.scores[:, 0, :1, :1].expand(3, 32, 32))


def test_aggregation_rules_against_definitions(result):
    scores = result.scores
    flat = scores.flatten(2)
    torch.testing.assert_close(result.aggregate("mean"), result.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(result.aggregate("max"), flat.max(dim=2).values)
    torch.testing.assert_close(result.aggregate("topk", k=1), flat.max(dim=2).values)
    torch.testing.assert_close(result.aggregate("topk", k=flat.shape[2]), flat.mean(dim=2))
    sorted_cells = flat.sort(dim=2, descending=True).values
    torch.testing.assert_close(
        result.aggregate("topk", fraction=0.25), sorted_cells[..., :5].mean(2)
    )
    # log-mean-exp interpolates between the mean (r→0) and the max (r→∞)
    torch.testing.assert_close(
        result.aggregate("lse", temperature=1e-4), flat.mean(2), atol=1e-3, rtol=0
    )
    torch.testing.assert_close(
        result.aggregate("lse", temperature=1e4), flat.max(2).values, atol=1e-3, rtol=0
    )
    lse = result.aggregate("lse", temperature=1.0)
    assert (lse >= flat.mean(2) - 1e-5).all() and (lse <= flat.max(2).values + 1e-5).all()


def test_aggregation_errors():
    scores = torch.zeros(1, 2, 3, 3)
    with pytest.raises(InputError, match="Unknown aggregation rule 'median'"):
        aggregate(scores, "median")
    with pytest.raises(InputError, match="exactly one of k"):
        aggregate(scores, "topk")
    with pytest.raises(InputError, match=r"k must be in \[1, 9\]"):
        aggregate(scores, "topk", k=10)
    with pytest.raises(InputError, match="temperature"):
        aggregate(scores, "lse", temperature=0)


# -- custom networks and registration -------------------------------------------------
class TinyNet(nn.Module):
    def __init__(self, head: nn.Module):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 6, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(6, 8, 3, stride=2, padding=1),
        )
        self.head = head

    def forward(self, x):
        return self.head(self.body(x).mean(dim=(2, 3)))


def test_custom_linear_head_is_exact():
    torch.manual_seed(1)
    model = TinyNet(nn.Linear(8, 4)).eval()
    x = torch.randn(2, 3, 32, 32)
    result = DenseReadout(model, features=model.body, head=model.head)(x)
    assert result.exact and result.scores.shape == (2, 4, 8, 8)
    torch.testing.assert_close(result.scores.mean(dim=(2, 3)), model(x), atol=1e-5, rtol=0)


def test_custom_mlp_head_is_pointwise_not_exact():
    torch.manual_seed(2)
    model = TinyNet(nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))).eval()
    x = torch.randn(2, 3, 32, 32)
    result = DenseReadout(model, features=model.body, head=model.head)(x)
    assert not result.exact and "GELU" in result.exactness_note
    with torch.no_grad():
        cell = model.body(x)[:, :, 3, 5]
        torch.testing.assert_close(result.scores[:, :, 3, 5], model.head(cell))
        torch.testing.assert_close(result.logits, model(x))
    assert result.residual.max() > 1e-3  # really not a decomposition


def test_features_without_head_is_an_error():
    model = TinyNet(nn.Linear(8, 4))
    with pytest.raises(InputError, match="both features="):
        DenseReadout(model, features=model.body)


def test_registered_adapter_is_used():
    class Doubler(nn.Module):  # a model no family adapter knows
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(3, 5, 4, stride=4)
            self.fc = nn.Linear(5, 3)

        def forward(self, x):
            return self.fc(self.body(x).mean(dim=(2, 3)))

    # a GAP model: the structural fallback reads it until a family adapter is registered
    assert DenseReadout(Doubler().eval()).adapter.name == "structural"

    @register_adapter
    class DoublerAdapter(ModelAdapter):
        name = "doubler"

        @classmethod
        def matches(cls, model):
            return isinstance(model, Doubler)

        def forward_features(self, x):
            return self.model.body(x)

        def grid(self, native, inputs):
            return native

        def image_logits(self, native):
            return self.model.fc(native.mean(dim=(2, 3)))

        def head_cells(self, cells):
            return self.model.fc(cells)

        def head_modules(self):
            return [self.model.fc]

        @property
        def num_classes(self):
            return 3

    try:
        model = Doubler().eval()
        assert "doubler" in registered_adapters()
        x = torch.randn(1, 3, 16, 16)
        result = DenseReadout(model)(x)
        assert result.adapter == "doubler" and result.exact
        with torch.no_grad():
            torch.testing.assert_close(result.scores.mean(dim=(2, 3)), model(x))
    finally:
        ADAPTERS.unregister("doubler")


# -- refusals -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, fragment",
    [
        ("vgg11", "convolution over the grid"),
        ("pit_ti_224", "not a spatial grid"),  # LeViT is read now: tests/test_token_models.py
    ],
)
def test_non_pointwise_heads_are_refused(name, fragment):
    model = timm.create_model(name, num_classes=10).eval()
    with pytest.raises(UnsupportedModelError) as info:
        DenseReadout(model)
    message = str(info.value)
    assert fragment in message and "features=" in message
    assert type(model).__name__ in message and "Linear" in message  # names the head found


def test_attention_pool_vit_is_refused():
    model = timm.create_model("vit_tiny_patch16_224", global_pool="map", num_classes=4).eval()
    with pytest.raises(UnsupportedModelError, match="global_pool='map'"):
        DenseReadout(model)


# -- bad input ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad, fragment",
    [
        (torch.randn(3, 64, 64), "unsqueeze"),
        (torch.randn(1, 1, 64, 64), "3 input channels"),
        (torch.randn(1, 64, 64, 3), "channels-last"),
        (torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8), "floating-point"),
        (torch.full((1, 3, 64, 64), float("nan")), "NaN/Inf"),
        (torch.tensor(float("inf")).expand(1, 3, 64, 64).clone(), "NaN/Inf"),
        ("image.png", "torch.Tensor"),
        (torch.randn(0, 3, 64, 64), "empty"),
    ],
)
def test_bad_input_is_rejected_clearly(resnet, bad, fragment):
    with pytest.raises(InputError, match=fragment):
        DenseReadout(resnet)(bad)


@pytest.mark.parametrize(
    "target, fragment",
    [
        (10, "out of range"),
        (-1, "out of range"),
        ([1, 2], "2 targets for a batch of 3"),
        (1.5, "integer class"),
        (None, "required"),
    ],
)
def test_bad_targets(result, target, fragment):
    with pytest.raises(InputError, match=fragment):
        result.class_map(target)


def test_training_mode_is_refused():
    model = timm.create_model("resnet18", num_classes=3)  # train mode
    with pytest.raises(DenseReadoutError, match=r"model.eval\(\)"):
        DenseReadout(model)(torch.randn(1, 3, 64, 64))


def test_grad_mode_keeps_graph(resnet):
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    result = DenseReadout(resnet)(x, grad=True)
    result.scores[0, 3].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not DenseReadout(resnet)(x).scores.requires_grad


# -- conventions that a plausible off-by-one would break ------------------------------
def test_topk_fraction_rounds_up():
    """fraction·n not whole: k = ceil(fraction·n), never floor (7 cells × 0.3 = 2.1 → 3)."""
    scores = torch.arange(7.0).reshape(1, 1, 1, 7)
    pooled = aggregate(scores, "topk", fraction=0.3)
    assert pooled.item() == pytest.approx((6 + 5 + 4) / 3)
    assert aggregate(scores, "topk", fraction=2 / 7).item() == pytest.approx((6 + 5) / 2)


@pytest.mark.parametrize("margin", [1, 2, 3, 5, 6, 7, 11])
def test_centre_crop_offset_rounds_half_down(margin):
    """Crop offsets are floor(margin / 2), also for margins ≡ 3 (mod 4)."""
    from PIL import Image

    from dense_readout.preprocessing import Preprocess

    crop = 8
    columns = np.tile(np.arange(crop + margin, dtype=np.uint8) * 10, (crop, 1))
    image = Image.fromarray(np.stack([columns] * 3, axis=-1))
    out = np.asarray(Preprocess(resize=crop, crop=crop, interpolation="nearest").geometry(image))
    assert out.shape == (crop, crop, 3)
    assert int(out[0, 0, 0]) == 10 * (margin // 2)


def test_vit_average_over_prefix_tokens_is_not_exact():
    """pool_include_prefix=True averages the [CLS] token too: mean(Z) over patches ≠ logits."""
    import inspect

    from timm.models.vision_transformer import VisionTransformer

    if "pool_include_prefix" not in inspect.signature(VisionTransformer.__init__).parameters:
        pytest.skip("this timm release has no pool_include_prefix (added after 1.0.10)")
    torch.manual_seed(0)
    kwargs = {"global_pool": "avg", "fc_norm": False, "num_classes": 5}
    plain = timm.create_model("vit_tiny_patch16_224", **kwargs).eval()
    nn.init.normal_(plain.head.weight, std=1.0)  # timm's small init hides the [CLS] share
    x = torch.randn(1, 3, 224, 224)
    exact = DenseReadout(plain)(x)
    assert exact.exact and float(exact.residual.max()) < 1e-4
    with_prefix = timm.create_model("vit_tiny_patch16_224", pool_include_prefix=True, **kwargs)
    with_prefix.load_state_dict(plain.state_dict())
    result = DenseReadout(with_prefix.eval())(x)
    assert result.exact is False
    assert float(result.residual.max()) > 1e-2  # the [CLS] token really moves the logits
