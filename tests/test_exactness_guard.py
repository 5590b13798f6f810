"""An adapter's 'exact' verdict is checked against the measured residual of every readout.

The structural analysis decides exactness from the model's modules; the residual
``|mean(Z) - logits|`` measures it. Where they disagree the readout must not present a
decomposition it cannot vouch for (the model sweep found two timm families, CaiT and
ConViT, whose head the analysis misread).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from dense_readout import DenseReadout
from dense_readout.errors import ExactnessWarning


class Pooled(nn.Module):
    """Conv → GAP → ``head``; exact iff ``head`` is affine."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 8, 3, stride=4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.pool(self.features(x))))


def _readout(model: nn.Module, claim: bool | None = None):
    torch.manual_seed(0)
    readout = DenseReadout(model.eval())
    if claim is not None:  # an adapter that believes the model is exact
        readout.adapter.is_exact = lambda: claim  # type: ignore[method-assign]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = readout(torch.randn(2, 3, 32, 32))
    return result, [w for w in caught if issubclass(w.category, ExactnessWarning)]


def test_an_exact_model_keeps_its_verdict_and_warns_nothing():
    torch.manual_seed(0)
    result, caught = _readout(Pooled(nn.Linear(8, 4)))
    assert result.exact and float(result.residual.max()) < 1e-5 and not caught


def test_a_wrong_exact_claim_is_overruled_by_the_residual():
    torch.manual_seed(0)
    model = Pooled(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)))
    honest, _ = _readout(model)
    assert not honest.exact  # the structure alone already says so
    fooled, caught = _readout(model, claim=True)
    assert float(fooled.residual.max()) > 1e-2  # the gap is real ...
    assert not fooled.exact  # ... so the claim does not survive it
    assert "misses the logits" in fooled.exactness_note and len(caught) == 1
    assert torch.equal(fooled.scores, honest.scores)  # only the verdict changes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rounding_is_not_mistaken_for_a_gap(dtype):
    torch.manual_seed(0)
    model = Pooled(nn.Linear(8, 1000)).to(dtype)  # many classes, large logits
    with torch.no_grad():
        model.head.weight.mul_(50)
    readout = DenseReadout(model.eval())
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExactnessWarning)
        result = readout(torch.randn(4, 3, 64, 64, dtype=dtype))
    assert result.exact
