"""Adapters for torchvision's video classifiers: the readout over a ``T×H×W`` grid.

A GAP over ``T×H×W`` is the same theorem in one more dimension: the head applied to
every cell of the clip's grid gives ``Z`` (``B×K×t×h×w``) whose mean over the cells
is the clip's logits where the head after the pool is affine.

* ``r3d_18``, ``mc3_18``, ``r2plus1d_18`` (``VideoResNet``): ``layer4 → AdaptiveAvgPool3d
  → fc``: exact.
* ``swin3d_t/s/b``: ``features → norm`` (per token, channels last) ``→ avgpool → head``:
  exact.
* ``s3d``: ``features → AvgPool3d(2×7×7, stride 1) → 1×1×1 conv → mean``. The pool is a
  sliding window; on the clip size it was built for (16×224×224 frames, a 2×7×7 grid)
  it covers the whole grid once and the readout is exact; on other sizes the
  sliding averages weight border cells less, so it is flagged not exact.
* ``mvit_v1_b``/``mvit_v2_s``: classify a class token (``x[:, 0]``); the head is applied
  to the patch tokens put back on their ``t×h×w`` grid (the paper's [CLS] control:
  not exact).

MONAI 3-D classifiers (``DenseNet121``, ``ResNet``, ``EfficientNetBN`` with
``spatial_dims=3``) need no adapter: the structural adapter finds their
``AdaptiveAvgPool3d(1)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..errors import UnsupportedModelError
from .base import ModelAdapter, register_adapter
from .pooled import PooledGridAdapter


def _video_class(name: str) -> type | None:
    try:
        from torchvision.models import video
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return None
    return getattr(video, name, None)


class _VideoAdapter(ModelAdapter):
    """Matches one torchvision video class (``model_class``); grids are ``t×h×w``."""

    model_class = ""
    priority = 10
    spatial_dims = 3

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        model_type = _video_class(cls.model_class)
        return model_type is not None and isinstance(model, model_type)


@register_adapter
class TorchvisionVideoResNet(_VideoAdapter, PooledGridAdapter):
    """``r3d_18``, ``mc3_18``, ``r2plus1d_18``: ``layer4`` is the grid.

    Example:
        >>> import torch
        >>> from torchvision.models.video import r3d_18
        >>> from dense_readout import DenseReadout
        >>> result = DenseReadout(r3d_18(num_classes=4).eval())(torch.randn(1, 3, 8, 32, 32))
        >>> result.adapter, tuple(result.scores.shape), result.exact
        ('torchvision-video-resnet', (1, 4, 1, 2, 2), True)
    """

    name = "torchvision-video-resnet"
    model_class = "VideoResNet"

    def forward_features(self, x: Tensor) -> Tensor:
        m = self.model
        return m.layer4(m.layer3(m.layer2(m.layer1(m.stem(x)))))

    def tail(self, native: Tensor) -> Tensor:
        return self.model.fc(self.model.avgpool(native).flatten(1))

    def _probe_channels(self) -> int:
        return int(self.model.fc.in_features)

    @property
    def num_classes(self) -> int:
        return int(self.model.fc.out_features)

    def target_layer(self) -> nn.Module:
        return self.model.layer4


@register_adapter
class TorchvisionSwin3d(_VideoAdapter, PooledGridAdapter):
    """``swin3d_t/s/b``: the normalised tokens (``B×t×h×w×C``) are the grid."""

    name = "torchvision-swin3d"
    model_class = "SwinTransformer3d"
    layout = "NHWC"  # channels last, at any rank

    def forward_features(self, x: Tensor) -> Tensor:
        m = self.model
        return m.norm(m.features(m.pos_drop(m.patch_embed(x))))

    def tail(self, native: Tensor) -> Tensor:
        pooled = self.model.avgpool(native.permute(0, 4, 1, 2, 3))
        return self.model.head(torch.flatten(pooled, 1))

    def _probe_channels(self) -> int:
        return int(self.model.head.in_features)

    @property
    def num_classes(self) -> int:
        return int(self.model.head.out_features)

    def target_layer(self) -> nn.Module:
        return self.model.norm

    def reshape_transform(self) -> Callable[[Tensor], Tensor]:
        return _channels_last_to_first


def _channels_last_to_first(tensor: Tensor) -> Tensor:
    return tensor.movedim(-1, 1)


@register_adapter
class TorchvisionS3D(_VideoAdapter):
    """``s3d``: ``features`` is the grid, the 1×1×1 conv classifier the pointwise head."""

    name = "torchvision-s3d"
    model_class = "S3D"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self._last_cells: tuple[int, ...] | None = None

    def forward_features(self, x: Tensor) -> Tensor:
        return self.model.features(x)

    def grid(self, native: Tensor, inputs: Tensor) -> Tensor:
        return native

    def image_logits(self, native: Tensor) -> Tensor:
        return self.model.classifier(self.model.avgpool(native)).mean(dim=(2, 3, 4))

    def head_cells(self, cells: Tensor) -> Tensor:
        return self.model.classifier(cells[:, :, None, None, None]).flatten(1)

    def head_modules(self) -> list[nn.Module]:
        return [m for m in self.model.classifier.modules() if not list(m.children())]

    def _kernel(self) -> tuple[int, ...]:
        kernel = self.model.avgpool.kernel_size
        return tuple(kernel) if isinstance(kernel, (tuple, list)) else (kernel,) * 3

    def pools_by_mean(self) -> bool:
        """A mean only where the sliding window covers the grid exactly once."""
        return self._last_cells is None or self._last_cells == self._kernel()

    def exactness_note(self) -> str:
        if not self.pools_by_mean():
            return (
                f"not exact: S3D averages with a sliding {self._kernel()} window, which covers "
                f"this {self._last_cells} grid unevenly; on its built size (a grid of the "
                "window's size) mean(Z) = logits"
            )
        return super().exactness_note()

    def check_decomposition(self, scores: Tensor, logits: Tensor) -> None:
        self._last_cells = tuple(int(n) for n in scores.shape[2:])

    @property
    def num_classes(self) -> int:
        return int(self.model.classifier[-1].out_channels)

    def target_layer(self) -> nn.Module:
        return self.model.features


@register_adapter
class TorchvisionMViT(_VideoAdapter):
    """``mvit_v1_b``/``mvit_v2_s``: patch tokens on their ``t×h×w`` grid; [CLS] classified."""

    name = "torchvision-mvit"
    model_class = "MViT"

    def forward_features(self, x: Tensor) -> Tensor:
        m = self.model
        tokens = m.pos_encoding(m.conv_proj(x).flatten(2).transpose(1, 2))
        thw = (m.pos_encoding.temporal_size, *m.pos_encoding.spatial_size)
        for block in m.blocks:
            tokens, thw = block(tokens, thw)
        return m.norm(tokens)

    def grid(self, native: Tensor, inputs: Tensor) -> Tensor:
        return _tokens_to_grid(native, self.token_grid())

    def token_grid(self) -> tuple[int, int, int]:
        """``(t, h, w)`` of the last block's patch tokens, from the blocks' query pools."""
        m = self.model
        size = [m.pos_encoding.temporal_size, *m.pos_encoding.spatial_size]
        for block in m.blocks:
            pool = getattr(block.attn.pool_q, "pool", None)
            if pool is not None:
                kernel, stride, pad = (
                    _triple(pool.kernel_size),
                    _triple(pool.stride),
                    _triple(pool.padding),
                )
                size = [
                    (n + 2 * p - k) // s + 1
                    for n, k, s, p in zip(size, kernel, stride, pad, strict=True)
                ]
        return size[0], size[1], size[2]

    def image_logits(self, native: Tensor) -> Tensor:
        return self.model.head(native[:, 0])

    def head_cells(self, cells: Tensor) -> Tensor:
        return self.model.head(cells)

    def head_modules(self) -> list[nn.Module]:
        return [m for m in self.model.head.modules() if not list(m.children())]

    def pools_by_mean(self) -> bool:
        return False

    def exactness_note(self) -> str:
        return (
            "not exact: the model classifies its class token; Z applies the same head to "
            "the patch tokens (the paper's [CLS] control, A.4)"
        )

    @property
    def num_classes(self) -> int:
        return int(self.model.head[-1].out_features)

    def probe_input(self, batch: int = 1) -> Tensor:
        """MViT runs at its built clip size only (fixed position embedding)."""
        m = self.model
        size = (m.pos_encoding.temporal_size, *m.pos_encoding.spatial_size)
        stride = m.conv_proj.stride
        parameter = next(m.parameters())
        shape = (batch, 3, *(n * s for n, s in zip(size, stride, strict=True)))
        return torch.zeros(shape, device=parameter.device, dtype=parameter.dtype)

    def target_layer(self) -> nn.Module:
        return self.model.norm

    def reshape_transform(self) -> Callable[[Tensor], Tensor]:
        thw = self.token_grid()
        return lambda tokens: _tokens_to_grid(tokens, thw)


def _triple(value: int | tuple[int, ...]) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * 3


def _tokens_to_grid(tokens: Tensor, thw: tuple[int, int, int]) -> Tensor:
    """``B×(1+t·h·w)×C`` → ``B×C×t×h×w`` (class token dropped; MViT's t, h, w order)."""
    patches = tokens[:, 1:]
    if patches.shape[1] != thw[0] * thw[1] * thw[2]:
        raise UnsupportedModelError(
            f"MViT: {patches.shape[1]} patch tokens do not fill the {thw} grid its pools give; "
            "run it on the clip size it was built for."
        )
    return patches.reshape(patches.shape[0], *thw, -1).movedim(-1, 1)
