"""Which LRP rules to use: zennit composites by name, plus the layer map timm needs.

Every built-in choice is a zennit ``LayerMapComposite`` class; what we add is
*data*: a layer map prepended to the composite's own, so that timm's activation
modules get the ``Pass`` rule (zennit only knows ``torch.nn`` activations) and
LayerNorms get the ``Norm`` (epsilon) rule after :class:`LayerNormCanonizer` made
them linear. Register your own with :func:`register_composite`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from zennit import composites as zc
from zennit.core import Composite
from zennit.rules import Epsilon, Norm, Pass, ZBox, ZPlus
from zennit.types import Linear

from ..errors import InputError
from ..registry import Registry, UnknownNameError
from .cp_lrp import AttentionValues

__all__ = [
    "COMPOSITES",
    "EpsilonPlusFlatDepthwise",
    "build_composite",
    "composite_factory",
    "extra_layer_map",
    "register_composite",
    "registered_composites",
]

CompositeFactory = Callable[..., Composite]
COMPOSITES: Registry[CompositeFactory] = Registry(
    "LRP composite",
    hint="Register your own with dense_readout.lrp.composites.register_composite.",
)


def register_composite(name: str) -> Callable[[CompositeFactory], CompositeFactory]:
    """Decorator: register ``factory(layer_map=..., low=..., high=..., **kwargs) -> Composite``.

    ``layer_map`` must be prepended to the composite's own map; ``low``/``high`` are
    the input bounds (``1×C×1×1``) for box rules, ignore them if unused; ``kwargs``
    always hold ``stabilizer`` (the denominator shift of the non-epsilon rules,
    including the Norm rule of sums, average pools and LayerNorms).

    The factory is kept in :data:`COMPOSITES` (undo with ``COMPOSITES.unregister(name)``).

    Example:
        >>> import torch
        >>> from zennit.composites import EpsilonAlpha2Beta1
        >>> @register_composite("my_alpha_beta")
        ... def _mine(layer_map, low, high, **kwargs):
        ...     return EpsilonAlpha2Beta1(layer_map=layer_map, **kwargs)
        >>> "my_alpha_beta" in registered_composites()
        True
        >>> composite = build_composite("my_alpha_beta", low=torch.tensor(-1.0), high=torch.tensor(1.0))
        >>> type(composite).__name__
        'EpsilonAlpha2Beta1'
        >>> COMPOSITES.unregister("my_alpha_beta") is _mine, "my_alpha_beta" in registered_composites()
        (True, False)
    """
    return COMPOSITES.register(name)


def registered_composites() -> list[str]:
    """Names accepted by ``composite=`` (``COMPOSITES.names()``).

    Example:
        >>> from dense_readout.lrp import registered_composites
        >>> names = registered_composites()
        >>> {"epsilon", "epsilon_plus", "cp_lrp"} <= set(names)
        True
    """
    return COMPOSITES.names()


def composite_factory(name: str) -> CompositeFactory:
    """The factory registered as ``name``.

    Raises:
        UnknownNameError: (an :class:`~dense_readout.errors.InputError`) listing the known names.
    """
    if name not in COMPOSITES:
        raise UnknownNameError(
            f"Unknown composite {name!r}. Choose one of {registered_composites()} or register "
            "one with dense_readout.lrp.register_composite."
        )
    return COMPOSITES.get(name)


def _plain(cls: type) -> CompositeFactory:
    def factory(layer_map: list, low: torch.Tensor, high: torch.Tensor, **kwargs: Any) -> Composite:
        return cls(layer_map=layer_map, **kwargs)

    factory.__doc__ = f"zennit.composites.{cls.__name__}"
    return factory


for _name, _cls in (
    ("epsilon_plus_flat", zc.EpsilonPlusFlat),
    ("epsilon_plus", zc.EpsilonPlus),
    ("epsilon_alpha2_beta1", zc.EpsilonAlpha2Beta1),
    ("epsilon_alpha2_beta1_flat", zc.EpsilonAlpha2Beta1Flat),
):
    register_composite(_name)(_plain(_cls))


class EpsilonPlusFlatDepthwise(zc.EpsilonPlusFlat):
    """zennit's ``EpsilonPlusFlat`` with the epsilon rule on depthwise convolutions.

    z⁺ drops relevance at a depthwise convolution: an output sums only the ``k×k``
    taps of one channel, and where none of them contributes positively (inputs zero
    after a ReLU or in the padding, or all positive weights on negative inputs) its
    ``z⁺`` is 0 while its relevance is not (the z⁺ rule of the layer above credits
    negative inputs through ``x⁻w⁻``), so that relevance has nowhere to go. With
    biases zeroed, ``epsilon_plus_flat`` keeps 0.18 of it on ShuffleNetV2 and 0.83 on
    EfficientNet-B0, this composite 1.0 (docs/lrp.md, "Conservation of the default
    composites").
    """

    def __init__(self, *args: Any, epsilon: float = 1e-6, **kwargs: Any) -> None:
        super().__init__(*args, epsilon=epsilon, **kwargs)
        self.depthwise_rule = Epsilon(epsilon=epsilon, zero_params=kwargs.get("zero_params"))

    def mapping(self, ctx: dict, name: str, module: nn.Module) -> Any:
        """The parent's rule, but epsilon where a z⁺ rule meets a depthwise convolution."""
        rule = super().mapping(ctx, name, module)
        depthwise = isinstance(module, nn.Conv2d) and 1 < module.groups == module.in_channels
        return self.depthwise_rule if depthwise and isinstance(rule, ZPlus) else rule


register_composite("epsilon_plus_flat_depthwise")(_plain(EpsilonPlusFlatDepthwise))


@register_composite("epsilon_gamma_box")
def _epsilon_gamma_box(
    layer_map: list, low: torch.Tensor, high: torch.Tensor, **kwargs: Any
) -> Composite:
    """zennit.composites.EpsilonGammaBox with the input bounds of the model's normalisation."""
    kwargs.setdefault("low", low)
    kwargs.setdefault("high", high)
    return zc.EpsilonGammaBox(layer_map=layer_map, **kwargs)


@register_composite("epsilon")
def _epsilon(
    layer_map: list,
    low: torch.Tensor,
    high: torch.Tensor,
    epsilon: float = 1e-6,
    stabilizer: float = 1e-6,
    zero_params: str | list[str] | None = None,
) -> Composite:
    """LRP-epsilon on every convolution and linear layer (LRP-0 as epsilon -> 0)."""
    rule = Epsilon(epsilon=epsilon, zero_params=zero_params)
    return zc.LayerMapComposite(
        layer_map=layer_map + zc.layer_map_base(stabilizer) + [(Linear, rule)]
    )


@register_composite("cp_lrp")
def _cp_lrp(
    layer_map: list,
    low: torch.Tensor,
    high: torch.Tensor,
    epsilon: float = 1e-6,
    stabilizer: float = 1e-6,
    zero_params: str | list[str] | None = None,
) -> Composite:
    """CP-LRP for transformers (Ali et al. 2022).

    ZBox on the pixel layer (the patch embedding), epsilon on every other linear layer;
    attention values, LayerNorms and residual sums get the Norm rule and activations pass
    (from ``layer_map``). ``zero_params`` (e.g. ``"bias"``) is passed to both rules, as
    zennit's composites do.
    """
    rule = Epsilon(epsilon=epsilon, zero_params=zero_params)
    return zc.SpecialFirstLayerMapComposite(
        layer_map=layer_map + zc.layer_map_base(stabilizer) + [(Linear, rule)],
        first_map=[
            (Linear, ZBox(low=low, high=high, stabilizer=stabilizer, zero_params=zero_params))
        ],
    )


def _timm_activation_types() -> tuple[type, ...]:
    try:
        from timm.layers import activations as act
    except ImportError:  # pragma: no cover
        return ()
    names = (
        "GELU",
        "GELUTanh",
        "QuickGELU",
        "Swish",
        "Mish",
        "HardSwish",
        "HardSigmoid",
        "HardMish",
        "Sigmoid",
        "Tanh",
        "PReLU",
    )
    return tuple(getattr(act, n) for n in names if isinstance(getattr(act, n, None), type))


def extra_layer_map(stabilizer: float = 1e-6) -> list:
    """Rules zennit lacks.

    timm activations pass relevance; LayerNorm and CP-LRP's attention values use Norm;
    ``nn.MultiheadAttention`` gets none (zennit would pass relevance through it; its CP-LRP
    forward is computed by the block around it).
    """
    extra: list = [(AttentionValues, Norm(stabilizer=stabilizer)), (nn.MultiheadAttention, None)]
    timm_acts = _timm_activation_types()
    if timm_acts:
        extra.append((timm_acts, Pass()))
    extra.append((nn.LayerNorm, Norm(stabilizer=stabilizer)))
    return extra


def build_composite(
    name: str,
    *,
    low: torch.Tensor,
    high: torch.Tensor,
    stabilizer: float = 1e-6,
    options: dict | None = None,
) -> Composite:
    """Instantiate the composite ``name`` with the timm layer map prepended.

    Example:
        >>> import torch
        >>> from dense_readout.lrp import build_composite
        >>> composite = build_composite("epsilon_plus", low=torch.tensor(-2.0), high=torch.tensor(2.0))
        >>> type(composite).__name__
        'EpsilonPlus'
    """
    factory = composite_factory(name)
    options = {"stabilizer": stabilizer, **(options or {})}
    try:
        return factory(
            layer_map=extra_layer_map(options["stabilizer"]), low=low, high=high, **options
        )
    except TypeError as error:
        raise InputError(f"Bad composite_options for {name!r}: {error}") from None


def input_bounds(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of normalised inputs for pixels in [0, 1]: ``((0-m)/s, (1-m)/s)`` as ``1×C×1×1``."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (0 - m) / s, (1 - m) / s
