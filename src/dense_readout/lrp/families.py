"""The LRP family registry: one :class:`~dense_readout.lrp.family.LRPFamily` record per family.

:data:`FAMILIES` holds the built-in records (:mod:`dense_readout.lrp.family_records`)
and any you add with :func:`register_family`. Everything LRP decides per model is
read from it: the model's family (:func:`family_of`, by its class's module), the
default composite, the canonizers, the token adapters, a refusal, and the block
forwards (:func:`block_rewrite`, by exact block type, from every registered
family, so a custom network made of registered blocks gets them too).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from dense_readout.lrp import LRPFamily, LRPReadout, register_family, residual_sum
    >>> class Residual(nn.Module):
    ...     def __init__(self):
    ...         super().__init__(); self.conv = nn.Conv2d(3, 3, 3, padding=1)
    ...     def forward(self, x):
    ...         return self.conv(x) + x
    >>> def lrp_forward(self, x):  # the same function, the add as a zennit Sum
    ...     return residual_sum(self, self.conv(x), x)
    >>> family = register_family(LRPFamily("doc.toy", "toy", blocks=rewrites({Residual: lrp_forward})))
    >>> block_rewrite(Residual()).forward is lrp_forward
    True
    >>> FAMILIES.unregister("doc.toy") is family, block_rewrite(Residual()) is None
    (True, True)
"""

from __future__ import annotations

from torch import nn

from ..errors import InputError
from ..registry import Registry
from .blocks import BlockRewrite, block_name
from .family import CANONIZERS, LRPFamily, rewrites
from .family_records import BUILTIN_FAMILIES

__all__ = [
    "FALLBACK_COMPOSITE",
    "FAMILIES",
    "block_rewrite",
    "default_composite",
    "family_of",
    "family_table",
    "register_family",
    "registered_blocks",
    "rewrites",
    "supported_torchvision_builders",
]

#: The composite of a model no family covers (a custom network).
FALLBACK_COMPOSITE = "epsilon_plus_flat"

FAMILIES: Registry[LRPFamily] = Registry(
    "LRP family",
    hint="Add one with dense_readout.lrp.families.register_family(LRPFamily(...)) "
    "(records: dense_readout/lrp/family_records.py).",
)


def _clashes(family: LRPFamily) -> list[str]:
    """Modules or block types ``family`` claims differently from another registered family."""
    problems = []
    for other in (f for name, f in FAMILIES.items() if name != family.name):
        problems += [f"module {m} is {other.name}'s" for m in family.modules if m in other.modules]
        theirs = {r.block_type: r for r in other.blocks}
        problems += [
            f"block {r.name} has another forward in {other.name}"
            for r in family.blocks
            if r.block_type in theirs and theirs[r.block_type] != r
        ]
    return problems


def register_family(family: LRPFamily) -> LRPFamily:
    """Register ``family`` under ``family.name`` (a re-registration replaces the record).

    Raises:
        InputError: if it names an unknown canonizer, or claims a module or gives a
            block type another forward than a family registered already.

    Example:
        >>> from dense_readout.lrp import LRPFamily
        >>> toy = register_family(LRPFamily("doc.cnn", "my CNN", modules=("my_package.cnn",)))
        >>> FAMILIES.get("doc.cnn") is toy, FAMILIES.unregister("doc.cnn") is toy
        (True, True)
    """
    unknown = sorted(set(family.canonizers) - set(CANONIZERS))
    problems = [f"unknown canonizers {unknown} (known: {list(CANONIZERS)})"] if unknown else []
    problems += _clashes(family)
    if problems:
        raise InputError(f"Cannot register LRP family {family.name!r}: {'; '.join(problems)}.")
    return FAMILIES.add(family)


for _family in BUILTIN_FAMILIES:
    register_family(_family)


def family_of(model: nn.Module) -> LRPFamily | None:
    """The registered family covering ``type(model).__module__``, or None.

    Example:
        >>> import torchvision
        >>> family_of(torchvision.models.resnet18(weights=None)).name
        'torchvision.resnet'
    """
    module = type(model).__module__
    return next((f for _, f in FAMILIES.items() if module in f.modules), None)


def default_composite(model: nn.Module) -> str:
    """The default composite of ``model``'s family (:data:`FALLBACK_COMPOSITE` without one).

    Example:
        >>> import timm
        >>> default_composite(timm.create_model("convnext_atto", num_classes=2))
        'epsilon_gamma_box'
    """
    family = family_of(model)
    return FALLBACK_COMPOSITE if family is None else family.composite


_LOOKUP: tuple[tuple[int, ...], dict[type, BlockRewrite]] = ((), {})


def _rewrites_by_type() -> dict[type, BlockRewrite]:
    global _LOOKUP
    key = tuple(id(f) for _, f in FAMILIES.items())
    if _LOOKUP[0] != key:  # the registry changed: rebuild
        _LOOKUP = (key, {r.block_type: r for _, f in FAMILIES.items() for r in f.blocks})
    return _LOOKUP[1]


def block_rewrite(module: nn.Module) -> BlockRewrite | None:
    """The registered rewrite for ``module``'s exact type (any family), or None."""
    return _rewrites_by_type().get(type(module))


def registered_blocks() -> list[str]:
    """Qualified names of every block type with an LRP forward, sorted.

    Example:
        >>> "timm.models.resnet.BasicBlock" in registered_blocks()
        True
    """
    return sorted(block_name(kind) for kind in _rewrites_by_type())


def supported_torchvision_builders() -> list[tuple[str, str]]:
    """``(family module, builder)`` for every builder of every supported family.

    Example:
        >>> ("torchvision.models.convnext", "convnext_tiny") in supported_torchvision_builders()
        True
    """
    return [
        (family.modules[0], builder)
        for _, family in FAMILIES.items()
        if family.supported
        for builder in family.builders
    ]


def _status(family: LRPFamily) -> str:
    if family.supported and not family.builders and not family.tokens and not family.blocks:
        return "with `features=`/`head=`" if "features=" in family.rules else "yes"
    if family.supported:
        return "yes"
    return (
        f"with `features=model.{family.split[0]}, head=model.{family.split[1]}`"
        if family.split
        else "no"
    )


def family_table() -> str:
    """The Markdown table of every registered family (``docs/lrp.md`` holds its output).

    Example:
        >>> family_table().splitlines()[0]
        '| family | covers (model class module) | supported | default composite | block forwards | rules |'
    """
    lines = [
        "| family | covers (model class module) | supported | default composite | block forwards | rules |",
        "|---|---|---|---|---|---|",
    ]
    for family in (entry for _, entry in FAMILIES.items()):
        modules = ", ".join(f"`{m}`" for m in family.modules)
        blocks = ", ".join(sorted({f"`{r.block_type.__name__}`" for r in family.blocks})) or "–"
        status = _status(family)
        lines.append(
            f"| {family.label} | {modules} | {status} | `{family.composite}` | {blocks} | {family.rules} |"
        )
    return "\n".join(lines) + "\n"
