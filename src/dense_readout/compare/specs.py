"""Turning a method spec (name, class, callable, ``(label, spec)``) into a ready method."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError
from .methods import METHODS, MethodContext, SaliencyMethod, method_key
from .wrappers import CamMethod, CaptumMethod

__all__ = ["MethodSpec", "check_method_spec", "resolve_method", "spec_name"]

MethodSpec = str | type | SaliencyMethod | Callable[[Tensor, Tensor], Tensor] | tuple[str, Any]

_NOT_A_METHOD_CLASS = (
    "{name} is neither a pytorch-grad-cam BaseCAM subclass nor a Captum "
    "Attribution subclass; wrap it in a SaliencyMethod or register a factory."
)


def resolve_method(spec: MethodSpec, context: MethodContext) -> SaliencyMethod:
    """Turn a name, class, callable or ``(label, spec)`` pair into a ready method.

    Example:
        >>> import timm, torch
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.compare import MethodContext, resolve_method
        >>> model = timm.create_model("resnet18", num_classes=3).eval()
        >>> context = MethodContext(model, DenseReadout(model))
        >>> method = resolve_method(("the readout", "dense-readout"), context)
        >>> method.name, method.needs_gradients, method.classes_per_call
        ('the readout', False, 3)
        >>> plain = resolve_method(lambda inputs, targets: inputs.mean(dim=1), context)  # a callable
        >>> tuple(plain(torch.ones(1, 3, 8, 8), torch.tensor([0])).shape)
        (1, 8, 8)
    """
    check_method_spec(spec)
    label, spec = _split_label(spec)
    method: SaliencyMethod
    if isinstance(spec, str):
        method = METHODS.get(method_key(spec)).factory(context)
    elif isinstance(spec, type):
        method = _from_class(spec, context)
    elif isinstance(spec, SaliencyMethod):
        method = spec
    elif callable(spec):
        method = _CallableMethod(spec)
    else:
        raise InputError(f"Cannot use {spec!r} as a method: give a name, a class or a callable.")
    if label is not None:
        method.name = label
    return method


def check_method_spec(spec: MethodSpec) -> None:
    """Raise :class:`InputError` now for a spec that can never be a method (unknown name, wrong class).

    An unknown name raises :class:`~dense_readout.registry.UnknownNameError` (an
    ``InputError``) listing the registered names.

    Example:
        >>> from dense_readout.errors import InputError
        >>> check_method_spec(("my label", "gradcam"))  # fine: returns None
        >>> try:
        ...     check_method_spec("gradkam")
        ... except InputError as error:
        ...     message = str(error)
        >>> message.startswith("Unknown method 'gradkam'; known: "), "gradcam" in message
        (True, True)
    """
    _, spec = _split_label(spec)
    if isinstance(spec, str):
        METHODS.get(method_key(spec))
    elif isinstance(spec, type):
        if not any(issubclass(spec, base) for base in _method_base_classes()):
            raise InputError(_NOT_A_METHOD_CLASS.format(name=spec.__name__))
    elif not callable(spec):
        raise InputError(f"Cannot use {spec!r} as a method: give a name, a class or a callable.")


def spec_name(spec: MethodSpec) -> str:
    """The name a spec's result is reported under (before the method says otherwise)."""
    label, spec = _split_label(spec)
    if label is not None:
        return label
    if isinstance(spec, str):
        return method_key(spec)
    if isinstance(spec, type):
        return spec.__name__
    return str(getattr(spec, "name", None) or getattr(spec, "__name__", type(spec).__name__))


def _split_label(spec: MethodSpec) -> tuple[str | None, MethodSpec]:
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        return spec[0], spec[1]
    return None, spec


def _optional_class(module: str, name: str) -> type | None:
    """``module.name`` if the optional library is installed, else ``None``."""
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:  # pragma: no cover - optional extra
        return None


def _base_cam() -> type | None:
    return _optional_class("pytorch_grad_cam.base_cam", "BaseCAM")


def _captum_attribution() -> type | None:
    return _optional_class("captum.attr", "Attribution")


def _method_base_classes() -> tuple[type, ...]:
    optional = (_base_cam(), _captum_attribution())
    return (SaliencyMethod, *(base for base in optional if base is not None))


def _from_class(spec: type, context: MethodContext) -> SaliencyMethod:
    base_cam, attribution = _base_cam(), _captum_attribution()
    if base_cam is not None and issubclass(spec, base_cam):
        from ..gradcam import DenseReadoutCAM

        if issubclass(spec, DenseReadoutCAM):
            options = {"readout": context.readout, **context.options}
            method = CamMethod(spec, context, **options)
            method.classes_per_call = context.readout.num_classes
            return method
        return CamMethod(spec, context, **context.options)
    if attribution is not None and issubclass(spec, attribution):
        return CaptumMethod(spec, context, **context.options)
    if issubclass(spec, SaliencyMethod):
        return spec()
    raise InputError(_NOT_A_METHOD_CLASS.format(name=spec.__name__))


class _CallableMethod(SaliencyMethod):
    def __init__(self, function: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.function = function
        self.name = getattr(function, "__name__", type(function).__name__)
        self.needs_gradients = bool(getattr(function, "needs_gradients", False))

    def __call__(self, inputs: Tensor, targets: Tensor) -> Tensor:
        return torch.as_tensor(self.function(inputs, targets))
