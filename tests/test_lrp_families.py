"""The LRP family registry: a new family is one record, and the docs table is the registry's.

Oracles:

* a toy residual CNN registered as one :class:`LRPFamily` (one call) conserves
  relevance exactly with its biases zeroed (input relevance = start, the LRP-ε
  identity), while the same model without the record hands the block's whole
  relevance to both summands (conservation far from 1); refining the record (the
  ``blocks`` canonizer dropped) brings the failure back, so the record's fields are
  what LRP reads;
* ``docs/lrp.md``'s family table is, character for character, what the generator
  prints from the registry;
* ``zero_params="bias"`` is accepted by every registered composite, and with biases
  left out of the rules relevance is conserved on a CNN *with* biases;
* ``epsilon_plus_flat_depthwise`` conserves where ``epsilon_plus_flat`` loses relevance
  (a depthwise convolution whose outputs have no positive contribution).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from dense_readout.errors import UnsupportedModelError
from dense_readout.lrp import (
    FAMILIES,
    LRPFamily,
    LRPReadout,
    register_family,
    registered_composites,
    residual_sum,
    rewrites,
)
from dense_readout.lrp.families import family_of, family_table

ROOT = Path(__file__).resolve().parents[1]
EXACT = {"epsilon": 1e-9, "stabilizer": 1e-9}


class ToyBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.relu(self.conv(x)) + x  # the add inside forward: plain autograd


def toy_block_forward(self, x):
    """ToyBlock's forward with the residual add as a zennit Sum."""
    return residual_sum(self, torch.relu(self.conv(x)), x)


class ToyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.features = nn.Sequential(stem, nn.ReLU(), ToyBlock(8), ToyBlock(8), ToyBlock(8))
        self.head = nn.Linear(8, 4, bias=False)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


@pytest.fixture
def toy_family():
    family = register_family(
        LRPFamily(
            "test.toy",
            "toy residual CNN",
            modules=(__name__,),
            blocks=rewrites({ToyBlock: toy_block_forward}),
            composite="epsilon",
        )
    )
    yield family
    FAMILIES.unregister("test.toy")


def _conservation(model: ToyNet, x: torch.Tensor, **kwargs) -> torch.Tensor:
    lrp = LRPReadout(model, features=model.features, head=model.head, **kwargs)
    return lrp.cell(x, cell=(1, 2)).conservation


def test_a_toy_family_is_one_record_and_refines(toy_family):
    torch.manual_seed(0)
    model, x = ToyNet().eval(), torch.randn(2, 3, 16, 16)
    assert family_of(model) is toy_family
    lrp = LRPReadout(model, features=model.features, head=model.head)
    assert lrp.composite == "epsilon"  # the record's default composite
    conserved = _conservation(model, x, composite_options=EXACT)
    assert torch.allclose(conserved, torch.ones(2), atol=1e-3), conserved
    # the record is what makes it right: without the block forward the add doubles relevance
    plain = _conservation(model, x, composite_options=EXACT, canonize=False)
    assert (plain - 1).abs().min() > 0.05, plain
    # refine the record: drop the block canonizer, and the failure comes back
    refined = dataclasses.replace(toy_family, canonizers=("batch_norm", "layer_norm"))
    with pytest.warns(UserWarning, match="registered already"):
        register_family(refined)
    assert FAMILIES.get("test.toy") is refined
    assert torch.allclose(_conservation(model, x, composite_options=EXACT), plain)


def test_a_refusing_record_refuses_with_its_reason(toy_family):
    refusing = dataclasses.replace(toy_family, refusal="toy blocks are not ready")
    with FAMILIES.temporarily("test.toy", refusing):
        model = ToyNet().eval()
        # a torchvision-style refusal applies to any module the record covers
        from dense_readout.lrp.support import torchvision_refusal

        assert torchvision_refusal(model) == "toy blocks are not ready"
    assert family_of(ToyNet()) is toy_family


def _generator():
    path = ROOT / "benchmarks" / "lrp_families_table.py"
    spec = importlib.util.spec_from_file_location("lrp_families_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_family_table_is_generated_from_the_registry():
    generator = _generator()
    text = (ROOT / "docs" / "lrp.md").read_text(encoding="utf-8")
    assert text.count(generator.START) == 1 and text.count(generator.END) == 1
    documented = text.split(generator.START, 1)[1].split(generator.END, 1)[0]
    assert documented == "\n" + family_table(), (
        "docs/lrp.md's family table is stale: run python benchmarks/lrp_families_table.py --write"
    )
    assert generator.replace_table(text, family_table()) == text
    for _, family in FAMILIES.items():  # every record has a row
        assert f"| {family.label} |" in documented


class BiasedCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)
        )
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


@pytest.mark.parametrize("name", registered_composites())
def test_zero_params_bias_is_accepted_by_every_composite_and_conserves(name):
    torch.manual_seed(0)
    model = BiasedCNN().eval()
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "bias", None) is not None:
                module.bias.uniform_(0.5, 1.0)  # large enough to absorb a visible share
    x = torch.randn(2, 3, 16, 16)
    kwargs = {"features": model.features, "head": model.head, "stabilizer": 1e-9}
    lrp = LRPReadout(model, name, composite_options={"zero_params": "bias"}, **kwargs)
    ignored = lrp.class_map(x, target=1).conservation  # biases out of every rule
    assert torch.allclose(ignored, torch.ones(2), atol=0.01), ignored
    if name == "epsilon":  # with the biases in the rule they take their share
        kept = LRPReadout(model, name, **kwargs).class_map(x, target=1).conservation
        assert (kept - 1).abs().min() > 0.05, kept


def test_zero_params_reaches_the_transformer_composite():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", depth=1, img_size=32, patch_size=8, num_classes=3
    )
    vit = vit.eval()
    with torch.no_grad():  # timm initialises linear biases to zero
        for module in vit.modules():
            if isinstance(module, nn.Linear):
                module.bias.uniform_(0.1, 0.3)
    x = torch.randn(1, 3, 32, 32)
    lrp = LRPReadout(vit, composite_options={"zero_params": "bias"})
    assert lrp.composite == "cp_lrp"
    without = lrp.class_map(x).relevance
    with_bias = LRPReadout(vit).class_map(x).relevance
    assert not torch.allclose(without, with_bias)  # the option changed the rules


def test_depthwise_epsilon_conserves_where_zplus_loses_relevance():
    torch.manual_seed(1)
    # a depthwise conv after a ReLU, no activation after it: z+ has outputs with no
    # positive contribution (all positive taps on zero inputs) that still get relevance
    features = nn.Sequential(
        nn.Conv2d(3, 16, 1, bias=False),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
        nn.Conv2d(16, 16, 1, bias=False),
        nn.ReLU(),
    )
    head = nn.Linear(16, 3, bias=False)
    model = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()
    x = torch.randn(2, 3, 12, 12)
    kwargs = {"features": features, "head": head, "stabilizer": 1e-9}
    plus = LRPReadout(model, "epsilon_plus_flat", **kwargs).class_map(x, target=0).conservation
    fixed = LRPReadout(model, "epsilon_plus_flat_depthwise", **kwargs)
    conserved = fixed.class_map(x, target=0).conservation
    assert torch.allclose(conserved, torch.ones(2), atol=1e-3), conserved
    assert (plus - 1).abs().max() > 0.01, plus  # the loss this composite removes


def test_deit_distilled_takes_the_vit_record():
    timm = pytest.importorskip("timm")
    deit = timm.create_model(
        "deit_tiny_distilled_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=3
    )
    assert family_of(deit) is FAMILIES["timm.vit"]
    assert LRPReadout(deit.eval()).composite == "cp_lrp"


def test_an_uncovered_torchvision_module_names_the_registry():
    class NewNet(ToyNet):
        pass

    NewNet.__module__ = "torchvision.models.newnet"
    model = NewNet().eval()
    with pytest.raises(UnsupportedModelError, match="register_family"):
        LRPReadout(model, features=model.features, head=model.head)
