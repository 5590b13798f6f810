"""Model adapters: where a classifier's grid is, how it is laid out, and its pointwise head.

An adapter answers four questions about one model family:

* ``forward_features(x)``: the model's own pre-pooling output (native layout);
* ``grid(native, x)``: that output as a channels-first grid ``B×C×h×w``;
* ``image_logits(native)``: the model's own head on it (the image logits);
* ``readout(grid)``: the head applied to every cell, ``B×K×h×w``;

plus ``is_exact()`` (only affine maps after average pooling) and the layer and
reshape transform that Grad-CAM style methods hook.

Families are registered with :func:`register_adapter`; :func:`find_adapter` picks
the first registered adapter (highest priority first) whose ``matches`` is true.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..errors import DenseReadoutError, UnsupportedModelError
from ..registry import Registry

__all__ = [
    "ADAPTERS",
    "ModelAdapter",
    "affine_leaf",
    "executed_leaves",
    "find_adapter",
    "model_spatial_dims",
    "register_adapter",
    "registered_adapters",
    "unsupported_message",
]

ADAPTERS: Registry[type[ModelAdapter]] = Registry(
    "model adapter", hint="Register one with @dense_readout.adapters.base.register_adapter."
)


def register_adapter(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    """Class decorator: make ``cls`` available to :func:`find_adapter`.

    Example:
        >>> from dense_readout.adapters import ModelAdapter, register_adapter
        >>> @register_adapter
        ... class MyNetAdapter(ModelAdapter):
        ...     name = "mynet"
        ...     @classmethod
        ...     def matches(cls, model):
        ...         return type(model).__name__ == "MyNet"
        >>> "mynet" in registered_adapters()
        True
        >>> _ = ADAPTERS.unregister("mynet")  # examples and tests clean up after themselves
    """
    return ADAPTERS.add(cls)


def _lookup_order() -> list[type[ModelAdapter]]:
    # highest priority first; equal priorities keep registration order (sort is stable)
    return sorted((cls for _, cls in ADAPTERS.items()), key=lambda cls: -cls.priority)


def registered_adapters() -> list[str]:
    """Names of the registered adapters, in lookup order.

    Example:
        >>> from dense_readout.adapters import registered_adapters
        >>> names = registered_adapters()
        >>> "timm" in names, len(names) == len(set(names))
        (True, True)
    """
    return [adapter.name for adapter in _lookup_order()]


def find_adapter(model: nn.Module) -> ModelAdapter:
    """Return an adapter instance for ``model`` or raise :class:`UnsupportedModelError`.

    Adapters probe the model when they are built; a probe that fails with anything but
    our own errors becomes an :class:`UnsupportedModelError` naming the adapter and the
    failure (the original exception is its ``__cause__``).

    Example:
        >>> from torch import nn
        >>> class Odd(nn.Module):
        ...     def forward(self, x):
        ...         return [x]  # a list, not logits
        >>> try:
        ...     find_adapter(Odd())
        ... except UnsupportedModelError as error:
        ...     print("structural" in str(error) or "logits" in str(error))
        True
    """
    for adapter_class in _lookup_order():
        if adapter_class.matches(model):
            try:
                return adapter_class(model)
            except DenseReadoutError:
                raise
            except Exception as error:  # a foreign failure while probing: ours, with the cause
                reason = (
                    f"the {adapter_class.name!r} adapter could not analyse it "
                    f"({type(error).__name__}: {str(error)[:240]})"
                )
                raise UnsupportedModelError(unsupported_message(model, reason)) from error
    raise UnsupportedModelError(unsupported_message(model))


def unsupported_message(model: nn.Module, reason: str = "") -> str:
    """The refusal message for ``model``: what was found, ``reason``, and the two fixes.

    Example:
        >>> from torch import nn
        >>> text = unsupported_message(nn.Linear(2, 2), "not a GAP model")
        >>> "torch.nn.modules.linear.Linear: not a GAP model." in text and "features=" in text
        True
    """
    head = _describe_head(model)
    why = f": {reason}" if reason else ""
    return (
        f"No dense-readout adapter for {type(model).__module__}.{type(model).__name__}"
        f"{head}{why}. Its head cannot be applied per cell automatically. For a custom network "
        "pass DenseReadout(model, features=<input -> B×C×h×w grid>, head=<module after "
        "average pooling>), or register an adapter with "
        "@dense_readout.adapters.register_adapter (see docs/api.md)."
    )


def _describe_head(model: nn.Module) -> str:
    getter = getattr(model, "get_classifier", None)
    if callable(getter):
        try:
            head = getter()
        except Exception:
            return ""
        text = " ".join(repr(head).split())
        return f" (classifier found: {text[:200]})"
    return ""


# -- structural exactness -----------------------------------------------------------

_AFFINE_TYPES: tuple[type, ...] = (
    nn.Linear,
    nn.Identity,
    nn.Flatten,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.BatchNorm1d,  # affine in eval mode
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
)


def _extra_affine_types() -> tuple[type, ...]:
    try:  # timm's average-pool variants are affine too
        from timm.layers.adaptive_avgmax_pool import FastAdaptiveAvgPool
    except ImportError:  # pragma: no cover - timm missing or reorganised
        return ()
    return (FastAdaptiveAvgPool,)


def affine_leaf(module: nn.Module) -> bool:
    """True if ``module`` (a leaf) is an affine map of each feature vector.

    A 1×1 convolution counts (it is a Linear on each cell); average pooling counts
    (it commutes with affine maps); anything with a nonlinearity, a norm over the
    vector (LayerNorm) or a spatial kernel does not.

    Example:
        >>> from torch import nn
        >>> from dense_readout.adapters import affine_leaf
        >>> affine_leaf(nn.Linear(4, 2)), affine_leaf(nn.Conv2d(4, 2, 1)), affine_leaf(nn.Conv2d(4, 2, 3))
        (True, True, False)
        >>> affine_leaf(nn.GELU()), affine_leaf(nn.LayerNorm(4))
        (False, False)
    """
    if isinstance(module, _AFFINE_TYPES + _extra_affine_types()):
        return True
    if isinstance(module, (nn.Conv2d, nn.Conv3d)):  # a 1×1(×1) conv: a Linear per cell
        return all(k == 1 for k in module.kernel_size) and module.groups == 1
    return False


def executed_leaves(run: Callable[[], object], root: nn.Module) -> list[nn.Module]:
    """Leaf modules of ``root`` that execute, in order, while ``run()`` is called.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from dense_readout.adapters import executed_leaves
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2), nn.Softmax(dim=1))
        >>> leaves = executed_leaves(lambda: net[:3](torch.zeros(1, 4)), net)  # the softmax never runs
        >>> [type(m).__name__ for m in leaves]
        ['Linear', 'ReLU', 'Linear']
    """
    seen: list[nn.Module] = []
    handles = []
    for module in root.modules():
        if next(module.children(), None) is None:
            handles.append(module.register_forward_hook(lambda m, i, o: seen.append(m)))
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    unique: list[nn.Module] = []
    for module in seen:
        if all(module is not other for other in unique):
            unique.append(module)
    return unique


def _first_parameter(model: nn.Module) -> Tensor | None:
    return next(iter(model.parameters()), None)


def _input_channels(model: nn.Module, default: int, spatial_dims: int = 2) -> int:
    """``in_channels`` of the model's first convolution of its rank, else ``default``."""
    conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
    block = 1
    for module in model.modules():
        size = getattr(
            module, "bs", getattr(module, "block_size", None)
        )  # a space-to-depth stem (TResNet)
        if type(module).__name__ == "SpaceToDepth" and isinstance(size, int):
            block = size
        if isinstance(module, conv):
            return max(1, int(module.in_channels) // block**2)
    return default


def model_spatial_dims(model: nn.Module) -> int:
    """2 for image models, 3 for video/volume models (the first 2-D or 3-D conv decides).

    Example:
        >>> from torch import nn
        >>> model_spatial_dims(nn.Sequential(nn.Conv3d(1, 4, 3), nn.AdaptiveAvgPool3d(1)))
        3
        >>> model_spatial_dims(nn.Linear(2, 2))
        2
    """
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))), None)
    return 3 if isinstance(first, nn.Conv3d) else 2


class ModelAdapter:
    """Base class of model-family adapters. Subclass and :func:`register_adapter` it.

    Subclasses implement ``matches``, ``forward_features``, ``grid``,
    ``image_logits`` and ``head_cells`` (or ``readout``) and say whether the
    family is exact with ``is_exact``/``exactness_note``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.adapters import ModelAdapter
        >>> class TinyNet(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.body, self.fc = nn.Conv2d(3, 8, 4, stride=4), nn.Linear(8, 5)
        ...     def forward(self, x):
        ...         return self.fc(self.body(x).mean(dim=(2, 3)))
        >>> class TinyNetAdapter(ModelAdapter):
        ...     name = "tinynet"
        ...     def forward_features(self, inputs):
        ...         return self.model.body(inputs)
        ...     def grid(self, native, inputs):
        ...         return native  # already B×C×h×w
        ...     def image_logits(self, native):
        ...         return self.model.fc(native.mean(dim=(2, 3)))
        ...     def head_cells(self, cells):
        ...         return self.model.fc(cells)
        ...     def head_modules(self):
        ...         return [self.model.fc]
        >>> model = TinyNet().eval()
        >>> result = DenseReadout(model, adapter=TinyNetAdapter(model))(torch.randn(2, 3, 16, 16))
        >>> result.scores.shape, result.exact
        (torch.Size([2, 5, 4, 4]), True)
        >>> torch.allclose(result.scores.mean(dim=(2, 3)), result.logits, atol=1e-5)
        True
    """

    name: ClassVar[str] = "base"
    priority: ClassVar[int] = 0
    in_channels: int = 3
    #: grid rank: 2 for images (``h×w``), 3 for video clips and volumes (``t×h×w``)
    spatial_dims: int = 2

    def __init__(self, model: nn.Module) -> None:
        # Any: adapters read family-specific attributes (model.fc, model.head, …) that
        # nn.Module's stubs type as ``Tensor | Module``; the family check made them safe.
        self.model: Any = model
        if type(self).spatial_dims == 2:  # family adapters for video/volumes set 3 themselves
            self.spatial_dims = model_spatial_dims(model)
        # probes and input checks use the model's own input width (1-channel, RGBA models)
        self.in_channels = _input_channels(model, self.in_channels, self.spatial_dims)

    # -- lookup -----------------------------------------------------------------
    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return False

    # -- the readout ----------------------------------------------------------------
    def forward_features(self, inputs: Tensor) -> Tensor:
        raise NotImplementedError

    def grid(self, native: Tensor, inputs: Tensor) -> Tensor:
        """The pre-pooling grid ``B×C×h×w`` from the native features."""
        raise NotImplementedError

    def image_logits(self, native: Tensor) -> Tensor:
        """The model's own head on the native features: ``B×K``."""
        raise NotImplementedError

    def head_cells(self, cells: Tensor) -> Tensor:
        """The pointwise head on ``N×C`` feature vectors, returning ``N×K``."""
        raise NotImplementedError

    def readout(self, grid: Tensor) -> Tensor:
        """Apply the head to every cell of ``grid`` (``B×C×h×w`` or ``B×C×t×h×w``) → ``B×K×…``."""
        batch, channels, *cells_shape = grid.shape
        cells = grid.movedim(1, -1).reshape(-1, channels)
        scores = self.head_cells(cells)
        return scores.reshape(batch, *cells_shape, -1).movedim(-1, 1).contiguous()

    # -- structure ----------------------------------------------------------------
    def head_modules(self) -> Iterable[nn.Module]:
        """Leaf modules applied after pooling; used to decide exactness."""
        return ()

    def pools_by_mean(self) -> bool:
        """Whether the model aggregates cells by their mean."""
        return True

    def head_is_affine(self) -> bool:
        """True when the pointwise head is affine per cell (``Z = W h + b``).

        Example:
            >>> import torch
            >>> from torch import nn
            >>> from dense_readout.adapters import CustomAdapter
            >>> body = nn.Conv2d(3, 4, 1)
            >>> mlp = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2))
            >>> CustomAdapter(body, features=body, head=nn.Linear(4, 2)).head_is_affine()
            True
            >>> CustomAdapter(body, features=body, head=mlp).head_is_affine()
            False
        """
        return all(affine_leaf(m) for m in self.head_modules())

    def is_exact(self) -> bool:
        """True when mean(Z) equals the logits by construction (affine head after mean)."""
        return self.pools_by_mean() and self.head_is_affine()

    def exactness_note(self) -> str:
        if self.is_exact():
            return "exact: average pooling followed by affine layers only, so mean(Z) = logits"
        if not self.pools_by_mean():
            return "not exact: the model does not pool its grid by the mean"
        bad = [type(m).__name__ for m in self.head_modules() if not affine_leaf(m)]
        return (
            "not exact: the head after pooling is nonlinear per cell ("
            + ", ".join(dict.fromkeys(bad))
            + "), so Z is the head applied pointwise, not a decomposition of the logits"
        )

    def check_decomposition(self, scores: Tensor, logits: Tensor) -> None:
        """Hook called after each readout with ``Z`` and the logits; default: nothing.

        Called by :class:`~dense_readout.DenseReadout`. An adapter that decides exactness
        numerically updates ``is_exact`` here (the structural adapter does, on the first call).
        """

    @property
    def num_classes(self) -> int:
        count = getattr(self.model, "num_classes", None)
        if isinstance(count, int) and count > 0:
            return count
        raise UnsupportedModelError(
            f"Cannot tell the number of classes of {type(self.model).__name__}; "
            "set model.num_classes or use an adapter that knows it."
        )

    # -- Grad-CAM integration ----------------------------------------------------------
    def target_layer(self) -> nn.Module:
        """The module whose output is the grid (what CAM methods hook)."""
        raise UnsupportedModelError(
            f"Adapter {self.name!r} does not know the target layer; pass target_layers=."
        )

    def reshape_transform(self) -> Callable[[Tensor], Tensor] | None:
        """Maps the target layer's output to ``B×C×h×w`` (None if already so)."""
        return None

    def probe_input(self, batch: int = 1) -> Tensor:
        """A small valid input for structural probes (on the model's device and dtype).

        Its size is the one the model was built for where it says so (a timm
        ``patch_embed.img_size``, then ``pretrained_cfg['input_size']``), else 224 px;
        video/volume models get ``32×64×64`` (cheap, and deep enough for five halvings).
        """
        parameter = _first_parameter(self.model)
        if self.spatial_dims == 3:
            shape3 = (batch, self.in_channels, 32, 64, 64)
            if parameter is None:
                return torch.zeros(shape3)
            return torch.zeros(shape3, device=parameter.device, dtype=parameter.dtype)
        height = width = 224
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        input_size = cfg.get("input_size") if isinstance(cfg, dict) else None
        if input_size:
            height, width = int(input_size[-2]), int(input_size[-1])
        for embed in ("patch_embed", "stem"):  # ViTs / MLP-Mixers built for another size
            built_for = getattr(getattr(self.model, embed, None), "img_size", None)
            if isinstance(built_for, (tuple, list)) and len(built_for) == 2:
                height, width = int(built_for[0]), int(built_for[1])
                break
        shape = (batch, self.in_channels, height, width)
        if parameter is None:
            return torch.zeros(shape)
        return torch.zeros(shape, device=parameter.device, dtype=parameter.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__}, exact={self.is_exact()})"
