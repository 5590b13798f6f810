"""Hugging Face classifiers that pool their last map with a functional mean.

* MobileViT: ``last_hidden_state`` (``B×C×h×w``) → mean over ``h, w`` (the base
  model's ``pooler_output``) → dropout → Linear: exact.
* PVTv2: ``last_hidden_state`` (``B×C×h×w``) → tokens → mean → Linear: exact.

(FocalNet is read like Swin and Data2Vec-Vision like BEiT, in :mod:`.hf_models`.)

Example:
    >>> import torch
    >>> from transformers import PvtV2Config, PvtV2ForImageClassification
    >>> from dense_readout import DenseReadout
    >>> config = PvtV2Config(num_labels=3, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
    ...                      num_attention_heads=[1, 1, 1, 1], mlp_ratios=[2, 2, 2, 2])
    >>> model = PvtV2ForImageClassification(config).eval()
    >>> result = DenseReadout(model)(torch.randn(1, 3, 64, 64))
    >>> result.adapter, tuple(result.scores.shape), result.exact
    ('hf-pvt-v2', (1, 3, 2, 2), True)
"""

from __future__ import annotations

from torch import Tensor, nn

from .base import register_adapter
from .hf_models import _HFPooledAdapter, _leaves

__all__ = ["HFMobileViTAdapter", "HFPvtV2Adapter"]


class _HFMeanAdapter(_HFPooledAdapter):
    """A ``B×C×h×w`` map whose ``forward`` averages it with ``mean`` (no pooler module)."""

    def pools_by_mean(self) -> bool:
        return True

    def head_modules(self) -> list[nn.Module]:
        return _leaves(getattr(self.model, "dropout", None), self.model.classifier)


@register_adapter
class HFMobileViTAdapter(_HFMeanAdapter):
    """MobileViT (v1): the expanded last map, mean, dropout, Linear."""

    name = "hf-mobilevit"
    classes = ("MobileViTForImageClassification",)

    def tail(self, native: Tensor) -> Tensor:
        return self.model.classifier(self.model.dropout(native.mean(dim=(-2, -1))))


@register_adapter
class HFPvtV2Adapter(_HFMeanAdapter):
    """PVTv2: the last stage's map as tokens, their mean, Linear."""

    name = "hf-pvt-v2"
    classes = ("PvtV2ForImageClassification",)

    def tail(self, native: Tensor) -> Tensor:
        return self.model.classifier(native.flatten(2).mean(dim=-1))
