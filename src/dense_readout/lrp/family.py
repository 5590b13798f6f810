"""One LRP family as one record: which models, which block forwards, canonizers, composite.

A :class:`LRPFamily` is data, as a zennit composite's layer map is data: the model
modules it covers, the :class:`~dense_readout.lrp.blocks.BlockRewrite` of each
block type whose ``forward`` adds a shortcut or gates inside, the canonizers an
LRP call applies, the default composite, the token adapters its CP-LRP forwards
cover, and, for a family that cannot be refined as it stands, the reason. The
built-in records are in :mod:`dense_readout.lrp.family_records`; they are kept in
the registry of :mod:`dense_readout.lrp.families`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from torch import Tensor, nn

from .blocks import BlockRewrite

__all__ = ["CANONIZERS", "LRPFamily", "rewrites"]

#: The canonizers an LRP call can apply, in the order they are applied.
CANONIZERS = ("batch_norm", "blocks", "layer_norm")


def rewrites(
    forwards: Mapping[type, Callable[..., Tensor]],
    attributes: Mapping[type, Callable[[nn.Module], dict]] | None = None,
) -> tuple[BlockRewrite, ...]:
    """``{block type: forward}`` (and per-type ``attributes``) as :class:`BlockRewrite` records.

    Example:
        >>> from torch import nn
        >>> [r.name for r in rewrites({nn.Identity: lambda self, x: x})]
        ['torch.nn.modules.linear.Identity']
    """
    extra = attributes or {}
    return tuple(BlockRewrite(kind, forward, extra.get(kind)) for kind, forward in forwards.items())


@dataclass(frozen=True)
class LRPFamily:
    """Everything LRP needs to know about one model family.

    Args:
        name: registry name, e.g. ``"torchvision.resnet"``.
        label: what the docs table calls it, e.g. ``"torchvision ResNet"``.
        modules: ``type(model).__module__`` values of the models it covers (a model's
            family is found by its class's module).
        blocks: the block forwards used during an LRP call (any model containing
            these block types gets them, also a custom network).
        composite: the default composite name (see
            :func:`~dense_readout.lrp.registered_composites`).
        canonizers: which of :data:`CANONIZERS` an LRP call applies.
        tokens: the token-grid adapter names its CP-LRP forwards cover (ViTs).
        rules: the rule set in words (docs and messages).
        builders: ``torchvision.models`` constructors the tests and benchmarks build.
        refusal: non-empty: why :class:`~dense_readout.lrp.LRPReadout` refuses it.
        split: ``(features, head)`` attribute names under which the refusal does not
            apply (``LRPReadout(model, features=model.<features>, head=model.<head>)``).
        model_kwargs: extra constructor arguments the builders need.
        min_size: smallest input side the builders accept.

    Example:
        >>> family = LRPFamily("toy", "a toy CNN", modules=("my_package.models",))
        >>> family.supported, family.composite, family.canonizers
        (True, 'epsilon_plus_flat', ('batch_norm', 'blocks', 'layer_norm'))
    """

    name: str
    label: str
    modules: tuple[str, ...] = ()
    blocks: tuple[BlockRewrite, ...] = ()
    composite: str = "epsilon_plus_flat"
    canonizers: tuple[str, ...] = CANONIZERS
    tokens: tuple[str, ...] = ()
    rules: str = ""
    builders: tuple[str, ...] = ()
    refusal: str = ""
    split: tuple[str, str] | None = None
    model_kwargs: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    min_size: int = 32

    @property
    def supported(self) -> bool:
        """True unless the family carries a refusal."""
        return not self.refusal

    def build(self, builder: str, num_classes: int = 10) -> nn.Module:
        """``torchvision.models.<builder>(weights=None, num_classes=...)`` in eval mode.

        Example:
            >>> family = LRPFamily("t", "t", builders=("resnet18",))
            >>> type(family.build("resnet18", num_classes=3)).__name__
            'ResNet'
        """
        import torchvision.models as models

        kwargs = dict(self.model_kwargs)
        return getattr(models, builder)(weights=None, num_classes=num_classes, **kwargs).eval()
