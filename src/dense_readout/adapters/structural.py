"""Structural adapter: any GAP classifier, split at its last global average pool.

The fallback for models no family adapter knows (registered with the lowest
priority). It reads the model's graph — ``torch.fx`` where the model traces,
forward hooks on its modules where it does not — finds the **last global spatial
average** (``AdaptiveAvgPool2d(1)``, ``F.adaptive_avg_pool2d(x, 1)``,
``x.mean((2, 3))``, a channels-last ``x.mean((1, 2))`` or a token mean
``x.mean(1)``) and splits the model into

* a **backbone**: input → the pool's input (the grid), and
* a **tail**: the pool and everything after it (flatten, dropout, linear, …),
  which must depend on nothing but the pooled vector.

The readout applies the tail to every cell at once, as a batch of ``B·h·w``
one-cell maps (the pool of a one-cell map is the cell itself). Exactness is
decided from the tail's structure (only affine maps) and confirmed numerically on
the first call. A conv classifier *before* the pool (SqueezeNet) is read out as the
map the pool averages. Models whose head reads a flattened multi-cell grid (VGG,
AlexNet) are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, fx, nn

from ..errors import UnsupportedModelError
from .base import affine_leaf, register_adapter, unsupported_message
from .pooled import PooledGridAdapter
from .structural_graph import GraphSplit, ProbeError, split_graph

__all__ = ["StructuralAdapter"]

#: relative tolerance of the first-call check that mean(Z) equals the logits
EXACT_TOLERANCE = 1e-4


@register_adapter
class StructuralAdapter(PooledGridAdapter):
    """Any classifier ending in a global average pool and a per-vector tail.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from dense_readout import DenseReadout
        >>> model = nn.Sequential(
        ...     nn.Conv2d(1, 8, 3, stride=4), nn.ReLU(),
        ...     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
        ... ).eval()
        >>> x = torch.randn(2, 1, 33, 33)  # a one-channel model: probed with 1 channel
        >>> result = DenseReadout(model)(x)
        >>> result.adapter, tuple(result.scores.shape), result.exact
        ('structural', (2, 4, 8, 8), True)
        >>> bool(torch.allclose(result.scores.mean(dim=(2, 3)), model(x), atol=1e-5))
        True
    """

    name = "structural"
    priority = -100  # after every family adapter

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.in_channels = _input_channels(model)
        self._numeric_gap: float | None = None  # relative gap if the first-call check failed
        self._checked = False
        self._target: nn.Module | None = None
        self._found: GraphSplit | None = None
        self._probe: Tensor | None = None
        self._probe_error = ""
        try:
            self._adopt(_analyse(model, self.probe_input()))
        except ProbeError as error:  # fixed-size model: analyse it on the first real input
            self._probe_error = str(error)

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, nn.Module)

    def probe_input(self, batch: int = 1) -> Tensor:
        """A probe at the model's own size where it says one (``image_size``), else 224 px."""
        if self._probe is not None:
            return self._probe.expand(batch, *self._probe.shape[1:]).clone()
        size = getattr(self.model, "image_size", None) or getattr(self.model, "img_size", None)
        probe = super().probe_input(batch)
        if isinstance(size, int) and size > 0:
            return probe.new_zeros(batch, self.in_channels, size, size)
        return probe

    # -- the split ------------------------------------------------------------------
    def _adopt(self, split: GraphSplit) -> None:
        self._found = split
        self.layout = "NCHW" if split.layout == "tokens" else split.layout
        self.spatial_dims = split.spatial_dims

    @property
    def _split(self) -> GraphSplit:
        if self._found is None:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} did not run on a probe input "
                f"({self._probe_error}), so the structural adapter analyses it on the first "
                "readout call: call DenseReadout(model)(x) before asking for exact, "
                "num_classes or the target layer."
            )
        return self._found

    def forward_features(self, inputs: Tensor) -> Tensor:
        if self._found is None:
            self._probe = inputs[:1].detach().clone()  # the model's size: probe with it
            try:
                self._adopt(_analyse(self.model, self._probe))
            except ProbeError as error:
                raise UnsupportedModelError(
                    unsupported_message(self.model, f"it does not run on this input ({error})")
                ) from error
        return self._split.backbone(inputs)

    def tail(self, native: Tensor) -> Tensor:
        return self._split.tail(native)

    def grid(self, native: Tensor, inputs: Tensor) -> Tensor:
        if self._split.layout == "tokens":
            height, width = _token_grid(native.shape[1], inputs.shape[-2:])
            return native.reshape(native.shape[0], height, width, -1).permute(0, 3, 1, 2)
        return super().grid(native, inputs)

    def head_cells(self, cells: Tensor) -> Tensor:
        if self._split.layout == "tokens":
            return self.tail(cells[:, None, :])  # one token per sequence: its mean is itself
        return super().head_cells(cells)

    def _probe_channels(self) -> int:
        return self._split.channels

    def head_modules(self) -> list[nn.Module]:
        return self._split.head_leaves

    def _lone_linear(self) -> nn.Linear | None:
        if not self._split.shape_ops_only:  # arithmetic in the tail: no Linear shortcut
            return None
        return super()._lone_linear()

    # -- exactness --------------------------------------------------------------------
    def head_is_affine(self) -> bool:
        """Affine leaf modules and no nonlinear functional op (``F.relu``…) in the tail."""
        return not self._split.nonaffine_ops and super().head_is_affine()

    def is_exact(self) -> bool:
        return self._numeric_gap is None and self.head_is_affine()

    def exactness_note(self) -> str:
        if self._numeric_gap is not None:
            return (
                "not exact: the layers after the pool look affine, but mean(Z) differed "
                f"from the logits by {self._numeric_gap:.3g} (relative) on the first batch"
            )
        if self._split.nonaffine_ops and all(affine_leaf(m) for m in self.head_modules()):
            ops = ", ".join(dict.fromkeys(self._split.nonaffine_ops))
            return (
                f"not exact: the tail after the pool applies {ops} per cell, so Z is the "
                "tail applied pointwise, not a decomposition of the logits"
            )
        return super().exactness_note()

    def check_decomposition(self, scores: Tensor, logits: Tensor) -> None:
        """First call only: a structurally exact split must give mean(Z) = logits."""
        if self._checked:
            return
        self._checked = True
        if not self.is_exact() or scores.numel() == 0:
            return
        cells = tuple(range(2, scores.dim()))
        gap = float((scores.detach().mean(dim=cells) - logits.detach()).abs().max())
        scale = max(1.0, float(logits.detach().abs().max()), float(scores.detach().abs().max()))
        if gap > EXACT_TOLERANCE * scale:
            self._numeric_gap = gap / scale

    @property
    def num_classes(self) -> int:
        return self._split.num_classes

    # -- Grad-CAM integration ---------------------------------------------------------
    def target_layer(self) -> nn.Module:
        """The last module whose output is the grid (found on a probe input)."""
        if self._target is None:
            self._target = _module_producing(self.model, self._split.backbone, self.probe_input())
        if self._target is None:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} computes its grid functionally, not in a module; "
                "pass target_layers= explicitly."
            )
        return self._target

    def reshape_transform(self) -> Callable[[Tensor], Tensor] | None:
        if self._split.layout == "NHWC":
            return lambda tensor: tensor.permute(0, 3, 1, 2)
        if self._split.layout == "tokens":
            return _tokens_to_square_grid
        return None


def _tokens_to_square_grid(tokens: Tensor) -> Tensor:
    height, width = _token_grid(tokens.shape[1], None)
    return tokens.reshape(tokens.shape[0], height, width, -1).permute(0, 3, 1, 2)


def _token_grid(tokens: int, input_size: Any) -> tuple[int, int]:
    """``(h, w)`` with ``h·w = tokens`` and the input's aspect ratio (square if unknown)."""
    if input_size is not None:
        height, width = int(input_size[0]), int(input_size[1])
        for stride in range(1, max(height, width) + 1):
            if (height // stride) * (width // stride) == tokens:
                return height // stride, width // stride
    side = int(tokens**0.5)
    if side * side == tokens:
        return side, side
    raise UnsupportedModelError(
        f"Cannot arrange the {tokens} tokens the model averages into a grid for input size "
        f"{input_size}; pass DenseReadout(model, features=..., head=...)."
    )


def _input_channels(model: nn.Module) -> int:
    """The model's input channels.

    Its first convolution's ``in_channels`` (3 if none), divided by the block area of a
    space-to-depth stem before it (TResNet).
    """
    block = 1
    for module in model.modules():
        size = getattr(module, "bs", getattr(module, "block_size", None))
        if type(module).__name__ == "SpaceToDepth" and isinstance(size, int):
            block = size
        if isinstance(module, nn.modules.conv._ConvNd):
            return max(1, int(module.in_channels) // block**2)
    return 3


def _analyse(model: nn.Module, probe: Tensor) -> GraphSplit:
    """Split ``model`` at its last global average pool (fx first, hooks otherwise)."""
    was_training = model.training
    model.eval()
    try:
        try:
            graph = fx.symbolic_trace(model)
        except Exception as error:  # untraceable control flow: fall back to hooks
            return _hooked_split(model, probe, f"{type(error).__name__}: {error}")
        return split_graph(model, graph, probe)
    finally:
        model.train(was_training)


def _hooked_split(model: nn.Module, probe: Tensor, trace_error: str) -> GraphSplit:
    """Split an untraceable model at its last ``AdaptiveAvgPool2d(1)`` module.

    The tail is the chain of leaf modules that ran after the pool (flattening before a
    ``Linear``); it is accepted only if that chain reproduces the model's output.
    """
    records: list[tuple[nn.Module, Tensor, Any]] = []
    handles = [
        module.register_forward_hook(lambda m, i, o: records.append((m, i[0], o)))
        for module in model.modules()
        if next(module.children(), None) is None
    ]
    try:
        with torch.no_grad():
            output = model(probe)
    except Exception as error:
        raise ProbeError(f"{type(error).__name__}: {error}") from error
    finally:
        for handle in handles:
            handle.remove()
    pools = [i for i, (m, _, _) in enumerate(records) if _global_pool_module(m)]
    why = f"it could not be traced with torch.fx ({trace_error[:160]})"
    if not pools or not isinstance(output, Tensor):
        raise UnsupportedModelError(
            unsupported_message(model, f"{why} and no AdaptiveAvgPool2d(1) module feeds its output")
        )
    pool, grid = records[pools[-1]][0], records[pools[-1]][1]
    chain = [pool, *(m for m, _, _ in records[pools[-1] + 1 :])]
    tail = _ModuleChain(chain)
    with torch.no_grad():
        replayed = tail(grid)
    if replayed.shape != output.shape or not torch.allclose(replayed, output, rtol=1e-4, atol=1e-5):
        raise UnsupportedModelError(
            unsupported_message(
                model,
                f"{why}, and the modules after its last AdaptiveAvgPool2d(1) do not reproduce "
                "its output as a chain (the pooling or head is functional)",
            )
        )
    return GraphSplit(
        spatial_dims=grid.dim() - 2,
        backbone=_PoolInput(model, pool),
        tail=tail,
        layout="NCHW",
        channels=int(grid.shape[1]),
        num_classes=int(output.shape[-1]),
        nonaffine_ops=[],
        shape_ops_only=True,
        head_leaves=chain,
    )


def _global_pool_module(module: nn.Module) -> bool:
    size = getattr(module, "output_size", None)
    one = size == 1 or (isinstance(size, (tuple, list)) and all(s == 1 for s in size))
    return isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)) and one


class _ModuleChain(nn.Module):
    """Leaf modules applied in sequence; flattens before a ``Linear`` given a map."""

    def __init__(self, modules: list[nn.Module]) -> None:
        super().__init__()
        self.steps = list(modules)  # not registered: the model owns them

    def forward(self, x: Tensor) -> Tensor:
        for module in self.steps:
            if isinstance(module, nn.Linear) and x.dim() > 2:
                x = torch.flatten(x, 1)
            x = module(x)
        return x


class _PoolInput:
    """Runs the model and returns what its pool module received (the grid)."""

    def __init__(self, model: nn.Module, pool: nn.Module) -> None:
        self.model, self.pool = model, pool

    def __call__(self, inputs: Tensor) -> Tensor:
        seen: list[Tensor] = []
        handle = self.pool.register_forward_hook(lambda m, i, o: seen.append(i[0]))
        try:
            self.model(inputs)
        finally:
            handle.remove()
        return seen[-1]


def _module_producing(
    model: nn.Module, backbone: Callable[[Tensor], Tensor], probe: Tensor
) -> nn.Module | None:
    """The last module (in execution order) whose output equals the backbone's grid."""
    outputs: list[tuple[nn.Module, Any]] = []
    handles = [
        module.register_forward_hook(lambda m, i, o: outputs.append((m, o)))
        for module in model.modules()
        if module is not model
    ]
    try:
        with torch.no_grad():
            model(probe)  # the model's own modules (the backbone may call only its leaves)
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        grid = backbone(probe)
    found = [
        module
        for module, output in outputs
        if isinstance(output, Tensor) and output.shape == grid.shape and torch.equal(output, grid)
    ]
    return found[-1] if found else None
