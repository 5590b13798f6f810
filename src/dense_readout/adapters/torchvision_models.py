"""Adapters for torchvision classifiers.

torchvision models have no ``forward_features``; each entry below says, as data,
how its ``forward`` splits into a grid and a tail (pooling + head). Adding a
family is one small subclass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import register_adapter
from .pooled import PooledGridAdapter, TokenGridAdapter


def _torchvision_class(name: str):
    try:
        import torchvision.models as models
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return None
    return getattr(models, name, None)


class TorchvisionGridAdapter(PooledGridAdapter):
    """Base of the torchvision CNN adapters: subclasses set ``model_class``."""

    model_class: str = ""
    priority = 10

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        model_type = _torchvision_class(cls.model_class)
        return model_type is not None and isinstance(model, model_type)

    @property
    def num_classes(self) -> int:
        linears = [m for m in self.head_modules() if isinstance(m, nn.Linear)]
        return linears[-1].out_features


@register_adapter
class TorchvisionResNet(TorchvisionGridAdapter):
    """torchvision ResNet: the grid before ``avgpool``, ``fc`` on every cell."""

    name = "torchvision-resnet"
    model_class = "ResNet"

    def forward_features(self, x: Tensor) -> Tensor:
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        return m.layer4(m.layer3(m.layer2(m.layer1(x))))

    def tail(self, native: Tensor) -> Tensor:
        return self.model.fc(torch.flatten(self.model.avgpool(native), 1))

    def target_layer(self) -> nn.Module:
        return self.model.layer4


@register_adapter
class TorchvisionRegNet(TorchvisionGridAdapter):
    """torchvision RegNet: the grid of ``trunk_output``, ``fc`` on every cell."""

    name = "torchvision-regnet"
    model_class = "RegNet"

    def forward_features(self, x: Tensor) -> Tensor:
        return self.model.trunk_output(self.model.stem(x))

    def tail(self, native: Tensor) -> Tensor:
        return self.model.fc(self.model.avgpool(native).flatten(start_dim=1))

    def target_layer(self) -> nn.Module:
        return self.model.trunk_output


class _FeaturesAvgpoolClassifier(TorchvisionGridAdapter):
    """``features → avgpool → flatten → classifier`` (EfficientNet, MobileNet, ConvNeXt)."""

    def forward_features(self, x: Tensor) -> Tensor:
        return self.model.features(x)

    def tail(self, native: Tensor) -> Tensor:
        pooled = self.model.avgpool(native)
        # ConvNeXt's classifier starts with LayerNorm2d + Flatten and wants 4-D input.
        if self.model_class != "ConvNeXt":
            pooled = torch.flatten(pooled, 1)
        return self.model.classifier(pooled)

    def target_layer(self) -> nn.Module:
        return self.model.features


@register_adapter
class TorchvisionEfficientNet(_FeaturesAvgpoolClassifier):
    """torchvision EfficientNet: ``features``, then ``classifier`` (dropout, linear) per cell."""

    name = "torchvision-efficientnet"
    model_class = "EfficientNet"


@register_adapter
class TorchvisionMobileNetV2(_FeaturesAvgpoolClassifier):
    """torchvision MobileNetV2: ``features`` (ReLU6 at the end), then ``classifier`` per cell."""

    name = "torchvision-mobilenet-v2"
    model_class = "MobileNetV2"

    def tail(self, native: Tensor) -> Tensor:  # MobileNetV2 pools functionally
        return self.model.classifier(torch.flatten(F.adaptive_avg_pool2d(native, (1, 1)), 1))


@register_adapter
class TorchvisionMobileNetV3(_FeaturesAvgpoolClassifier):
    """torchvision MobileNetV3: ``features``, then the MLP ``classifier`` per cell (not exact)."""

    name = "torchvision-mobilenet-v3"
    model_class = "MobileNetV3"


@register_adapter
class TorchvisionConvNeXt(_FeaturesAvgpoolClassifier):
    """torchvision ConvNeXt: ``features``, then LayerNorm and linear ``classifier`` per cell."""

    name = "torchvision-convnext"
    model_class = "ConvNeXt"


@register_adapter
class TorchvisionDenseNet(TorchvisionGridAdapter):
    """torchvision DenseNet: ``features`` with the final ReLU, ``classifier`` on every cell."""

    name = "torchvision-densenet"
    model_class = "DenseNet"

    def forward_features(self, x: Tensor) -> Tensor:
        # DenseNet applies its last ReLU functionally, before pooling: part of the grid.
        return F.relu(self.model.features(x))

    def tail(self, native: Tensor) -> Tensor:
        return self.model.classifier(torch.flatten(F.adaptive_avg_pool2d(native, (1, 1)), 1))

    def target_layer(self) -> nn.Module:
        return self.model.features


@register_adapter
class TorchvisionSwin(TorchvisionGridAdapter):
    """Swin: ``features`` (NHWC) → ``norm`` (per token) → ``permute`` gives NCHW."""

    name = "torchvision-swin"
    model_class = "SwinTransformer"

    def forward_features(self, x: Tensor) -> Tensor:
        return self.model.permute(self.model.norm(self.model.features(x)))

    def tail(self, native: Tensor) -> Tensor:
        return self.model.head(self.model.flatten(self.model.avgpool(native)))

    def target_layer(self) -> nn.Module:
        return self.model.permute


@register_adapter
class TorchvisionViT(TokenGridAdapter):
    """torchvision ViT: classifies the class token; Z reads the patch tokens (not exact)."""

    name = "torchvision-vit"
    priority = 10

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        model_type = _torchvision_class("VisionTransformer")
        return model_type is not None and isinstance(model, model_type)

    def num_prefix_tokens(self) -> int:
        return 1

    def patch_size(self) -> tuple[int, int]:
        return self.model.patch_size, self.model.patch_size

    def forward_features(self, x: Tensor) -> Tensor:
        tokens = self.model._process_input(x)
        cls_token = self.model.class_token.expand(tokens.shape[0], -1, -1)
        return self.model.encoder(torch.cat([cls_token, tokens], dim=1))

    def image_logits(self, native: Tensor) -> Tensor:
        return self.model.heads(native[:, 0])

    def head_cells(self, cells: Tensor) -> Tensor:
        return self.model.heads(cells)

    def head_modules(self) -> list[nn.Module]:
        return [m for m in self.model.heads.modules() if not list(m.children())]

    def pools_by_mean(self) -> bool:
        return False

    def exactness_note(self) -> str:
        return (
            "not exact: the model classifies its [CLS] token; Z applies the same head to "
            "the patch tokens (the paper's [CLS] control, A.4)"
        )

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    def target_layer(self) -> nn.Module:
        return self.model.encoder
