"""The structural adapter: any GAP classifier, found from its graph, with no arguments.

Oracles: mean_uv Z against a plain ``model(x)`` (exact tails), and each cell of Z
against the model's own tail code run on that cell (written out in each test model).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dense_readout import DenseReadout, UnsupportedModelError
from dense_readout.adapters import StructuralAdapter, find_adapter, registered_adapters


def _body(in_channels: int = 3, channels: int = 8) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, stride=2, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 3, stride=2, padding=1),
        nn.ReLU(),
    )


class FunctionalGap(nn.Module):
    """conv stack → a functional global average (one of several spellings) → head."""

    def __init__(self, pool: str, head: nn.Module | None = None, classes: int = 5) -> None:
        super().__init__()
        self.pool, self.body = pool, _body()
        self.head = head if head is not None else nn.Linear(8, classes)

    def pooled(self, f: torch.Tensor) -> torch.Tensor:
        if self.pool == "mean23":
            return f.mean(dim=(2, 3))
        if self.pool == "mean_list":
            return torch.mean(f, [-2, -1])
        if self.pool == "adaptive":
            return torch.flatten(F.adaptive_avg_pool2d(f, 1), 1)
        if self.pool == "keepdim_view":
            pooled = f.mean((2, 3), keepdim=True)
            return pooled.view(pooled.size(0), -1)
        if self.pool == "nhwc":
            return f.permute(0, 2, 3, 1).mean((1, 2))
        raise ValueError(self.pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(self.body(x)))


def _check(model: nn.Module, x: torch.Tensor, tail, exact: bool = True):
    """Shape, exactness, mean(Z) = model(x) when exact, each cell = tail(cell)."""
    result = DenseReadout(model)(x)
    assert result.adapter == "structural"
    assert result.exact is exact, result.exactness_note
    with torch.no_grad():
        reference = model(x)
        torch.testing.assert_close(result.logits, reference, atol=1e-5, rtol=1e-5)
        if exact:
            torch.testing.assert_close(
                result.scores.mean(dim=(2, 3)), reference, atol=1e-5, rtol=1e-5
            )
        grid = result.features
        for u, v in [(0, 0), (grid.shape[2] - 1, grid.shape[3] - 1)]:
            torch.testing.assert_close(
                result.scores[:, :, u, v], tail(grid[:, :, u, v]), atol=1e-5, rtol=1e-5
            )
    return result


def test_users_gap_network_works_with_no_arguments():
    torch.manual_seed(0)
    model = nn.Sequential(_body(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 6)).eval()
    result = _check(model, torch.randn(2, 3, 64, 48), model[3])
    assert result.scores.shape == (2, 6, 16, 12) and result.residual.max() < 1e-5
    assert "exact" in result.exactness_note


@pytest.mark.parametrize("channels", [1, 4])
def test_models_with_other_input_channels(channels):
    torch.manual_seed(0)
    model = nn.Sequential(
        _body(channels), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(8, 3)
    ).eval()
    readout = DenseReadout(model)
    assert readout.adapter.in_channels == channels
    _check(model, torch.randn(1, channels, 32, 32), model[3])


@pytest.mark.parametrize("pool", ["mean23", "mean_list", "adaptive", "keepdim_view", "nhwc"])
def test_functional_global_averages(pool):
    torch.manual_seed(0)
    model = FunctionalGap(pool).eval()
    result = _check(model, torch.randn(2, 3, 32, 64), model.head)
    assert result.grid_size == (8, 16)


def test_token_mean():
    """A patch-token model averaging its tokens (x.mean(1)) before a Linear head."""

    class TokenNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.mix, self.head = (
                nn.Conv2d(3, 8, 8, 8),
                nn.Linear(8, 8),
                nn.Linear(8, 4),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = self.embed(x).flatten(2).transpose(1, 2)  # B×N×C
            return self.head(torch.relu(self.mix(tokens)).mean(1))

    torch.manual_seed(0)
    model = TokenNet().eval()
    x = torch.randn(2, 3, 32, 64)
    result = _check(model, x, model.head)
    assert result.grid_size == (4, 8)
    with torch.no_grad():  # grid cells are the tokens in row-major order
        tokens = torch.relu(model.mix(model.embed(x).flatten(2).transpose(1, 2)))
    torch.testing.assert_close(result.features[:, :, 2, 5], tokens[:, 2 * 8 + 5])


def test_nonlinear_tail_is_pointwise_not_exact():
    """A functional ReLU and an MLP after the pool: Z is the tail per cell, not exact."""

    class MLPHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.fc1, self.fc2 = _body(), nn.Linear(8, 16), nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(F.relu(self.fc1(self.body(x).mean((2, 3)))))

    torch.manual_seed(0)
    model = MLPHead().eval()
    result = _check(
        model, torch.randn(2, 3, 32, 32), lambda c: model.fc2(F.relu(model.fc1(c))), exact=False
    )
    assert "relu" in result.exactness_note and float(result.residual.max()) > 1e-4
    # no bias to separate for CAM-style include_bias=False: the functional ReLU counts
    assert not DenseReadout(model).adapter.head_is_affine()


def test_affine_arithmetic_after_the_linear_is_exact_and_kept():
    """logits * 2 + 1 after the Linear: still affine (exact), and not skipped by a shortcut."""

    class Scaled(FunctionalGap):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 2 + 1

    torch.manual_seed(0)
    model = Scaled("mean23").eval()
    _check(model, torch.randn(1, 3, 32, 32), lambda c: model.head(c) * 2 + 1)


def test_untraceable_model_falls_back_to_hooks():
    """Data-dependent control flow stops torch.fx; forward hooks find the pool and tail."""

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.pool = _body(), nn.AdaptiveAvgPool2d(1)
            self.drop, self.fc = nn.Dropout(0.2), nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.abs().sum() > 0:  # not traceable
                x = self.body(x)
            else:
                x = self.body(-x)
            return self.fc(self.drop(torch.flatten(self.pool(x), 1)))

    torch.manual_seed(0)
    model = Branchy().eval()
    _check(model, torch.randn(2, 3, 32, 32), model.fc)
    assert DenseReadout(model).adapter.target_layer() is model.body


def test_squeezenet_style_class_map_before_the_pool():
    """Conv classifier → ReLU → global pool: Z is the ReLU'd class map itself."""
    torch.manual_seed(0)
    model = nn.Sequential(
        _body(),
        nn.Sequential(nn.Dropout(0.5), nn.Conv2d(8, 5, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)),
        nn.Flatten(),
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    result = _check(model, x, lambda cell: cell)
    with torch.no_grad():
        torch.testing.assert_close(result.scores, model[1][:3](model[0](x)))
    assert result.exact


@pytest.mark.parametrize(
    "model, fragment",
    [
        (
            nn.Sequential(_body(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 3)),
            "keeps a 2 grid",
        ),
        (
            nn.Sequential(_body(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(8, 3)),
            "maximum",
        ),
        (nn.Sequential(_body(), nn.Flatten(), nn.Linear(8 * 64, 3)), "no global average"),
    ],
    ids=["multi-cell-pool", "max-pool", "no-pool"],
)
def test_non_gap_models_are_refused(model, fragment):
    with pytest.raises(UnsupportedModelError) as info:  # at 32 px: a fixed-size model runs
        DenseReadout(model.eval())(torch.randn(1, 3, 32, 32))  # only there (no-pool case)
    message = str(info.value)
    assert "not a GAP model" in message and fragment in message and "features=" in message


def test_tail_that_reads_the_grid_again_is_refused():
    """A head that adds a max over the grid to the pooled vector is not per cell."""

    class SkipHead(FunctionalGap):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.body(x)
            return self.head(f.mean((2, 3)) + f.amax((2, 3)))

    with pytest.raises(UnsupportedModelError, match="not only the pooled vector"):
        DenseReadout(SkipHead("mean23").eval())


def test_numeric_check_overrides_a_wrong_structural_verdict():
    """If mean(Z) misses the logits on the first call, the adapter stops claiming exactness."""
    torch.manual_seed(0)
    model = FunctionalGap("mean23").eval()
    adapter = StructuralAdapter(model)
    assert adapter.is_exact()
    scores = torch.zeros(1, 5, 2, 2)
    adapter.check_decomposition(scores, torch.ones(1, 5))
    assert not adapter.is_exact() and "differed" in adapter.exactness_note()
    adapter = StructuralAdapter(model)  # a matching first call keeps the verdict
    adapter.check_decomposition(scores, torch.zeros(1, 5))
    adapter.check_decomposition(scores, torch.ones(1, 5))  # only the first call is checked
    assert adapter.is_exact()


def test_structural_is_the_last_resort():
    assert registered_adapters()[-1] == "structural"
    import timm

    assert find_adapter(timm.create_model("resnet18", num_classes=3)).name == "timm"


def test_target_layer_is_the_module_producing_the_grid():
    torch.manual_seed(0)
    model = nn.Sequential(_body(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 6)).eval()
    adapter = DenseReadout(model).adapter
    assert adapter.target_layer() is model[0] and adapter.reshape_transform() is None
    nhwc = DenseReadout(FunctionalGap("nhwc").eval()).adapter
    grid = torch.randn(2, 4, 5, 8)
    assert torch.equal(nhwc.reshape_transform()(grid), grid.permute(0, 3, 1, 2))


def test_fixed_size_model_is_analysed_on_its_first_input():
    """A GAP model that does not run at the 224 px probe is split on the first real input."""

    class Fixed(FunctionalGap):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.body(x).view(x.shape[0], 8, 8, 8)  # an 8×8 grid: runs at 32 px only
            return self.head(f.mean((2, 3)))

    torch.manual_seed(0)
    readout = DenseReadout(Fixed("mean23").eval())
    with pytest.raises(UnsupportedModelError, match="first readout call"):
        readout.adapter.num_classes
    x = torch.randn(2, 3, 32, 32)
    result = readout(x)
    assert result.grid_size == (8, 8) and result.exact and readout.num_classes == 5
    assert readout.adapter.target_layer() is readout.model.body  # probed at the input's size


def test_cam_and_captum_drop_ins_use_the_structural_split():
    """DenseReadoutCAM / DenseReadoutAttribution on a model only the structural adapter knows."""
    from dense_readout.captum import DenseReadoutAttribution
    from dense_readout.gradcam import DenseReadoutCAM

    torch.manual_seed(0)
    model = nn.Sequential(_body(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 6)).eval()
    x = torch.randn(2, 3, 32, 32)
    result = DenseReadout(model)(x)
    attributions = DenseReadoutAttribution(model).attribute(x, target=4)
    torch.testing.assert_close(attributions[:, 0], result.class_map(4))
    cam = DenseReadoutCAM(model)(x, targets=None)  # the top class of each image
    assert cam.shape == (2, 32, 32) and (cam >= 0).all() and (cam <= 1).all()


def test_torchvision_aux_heads_are_ignored_in_eval_mode():
    """GoogLeNet with its auxiliary classifiers: in eval mode forward returns the main logits
    only, so the traced graph (and the readout) has no aux branch."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, num_classes=7, init_weights=False).eval()
    assert model.aux_logits
    x = torch.randn(1, 3, 96, 96)
    result = _check(model, x, lambda cell: model.fc(cell))
    assert result.grid_size == (3, 3)
