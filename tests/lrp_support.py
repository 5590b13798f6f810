"""One check that an LRP call left a model as it found it (tests/test_lrp*.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class ModelSnapshot:
    """What a model was before an LRP call: state, modules, parameters, attributes, output."""

    state: dict[str, torch.Tensor]
    names: list[str]
    params: list[int]
    attributes: dict[str, dict[str, Any]]
    x: torch.Tensor
    reference: torch.Tensor


def snapshot(model: nn.Module, x: torch.Tensor) -> ModelSnapshot:
    with torch.no_grad():
        reference = model(x)
    return ModelSnapshot(
        {k: v.clone() for k, v in model.state_dict().items()},
        [name for name, _ in model.named_modules()],
        [id(p) for p in model.parameters()],
        {name: dict(vars(m)) for name, m in model.named_modules()},
        x,
        reference,
    )


def assert_pristine(model: nn.Module, before: ModelSnapshot) -> None:
    now = model.state_dict()
    assert list(now) == list(before.state)
    assert all(torch.equal(now[k], before.state[k]) for k in before.state)
    assert [name for name, _ in model.named_modules()] == before.names
    assert [id(p) for p in model.parameters()] == before.params
    for name, module in model.named_modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks and not getattr(module, "_backward_pre_hooks", {})
        assert set(vars(module)) == set(before.attributes[name]), name  # no forward, no canonizer_*
        assert list(module._modules) == list(before.attributes[name]["_modules"]), name
    with torch.no_grad():
        assert torch.equal(model(before.x), before.reference)
