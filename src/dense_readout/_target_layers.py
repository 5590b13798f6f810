"""Which of the layers a CAM user passes is the grid the head reads, and the model's input width.

pytorch-grad-cam users write ``target_layers=[model.layer4[-1]]`` (often two or
more layers); Captum users write ``LayerGradCam(model, layer)``. The dense
readout is defined at one grid only, so :func:`resolve_grid_layer` keeps the
layer whose *output* is that grid (compared with the adapter's grid on the same
probe input, not by channel counts), warns about the others
(:class:`IgnoredTargetLayerWarning`) and refuses a list without it, naming the
right layer. :func:`match_input_channels` makes the adapter probe 1- and
4-channel models with their own input width. Private: used by
:mod:`dense_readout.gradcam` and :mod:`dense_readout.captum`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .adapters import ModelAdapter
from .errors import InputError

__all__ = [
    "IgnoredTargetLayerWarning",
    "describe_layer",
    "first_conv_channels",
    "match_input_channels",
    "resolve_grid_layer",
]

Transform = Callable[[Tensor], Tensor] | None


class IgnoredTargetLayerWarning(UserWarning):
    """Some target layers were ignored: the dense readout reads only the grid the head reads.

    Example:
        >>> import timm, torch, warnings
        >>> from dense_readout.gradcam import DenseReadoutCAM, IgnoredTargetLayerWarning
        >>> model = timm.create_model("resnet18", num_classes=3).eval()
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     cam = DenseReadoutCAM(model, target_layers=[model.layer4[-1], model.layer3[-1]])
        >>> ignored = [w for w in caught if issubclass(w.category, IgnoredTargetLayerWarning)]
        >>> len(ignored), "get_submodule('layer3.1')" in str(ignored[0].message)
        (1, True)
    """


def first_conv_channels(model: nn.Module) -> int | None:
    """``in_channels`` of the model's first 2-D convolution (registration order), if any.

    Example:
        >>> from torch import nn
        >>> first_conv_channels(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 8, 3)))
        1
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    return None


def match_input_channels(adapter: ModelAdapter, model: nn.Module) -> None:
    """Make ``adapter`` probe and check inputs with the model's own input channels (1, 4, …)."""
    channels = first_conv_channels(model)
    if channels is not None and channels != adapter.in_channels:
        adapter.in_channels = channels


def describe_layer(model: nn.Module, layer: nn.Module) -> str:
    """``model.get_submodule('layer4.1') (BasicBlock)``, or the type alone if not a submodule.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
        >>> describe_layer(net, net[1])
        "model.get_submodule('1') (ReLU)"
    """
    for name, module in model.named_modules():
        if module is layer:
            where = f"model.get_submodule({name!r})" if name else "model"
            return f"{where} ({type(layer).__name__})"
    return f"a {type(layer).__name__} that is not a submodule of the model"


def resolve_grid_layer(
    adapter: ModelAdapter,
    model: nn.Module,
    layers: Sequence[nn.Module],
    reshape_transform: Transform,
    owner: str,
) -> tuple[nn.Module, Transform]:
    """The one layer of ``layers`` whose output is the readout grid, and its reshape transform.

    Other layers are ignored with an :class:`IgnoredTargetLayerWarning`; a list
    without the grid layer raises :class:`InputError` naming it.
    """
    layers = list(layers)
    if not layers or not all(isinstance(layer, nn.Module) for layer in layers):
        raise InputError(
            f"{owner} needs target layers as a list of nn.Module, got {layers!r}. Pass "
            "target_layers=None for the model adapter's grid layer."
        )
    expected = adapter.target_layer()
    transform = reshape_transform if reshape_transform is not None else adapter.reshape_transform()
    if any(layer is expected for layer in layers):  # the adapter's own layer: no probe
        chosen = expected
    else:
        matches = _probe_matches(adapter, layers, transform)
        if not matches:
            raise InputError(_no_grid_message(owner, model, layers, expected, transform))
        chosen = matches[0]
    ignored = [layer for layer in layers if layer is not chosen]
    if ignored:
        names = "; ".join(describe_layer(model, layer) for layer in ignored)
        warnings.warn(
            f"{owner} reads one grid, the output of {describe_layer(model, chosen)}; ignoring "
            f"the other target layer(s): {names}. Pass target_layers=None (or that one layer) "
            "to silence this warning.",
            IgnoredTargetLayerWarning,
            stacklevel=3,
        )
    return chosen, transform


def _probe_matches(
    adapter: ModelAdapter, layers: list[nn.Module], transform: Transform
) -> list[nn.Module]:
    """Layers whose (transformed) output equals the adapter's grid on one random probe input."""
    probe = adapter.probe_input()
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(probe.shape, generator=generator).to(probe)
    outputs: dict[int, object] = {}
    handles = [
        layer.register_forward_hook(
            lambda module, args, out, key=index: outputs.setdefault(key, out)
        )
        for index, layer in enumerate(layers)
    ]
    try:
        with torch.no_grad():
            grid = adapter.grid(adapter.forward_features(probe), probe)
    finally:
        for handle in handles:
            handle.remove()
    return [
        layer for index, layer in enumerate(layers) if _same(outputs.get(index), transform, grid)
    ]


def _same(output: object, transform: Transform, grid: Tensor) -> bool:
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, Tensor):
        return False
    try:
        candidate = transform(output) if transform is not None else output
    except Exception:  # a transform written for another layout: not this grid
        return False
    if not isinstance(candidate, Tensor) or candidate.shape != grid.shape:
        return False
    scale = float(grid.abs().max()) or 1.0
    return bool(torch.allclose(candidate.float(), grid.float(), rtol=1e-4, atol=1e-5 * scale))


def _no_grid_message(
    owner: str, model: nn.Module, layers: list[nn.Module], expected: nn.Module, transform: Transform
) -> str:
    given = "; ".join(describe_layer(model, layer) for layer in layers)
    how = "after the reshape_transform given" if transform is not None else "as is"
    return (
        f"{owner}: none of the target layers ({given}) outputs the grid the classifier head "
        f"reads ({how}, compared on a probe input), so its map would not be the dense "
        f"readout. The grid is the output of {describe_layer(model, expected)}: pass "
        "target_layers=[that layer] or target_layers=None (the model adapter's layer)."
    )
