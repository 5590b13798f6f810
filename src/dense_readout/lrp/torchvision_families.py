"""Which torchvision CNN families LRP refinement supports, with which rules, and why not.

One table, :data:`TORCHVISION_FAMILIES` (a :class:`~dense_readout.registry.Registry`
keyed by the model class's module, e.g. ``torchvision.models.efficientnet``), is
read by :class:`~dense_readout.lrp.LRPReadout` (:func:`torchvision_refusal`
refuses a family marked unsupported, and any torchvision CNN family not listed)
and enumerated by ``tests/test_lrp_torchvision.py`` (conservation with biases
zeroed, for every builder of every supported family) and by
``benchmarks/lrp_speed.py --torchvision``. The composite of each family is
:data:`~dense_readout.lrp.FAMILY_DEFAULTS`; the block forwards are in
:mod:`dense_readout.lrp.torchvision_blocks`.

torchvision's transformers (ViT, Swin, MaxViT) are not in this table: they are
decided by the attention rules of :class:`~dense_readout.lrp.LRPReadout`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import cast

import torch
from torch import Tensor, nn

from ..errors import UnsupportedModelError
from ..registry import Registry

__all__ = [
    "TORCHVISION_FAMILIES",
    "TRANSFORMER_MODULES",
    "TorchvisionFamily",
    "bias_free",
    "check_torchvision",
    "supported_torchvision_builders",
    "torchvision_refusal",
]

#: torchvision modules left to the transformer (attention) rules, not to this table.
TRANSFORMER_MODULES = (
    "torchvision.models.vision_transformer",
    "torchvision.models.swin_transformer",
    "torchvision.models.maxvit",
)


@dataclass(frozen=True)
class TorchvisionFamily:
    """One torchvision CNN family: the builders it covers and how LRP treats it.

    Args:
        builders: ``torchvision.models`` constructors of the family (the tests and the
            conservation benchmark build each with ``weights=None``); empty for
            families the readout cannot take without a custom split (VGG, AlexNet).
        rules: the canonizers it needs, in words (for docs and messages).
        refusal: non-empty: why :class:`~dense_readout.lrp.LRPReadout` refuses it.
        split: ``(features, head)`` attribute names of a split under which the refusal
            does not apply (``LRPReadout(model, features=model.<features>,
            head=model.<head>)``: the block forwards reach the model's modules).
        model_kwargs: extra constructor arguments the builders need.
        min_size: smallest input side the builders accept.
    """

    builders: tuple[str, ...]
    rules: str
    refusal: str = ""
    split: tuple[str, str] | None = None
    model_kwargs: Mapping[str, object] = field(default_factory=dict)
    min_size: int = 32

    @property
    def supported(self) -> bool:
        return not self.refusal

    def build(self, builder: str, num_classes: int = 10) -> nn.Module:
        """``torchvision.models.<builder>(weights=None, num_classes=...)`` in eval mode."""
        import torchvision.models as models

        kwargs = dict(self.model_kwargs)
        return getattr(models, builder)(weights=None, num_classes=num_classes, **kwargs).eval()


TORCHVISION_FAMILIES: Registry[TorchvisionFamily] = Registry(
    "LRP torchvision family",
    hint="Register one with TORCHVISION_FAMILIES.register(module, TorchvisionFamily(...)).",
)

_MERGE = "batch norms merged into their convolutions"
_PLAIN = (
    "convolutions, ReLU and max pools only (no blocks); not a GAP model, so only with "
    "features=model.features and a per-cell head of your own"
)
_SE = "squeeze-excite gates (torchvision SqueezeExcitation) as constants"
_FAMILIES = {
    "resnet": TorchvisionFamily(("resnet18",), f"zennit's ResNet block forwards; {_MERGE}"),
    "efficientnet": TorchvisionFamily(
        ("efficientnet_b0", "efficientnet_v2_s"),
        f"MBConv/FusedMBConv residual adds as Sums; {_SE}; {_MERGE}",
    ),
    "mobilenetv2": TorchvisionFamily(
        ("mobilenet_v2",), f"InvertedResidual residual adds as Sums; {_MERGE}"
    ),
    "mobilenetv3": TorchvisionFamily(
        ("mobilenet_v3_small", "mobilenet_v3_large"),
        f"InvertedResidual residual adds as Sums; {_SE}; {_MERGE}",
    ),
    "convnext": TorchvisionFamily(
        ("convnext_tiny",),
        "CNBlock residual adds as Sums and layer_scale as a constant; LayerNorm and the "
        "channels-first LayerNorm2d with a detached standard deviation (Norm rule)",
    ),
    "regnet": TorchvisionFamily(
        ("regnet_y_400mf", "regnet_x_400mf"),
        f"ResBottleneckBlock residual adds as Sums; {_SE} (RegNetY); {_MERGE}",
    ),
    "densenet": TorchvisionFamily(
        ("densenet121",),
        "concatenations route relevance (no rule needed); batch norms after a concatenation "
        "pass relevance (zennit's BatchNorm Pass rule), the others merged; _DenseLayer "
        "without gradient checkpointing",
    ),
    "googlenet": TorchvisionFamily(
        ("googlenet",),
        f"concatenations route relevance; {_MERGE}",
        model_kwargs=MappingProxyType({"aux_logits": False, "init_weights": False}),
    ),
    "shufflenetv2": TorchvisionFamily(
        ("shufflenet_v2_x0_5",), f"concatenations and channel shuffles route relevance; {_MERGE}"
    ),
    "squeezenet": TorchvisionFamily(
        ("squeezenet1_0",), "concatenations route relevance; no batch norms"
    ),
    # not GAP models: the readout needs features=model.features and a per-cell head
    "vgg": TorchvisionFamily((), f"{_PLAIN}; {_MERGE} (the _bn variants)"),
    "alexnet": TorchvisionFamily((), _PLAIN),
    "mnasnet": TorchvisionFamily(
        ("mnasnet0_5",),
        "_InvertedResidual residual adds as Sums; batch norms merged",
        refusal=(
            "the structural adapter reads MNASNet through its torch.fx graph, where the "
            "residual adds of _InvertedResidual are graph operations that no canonizer "
            "reaches (relevance would not be conserved). Pass the split explicitly: "
            "LRPReadout(model, features=model.layers, head=model.classifier)"
        ),
        split=("layers", "classifier"),
    ),
    "inception": TorchvisionFamily(
        ("inception_v3",),
        "none",
        refusal=(
            "Inception blocks average-pool with F.avg_pool2d inside forward, a function "
            "zennit's Norm rule for pooling modules cannot reach, so the pooled branch "
            "gets gradient-weighted relevance and the sum is not conserved. Use GoogLeNet, "
            "a ResNet/EfficientNet, or the readout itself / dense_readout.gradcam"
        ),
        model_kwargs=MappingProxyType({"aux_logits": False, "init_weights": False}),
        min_size=75,
    ),
}
for _name, _family in _FAMILIES.items():
    TORCHVISION_FAMILIES.register(f"torchvision.models.{_name}", _family)


def supported_torchvision_builders() -> list[tuple[str, str]]:
    """``(family module, builder)`` for every builder of every supported family.

    Example:
        >>> ("torchvision.models.convnext", "convnext_tiny") in supported_torchvision_builders()
        True
    """
    return [
        (module, builder)
        for module, family in TORCHVISION_FAMILIES.items()
        if family.supported
        for builder in family.builders
    ]


def torchvision_refusal(model: nn.Module, custom_split: bool = False) -> str | None:
    """Why LRP refuses torchvision ``model``, or None (also for non-torchvision models).

    ``custom_split``: the caller passed ``features=``/``head=``, which lifts a refusal
    whose family names a ``split``.

    Example:
        >>> import torchvision
        >>> model = torchvision.models.mnasnet0_5(weights=None)
        >>> torchvision_refusal(model).startswith("the structural adapter reads MNASNet")
        True
        >>> torchvision_refusal(model, custom_split=True) is None
        True
    """
    module = type(model).__module__
    if not module.startswith("torchvision.models.") or module in TRANSFORMER_MODULES:
        return None
    if module not in TORCHVISION_FAMILIES:
        known = ", ".join(name.rsplit(".", 1)[1] for name in TORCHVISION_FAMILIES.names())
        return (
            f"no LRP rule set is registered for {module} (its blocks may add shortcuts or "
            f"gate inside forward, which would break conservation silently). Known families: "
            f"{known}; register one in dense_readout.lrp.torchvision_families."
            "TORCHVISION_FAMILIES after registering its block forwards"
        )
    family = TORCHVISION_FAMILIES.get(module)
    if family.supported or (custom_split and family.split is not None):
        return None
    return family.refusal


def check_torchvision(model: nn.Module, custom_split: bool = False) -> None:
    """Raise :class:`~dense_readout.errors.UnsupportedModelError` with :func:`torchvision_refusal`'s reason.

    Example:
        >>> import torchvision
        >>> check_torchvision(torchvision.models.resnet18(weights=None))  # supported: no error
        >>> check_torchvision(torchvision.models.mnasnet0_5(weights=None))
        Traceback (most recent call last):
        ...
        dense_readout.errors.UnsupportedModelError: LRP refinement does not support MNASNet: ...
    """
    reason = torchvision_refusal(model, custom_split)
    if reason:
        raise UnsupportedModelError(
            f"LRP refinement does not support {type(model).__name__}: {reason}."
        )


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
