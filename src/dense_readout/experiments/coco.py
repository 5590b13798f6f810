"""MS-COCO frozen-backbone linear probe read out per cell (paper 4.3, A.1, Table 3).

Pipeline, one module per job:

1. :mod:`.coco_annotations`: :class:`CocoInstances` reads an official
   ``instances_*.json`` and applies the A.1 filter (an instance is kept if its
   mask, resized and centre-cropped to 224, covers at least 1% of the crop);
   :func:`sample_positive` / :func:`validation_positive` give an image's single
   training / evaluation positive.
2. :mod:`.coco_features`: :class:`FeatureCache` runs the frozen backbone once per
   image on the three protocol inputs and stores the grids ``F`` on disk.
3. This module, the probe: :class:`LinearProbe` is the paper's head (L2
   normalisation, dropout 0.3, Linear) trained with cross-entropy on pooled
   (GAP) embeddings (:func:`train_probe`); :func:`evaluate_probe` applies the head
   to every cell through the core's
   :class:`~dense_readout.adapters.custom.CustomAdapter` and feeds the benchmark
   suite's metrics (:mod:`dense_readout.evaluation.metrics`) with the evaluation
   class's mask as foreground; :func:`cross_validate` does k-fold
   train/evaluate on a small sample, :func:`probe_split` trains on one split and
   evaluates on another. The names of steps 1–2 are re-exported here.

The head's L2 normalisation is nonlinear, so ``mean_uv Z`` is *not* the image
logit (``exact = False``): the readout applies the trained head pointwise, as
the paper does.

Besides the suite's metrics (``loc``: per image, ``loc_cell_pooled``: pooled over
cells, both against the evaluation class), results carry a multi-label Loc. from
:class:`~dense_readout.experiments.synthetic_metrics.SyntheticMetrics` (a FG cell
of any kept class is correct if its top-1 is a class present in it):
``loc_any_present_class`` pooled over cells and
``loc_any_present_class_per_image`` averaged per image (key names kept as in the
committed result files).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from .coco_annotations import CocoImage, CocoInstances, sample_positive, validation_positive
from .coco_features import FeatureCache

__all__ = [
    "TABLE3_METRICS",
    "CocoImage",
    "CocoInstances",
    "FeatureCache",
    "LinearProbe",
    "ProbeConfig",
    "cross_validate",
    "evaluate_probe",
    "probe_split",
    "sample_positive",
    "train_probe",
    "validation_positive",
]

TABLE3_METRICS: tuple[str, ...] = (
    "top1",
    "top5",
    "fg_det",
    "loc",
    "loc_cell_pooled",
    "loc_wo_bg",
    "bg_act",
    "bg_act_wo_fg",
)


class LinearProbe(nn.Module):
    """The paper's COCO head: ``Linear(Dropout_p(h / ||h||₂))``.

    Example:
        >>> import torch
        >>> from dense_readout.experiments.coco import LinearProbe
        >>> probe = LinearProbe(16, 4).eval()
        >>> torch.allclose(probe(torch.ones(1, 16)), probe(3 * torch.ones(1, 16)))  # scale-free
        True
    """

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.3) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(self.dropout(F.normalize(features, dim=-1)))


@dataclass(frozen=True)
class ProbeConfig:
    """Optimisation of the probe (full batch: the sample has tens of images).

    The paper gives the head (L2 norm, dropout 0.3, CE on one sampled positive)
    but not the optimiser; these are our choices.

    Example:
        >>> from dataclasses import asdict, replace
        >>> from dense_readout.experiments.coco import ProbeConfig
        >>> quick = replace(ProbeConfig(), epochs=50, lr=0.05)
        >>> asdict(quick)  # stored with every probe result
        {'epochs': 50, 'lr': 0.05, 'weight_decay': 0.0001, 'dropout': 0.3, 'batch_size': 256, 'seed': 0}
    """

    epochs: int = 300
    lr: float = 0.01
    weight_decay: float = 1e-4
    dropout: float = 0.3
    batch_size: int = 256
    seed: int = 0


def train_probe(
    pooled: Tensor, labels: Tensor, num_classes: int, config: ProbeConfig = ProbeConfig()
) -> LinearProbe:
    """Train :class:`LinearProbe` on pooled embeddings ``N×C`` with multi-labels ``N×K``.

    Each epoch, every image gets one positive drawn uniformly from its labels.

    Example:
        >>> import torch
        >>> def cached_grids(n, seed):  # what FeatureCache.load returns, for 3 classes
        ...     g = torch.Generator().manual_seed(seed)
        ...     target = torch.arange(n) % 3
        ...     grid = 0.1 * torch.randn(n, 8, 2, 2, generator=g)  # C=8 features, 2×2 cells
        ...     grid[torch.arange(n), target, 0, 0] += 4.0  # the object: channel k in cell (0, 0)
        ...     fg = torch.zeros(n, 2, 2, dtype=torch.bool); fg[:, 0, 0] = True
        ...     labels = torch.nn.functional.one_hot(target, 3).bool()
        ...     return {"grid": grid, "grid_wo_bg": grid * fg[:, None],
        ...             "grid_wo_fg": grid * ~fg[:, None], "fg": fg,
        ...             "presence": labels[:, :, None, None] & fg[:, None], "labels": labels,
        ...             "target": target, "image_ids": torch.arange(n)}
        >>> from dense_readout.experiments.coco import ProbeConfig, train_probe
        >>> data = cached_grids(12, seed=0)
        >>> pooled, config = data["grid"].mean(dim=(2, 3)), ProbeConfig(epochs=50, lr=0.05)
        >>> probe = train_probe(pooled, data["labels"], 3, config)
        >>> probe.training, bool((probe(pooled).argmax(1) == data["target"]).all())
        (False, True)
        >>> again = train_probe(pooled, data["labels"], 3, config)  # seeded: the same head
        >>> torch.equal(again.fc.weight, probe.fc.weight)
        True
    """
    if pooled.dim() != 2 or labels.shape != (pooled.shape[0], num_classes):
        raise InputError(
            f"pooled must be N×C and labels N×K; got {tuple(pooled.shape)} and {tuple(labels.shape)}."
        )
    if not bool(labels.any(dim=1).all()):
        raise InputError("every training image needs at least one label.")
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    probe = LinearProbe(pooled.shape[1], num_classes, config.dropout)
    optimizer = torch.optim.AdamW(
        probe.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    weights = labels.float()
    probe.train()
    for _ in range(config.epochs):
        order = torch.randperm(pooled.shape[0], generator=generator)
        targets = torch.multinomial(weights, 1, generator=generator).squeeze(
            1
        )  # one positive per image
        for start in range(0, len(order), config.batch_size):
            index = order[start : start + config.batch_size]
            loss = F.cross_entropy(probe(pooled[index]), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return probe.eval()


# -- per-cell evaluation ---------------------------------------------------------------------


def evaluate_probe(
    probe: LinearProbe,
    data: dict[str, Any],
    index: Tensor | None = None,
    suite: Any | None = None,
    any_class: Any | None = None,
) -> tuple[Any, Any]:
    """Apply ``probe`` to every cell of the cached grids and update the metrics.

    ``suite`` is a :class:`~dense_readout.evaluation.metrics.MetricSuite` over
    :data:`TABLE3_METRICS` (created if None); ``any_class`` a
    :class:`~dense_readout.experiments.synthetic_metrics.SyntheticMetrics` giving the
    multi-label Loc. (a FG cell of *any* kept class counts as correct if its top-1 is
    a class present in it). Returns ``(suite, any_class)``.

    Example:
        >>> import torch
        >>> def cached_grids(n, seed):  # what FeatureCache.load returns, for 3 classes
        ...     g = torch.Generator().manual_seed(seed)
        ...     target = torch.arange(n) % 3
        ...     grid = 0.1 * torch.randn(n, 8, 2, 2, generator=g)  # C=8 features, 2×2 cells
        ...     grid[torch.arange(n), target, 0, 0] += 4.0  # the object: channel k in cell (0, 0)
        ...     fg = torch.zeros(n, 2, 2, dtype=torch.bool); fg[:, 0, 0] = True
        ...     labels = torch.nn.functional.one_hot(target, 3).bool()
        ...     return {"grid": grid, "grid_wo_bg": grid * fg[:, None],
        ...             "grid_wo_fg": grid * ~fg[:, None], "fg": fg,
        ...             "presence": labels[:, :, None, None] & fg[:, None], "labels": labels,
        ...             "target": target, "image_ids": torch.arange(n)}
        >>> from dense_readout.experiments.coco import ProbeConfig, evaluate_probe, train_probe
        >>> data = cached_grids(12, seed=0)
        >>> probe = train_probe(data["grid"].mean(dim=(2, 3)), data["labels"], 3,
        ...     ProbeConfig(epochs=50, lr=0.05))
        >>> suite, any_class = evaluate_probe(probe, data)
        >>> values = suite.values()
        >>> values["top1"], values["loc"], values["loc_cell_pooled"]  # the object cell is right
        (100.0, 100.0, 100.0)
        >>> any_class.summary()["fg_cells"]  # one foreground cell per image
        12.0
    """
    from ..adapters.custom import CustomAdapter
    from ..evaluation.metrics import GridBatch, MetricSuite
    from .synthetic_metrics import SyntheticMetrics

    num_classes = probe.fc.out_features
    suite = suite or MetricSuite(TABLE3_METRICS, num_classes)
    any_class = any_class or SyntheticMetrics()
    index = torch.arange(len(data["target"])) if index is None else index
    adapter = CustomAdapter(probe, features=nn.Identity(), head=probe)
    probe.eval()
    with torch.no_grad():
        grid = data["grid"][index]
        scores = adapter.readout(grid)
        logits = adapter.image_logits(grid)  # the head on the GAP embedding, as trained
        batch = GridBatch(
            target=data["target"][index],
            logits=logits,
            scores=scores,
            fg=data["fg"][index],
            scores_wo_bg=adapter.readout(data["grid_wo_bg"][index]),
            scores_wo_fg=adapter.readout(data["grid_wo_fg"][index]),
        )
        suite.update(batch)
        any_class.update(logits, scores.argmax(1), data["target"][index], data["presence"][index])
    return suite, any_class


def cross_validate(
    data: dict[str, Any], num_classes: int, folds: int = 5, config: ProbeConfig = ProbeConfig()
) -> dict[str, Any]:
    """k-fold probe.

    Image ``i`` (in image-id order) is in fold ``i mod folds``; each fold is evaluated by a
    probe trained on the other folds, so every image is evaluated exactly once by a head
    that never saw it. Metrics are pooled over all folds.

    Example:
        >>> import torch
        >>> def cached_grids(n, seed):  # what FeatureCache.load returns, for 3 classes
        ...     g = torch.Generator().manual_seed(seed)
        ...     target = torch.arange(n) % 3
        ...     grid = 0.1 * torch.randn(n, 8, 2, 2, generator=g)  # C=8 features, 2×2 cells
        ...     grid[torch.arange(n), target, 0, 0] += 4.0  # the object: channel k in cell (0, 0)
        ...     fg = torch.zeros(n, 2, 2, dtype=torch.bool); fg[:, 0, 0] = True
        ...     labels = torch.nn.functional.one_hot(target, 3).bool()
        ...     return {"grid": grid, "grid_wo_bg": grid * fg[:, None],
        ...             "grid_wo_fg": grid * ~fg[:, None], "fg": fg,
        ...             "presence": labels[:, :, None, None] & fg[:, None], "labels": labels,
        ...             "target": target, "image_ids": torch.arange(n)}
        >>> from dense_readout.experiments.coco import ProbeConfig, cross_validate
        >>> result = cross_validate(cached_grids(12, seed=0), 3, folds=4,
        ...     config=ProbeConfig(epochs=50, lr=0.05))
        >>> [fold["test_images"] for fold in result["folds"]]  # every image evaluated once
        [3, 3, 3, 3]
        >>> result["metrics"]["top1"], result["loc_any_present_class"]
        (100.0, 100.0)
        >>> result["test_images_with_unseen_class"]  # each fold's classes were in its training
        0
    """
    from ..evaluation.metrics import MetricSuite
    from .synthetic_metrics import SyntheticMetrics

    count = len(data["target"])
    if not 2 <= folds <= count:
        raise InputError(f"folds must be in [2, {count}] for {count} images, got {folds}.")
    order = torch.argsort(data["image_ids"])
    fold_of = torch.empty(count, dtype=torch.long)
    fold_of[order] = torch.arange(count) % folds
    pooled = data["grid"].mean(dim=(2, 3))
    suite, any_class = MetricSuite(TABLE3_METRICS, num_classes), SyntheticMetrics()
    per_fold = []
    for fold in range(folds):
        test = torch.nonzero(fold_of == fold).squeeze(1)
        train = torch.nonzero(fold_of != fold).squeeze(1)
        probe = train_probe(pooled[train], data["labels"][train], num_classes, config)
        fold_suite, _ = evaluate_probe(probe, data, test)
        evaluate_probe(probe, data, test, suite, any_class)
        seen = data["labels"][train].any(dim=0)
        unseen = int((~seen[data["target"][test]]).sum())  # evaluation class absent from training
        per_fold.append(
            {
                "fold": fold,
                "train_images": len(train),
                "test_images": len(test),
                "test_images_with_unseen_class": unseen,
                **{k: v for k, v in fold_suite.values().items() if k in ("top1", "loc")},
            }
        )
    values = suite.values()
    extra = any_class.summary()
    return {
        "metrics": values,
        "counts": suite.counts(),
        "loc_any_present_class": extra["loc_cell_pooled"],
        "loc_any_present_class_per_image": extra["loc"],
        "top1_any_label": extra["top1_visible"],
        "test_images_with_unseen_class": sum(f["test_images_with_unseen_class"] for f in per_fold),
        "folds": per_fold,
        "probe": asdict(config),
    }


def probe_split(
    train: dict[str, Any],
    val: dict[str, Any],
    num_classes: int,
    config: ProbeConfig = ProbeConfig(),
) -> dict[str, Any]:
    """The paper's setting.

    Train on one split's pooled features (``train`` from a ``pooled_only`` cache, or a full
    one), evaluate per cell on another (``val``).

    Example:
        >>> import torch
        >>> def cached_grids(n, seed):  # what FeatureCache.load returns, for 3 classes
        ...     g = torch.Generator().manual_seed(seed)
        ...     target = torch.arange(n) % 3
        ...     grid = 0.1 * torch.randn(n, 8, 2, 2, generator=g)  # C=8 features, 2×2 cells
        ...     grid[torch.arange(n), target, 0, 0] += 4.0  # the object: channel k in cell (0, 0)
        ...     fg = torch.zeros(n, 2, 2, dtype=torch.bool); fg[:, 0, 0] = True
        ...     labels = torch.nn.functional.one_hot(target, 3).bool()
        ...     return {"grid": grid, "grid_wo_bg": grid * fg[:, None],
        ...             "grid_wo_fg": grid * ~fg[:, None], "fg": fg,
        ...             "presence": labels[:, :, None, None] & fg[:, None], "labels": labels,
        ...             "target": target, "image_ids": torch.arange(n)}
        >>> from dense_readout.experiments.coco import ProbeConfig, probe_split
        >>> train = cached_grids(12, seed=0)
        >>> pooled_only = {"pooled": train["grid"].mean(dim=(2, 3)), "labels": train["labels"]}
        >>> result = probe_split(pooled_only, cached_grids(6, seed=1), 3,
        ...     ProbeConfig(epochs=50, lr=0.05))
        >>> result["train_images"], result["metrics"]["top1"], result["metrics"]["loc"]
        (12, 100.0, 100.0)
    """
    from ..evaluation.metrics import MetricSuite
    from .synthetic_metrics import SyntheticMetrics

    pooled = train["pooled"] if "pooled" in train else train["grid"].mean(dim=(2, 3))
    probe = train_probe(pooled, train["labels"], num_classes, config)
    suite, any_class = evaluate_probe(
        probe, val, None, MetricSuite(TABLE3_METRICS, num_classes), SyntheticMetrics()
    )
    extra = any_class.summary()
    seen = train["labels"].any(dim=0)
    return {
        "metrics": suite.values(),
        "counts": suite.counts(),
        "loc_any_present_class": extra["loc_cell_pooled"],
        "loc_any_present_class_per_image": extra["loc"],
        "top1_any_label": extra["top1_visible"],
        "test_images_with_unseen_class": int((~seen[val["target"]]).sum()),
        "train_images": len(train["labels"]),
        "probe": asdict(config),
    }
