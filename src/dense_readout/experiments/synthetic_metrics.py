"""Validation metrics of the synthetic experiment: Top-1 and multi-class Loc. (paper 4.4).

Names follow the ILSVRC benchmark suite (:mod:`dense_readout.evaluation.metrics`),
so one name has one meaning across the package:

* ``loc``: the fraction of an image's foreground cells whose top-1 class is
  correct, **averaged per image** (images without a foreground cell are skipped);
* ``loc_cell_pooled``: the same fraction **pooled over all foreground cells** of
  all images (the headline number of the synthetic runs, and what selects
  ``best.pt``).

Here a foreground cell is correct if its top-1 class is *any* class present in
the cell (scenes hold several classes; the benchmark's single-class boxes are the
special case of one class per cell).

Results written before this naming used ``loc`` for the cell-pooled number and
``loc_per_image`` for the per-image mean; :func:`upgrade_history` renames such
keys (checkpoints and ``history.json`` files of older runs are read through it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .synthetic_data import SceneSource, normalize_images

__all__ = [
    "SyntheticMetrics",
    "evaluate",
    "image_outcomes",
    "upgrade_history",
    "upgrade_metric_keys",
]


def image_outcomes(
    logits: Tensor, labels: Tensor, targets: Tensor, presence: Tensor
) -> dict[str, Tensor]:
    """Per-image outcomes of one batch, the raw material of every synthetic metric.

    ``logits`` B×K, ``labels`` B×h×w (the readout's top-1 class per cell), ``targets``
    B, ``presence`` B×K×h×w (classes in each cell). Returns CPU tensors of length B:
    ``top1`` (prediction = sampled target), ``top1_visible`` (prediction is a class
    present on the grid), ``fg_cells`` (foreground cells) and ``fg_hits`` (those whose
    top-1 class is present in the cell).

    Example:
        >>> import torch
        >>> from dense_readout.experiments.synthetic_metrics import image_outcomes
        >>> presence = torch.zeros(1, 3, 1, 2, dtype=torch.bool)
        >>> presence[0, 1, 0, 0] = presence[0, 2, 0, 1] = True
        >>> out = image_outcomes(torch.tensor([[0., 1., 0.]]), torch.tensor([[[1, 1]]]),
        ...                      torch.tensor([2]), presence)
        >>> [out[k].tolist() for k in ("top1", "top1_visible", "fg_cells", "fg_hits")]
        [[False], [True], [2], [1]]
    """
    predicted = logits.argmax(dim=1).cpu()
    presence = presence.cpu().bool()
    labels = labels.cpu()
    visible = presence.any(dim=(2, 3))  # B×K classes present anywhere on the grid
    foreground = presence.any(dim=1)  # B×h×w
    correct = presence.gather(1, labels.unsqueeze(1)).squeeze(1) & foreground
    return {
        "top1": predicted == targets.cpu(),
        "top1_visible": visible.gather(1, predicted.view(-1, 1)).squeeze(1),
        "fg_cells": foreground.flatten(1).sum(1),
        "fg_hits": correct.flatten(1).sum(1),
    }


@dataclass
class SyntheticMetrics:
    """Streaming Top-1 (vs the sampled target) and Loc. (FG cell top-1 ∈ classes in the cell).

    ``update(logits B×K, labels B×h×w, targets B, presence B×K×h×w)``; :meth:`summary`
    returns percentages: ``top1``, ``top1_visible`` (image prediction is any visible
    class), ``loc_cell_pooled`` (pooled over all FG cells), ``loc`` (mean of per-image
    Loc.), and the counts ``images`` and ``fg_cells``.

    Example:
        >>> import torch
        >>> from dense_readout.experiments.synthetic_metrics import SyntheticMetrics
        >>> m = SyntheticMetrics()
        >>> presence = torch.zeros(2, 3, 1, 2, dtype=torch.bool)
        >>> presence[0, 1, 0, 0] = presence[0, 2, 0, 1] = presence[1, 1, 0, 0] = True
        >>> labels = torch.tensor([[[1, 1]], [[1, 1]]])  # image 0: 1 of 2 FG cells, image 1: 1 of 1
        >>> m.update(torch.tensor([[0., 1., 0.], [0., 1., 0.]]), labels, torch.tensor([2, 1]), presence)
        >>> summary = m.summary()
        >>> summary["loc_cell_pooled"], summary["loc"], summary["top1"]  # 2/3 cells; (1/2 + 1)/2
        (66.66666666666667, 75.0, 50.0)
    """

    images: int = 0
    top1_hits: int = 0
    visible_hits: int = 0
    fg_cells: int = 0
    fg_hits: int = 0
    per_image_loc_sum: float = 0.0
    images_with_fg: int = 0

    def update(self, logits: Tensor, labels: Tensor, targets: Tensor, presence: Tensor) -> None:
        outcome = image_outcomes(logits, labels, targets, presence)
        cells, hits = outcome["fg_cells"], outcome["fg_hits"]
        self.images += int(targets.numel())
        self.top1_hits += int(outcome["top1"].sum())
        self.visible_hits += int(outcome["top1_visible"].sum())
        self.fg_cells += int(cells.sum())
        self.fg_hits += int(hits.sum())
        has_fg = cells > 0
        self.images_with_fg += int(has_fg.sum())
        self.per_image_loc_sum += float((hits[has_fg].float() / cells[has_fg].float()).sum())

    def summary(self) -> dict[str, float]:
        def pct(a: float, b: float) -> float:
            return 100.0 * a / b if b else float("nan")

        return {
            "top1": pct(self.top1_hits, self.images),
            "top1_visible": pct(self.visible_hits, self.images),
            "loc_cell_pooled": pct(self.fg_hits, self.fg_cells),
            "loc": pct(self.per_image_loc_sum, self.images_with_fg),
            "images": float(self.images),
            "fg_cells": float(self.fg_cells),
        }


def evaluate(model: nn.Module, data: SceneSource, batch_size: int = 100) -> dict[str, float]:
    """Validation Top-1 and Loc. of ``model`` on ``data`` via the dense readout.

    Runs on the model's device; returns :meth:`SyntheticMetrics.summary`.

    Example:
        >>> import torch
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.experiments.synthetic import SceneConfig, SceneGenerator
        >>> from dense_readout.experiments.synthetic_data import (SyntheticDataset, materialize,
        ...     normalize_images)
        >>> from dense_readout.experiments.synthetic_metrics import SyntheticMetrics, evaluate
        >>> from dense_readout.experiments.synthetic_recipes import Recipe, build_model
        >>> _ = torch.manual_seed(0)
        >>> model = build_model(Recipe("tiny", model_kwargs={"channels": [8, 16, 32, 64]}))
        >>> config = SceneConfig(image_size=64, min_objects=1, max_objects=2,
        ...     min_scale=16, max_scale=24)
        >>> data = materialize(SyntheticDataset(SceneGenerator(config, split="val"), 6, 64, (2, 2)))
        >>> summary = evaluate(model, data, batch_size=4)
        >>> summary["images"], sorted(summary)
        (6.0, ['fg_cells', 'images', 'loc', 'loc_cell_pooled', 'top1', 'top1_visible'])
        >>> check = SyntheticMetrics()  # the same numbers, by hand: one batch, readout top-1
        >>> with torch.no_grad():
        ...     result = DenseReadout(model.eval())(normalize_images(data.images))
        >>> check.update(result.logits, result.labels(), data.targets, data.presence)
        >>> check.summary() == summary
        True
    """
    from ..readout import DenseReadout

    was_training = model.training
    model.eval()
    readout = DenseReadout(model)
    device = next(model.parameters()).device
    metrics = SyntheticMetrics()
    try:
        for images, targets, presence in data.eval_batches(batch_size):
            result = readout(normalize_images(images.to(device)))
            metrics.update(result.logits, result.labels(), targets, presence)
    finally:
        model.train(was_training)
    return metrics.summary()


_RENAMED = {"loc": "loc_cell_pooled", "loc_per_image": "loc"}  # old key -> current key


def upgrade_metric_keys(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``values`` with the Loc. keys of older runs renamed (a copy; current keys unchanged).

    Older summaries are recognised by ``{prefix}loc_per_image``; then
    ``{prefix}loc`` (cell-pooled) becomes ``{prefix}loc_cell_pooled`` and
    ``{prefix}loc_per_image`` becomes ``{prefix}loc``. Numbers are not touched.

    Example:
        >>> from dense_readout.experiments.synthetic_metrics import upgrade_metric_keys
        >>> upgrade_metric_keys({"epoch": 3, "val_loc": 32.2, "val_loc_per_image": 31.8}, "val_")
        {'epoch': 3, 'val_loc_cell_pooled': 32.2, 'val_loc': 31.8}
        >>> upgrade_metric_keys({"loc_cell_pooled": 32.2, "loc": 31.8})  # already current
        {'loc_cell_pooled': 32.2, 'loc': 31.8}
    """
    if f"{prefix}loc_per_image" not in values:
        return dict(values)
    renamed = {prefix + old: prefix + new for old, new in _RENAMED.items()}
    return {renamed.get(key, key): value for key, value in values.items()}


def upgrade_history(history: dict[str, Any]) -> dict[str, Any]:
    """A training history with the Loc. keys of older runs renamed.

    The history is that of :func:`~dense_readout.experiments.synthetic_train.train`; keys
    are renamed in ``initial`` and every epoch entry.

    Example:
        >>> from dense_readout.experiments.synthetic_metrics import upgrade_history
        >>> old = {"initial": {"loc": 5.0, "loc_per_image": 4.0},
        ...        "epochs": [{"epoch": 1, "val_loc": 30.0, "val_loc_per_image": 28.0}]}
        >>> new = upgrade_history(old)
        >>> new["initial"], new["epochs"][0]
        ({'loc_cell_pooled': 5.0, 'loc': 4.0}, {'epoch': 1, 'val_loc_cell_pooled': 30.0, 'val_loc': 28.0})
        >>> upgrade_history(new) == new, old["initial"]["loc"]  # idempotent; the input is kept
        (True, 5.0)
    """
    upgraded = dict(history)
    if isinstance(history.get("initial"), dict):
        upgraded["initial"] = upgrade_metric_keys(history["initial"])
    if "epochs" in history:
        upgraded["epochs"] = [upgrade_metric_keys(entry, "val_") for entry in history["epochs"]]
    return upgraded
