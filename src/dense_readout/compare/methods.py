"""What a compare method is, and the registry of method names.

A method is a :class:`SaliencyMethod`: ``method(inputs, targets) -> B×h×w`` raw
maps. A *name* maps to a factory ``factory(context) -> SaliencyMethod`` that builds
the method for one model (:class:`MethodContext`). The names live in
:data:`METHODS`, a :class:`~dense_readout.registry.Registry` of
:class:`MethodRegistration` entries keyed by the normalised name (lower case,
``-`` for ``_``; see :func:`method_key`); add one with :func:`register_method`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from ..readout import DenseReadout
from ..registry import Registry

__all__ = [
    "METHODS",
    "MethodContext",
    "MethodFactory",
    "MethodRegistration",
    "SaliencyMethod",
    "available_methods",
    "method_key",
    "register_method",
]


@dataclass
class MethodContext:
    """What a method factory gets: the model, its readout (adapter) and the grid layer.

    Example:
        >>> import timm
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.compare import MethodContext
        >>> model = timm.create_model("resnet18", num_classes=3).eval()
        >>> context = MethodContext(model, DenseReadout(model), {"batch_size": 8})
        >>> context.target_layer is model.layer4, context.reshape_transform is None
        (True, True)
    """

    model: nn.Module
    readout: DenseReadout
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def target_layer(self) -> nn.Module:
        """The layer whose output is the readout grid (the CAM methods' default)."""
        return self.readout.adapter.target_layer()

    @property
    def reshape_transform(self) -> Callable[[Tensor], Tensor] | None:
        """Token-to-grid reshape for transformer families, or None."""
        return self.readout.adapter.reshape_transform()


class SaliencyMethod:
    """A ready method: ``method(inputs, targets) -> raw maps B×h×w`` (signed, any resolution).

    Subclasses set ``needs_gradients`` and may set ``classes_per_call`` (how many
    classes one call explains: 1 for CAMs, K for the readout) and ``close()``.

    Example:
        >>> import timm, torch
        >>> from dense_readout.compare import SaliencyMethod, compare
        >>> class InputEnergy(SaliencyMethod):
        ...     name, needs_gradients = "input-energy", False
        ...     def __call__(self, inputs, targets):
        ...         return inputs.pow(2).sum(dim=1)  # B×H×W, the same map for every class
        >>> model = timm.create_model("resnet18", num_classes=3).eval()
        >>> result = compare(model, torch.randn(1, 3, 32, 32), 0, methods=[InputEnergy()])
        >>> list(result.maps), tuple(result.maps["input-energy"].shape)
        (['input-energy'], (1, 32, 32))
    """

    name: str = "method"
    needs_gradients: bool = True
    classes_per_call: int | None = 1

    def __call__(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """``B×h×w`` (or ``B×H×W``) maps of ``targets`` (one class per image)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release hooks."""


MethodFactory = Callable[[MethodContext], SaliencyMethod]


@dataclass(frozen=True)
class MethodRegistration:
    """One entry of :data:`METHODS`: the factory and a one-line description.

    Example:
        >>> from dense_readout.compare import METHODS, MethodRegistration
        >>> entry = METHODS.get("cam")
        >>> isinstance(entry, MethodRegistration), callable(entry.factory), entry.description != ""
        (True, True, True)
    """

    factory: MethodFactory
    description: str = ""


METHODS: Registry[MethodRegistration] = Registry(
    "method",
    hint=(
        "Pass a pytorch-grad-cam BaseCAM subclass or a Captum attribution class, or "
        "register a name with dense_readout.compare.methods.register_method."
    ),
)


def method_key(name: str) -> str:
    """The registry key of a method name: stripped, lower case, ``-`` for ``_``.

    Example:
        >>> method_key(" Grad_CAM ")
        'grad-cam'
    """
    return name.strip().lower().replace("_", "-")


def register_method(name: str, description: str = "") -> Callable[[MethodFactory], MethodFactory]:
    """Decorator: make ``factory(context) -> SaliencyMethod`` available as ``name``.

    The entry is kept in :data:`METHODS` under :func:`method_key` of ``name``;
    registering a name again replaces it with a ``RegistryOverwriteWarning``.

    Example:
        >>> import torch
        >>> from dense_readout.compare import (
        ...     METHODS, SaliencyMethod, available_methods, register_method)
        >>> class Centre(SaliencyMethod):
        ...     name, needs_gradients = "centre-prior", False
        ...     def __call__(self, inputs, targets):
        ...         grid = torch.zeros(inputs.shape[0], 3, 3); grid[:, 1, 1] = 1
        ...         return grid
        >>> @register_method("Centre_Prior", "a fixed centre blob (a baseline)")
        ... def _centre(context):
        ...     return Centre()
        >>> available_methods()["centre-prior"]
        'a fixed centre blob (a baseline)'
        >>> _ = METHODS.unregister("centre-prior")  # examples clean up after themselves
        >>> "centre-prior" in available_methods()
        False
    """

    def decorate(factory: MethodFactory) -> MethodFactory:
        METHODS.register(method_key(name), MethodRegistration(factory, description))
        return factory

    return decorate


def available_methods() -> dict[str, str]:
    """Registered method names and their descriptions, sorted by name.

    Example:
        >>> from dense_readout.compare import available_methods
        >>> methods = available_methods()
        >>> {"dense-readout", "cam", "gradcam"} <= set(methods), list(methods) == sorted(methods)
        (True, True)
    """
    return {name: METHODS.get(name).description for name in METHODS.names()}
