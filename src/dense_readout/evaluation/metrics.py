"""Streaming, mergeable metric accumulators of the paper's protocol (all in percent).

Every metric sees a :class:`GridBatch` (per-cell scores, image logits, the
evaluation class and — for box metrics — a foreground **cell mask**; boxes
never appear here, so masks from COCO or synthetic data work the same) and
keeps, per evaluation class ``c``, three integer vectors: ``num[c]``,
``den[c]`` and ``used[c]`` (images that counted), plus ``offered`` (images
seen). All state is int64; per-image fractions (Loc. averaged per image, ReaL
Rec.) are stored in fixed point (``FIXED = 2**32``), so merging is an exact,
order-independent sum: resumed, sharded and single runs give identical numbers.

Metrics (registry :data:`METRICS`, evaluation class = ground truth ``t``):

========================  ====================================================
``top1`` / ``top5``       ``t`` among the top-1 / top-5 image logits
``fg_det``                ``t`` is the top-1 class of at least one FG cell
``loc``                   fraction of FG cells whose top-1 is ``t``, averaged per image
``loc_cell_pooled``       the same fraction pooled over all FG cells of all images
``loc_wo_bg``             ``loc`` on the w/o-BG input (per image)
``bg_act``                ``t`` is the top-1 class of at least one BG cell
``bg_act_wo_fg``          ``bg_act`` on the w/o-FG input
``real_acc``              image top-1 in the ReaL set (empty sets skipped)
``real_rec``              fraction of ReaL labels that are top-1 in some cell, per image
``a_acc_top1/top5``       ImageNet-A image accuracy (logits restricted beforehand)
``a_det_top1/top5``       ``t`` in the top-1 / top-5 of at least one cell
========================  ====================================================

Undefined cases are skipped and counted, never scored: FG metrics skip images
without an FG cell (boxes cropped away), BG metrics skip images whose FG covers
every cell, ReaL metrics skip empty ReaL sets.

This module is a little over 450 lines on purpose: it holds one job, the table
above, with each metric a short registered class next to its siblings and the
base class they share; split, the registry would depend on import order.

Example:
    >>> import torch
    >>> from dense_readout.evaluation.metrics import GridBatch, MetricSuite
    >>> scores = torch.zeros(1, 3, 2, 2); scores[0, 1, 0, 0] = 5; scores[0, 2, 1, 1] = 5
    >>> fg = torch.tensor([[[True, True], [False, False]]])
    >>> batch = GridBatch(target=torch.tensor([1]), logits=scores.mean((2, 3)), scores=scores, fg=fg)
    >>> suite = MetricSuite(["top1", "fg_det", "loc", "bg_act"], num_classes=3)
    >>> suite.update(batch)
    >>> suite.values()
    {'top1': 100.0, 'fg_det': 100.0, 'loc': 50.0, 'bg_act': 0.0}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InputError
from ..registry import Registry

__all__ = [
    "FIXED",
    "ILSVRC_METRICS",
    "IMAGENET_A_METRICS",
    "METRICS",
    "Accumulator",
    "GridBatch",
    "MetricSuite",
    "register_metric",
    "restrict_classes",
]

FIXED = 1 << 32


@dataclass
class GridBatch:
    """What the metrics see for ``B`` images (all on one device).

    Attributes:
        target: ``B`` int64 evaluation classes.
        logits: ``B×K`` image logits.
        scores: ``B×K×h×w`` per-cell scores of the original input.
        fg: ``B×h×w`` bool foreground cell mask (None: no box metrics).
        annotated: ``B`` bool, images whose ``fg`` is meaningful (default: all).
        scores_wo_bg / scores_wo_fg: per-cell scores of the occluded inputs.
        real: ``B×K`` bool ReaL label sets; ``real_known`` (``B`` bool) marks
            images that have a ReaL entry at all.

    Example:
        >>> import torch
        >>> from dense_readout.evaluation.metrics import GridBatch
        >>> scores = torch.zeros(1, 3, 2, 2); scores[0, 2, 0, 1] = 4.0  # class 2 wins cell (0, 1)
        >>> batch = GridBatch(torch.tensor([2]), scores.mean(dim=(2, 3)), scores,
        ...                   fg=torch.tensor([[[False, True], [False, False]]]))
        >>> batch.cell_labels().tolist(), batch.annotated.tolist()
        ([[[0, 2], [0, 0]]], [True])
    """

    target: Tensor
    logits: Tensor
    scores: Tensor
    fg: Tensor | None = None
    annotated: Tensor | None = None
    scores_wo_bg: Tensor | None = None
    scores_wo_fg: Tensor | None = None
    real: Tensor | None = None
    real_known: Tensor | None = None

    def __post_init__(self) -> None:
        batch = self.target.shape[0]
        if self.logits.dim() != 2 or self.logits.shape[0] != batch:
            raise InputError(f"logits must be B×K with B={batch}, got {tuple(self.logits.shape)}.")
        if self.scores.dim() != 4 or self.scores.shape[:2] != self.logits.shape:
            raise InputError(
                f"scores must be B×K×h×w matching logits, got {tuple(self.scores.shape)}."
            )
        if self.fg is not None and tuple(self.fg.shape) != (batch, *self.scores.shape[-2:]):
            raise InputError(
                f"fg must be a B×h×w cell mask matching the grid {tuple(self.scores.shape[-2:])}, "
                f"got {tuple(self.fg.shape)}; project pixel masks with protocol.grid_occupancy."
            )
        if self.annotated is None and self.fg is not None:
            self.annotated = torch.ones(batch, dtype=torch.bool, device=self.target.device)

    def cell_labels(self, which: str = "scores") -> Tensor:
        """Top-1 class of each cell of ``scores``, ``scores_wo_bg`` or ``scores_wo_fg``."""
        return getattr(self, which).argmax(dim=1)


Observation = tuple[Tensor, Tensor, Tensor] | None  # (num, den, used) per image


class Accumulator:
    """One streaming metric: per-class int64 ``num``, ``den``, ``used`` and a scalar ``offered``.

    Subclasses implement :meth:`observe` returning per-image ``(num, den, used)``
    (``num``/``den`` int64, ``used`` bool) or None when the batch lacks the inputs.
    ``scale`` is ``FIXED`` for per-image fractions, 1 for counts.

    Example:
        >>> import torch
        >>> from dense_readout.evaluation.metrics import Accumulator, GridBatch
        >>> class CornerHit(Accumulator):  # is the target the top-1 class of cell (0, 0)?
        ...     name = "corner_hit"
        ...     def observe(self, batch):
        ...         hit = (batch.cell_labels()[:, 0, 0] == batch.target).long()
        ...         return hit, torch.ones_like(hit), torch.ones_like(hit, dtype=torch.bool)
        >>> scores = torch.zeros(2, 3, 2, 2); scores[:, 1, 0, 0] = 1.0
        >>> first, second = CornerHit(3), CornerHit(3)
        >>> first.update(GridBatch(torch.tensor([1]), scores[:1].mean((2, 3)), scores[:1]))
        >>> second.update(GridBatch(torch.tensor([2]), scores[1:].mean((2, 3)), scores[1:]))
        >>> first.merge(second)  # states add up: shards and resumed runs give the same numbers
        >>> first.value(), first.per_class().tolist()[1:], first.counts()
        (50.0, [100.0, 0.0], {'used': 2, 'skipped': 0})
    """

    name: str = ""
    description: str = ""
    scale: int = 1
    unit: str = "images"

    def __init__(self, num_classes: int) -> None:
        self.num_classes = int(num_classes)
        self.num = torch.zeros(self.num_classes, dtype=torch.int64)
        self.den = torch.zeros(self.num_classes, dtype=torch.int64)
        self.used = torch.zeros(self.num_classes, dtype=torch.int64)
        self.offered = torch.zeros(1, dtype=torch.int64)

    def observe(self, batch: GridBatch) -> Observation:  # pragma: no cover - abstract
        """The batch's ``(numerator, denominator, used)`` per class, or None."""
        raise NotImplementedError

    def update(self, batch: GridBatch) -> None:
        """Add one batch's observation to the integer state."""
        result = self.observe(batch)
        if result is None:
            return
        num, den, used = (t.detach().to("cpu") for t in result)
        target = batch.target.detach().to("cpu").long()
        used = used.bool()
        self.num.index_add_(0, target[used], num[used].long())
        self.den.index_add_(0, target[used], den[used].long())
        self.used.index_add_(0, target[used], torch.ones_like(target[used]))
        self.offered += int(target.numel())

    # -- state ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        """Copies of the state tensors (for checkpoints)."""
        return {
            "num": self.num.clone(),
            "den": self.den.clone(),
            "used": self.used.clone(),
            "offered": self.offered.clone(),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the state written by :meth:`state_dict` (shapes are checked)."""
        for key in ("num", "den", "used", "offered"):
            value = state[key].to(torch.int64)
            if value.shape != getattr(self, key).shape:
                raise InputError(
                    f"{self.name}: state {key} has shape {tuple(value.shape)}, "
                    f"expected {tuple(getattr(self, key).shape)}."
                )
            setattr(self, key, value.clone())

    def merge(self, other: Accumulator) -> None:
        """Add another accumulator's counts (same metric, same K)."""
        for key in ("num", "den", "used", "offered"):
            getattr(self, key).add_(getattr(other, key))

    # -- results -------------------------------------------------------------------
    def value(self) -> float | None:
        """The metric in percent, or None when no image counted."""
        den = int(self.den.sum())
        return None if den == 0 else 100.0 * int(self.num.sum()) / (self.scale * den)

    def per_class(self) -> Tensor:
        """Per-class values in percent (NaN where the class has no counted image)."""
        den = self.den.double() * self.scale
        out = torch.full((self.num_classes,), float("nan"), dtype=torch.float64)
        nonzero = den > 0
        out[nonzero] = 100.0 * self.num[nonzero].double() / den[nonzero]
        return out

    def counts(self) -> dict[str, int]:
        """Images used and skipped (offered but undefined for this metric)."""
        used = int(self.used.sum())
        return {"used": used, "skipped": int(self.offered) - used}


METRICS: Registry[type[Accumulator]] = Registry(
    "benchmark metric",
    hint="Register your own with dense_readout.evaluation.metrics.register_metric.",
)


def register_metric(cls: type[Accumulator]) -> type[Accumulator]:
    """Class decorator: add an :class:`Accumulator` subclass under its ``name``.

    Example:
        >>> import torch
        >>> from dense_readout.evaluation.metrics import METRICS, Accumulator, register_metric
        >>> @register_metric
        ... class Seen(Accumulator):
        ...     name = "seen"
        ...     def observe(self, batch):
        ...         ones = torch.ones_like(batch.target)
        ...         return ones, ones, ones.bool()
        >>> METRICS.get("seen") is Seen
        True
        >>> METRICS.unregister("seen") is Seen, "seen" in METRICS
        (True, False)
    """
    return METRICS.add(cls)


def _ones(batch: GridBatch) -> Tensor:
    return torch.ones_like(batch.target, dtype=torch.int64)


def _fraction(count: Tensor, total: Tensor) -> Tensor:
    """``round(count/total · FIXED)`` in exact integer arithmetic (0 where total is 0)."""
    total = total.long()
    safe = total.clamp(min=1)
    return torch.where(
        total > 0, (count.long() * FIXED + safe // 2) // safe, torch.zeros_like(total)
    )


def _target_cells(labels: Tensor, target: Tensor) -> Tensor:
    return labels == target.view(-1, 1, 1)


# -- image-level -------------------------------------------------------------------------
@register_metric
class Top1(Accumulator):
    name, description = "top1", "Top-1 Acc.: image top-1 equals the class"

    def observe(self, batch: GridBatch) -> Observation:
        correct = batch.logits.argmax(dim=1) == batch.target
        return correct.long(), _ones(batch), torch.ones_like(correct)


@register_metric
class Top5(Accumulator):
    name, description = "top5", "Top-5 Acc.: class among the image top-5"

    def observe(self, batch: GridBatch) -> Observation:
        k = min(5, batch.logits.shape[1])
        correct = (batch.logits.topk(k, dim=1).indices == batch.target.view(-1, 1)).any(dim=1)
        return correct.long(), _ones(batch), torch.ones_like(correct)


# -- foreground / background -------------------------------------------------------------
class _CellMetric(Accumulator):
    """Base of metrics on the cells of one region of one input."""

    source = "scores"  # which GridBatch field
    region = "fg"  # 'fg' or 'bg'

    def _region(self, batch: GridBatch) -> tuple[Tensor, Tensor] | None:
        if batch.fg is None or getattr(batch, self.source) is None:
            return None
        cells = batch.fg if self.region == "fg" else ~batch.fg
        count = cells.flatten(1).sum(dim=1)
        annotated = batch.annotated
        if annotated is None:  # set by __post_init__ whenever fg is; only if cleared later
            annotated = torch.ones_like(count, dtype=torch.bool)
        used = annotated & (count > 0)
        return cells, used


class _Detection(_CellMetric):
    def observe(self, batch: GridBatch) -> Observation:
        region = self._region(batch)
        if region is None:
            return None
        cells, used = region
        hit = (
            (_target_cells(batch.cell_labels(self.source), batch.target) & cells)
            .flatten(1)
            .any(dim=1)
        )
        return hit.long(), _ones(batch), used


class _Localisation(_CellMetric):
    pooled = False

    def observe(self, batch: GridBatch) -> Observation:
        region = self._region(batch)
        if region is None:
            return None
        cells, used = region
        correct = (
            (_target_cells(batch.cell_labels(self.source), batch.target) & cells)
            .flatten(1)
            .sum(dim=1)
        )
        total = cells.flatten(1).sum(dim=1)
        if self.pooled:
            return correct, total, used
        return _fraction(correct, total), _ones(batch), used


@register_metric
class FgDet(_Detection):
    name, description = "fg_det", "FG Det.: class is top-1 in at least one FG cell"


@register_metric
class BgAct(_Detection):
    name, description, region = "bg_act", "BG Act.: class is top-1 in at least one BG cell", "bg"


@register_metric
class BgActWoFg(_Detection):
    name, region, source = "bg_act_wo_fg", "bg", "scores_wo_fg"
    description = "BG Act. (w/o FG): BG Act. on the input with the foreground occluded"


@register_metric
class Loc(_Localisation):
    name, scale = "loc", FIXED
    description = "Loc.: top-1 accuracy over FG cells, averaged per image"


@register_metric
class LocCellPooled(_Localisation):
    name, pooled, unit = "loc_cell_pooled", True, "cells"
    description = "Loc. (cell-pooled): top-1 accuracy over all FG cells of all images"


@register_metric
class LocWoBg(_Localisation):
    name, scale, source = "loc_wo_bg", FIXED, "scores_wo_bg"
    description = "Loc. (w/o BG): Loc. on the input with the background occluded, per image"


# -- ReaL ----------------------------------------------------------------------------------
class _RealMetric(Accumulator):
    def _sets(self, batch: GridBatch) -> tuple[Tensor, Tensor] | None:
        if batch.real is None:
            return None
        known = (
            batch.real_known
            if batch.real_known is not None
            else torch.ones_like(batch.target, dtype=torch.bool)
        )
        size = batch.real.sum(dim=1)
        return batch.real.bool(), known & (size > 0)


@register_metric
class RealAcc(_RealMetric):
    name, description = "real_acc", "ReaL Acc.: image top-1 is a ReaL label (empty sets skipped)"

    def observe(self, batch: GridBatch) -> Observation:
        sets = self._sets(batch)
        if sets is None:
            return None
        real, used = sets
        hit = real.gather(1, batch.logits.argmax(dim=1, keepdim=True)).squeeze(1)
        return hit.long(), _ones(batch), used


@register_metric
class RealRec(_RealMetric):
    name, scale = "real_rec", FIXED
    description = "ReaL Rec.: fraction of ReaL labels that are top-1 in some cell, per image"

    def observe(self, batch: GridBatch) -> Observation:
        sets = self._sets(batch)
        if sets is None:
            return None
        real, used = sets
        labels = batch.cell_labels().flatten(1)
        present = torch.zeros_like(real)
        present.scatter_(1, labels, True)
        found = (present & real).sum(dim=1)
        return _fraction(found, real.sum(dim=1)), _ones(batch), used


# -- ImageNet-A ----------------------------------------------------------------------------
class _ImageNetA(Accumulator):
    k = 1
    spatial = False

    def observe(self, batch: GridBatch) -> Observation:
        k = min(self.k, batch.logits.shape[1])
        if self.spatial:
            top = batch.scores.topk(k, dim=1).indices  # B×k×h×w
            hit = (top == batch.target.view(-1, 1, 1, 1)).flatten(1).any(dim=1)
        else:
            hit = (batch.logits.topk(k, dim=1).indices == batch.target.view(-1, 1)).any(dim=1)
        return hit.long(), _ones(batch), torch.ones_like(hit)


@register_metric
class AAccTop1(_ImageNetA):
    name, description = (
        "a_acc_top1",
        "ImageNet-A Acc. (top-1), logits restricted to the 200 classes",
    )


@register_metric
class AAccTop5(_ImageNetA):
    name, k, description = "a_acc_top5", 5, "ImageNet-A Acc. (top-5)"


@register_metric
class ADetTop1(_ImageNetA):
    name, spatial, description = (
        "a_det_top1",
        True,
        "ImageNet-A Det. (top-1): class is top-1 in some cell",
    )


@register_metric
class ADetTop5(_ImageNetA):
    name, k, spatial = "a_det_top5", 5, True
    description = "ImageNet-A Det. (top-5): class among the top-5 of some cell"


ILSVRC_METRICS: tuple[str, ...] = (
    "top1",
    "top5",
    "fg_det",
    "loc",
    "loc_cell_pooled",
    "loc_wo_bg",
    "bg_act",
    "bg_act_wo_fg",
    "real_acc",
    "real_rec",
)
IMAGENET_A_METRICS: tuple[str, ...] = ("a_acc_top1", "a_acc_top5", "a_det_top1", "a_det_top5")


def restrict_classes(scores: Tensor, classes: Sequence[int], dim: int = 1) -> Tensor:
    """Set every class outside ``classes`` to ``-inf`` along ``dim`` (ImageNet-A's 200 classes).

    Indices keep their ImageNet-1k meaning, so targets need no remapping.

    Example:
        >>> import torch
        >>> from dense_readout.evaluation.metrics import restrict_classes
        >>> logits = torch.tensor([[5.0, 1.0, 3.0, 2.0]])
        >>> restricted = restrict_classes(logits, [1, 3])
        >>> restricted.tolist(), restricted.argmax(dim=1).item()  # the index keeps its meaning
        ([[-inf, 1.0, -inf, 2.0]], 3)
    """
    keep = torch.zeros(scores.shape[dim], dtype=torch.bool, device=scores.device)
    keep[torch.as_tensor(list(classes), dtype=torch.long, device=scores.device)] = True
    shape = [1] * scores.dim()
    shape[dim] = -1
    return scores.masked_fill(~keep.view(shape), float("-inf"))


class MetricSuite:
    """A named set of accumulators updated together; state merges by summation.

    Example:
        >>> from dense_readout.evaluation.metrics import MetricSuite
        >>> a, b = MetricSuite(["top1"], 10), MetricSuite(["top1"], 10)
        >>> a.merge(b); a.values()
        {'top1': None}
    """

    def __init__(self, names: Iterable[str], num_classes: int) -> None:
        unknown = [n for n in names if n not in METRICS]
        if unknown:
            raise InputError(f"Unknown metrics {unknown}; registered: {sorted(METRICS)}.")
        self.metrics: dict[str, Accumulator] = {n: METRICS.get(n)(num_classes) for n in names}
        self.num_classes = int(num_classes)

    def __getitem__(self, name: str) -> Accumulator:
        return self.metrics[name]

    def update(self, batch: GridBatch) -> None:
        """Update every metric with one batch."""
        for metric in self.metrics.values():
            metric.update(batch)

    def merge(self, other: MetricSuite) -> None:
        """Add another suite's state (same metrics; another rank or shard)."""
        for name, metric in self.metrics.items():
            metric.merge(other.metrics[name])

    def state_dict(self) -> dict[str, dict[str, Tensor]]:
        """Every metric's state, by name."""
        return {name: metric.state_dict() for name, metric in self.metrics.items()}

    def load_state_dict(self, state: dict[str, dict[str, Tensor]]) -> None:
        """Restore every metric's state, by name."""
        for name, metric in self.metrics.items():
            metric.load_state_dict(state[name])

    def tensors(self) -> list[Tensor]:
        """Every state tensor, in a fixed order (for ``all_reduce``)."""
        return [
            getattr(m, key)
            for m in self.metrics.values()
            for key in ("num", "den", "used", "offered")
        ]

    def values(self) -> dict[str, float | None]:
        """Every metric's value (None where it is undefined), by name."""
        return {name: metric.value() for name, metric in self.metrics.items()}

    def counts(self) -> dict[str, dict[str, int]]:
        """Every metric's counts (used / skipped images), by name."""
        return {name: metric.counts() for name, metric in self.metrics.items()}


Factory = Callable[[int], Accumulator]
