"""Adapters for Hugging Face ``transformers`` image classifiers.

Each ``*ForImageClassification`` model is its base model (``model.base_model``,
whose ``last_hidden_state`` is the grid or the token sequence) plus a few lines
of pooling and head in its ``forward``; the adapters below restate those lines
per family. Matching is by class name on classes from ``transformers.*``, so
``transformers`` is never imported here.

* CNNs (ResNet, RegNet, EfficientNet, MobileNetV2, ConvNeXt/V2): the pooler's input.
* ViT, DeiT (incl. distilled), BEiT: the patch tokens, prefix tokens dropped.
* DINOv2 (and with registers): its head is linear on ``[CLS ‖ mean of patches]``,
  so each cell is ``[CLS ‖ patch]`` (registers dropped).
* Swin/Swinv2: the final token sequence reshaped to ``h×w``.
* LeViT is refused, as timm's is.

Models return an ``ImageClassifierOutput``; :func:`logits_only` (from
:mod:`dense_readout._outputs`) wraps one so that it returns the logits tensor
(``DenseReadoutAttribution``, ``DenseReadoutCAM`` and ``compare`` do this
themselves; plain Captum / pytorch-grad-cam classes need it).

Example:
    >>> from transformers import ResNetConfig, ResNetForImageClassification
    >>> import torch
    >>> from dense_readout import DenseReadout
    >>> config = ResNetConfig(num_labels=4, embedding_size=8, hidden_sizes=[8, 16],
    ...                       depths=[1, 1], layer_type="basic", image_size=64)
    >>> model = ResNetForImageClassification(config).eval()
    >>> result = DenseReadout(model)(torch.randn(1, 3, 64, 64))
    >>> tuple(result.scores.shape), result.exact, result.adapter
    ((1, 4, 8, 8), True, 'hf-resnet')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .._outputs import LogitsOnly, logits_only
from ..errors import UnsupportedModelError
from .base import ModelAdapter, register_adapter
from .pooled import PooledGridAdapter, TokenGridAdapter

__all__ = ["LogitsOnly", "logits_only"]

HF_PRIORITY = 20  # above the timm/torchvision adapters (10) and any structural fallback


def _hf_class(model: nn.Module, names: Iterable[str]) -> bool:
    """True if ``model`` is (a subclass of) a ``transformers`` class named in ``names``."""
    wanted = set(names)
    return any(
        klass.__module__.startswith("transformers.") and klass.__name__ in wanted
        for klass in type(model).__mro__
    )


def _leaves(*modules: nn.Module | None) -> list[nn.Module]:
    return [
        leaf
        for module in modules
        if module is not None
        for leaf in module.modules()
        if next(leaf.children(), None) is None
    ]


def _last_hidden_state(output: Any) -> Tensor:
    state = getattr(output, "last_hidden_state", None)
    return state if isinstance(state, Tensor) else output[0]


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


class _HFAdapter(ModelAdapter):
    """What every ``transformers`` family shares: config, base model, probe, CAM layer."""

    classes: ClassVar[tuple[str, ...]] = ()
    priority = HF_PRIORITY

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.in_channels = int(getattr(model.config, "num_channels", 3) or 3)
        self._target: nn.Module | None = None

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return _hf_class(model, cls.classes)

    @property
    def base(self) -> Any:
        return self.model.base_model

    def forward_features(self, inputs: Tensor) -> Tensor:
        return _last_hidden_state(self.base(inputs))

    @property
    def num_classes(self) -> int:
        return int(self.model.config.num_labels)

    def input_size(self) -> tuple[int, int]:
        size = getattr(self.model.config, "image_size", None)
        return _pair(size) if size else (224, 224)

    def probe_input(self, batch: int = 1) -> Tensor:
        parameter = next(iter(self.model.parameters()))
        return parameter.new_zeros(batch, self.in_channels, *self.input_size())

    def target_layer(self) -> nn.Module:
        """The last module (in completion order) whose output *is* ``last_hidden_state``."""
        if self._target is None:
            outputs: list[tuple[nn.Module, object]] = []
            handles = [
                module.register_forward_hook(lambda m, i, o: outputs.append((m, o)))
                for module in self.base.modules()
            ]
            try:
                with torch.no_grad():
                    native = _last_hidden_state(self.base(self.probe_input()))
            finally:
                for handle in handles:
                    handle.remove()
            found = [module for module, output in outputs if output is native]
            if not found:
                raise UnsupportedModelError(
                    f"Cannot find the layer producing {type(self.model).__name__}'s grid; "
                    "pass target_layers= (or layer=) explicitly."
                )
            self._target = found[-1]
        return self._target


# -- CNNs: the pooler's input is the grid ---------------------------------------------------
class _HFPooledAdapter(_HFAdapter, PooledGridAdapter):
    """A ``B×C×h×w`` ``last_hidden_state``; subclasses restate pooling + head in ``tail``."""

    def pooler(self) -> nn.Module:
        return self.base.pooler

    def pools_by_mean(self) -> bool:
        return isinstance(self.pooler(), (nn.AdaptiveAvgPool2d, nn.AvgPool2d))


@register_adapter
class HFResNetAdapter(_HFPooledAdapter):
    """ResNet, RegNet: ``pooler`` (AdaptiveAvgPool2d) → ``classifier`` (Flatten, Linear)."""

    name = "hf-resnet"
    classes = ("ResNetForImageClassification", "RegNetForImageClassification")

    def tail(self, native: Tensor) -> Tensor:
        return self.model.classifier(self.pooler()(native))

    def head_modules(self) -> list[nn.Module]:
        return _leaves(self.model.classifier)


@register_adapter
class HFEfficientNetAdapter(_HFPooledAdapter):
    """Hugging Face EfficientNet: pooler, dropout, Linear.

    ``pooler`` is AvgPool2d, or MaxPool2d for ``pooling_type='max'``.
    """

    name = "hf-efficientnet"
    classes = ("EfficientNetForImageClassification",)

    def tail(self, native: Tensor) -> Tensor:
        pooled = self.pooler()(native)
        return self.model.classifier(self.model.dropout(pooled.reshape(pooled.shape[:2])))

    def head_modules(self) -> list[nn.Module]:
        return _leaves(self.model.dropout, self.model.classifier)


@register_adapter
class HFMobileNetV2Adapter(_HFPooledAdapter):
    """MobileNetV2: ``conv_1x1`` output → AdaptiveAvgPool2d → dropout → Linear."""

    name = "hf-mobilenet-v2"
    classes = ("MobileNetV2ForImageClassification",)

    def tail(self, native: Tensor) -> Tensor:
        pooled = torch.flatten(self.pooler()(native), start_dim=1)
        return self.model.classifier(self.model.dropout(pooled))

    def head_modules(self) -> list[nn.Module]:
        return _leaves(self.model.dropout, self.model.classifier)


@register_adapter
class HFConvNextAdapter(_HFPooledAdapter):
    """ConvNeXt, ConvNeXtV2: mean over the grid → LayerNorm → Linear (not exact)."""

    name = "hf-convnext"
    classes = ("ConvNextForImageClassification", "ConvNextV2ForImageClassification")

    def tail(self, native: Tensor) -> Tensor:
        return self.model.classifier(self.base.layernorm(native.mean([-2, -1])))

    def head_modules(self) -> list[nn.Module]:
        return _leaves(self.base.layernorm, self.model.classifier)

    def pools_by_mean(self) -> bool:
        return True


@register_adapter
class HFSwinAdapter(_HFPooledAdapter):
    """Swin, Swinv2.

    Final ``layernorm`` tokens (per token) as an NHWC grid → AdaptiveAvgPool1d → Linear
    (exact).
    """

    name = "hf-swin"
    # FocalNet has Swin's layout: patch tokens halved per stage, layernorm, AdaptiveAvgPool1d
    classes = (
        "SwinForImageClassification",
        "Swinv2ForImageClassification",
        "FocalNetForImageClassification",
    )
    layout = "NHWC"

    def forward_features(self, inputs: Tensor) -> Tensor:
        tokens = _last_hidden_state(self.base(inputs))
        height, width = self.grid_size(tokens.shape[1], (inputs.shape[-2], inputs.shape[-1]))
        return tokens.reshape(tokens.shape[0], height, width, tokens.shape[-1])

    def tail(self, native: Tensor) -> Tensor:
        tokens = native.flatten(1, 2).transpose(1, 2)  # B×C×N, as the model pools it
        return self.model.classifier(torch.flatten(self.pooler()(tokens), 1))

    def head_modules(self) -> list[nn.Module]:
        return _leaves(self.model.classifier)

    def pools_by_mean(self) -> bool:
        return isinstance(self.pooler(), nn.AdaptiveAvgPool1d)

    def grid_size(self, tokens: int, input_size: tuple[int, int] | None = None) -> tuple[int, int]:
        """Patch grid (inputs padded to the patch size), halved (rounding up) per merge."""
        height, width = input_size if input_size is not None else self.input_size()
        patch_h, patch_w = _pair(self.model.config.patch_size)
        height, width = math.ceil(height / patch_h), math.ceil(width / patch_w)
        for _ in range(len(self.model.config.depths) - 1):
            height, width = math.ceil(height / 2), math.ceil(width / 2)
        if height * width == tokens:
            return int(height), int(width)
        side = math.isqrt(tokens)
        if side * side == tokens:
            return side, side
        raise UnsupportedModelError(
            f"Cannot arrange {tokens} Swin tokens into a grid for input size {input_size}; "
            "pass features=/head= for this model."
        )

    def reshape_transform(self) -> Callable[[Tensor], Tensor]:
        def tokens_to_grid(tokens: Tensor) -> Tensor:
            height, width = self.grid_size(tokens.shape[1])
            return tokens.reshape(tokens.shape[0], height, width, -1).permute(0, 3, 1, 2)

        return tokens_to_grid


# -- ViT-likes: patch tokens ------------------------------------------------------------------
_CLS_NOTE = (
    "not exact: the model classifies its [CLS]{} token; Z applies the same head to the "
    "patch tokens (the paper's [CLS] control, A.4)"
)


class _HFTokenAdapter(_HFAdapter, TokenGridAdapter):
    """Patch tokens of ``last_hidden_state`` (after the final norm) as the grid."""

    def patch_size(self) -> tuple[int, int]:
        return _pair(self.model.config.patch_size)

    def head_modules(self) -> list[nn.Module]:
        return _leaves(self.model.classifier)

    def head_cells(self, cells: Tensor) -> Tensor:
        return self.model.classifier(cells)

    def pools_by_mean(self) -> bool:
        return False

    def exactness_note(self) -> str:
        return _CLS_NOTE.format("")


@register_adapter
class HFViTAdapter(_HFTokenAdapter):
    """ViT and DeiT (one classifier on the [CLS] token; DeiT also has a distillation token)."""

    name = "hf-vit"
    classes = ("ViTForImageClassification", "DeiTForImageClassification")

    def num_prefix_tokens(self) -> int:
        return 1 + int(hasattr(self.base.embeddings, "distillation_token"))

    def image_logits(self, native: Tensor) -> Tensor:
        return self.model.classifier(native[:, 0])


@register_adapter
class HFDeiTDistilledAdapter(_HFTokenAdapter):
    """DeiT with teacher: mean of the [CLS] head and the distillation-token head."""

    name = "hf-deit-distilled"
    classes = ("DeiTForImageClassificationWithTeacher",)

    def num_prefix_tokens(self) -> int:
        return 2

    def image_logits(self, native: Tensor) -> Tensor:
        cls_logits = self.model.cls_classifier(native[:, 0])
        return (cls_logits + self.model.distillation_classifier(native[:, 1])) / 2

    def head_cells(self, cells: Tensor) -> Tensor:
        return (self.model.cls_classifier(cells) + self.model.distillation_classifier(cells)) / 2

    def head_modules(self) -> list[nn.Module]:
        return _leaves(self.model.cls_classifier, self.model.distillation_classifier)

    def exactness_note(self) -> str:
        return _CLS_NOTE.format("/distillation")


@register_adapter
class HFBeitAdapter(_HFTokenAdapter):
    """BEiT.

    Mean of the patch tokens → LayerNorm → Linear (``use_mean_pooling``, not exact), or the
    [CLS] token → Linear.
    """

    name = "hf-beit"
    classes = ("BeitForImageClassification", "Data2VecVisionForImageClassification")  # same head

    def num_prefix_tokens(self) -> int:
        return 1

    def _norm(self) -> nn.Module | None:
        return getattr(self.base.pooler, "layernorm", None)

    def image_logits(self, native: Tensor) -> Tensor:
        return self.model.classifier(self.base.pooler(native))

    def head_cells(self, cells: Tensor) -> Tensor:
        norm = self._norm()
        return self.model.classifier(norm(cells) if norm is not None else cells)

    def head_modules(self) -> list[nn.Module]:
        return _leaves(self._norm(), self.model.classifier)

    def pools_by_mean(self) -> bool:
        return self._norm() is not None

    def exactness_note(self) -> str:
        return (
            ModelAdapter.exactness_note(self) if self.pools_by_mean() else super().exactness_note()
        )


@register_adapter
class HFDinov2Adapter(_HFTokenAdapter):
    """DINOv2 (with registers too): Linear on ``[CLS ‖ mean of patch tokens]``.

    The cell ``(u, v)`` is ``[CLS ‖ patch_uv]`` (``2C`` channels), so the mean of
    the grid is exactly the head's input and ``mean(Z) = logits``; the [CLS] half
    adds the same amount to every cell. Register tokens are dropped.
    """

    name = "hf-dinov2"
    classes = (
        "Dinov2ForImageClassification",
        "Dinov2WithRegistersForImageClassification",
    )

    def num_prefix_tokens(self) -> int:
        return 1 + int(getattr(self.model.config, "num_register_tokens", 0) or 0)

    def _cls_and_patches(self, tokens: Tensor, input_size: tuple[int, int] | None) -> Tensor:
        patches = tokens[:, self.num_prefix_tokens() :]
        height, width = self.grid_size(patches.shape[1], input_size)
        cls_token = tokens[:, :1].expand(-1, patches.shape[1], -1)
        cells = torch.cat([cls_token, patches], dim=2)
        return cells.reshape(tokens.shape[0], height, width, -1).permute(0, 3, 1, 2)

    def grid(self, native: Tensor, inputs: Tensor) -> Tensor:
        return self._cls_and_patches(native, (int(inputs.shape[-2]), int(inputs.shape[-1])))

    def image_logits(self, native: Tensor) -> Tensor:
        patches = native[:, self.num_prefix_tokens() :]
        return self.model.classifier(torch.cat([native[:, 0], patches.mean(dim=1)], dim=1))

    def pools_by_mean(self) -> bool:
        return True

    def exactness_note(self) -> str:
        if not self.is_exact():
            return ModelAdapter.exactness_note(self)
        return (
            "exact: the head is linear on [CLS ‖ mean of patch tokens]; every cell is "
            "[CLS ‖ patch], so mean(Z) = logits, but the [CLS] half is the same in every "
            "cell (global evidence, not localised)"
        )

    def reshape_transform(self) -> Callable[[Tensor], Tensor]:
        return lambda tokens: self._cls_and_patches(tokens, None)


@register_adapter
class HFLevitRefusal(_HFAdapter):
    """LeViT (transformers) is refused, with the reason and the way out (timm's is read out)."""

    name = "hf-levit"
    classes = ("LevitForImageClassification", "LevitForImageClassificationWithTeacher")

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        raise UnsupportedModelError(
            f"{type(model).__name__} (transformers LeViT) is not supported (timm's LeViT is, "
            "by the timm adapter): its last stage is a short token sequence made by attention "
            "subsampling (4×4 tokens at 224 px) and its classifier is a BatchNorm1d + Linear "
            "on the token mean (two such heads averaged in the distilled model), with no "
            "grid layer to hook. Pass DenseReadout(model, features=<input -> B×C×h×w "
            "tokens grid>, head=model.classifier) if you want that coarse readout."
        )


__all__ += [
    "HFBeitAdapter",
    "HFConvNextAdapter",
    "HFDeiTDistilledAdapter",
    "HFDinov2Adapter",
    "HFEfficientNetAdapter",
    "HFLevitRefusal",
    "HFMobileNetV2Adapter",
    "HFResNetAdapter",
    "HFSwinAdapter",
    "HFViTAdapter",
]
