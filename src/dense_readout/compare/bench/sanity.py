"""Sanity checks: the cascading model-parameter randomisation test and the random-logit test.

**MPRT** (Adebayo et al. 2018, cascading): the model's parametrised units, listed
top-down (classifier first; a ``Sequential``/``ModuleList`` counts as its
children), are re-initialised one more at a time — level 1 randomises the
classifier, level 2 also the unit below it, … Every parameter tensor of a
randomised unit is redrawn as ``N(0, σ²)`` with ``σ`` the standard deviation of the
trained tensor (its scale kept, so activations neither vanish nor explode; a
constant tensor, such as a BN scale of ones, uses its absolute value; BN running
statistics kept), from a generator seeded by the level. At each level the
method's map of the *same* image and target is compared with the trained model's
by Spearman rank correlation of the absolute maps (Adebayo's variant without sign).
A method that passes loses correlation as layers are randomised; one whose maps
do not depend on the weights (an edge detector) keeps 1.

**Random logit** (Sixt et al. 2020, Quantus' ``RandomLogit``): SSIM between the
map for the target and the map for a class drawn at random from the others
(seeded by the image index); lower means the map depends on the class.

Example:
    >>> import timm
    >>> from dense_readout.compare.bench.sanity import cascade_units
    >>> model = timm.create_model("test_resnet", num_classes=5).eval()
    >>> cascade_units(model)[:2]
    ['fc', 'layer4.0']
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor, nn

from ...errors import InputError

__all__ = [
    "cascade_models",
    "cascade_units",
    "random_other_classes",
    "randomise_units",
    "spearman_maps",
    "ssim_maps",
]


def _units(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    units = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, nn.Sequential | nn.ModuleList):
            units.extend(_units(child, f"{full}."))
        elif any(True for _ in child.parameters()):
            units.append((full, child))
    return units


def cascade_units(model: nn.Module) -> list[str]:
    """The model's parametrised units, top-down (the cascade's order)."""
    return [name for name, _ in reversed(_units(model))]


def randomise_units(model: nn.Module, names: list[str], seed: int) -> nn.Module:
    """A deep copy of ``model`` with the units ``names`` re-initialised (see the module doc)."""
    randomised = copy.deepcopy(model).eval()
    units = dict(_units(randomised))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in names:
            if name not in units:
                raise InputError(f"No unit {name!r} in the model; units: {cascade_units(model)}.")
            for parameter in units[name].parameters():
                scale = _scale(parameter)
                noise = torch.randn(parameter.shape, generator=generator) * scale
                parameter.copy_(noise.to(parameter.dtype))
    return randomised


def _scale(parameter: Tensor) -> float:
    """σ of the redraw: the tensor's std; a constant tensor (a fresh BN scale of ones) its |value|."""
    values = parameter.detach().double().flatten()
    spread = float(values.std()) if values.numel() > 1 else 0.0
    return spread if spread > 0 else float(values.abs().mean())


def cascade_models(model: nn.Module, levels: int) -> list[tuple[str, nn.Module]]:
    """``[(top unit randomised at this level, model)]`` for levels 1..``levels`` (cumulative)."""
    names = cascade_units(model)
    if not 1 <= levels <= len(names):
        raise InputError(f"mprt levels must be in 1..{len(names)} for this model, got {levels}.")
    return [
        (names[level - 1], randomise_units(model, names[:level], seed=level))
        for level in range(1, levels + 1)
    ]


def spearman_maps(first: Tensor, second: Tensor) -> np.ndarray:
    """Spearman rank correlation per image of two ``B×H×W`` maps (Quantus' function).

    A constant map has no ranking: its correlation is NaN.

    Example:
        >>> a = torch.rand(2, 4, 4)
        >>> spearman_maps(a, 2 * a + 1).round(6).tolist()
        [1.0, 1.0]
    """
    from quantus.functions.similarity_func import correlation_spearman

    out = []
    for a, b in zip(first.double().cpu().numpy(), second.double().cpu().numpy(), strict=True):
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            out.append(np.nan)
        else:
            out.append(float(correlation_spearman(a.ravel(), b.ravel())))
    return np.asarray(out)


def ssim_maps(first: Tensor, second: Tensor) -> np.ndarray:
    """SSIM per image of two ``B×H×W`` maps (Quantus' ``ssim``, data range of the pair)."""
    from quantus.functions.similarity_func import ssim

    pairs = zip(first.double().cpu().numpy(), second.double().cpu().numpy(), strict=True)
    return np.asarray([float(ssim(a, b)) if np.ptp([a, b]) > 0 else 1.0 for a, b in pairs])  # type: ignore[arg-type]


def random_other_classes(targets: Tensor, indices: Tensor, num_classes: int) -> Tensor:
    """For each image a class other than its target, drawn with a generator seeded by its index.

    Example:
        >>> others = random_other_classes(torch.tensor([0, 1]), torch.tensor([10, 11]), 2)
        >>> others.tolist()
        [1, 0]
    """
    out = []
    for target, index in zip(targets.tolist(), indices.tolist(), strict=True):
        draw = int(np.random.default_rng(int(index)).integers(num_classes - 1))
        out.append(draw + (draw >= target))
    return torch.tensor(out, dtype=torch.long)
