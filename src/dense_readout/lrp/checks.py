"""Checks for LRP rule sets: a block forward equals the block's own, a model with biases zeroed.

:func:`block_forward_matches` is the test for a new block rewrite;
:func:`bias_free` prepares a random-init model on which a sound rule set must
conserve relevance exactly (the tests, ``benchmarks/lrp_speed.py`` and docs/lrp.md
use it).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from .canonizers import BlockCanonizer

__all__ = ["bias_free", "block_forward_matches"]


def block_forward_matches(block: nn.Module, *inputs: Tensor, atol: float = 1e-5) -> bool:
    """Whether ``block``'s registered LRP forward matches its own forward.

    True if ``block`` computes the same output with its registered LRP forward as without
    it, and its own forward is back afterwards: the check for a new block rewrite.

    Example:
        >>> import torch
        >>> from timm.models.resnet import BasicBlock
        >>> block_forward_matches(BasicBlock(8, 8).eval(), torch.randn(1, 8, 6, 6))
        True
    """
    canonizer = BlockCanonizer()
    canonizer.register(block, canonizer.attribute_map("", block))
    try:
        ours = block(*inputs)
    finally:
        canonizer.remove()
    return bool(torch.allclose(ours, block(*inputs), atol=atol)) and "forward" not in vars(block)


def bias_free(model: nn.Module, calibration: Tensor, seed: int = 0) -> nn.Module:
    """Zero every bias and batch-norm mean, with calibrated batch-norm variances; in eval mode.

    With biases zeroed a conservative rule set must give conservation 1 (the tests
    and ``benchmarks/lrp_speed.py``). Each batch norm's variance is set, in one pass
    over ``calibration``, to its input's mean square (at least 0.01), so activations
    keep a unit scale (random init alone lets them vanish or explode, and then
    ``epsilon`` dominates); batch-norm scales and layer scales are drawn from
    ``[0.5, 1.5]`` so that no branch is silenced by its initialisation.

    Example:
        >>> import torchvision
        >>> model = torchvision.models.mobilenet_v2(num_classes=3)
        >>> model = bias_free(model, torch.randn(2, 3, 32, 32))
        >>> model.training, float(model.classifier[1].bias.detach().abs().max())
        (False, 0.0)
    """
    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def calibrate(norm: nn.Module, inputs: tuple) -> None:  # unit RMS about a zero mean
        dims = [d for d in range(inputs[0].dim()) if d != 1]
        cast(Tensor, norm.running_var).copy_(inputs[0].pow(2).mean(dim=dims).clamp_min(1e-2))

    def uniform(like: Tensor) -> Tensor:
        return torch.rand(like.shape, generator=generator) + 0.5

    model.eval()
    with torch.no_grad():
        for module in model.modules():
            bias, scale = getattr(module, "bias", None), getattr(module, "layer_scale", None)
            if isinstance(bias, Tensor):
                bias.zero_()
            if isinstance(scale, Tensor):
                scale.copy_(uniform(scale))
        for norm in norms:
            cast(Tensor, norm.running_mean).zero_()
            norm.weight.copy_(uniform(norm.weight))
        handles = [norm.register_forward_pre_hook(calibrate) for norm in norms]
        try:
            model(calibration)
        finally:
            for handle in handles:
                handle.remove()
    return model
