"""Adapters for timm models, built on timm's one interface.

``forward_features`` gives the grid (NCHW, NHWC for Swin-like models, tokens for
ViT-like ones) and ``forward_head`` the pooling and head, so one adapter covers
ResNet, EfficientNet(-Lite), MobileNetV3, RegNet, DenseNet, ConvNeXt, MaxViT,
Swin and most other timm CNNs. Token models (ViT, DeiT, BEiT, EVA) get their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError, UnsupportedModelError
from .base import register_adapter
from .pooled import PooledGridAdapter, TokenGridAdapter, _run_no_grad
from .sequence import one_token_sequences, pools_tokens_by_mean, reads_prefix_only, tokens_to_grid


def _is_timm(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.")


_TOKEN_CLASSES = ("VisionTransformer", "VisionTransformerDistilled", "Beit", "Eva")


@register_adapter
class TimmGridAdapter(PooledGridAdapter):
    """Any timm model with a grid, a mean pool and a per-vector head.

    ``forward_features`` is a 4-D map (or a token sequence of a grid,
    :mod:`~dense_readout.adapters.sequence`) and ``forward_head`` pools it by the mean and
    applies a per-vector head.

    Example:
        >>> import timm, torch
        >>> from dense_readout import DenseReadout
        >>> mixer = timm.create_model("mixer_s32_224", num_classes=3, img_size=64).eval()
        >>> result = DenseReadout(mixer)(torch.randn(1, 3, 64, 64))  # 4 tokens: a 2×2 grid
        >>> result.adapter, tuple(result.scores.shape), result.exact
        ('timm', (1, 3, 2, 2), True)
    """

    name = "timm"
    priority = 10

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.layout = "NHWC" if getattr(model, "output_fmt", "NCHW") == "NHWC" else "NCHW"
        self._target: nn.Module | None = None
        self._prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
        self._grid_hw: tuple[int, int] | None = None
        self._class_token = False  # set when the head reads only a class token (CaiT, ConViT)
        self._refuse_spatial_heads()

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return (
            _is_timm(model)
            and type(model).__name__ not in _TOKEN_CLASSES
            and callable(getattr(model, "forward_features", None))
            and callable(getattr(model, "forward_head", None))
        )

    def forward_features(self, inputs: Tensor) -> Tensor:
        with input_size_for(self.model, inputs):  # fixed-size models (Swin): a clear error
            return self.model.forward_features(inputs)

    def tail(self, native: Tensor) -> Tensor:
        return self.model.forward_head(native)

    # -- token sequences (Mixer, ResMLP, LeViT, Twins, EfficientFormer, MViTv2, Hiera) --
    def grid(self, native: Tensor, inputs: Tensor) -> Tensor:
        if self.layout != "tokens":
            return super().grid(native, inputs)
        grid = tokens_to_grid(native, self._prefix, (int(inputs.shape[-2]), int(inputs.shape[-1])))
        self._grid_hw = (int(grid.shape[-2]), int(grid.shape[-1]))
        return grid

    def head_cells(self, cells: Tensor) -> Tensor:
        if self.layout != "tokens":
            return super().head_cells(cells)
        if self._class_token:  # the cell in the class token's place: the head reads it there
            return self.tail(cells[:, None, :].expand(-1, self._prefix + 1, -1))
        return self.tail(one_token_sequences(cells, self._prefix))

    def pools_by_mean(self) -> bool:
        return not self._class_token

    def exactness_note(self) -> str:
        if self._class_token:
            return (
                "not exact: the model classifies its class token, which attended to the patch "
                "tokens inside forward_features; Z applies the same head to each patch token "
                "(the paper's [CLS] control, A.4)"
            )
        return super().exactness_note()

    def _one_cell_shape(self, channels: int) -> tuple[int, ...]:
        if self.layout == "tokens":
            return (-1, self._prefix + 1, channels)
        return super()._one_cell_shape(channels)

    def _tokens_to_grid(self, tokens: Tensor) -> Tensor:
        """CAM reshape: the grid of the last readout's size (square before any)."""
        known = self._grid_hw
        fits = known is not None and known[0] * known[1] == tokens.shape[1] - self._prefix
        grid = tokens[:, self._prefix :]
        if fits and known is not None:
            return grid.reshape(grid.shape[0], *known, -1).permute(0, 3, 1, 2)
        return tokens_to_grid(tokens, self._prefix, None)

    def _adopt_tokens(self, native: Tensor) -> None:
        """A token sequence: exact, a [CLS] control, or refused, by what the head reads.

        Exact if the head reads the patch tokens' mean, the control if it reads only a
        class token, refused otherwise.
        """
        if native.shape[1] - self._prefix < 2:  # e.g. PiT: the class tokens alone, no patches
            raise UnsupportedModelError(
                f"timm {type(self.model).__name__}: forward_features returns shape "
                f"{tuple(native.shape)}, not a spatial grid (no patch tokens beside "
                f"{self._prefix} prefix tokens), and its head ({_head_text(self.model)}) reads "
                "pooled or class tokens. Pass DenseReadout(model, features=..., head=...)."
            )
        generator = torch.Generator().manual_seed(0)
        tokens = torch.randn(native.shape, generator=generator).to(native)
        if reads_prefix_only(self.model.forward_head, tokens, self._prefix):
            self._class_token = True  # a [CLS] head: the control readout, said not exact
            self.layout = "tokens"
            return
        if not pools_tokens_by_mean(self.model.forward_head, tokens, self._prefix):
            raise UnsupportedModelError(
                f"timm {type(self.model).__name__}: forward_features returns a token sequence "
                f"{tuple(native.shape)}, but its head ({_head_text(self.model)}) does not read "
                "the patch tokens through their mean (a class token or another pooling), so "
                "the head has no per-token form. Pass DenseReadout(model, features=..., head=...)."
            )
        self.layout = "tokens"

    def _refuse_spatial_heads(self) -> None:
        """Refuse models whose head is not pointwise (token outputs, spatial kernels)."""
        native = self._probe_features()
        if not isinstance(native, Tensor):
            count = len(native) if isinstance(native, (list, tuple)) else 1
            raise UnsupportedModelError(
                f"timm {type(self.model).__name__}: forward_features returns "
                f"{type(native).__name__} of {count} (one class token per branch, as in "
                "CrossViT), not one spatial grid, and its head reads those tokens, so there "
                "are no cells to apply it to. Pass DenseReadout(model, features=..., head=...)."
            )
        if native.dim() == 3:
            self._adopt_tokens(native)
        elif native.dim() != 4:
            raise UnsupportedModelError(
                f"timm {type(self.model).__name__}: forward_features returns shape "
                f"{tuple(native.shape)}, not a spatial grid, and its head "
                f"({_head_text(self.model)}) reads pooled or class tokens. Pass "
                "DenseReadout(model, features=..., head=...) with a grid and a pointwise "
                "head, or register an adapter."
            )
        channels_last = self.layout in ("NHWC", "tokens")
        self._channels = int(native.shape[-1] if channels_last else native.shape[1])
        for module in self.head_modules():
            kernel = getattr(module, "kernel_size", None)
            if (
                isinstance(module, nn.modules.conv._ConvNd)
                and kernel is not None
                and max(kernel) > 1
            ):
                raise UnsupportedModelError(
                    f"timm {type(self.model).__name__}: its head contains {module!r}, a "
                    f"{tuple(kernel)} convolution over the grid ({_head_text(self.model)}), "
                    "so it cannot be applied per cell. Pass features=/head= (e.g. the "
                    "features before the pre-logits block and a Linear) or register an adapter."
                )

    def _probe_channels(self) -> int:
        return getattr(self, "_channels", None) or super()._probe_channels()

    def _probe_features(self) -> Tensor:
        """Run forward_features once on a probe input.

        Remembers which top-level child produced its output (the layer CAM methods hook).
        """
        outputs: list[tuple[nn.Module, object]] = []
        handles = [
            child.register_forward_hook(lambda m, i, o: outputs.append((m, o)))
            for child in self.model.children()
        ]
        try:
            native = _run_no_grad(self.forward_features, self.probe_input())
        finally:
            for handle in handles:
                handle.remove()
        matches = [module for module, output in outputs if output is native]
        self._target = matches[-1] if matches else None
        return native

    def target_layer(self) -> nn.Module:
        """The last top-level child whose output *is* ``forward_features``' output."""
        if self._target is None:
            raise UnsupportedModelError(
                f"Cannot find the layer producing {type(self.model).__name__}'s grid; "
                "pass target_layers= explicitly."
            )
        return self._target

    def reshape_transform(self) -> Callable[[Tensor], Tensor] | None:
        if self.layout == "NHWC":
            return _nhwc_to_nchw
        if self.layout == "tokens":
            return self._tokens_to_grid
        return None


def _nhwc_to_nchw(tensor: Tensor) -> Tensor:
    return tensor.permute(0, 3, 1, 2)


def _head_text(model: Any) -> str:  # any timm model (get_classifier)
    try:
        head = model.get_classifier()
    except Exception:
        return "unknown head"
    return " ".join(repr(head).split())[:160]


@register_adapter
class TimmTokenAdapter(TokenGridAdapter):
    """timm ViT / DeiT / BEiT / EVA: the head (``fc_norm → head``) on each patch token.

    Prefix tokens (class, distillation, registers) are dropped. Exact only with
    average pooling over patch tokens and an affine ``fc_norm``; a [CLS] model's
    readout is a control, not a decomposition (paper A.4).
    """

    name = "timm-vit"
    priority = 10

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return _is_timm(model) and type(model).__name__ in _TOKEN_CLASSES

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        if getattr(model, "attn_pool", None) is not None:
            raise UnsupportedModelError(
                f"timm {type(model).__name__} pools with attention (global_pool='map'); its "
                "head is not a per-token map. Recreate it with global_pool='avg' or 'token', "
                "or pass features=/head=."
            )

    def patch_size(self) -> tuple[int, int]:
        size = self.model.patch_embed.patch_size
        return (size, size) if isinstance(size, int) else tuple(size)

    def grid_size(self, tokens: int, input_size: tuple[int, int] | None = None) -> tuple[int, int]:
        grid = getattr(self.model.patch_embed, "grid_size", None)
        if input_size is None and grid is not None and grid[0] * grid[1] == tokens:
            return int(grid[0]), int(grid[1])
        return super().grid_size(tokens, input_size)

    def forward_features(self, inputs: Tensor) -> Tensor:
        """The token sequence, at the input's own size (see :func:`input_size_for`)."""
        with input_size_for(self.model, inputs):
            return self.model.forward_features(inputs)

    def image_logits(self, native: Tensor) -> Tensor:
        return self.model.forward_head(native)

    def _pointwise(self) -> list[nn.Module]:
        return [self.model.fc_norm, getattr(self.model, "head_drop", nn.Identity())]

    def head_cells(self, cells: Tensor) -> Tensor:
        for module in self._pointwise():
            cells = module(cells)
        head_dist = getattr(self.model, "head_dist", None)
        if head_dist is not None:  # DeiT-distilled averages its two heads at inference
            return (self.model.head(cells) + head_dist(cells)) / 2
        return self.model.head(cells)

    def head_modules(self) -> list[nn.Module]:
        modules = [*self._pointwise(), self.model.head]
        if getattr(self.model, "head_dist", None) is not None:
            modules.append(self.model.head_dist)
        return [
            leaf for module in modules for leaf in module.modules() if not list(leaf.children())
        ]

    def pools_by_mean(self) -> bool:
        return (
            getattr(self.model, "global_pool", "token") == "avg"
            and not getattr(self.model, "pool_include_prefix", False)
            and getattr(self.model, "head_dist", None) is None
        )

    def exactness_note(self) -> str:
        pool = getattr(self.model, "global_pool", "token")
        if pool == "token" or getattr(self.model, "head_dist", None) is not None:
            return (
                "not exact: the model classifies its [CLS]/distillation token; Z applies the "
                "same head to the patch tokens (the paper's [CLS] control, A.4)"
            )
        return super().exactness_note()

    def target_layer(self) -> nn.Module:
        norm = getattr(self.model, "norm", None)
        if norm is None:
            raise UnsupportedModelError("This token model has no final norm to hook.")
        return norm


# ViT classes whose forward resamples the position embedding when dynamic_img_size is set
_DYNAMIC_SIZE_CLASSES = ("VisionTransformer", "VisionTransformerDistilled")


@contextlib.contextmanager
def input_size_for(model: Any, inputs: Tensor) -> Iterator[None]:
    """Let a fixed-size timm ViT read ``inputs`` at their own size, for one forward.

    A ViT created for another size (``vit_small_patch14_reg4_dinov2`` is built for
    518 px) runs as if created with ``dynamic_img_size=True``: the position embedding
    is resampled to the input's patch grid, as timm does for dynamic models. The
    model is left as it was. Models that cannot (BEiT, EVA, sizes not divisible by the
    patch) raise :class:`InputError` naming the expected size and how to set it.

    Example:
        >>> import timm, torch
        >>> model = timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=3).eval()
        >>> with input_size_for(model, torch.zeros(1, 3, 96, 64)):
        ...     tokens = model.forward_features(torch.zeros(1, 3, 96, 64))
        >>> tokens.shape[1] - model.num_prefix_tokens, model.patch_embed.strict_img_size
        (24, True)
    """
    embed: Any = getattr(model, "patch_embed", None)
    expected = getattr(embed, "img_size", None)
    size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
    if expected is None or not getattr(embed, "strict_img_size", False) or tuple(expected) == size:
        yield
        return
    name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture", "<name>")
    patch = tuple(getattr(embed, "patch_size", (1, 1)))
    dynamic = hasattr(model, "dynamic_img_size")
    how = (
        f"Resize the input to {expected[0]}×{expected[1]}, or create the model for this size: "
        f"timm.create_model({name!r}, img_size={size[0] if size[0] == size[1] else size})"
        + (" or timm.create_model(..., dynamic_img_size=True)." if dynamic else ".")
    )
    if type(model).__name__ not in _DYNAMIC_SIZE_CLASSES or not dynamic:
        raise InputError(
            f"timm {type(model).__name__} expects {expected[0]}×{expected[1]} inputs, got "
            f"{size[0]}×{size[1]}, and cannot change its size on the fly. {how}"
        )
    if size[0] % patch[0] or size[1] % patch[1]:
        multiple = (size[0] // patch[0] * patch[0], size[1] // patch[1] * patch[1])
        raise InputError(
            f"timm {type(model).__name__}: the input {size[0]}×{size[1]} is not a multiple of "
            f"the patch size {patch[0]}×{patch[1]}; resize or crop it, e.g. to "
            f"{multiple[0]}×{multiple[1]}, or to the model's {expected[0]}×{expected[1]}."
        )
    saved = (model.dynamic_img_size, embed.strict_img_size, embed.flatten, embed.output_fmt)
    model.dynamic_img_size, embed.strict_img_size, embed.flatten = True, False, False
    embed.output_fmt = type(embed.output_fmt)("NHWC")
    try:
        yield
    finally:
        model.dynamic_img_size, embed.strict_img_size, embed.flatten, embed.output_fmt = saved
