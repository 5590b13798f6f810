"""LRP refinement on every torchvision CNN family, enumerated from the package's own table.

The families come from the registry ``LRPReadout`` consults
(:data:`dense_readout.lrp.families.FAMILIES`), not from a list here: a torchvision
family registered there is tested here. Oracles:

* conservation: with every bias and batch-norm mean zeroed a conservative rule set
  gives input relevance = start (within 1 %), for every builder of every supported
  family; without the canonizers the residual families are far off;
* linearity: the class map equals the sum of its cells' maps (every zennit rule
  divides by forward quantities only, so relevance is linear in its start);
* the canonized forward computes the model's own readout ``Z``;
* the model's outputs, parameters, buffers, submodules and hooks are identical after
  every call, including one that fails inside the LRP context and a refusal;
* refused families raise ``UnsupportedModelError`` with the table's reason.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dense_readout import DenseReadout
from dense_readout.errors import InputError, UnsupportedModelError
from dense_readout.lrp import LRPReadout, bias_free
from dense_readout.lrp.families import (
    FALLBACK_COMPOSITE,
    FAMILIES,
    supported_torchvision_builders,
)
from lrp_support import assert_pristine, snapshot

#: the registry's torchvision families by the model module they cover, and their composites
TORCHVISION_FAMILIES = {
    module: family
    for _, family in FAMILIES.items()
    for module in family.modules
    if module.startswith("torchvision.models.")
}
FAMILY_DEFAULTS = {module: family.composite for module, family in TORCHVISION_FAMILIES.items()}

SIZE = 64
EXACT = {"composite_options": {"epsilon": 1e-9, "stabilizer": 1e-9}}
#: families whose blocks add shortcuts or gate inside forward: plain autograd is far off
RESIDUAL = {"resnet", "efficientnet", "mobilenetv2", "mobilenetv3", "convnext", "regnet"}


def _model(module: str, builder: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    family = TORCHVISION_FAMILIES.get(module)
    torch.manual_seed(seed)
    size = max(SIZE, family.min_size)
    model = bias_free(family.build(builder, num_classes=5), torch.randn(4, 3, size, size), seed)
    return model, torch.randn(2, 3, size, size)


def test_every_torchvision_cnn_adapter_has_a_supported_family_in_the_table():
    import torchvision.models as models

    from dense_readout.adapters.base import ADAPTERS
    from dense_readout.adapters.torchvision_models import TorchvisionGridAdapter

    cnn = [
        cls
        for _, cls in ADAPTERS.items()
        if issubclass(cls, TorchvisionGridAdapter) and cls.model_class != "SwinTransformer"
    ]
    assert len(cnn) >= 7
    for adapter in cnn:
        module = getattr(models, adapter.model_class).__module__
        assert module in TORCHVISION_FAMILIES, adapter.name
        assert TORCHVISION_FAMILIES.get(module).supported, adapter.name


@pytest.mark.parametrize(("module", "builder"), supported_torchvision_builders())
def test_supported_family_conserves_with_biases_zeroed(module, builder):
    model, x = _model(module, builder)
    before = snapshot(model, x)
    lrp = LRPReadout(model, "epsilon", **EXACT)
    result = lrp.cell(x, cell=(1, 0))
    assert torch.allclose(result.conservation, torch.ones(2), atol=0.01), result.conservation
    # the canonized forward computes the model's own readout
    z = DenseReadout(model)(x).scores
    assert torch.allclose(result.scores, z, rtol=1e-3, atol=1e-3 * float(z.abs().max()))
    # class map = sum of its cells (linearity), for a class that is not the top-1 too.
    # An identity, so checked in float64: with the near-zero stabiliser of EXACT, float32
    # rounding that differs between the one-image and the all-cells batch (conv kernels pick
    # their summation order by batch size and thread count) is amplified to ~2 % here,
    # while float64 leaves ~1e-15 of the map's scale.
    one = x[:1]
    lrp64 = LRPReadout(copy.deepcopy(model).double(), "epsilon", **EXACT)
    whole = lrp64.class_map(one.double(), target=3).relevance[:, 0]
    summed = lrp64.cells(one.double(), target=3).relevance.sum(dim=(1, 2))
    assert torch.allclose(whole, summed, rtol=0, atol=1e-9 * float(whole.abs().max()))
    assert_pristine(model, before)
    with pytest.raises(InputError):
        lrp.cell(one, cell=(0, 0), target=99)  # fails inside the LRP context
    assert_pristine(model, before)
    # the family default composite is the table's (explicitly listed, or the fallback)
    assert LRPReadout(model).composite == FAMILY_DEFAULTS.get(module, FALLBACK_COMPOSITE)
    if module.rsplit(".", 1)[1] in RESIDUAL and builder == TORCHVISION_FAMILIES[module].builders[0]:
        plain = LRPReadout(model, "epsilon", canonize=False, **EXACT).cell(one, cell=(0, 0))
        assert not abs(float(plain.conservation[0]) - 1) <= 0.05, plain.conservation  # or NaN


def test_residual_families_are_in_the_table():
    assert {f"torchvision.models.{name}" for name in RESIDUAL} <= set(TORCHVISION_FAMILIES)


REFUSED = [(m, f) for m, f in TORCHVISION_FAMILIES.items() if not f.supported]


@pytest.mark.parametrize(("module", "family"), REFUSED, ids=[m for m, _ in REFUSED])
def test_refused_families_raise_with_the_reason_and_leave_the_model_alone(module, family):
    model, x = _model(module, family.builders[0])
    before = snapshot(model, x)
    with pytest.raises(UnsupportedModelError, match="LRP refinement does not support") as error:
        LRPReadout(model)
    assert family.refusal[:60] in str(error.value)
    assert_pristine(model, before)
    if family.split is not None:  # the named split reaches the modules and conserves
        features, head = (getattr(model, name) for name in family.split)
        lrp = LRPReadout(model, "epsilon", features=features, head=head, **EXACT)
        result = lrp.cell(x, cell=(1, 1))
        assert torch.allclose(result.conservation, torch.ones(2), atol=0.01), result.conservation
        assert_pristine(model, before)


def test_an_unlisted_torchvision_family_is_refused():
    class NewNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Conv2d(3, 4, 3, stride=8)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.features(x).mean((2, 3)))

    NewNet.__module__ = "torchvision.models.newnet"
    model = NewNet().eval()
    with pytest.raises(UnsupportedModelError, match="no LRP rule set is registered"):
        LRPReadout(model, features=model.features, head=model.head)


def test_vgg_with_a_custom_per_cell_head_conserves():
    import torchvision.models as models

    assert TORCHVISION_FAMILIES["torchvision.models.vgg"].supported  # listed, so not refused
    torch.manual_seed(0)
    model = bias_free(models.vgg11_bn(weights=None, num_classes=5), torch.randn(2, 3, 64, 64))
    channels = [m for m in model.features if isinstance(m, nn.Conv2d)][-1].out_channels
    head = nn.Linear(channels, 5, bias=False)
    lrp = LRPReadout(model, "epsilon", features=model.features, head=head, **EXACT)
    result = lrp.cell(torch.randn(2, 3, 64, 64), cell=(1, 0))
    assert torch.allclose(result.conservation, torch.ones(2), atol=0.01), result.conservation
