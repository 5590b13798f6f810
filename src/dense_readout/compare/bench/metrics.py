"""The benchmark's metrics: one class per metric, kept in the registry :data:`BENCH_METRICS`.

A metric sees one method's maps of one batch (:class:`MapBatch`) and returns
per-image values (the CSV columns it names in ``keys``, or lists for curves);
:meth:`BenchMetric.statistic` turns the rows of many images into the summary
number (bootstrapped by :mod:`.summary`). ``group`` says which ``--metrics``
switch turns it on and which image subset it runs on (``localization`` and
``cost``: every image; ``faithfulness`` and ``sanity``: the subset; ``road``: the
ROAD subset). Add a metric with :func:`register_bench_metric`.

Example:
    >>> from dense_readout.compare.bench.metrics import BENCH_METRICS
    >>> [name for name in BENCH_METRICS.names() if BENCH_METRICS.get(name).group == "cost"]
    ['cost']
    >>> BENCH_METRICS.get("deletion").keys, BENCH_METRICS.get("deletion").higher_is_better
    (('deletion_auc',), {'deletion_auc': False})
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from ...compare.methods import SaliencyMethod
from ...compare.postprocessing import postprocess
from ...localization import MaxBoxAcc, energy_pointing_game, pointing_game
from ...registry import Registry
from .perturbation import curve_auc, perturbation_curves, road_scores
from .sanity import random_other_classes, spearman_maps, ssim_maps

__all__ = [
    "BENCH_METRICS",
    "GROUPS",
    "BenchMetric",
    "MapBatch",
    "call_method",
    "register_bench_metric",
]

GROUPS = ("localization", "faithfulness", "sanity", "cost")
IOU_THRESHOLDS = (0.3, 0.5, 0.7)


def call_method(method: SaliencyMethod, inputs: Tensor, targets: Tensor) -> Tensor:
    """``method(inputs, targets)`` with gradients on only for methods that need them."""
    with torch.enable_grad() if method.needs_gradients else torch.no_grad():
        return torch.as_tensor(method(inputs, targets)).detach().float().cpu()


@dataclass
class MapBatch:
    """One method's raw maps of one batch, with everything a metric may need."""

    method: SaliencyMethod
    model: nn.Module
    inputs: Tensor  # B×3×H×W, normalised
    targets: Tensor  # B
    indices: Tensor  # dataset index of every image (seeds)
    mask: Tensor  # B×H×W foreground (union of the boxes)
    boxes: list[np.ndarray]  # per image N×4, crop pixels, inclusive
    raw: Tensor  # B×h×w as the method returned them
    seconds: float  # the method call on this batch
    forward_seconds: float  # one forward of this batch, just before, same process
    baseline: Tensor  # what perturbed pixels become
    ends: tuple[Tensor, Tensor]  # target probabilities of (inputs, baseline)
    options: dict[str, Any] = field(default_factory=dict)
    cascade: list[tuple[str, SaliencyMethod]] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the inputs."""
        return (int(self.inputs.shape[-2]), int(self.inputs.shape[-1]))

    def maps(self, sign: str = "positive") -> Tensor:
        """The common post-processing (sign → bilinear → min–max), cached per sign."""
        cache = self.options.setdefault("_maps", {})
        if sign not in cache:
            cache[sign] = postprocess(self.raw, self.size, sign)
        return cache[sign]

    def select(self, keep: Tensor) -> MapBatch:
        """The images where ``keep`` (a boolean ``B``) is true."""
        rows = [i for i, k in enumerate(keep.tolist()) if k]
        cache = {s: m[keep] for s, m in self.options.get("_maps", {}).items()}
        return replace(
            self,
            inputs=self.inputs[keep],
            targets=self.targets[keep],
            indices=self.indices[keep],
            mask=self.mask[keep],
            boxes=[self.boxes[i] for i in rows],
            raw=self.raw[keep],
            baseline=self.baseline[keep],
            ends=(self.ends[0][keep], self.ends[1][keep]),
            options={**self.options, "_maps": cache},
        )


class BenchMetric:
    """One metric: ``compute`` per-image values of a batch; ``statistic`` of many rows."""

    name: ClassVar[str] = ""
    group: ClassVar[str] = "localization"
    keys: ClassVar[tuple[str, ...]] = ()  # summary names (and CSV columns)
    higher_is_better: ClassVar[dict[str, bool]] = {}
    description: ClassVar[str] = ""

    def compute(self, batch: MapBatch) -> dict[str, Any]:  # pragma: no cover - abstract
        """Per-image values of ``batch`` (arrays or lists, one entry per image)."""
        raise NotImplementedError

    def values(self, key: str, rows: list[dict]) -> np.ndarray:
        """The per-image data ``key`` is summarised from (one row per image that has it)."""
        values = np.asarray([row[key] for row in rows if row.get(key) is not None], dtype=float)
        return values[np.isfinite(values)]

    def reduce(self, key: str, values: np.ndarray) -> float:
        """The summary number of per-image ``values`` (a bootstrap resamples their rows)."""
        return float(values.mean()) if len(values) else math.nan

    def statistic(self, key: str, rows: list[dict]) -> float:
        """The summary of ``key`` over ``rows`` (default: the mean of the per-image values)."""
        return self.reduce(key, self.values(key, rows))


BENCH_METRICS: Registry[type[BenchMetric]] = Registry(
    "compare benchmark metric",
    hint="Subclass BenchMetric and register it with "
    "@dense_readout.compare.bench.metrics.register_bench_metric.",
)


def register_bench_metric(cls: type[BenchMetric]) -> type[BenchMetric]:
    """Class decorator: add a :class:`BenchMetric` subclass to :data:`BENCH_METRICS` under its ``name``.

    Example:
        >>> @register_bench_metric
        ... class MapMean(BenchMetric):
        ...     name, keys = "map_mean", ("map_mean",)
        ...     def compute(self, batch):
        ...         return {"map_mean": batch.raw.mean(dim=(1, 2)).numpy()}
        >>> BENCH_METRICS.get("map_mean") is MapMean
        True
        >>> BENCH_METRICS.unregister("map_mean") is MapMean, "map_mean" in BENCH_METRICS
        (True, False)
    """
    return BENCH_METRICS.add(cls)


@register_bench_metric
class PointingGame(BenchMetric):
    name, keys = "pointing_game", ("pointing_game",)
    higher_is_better: ClassVar[dict[str, bool]] = {"pointing_game": True}
    description = "a maximal pixel of the map lies inside a ground-truth box (Zhang et al. 2018)"

    def compute(self, batch: MapBatch) -> dict[str, Any]:
        return {"pointing_game": pointing_game(batch.maps().numpy(), batch.mask.numpy())}


@register_bench_metric
class EnergyPointingGame(BenchMetric):
    name, keys = "energy_pointing_game", ("energy_pointing_game",)
    higher_is_better: ClassVar[dict[str, bool]] = {"energy_pointing_game": True}
    description = "share of the map's mass inside the boxes (Wang et al. 2020)"

    def compute(self, batch: MapBatch) -> dict[str, Any]:
        mask = batch.mask.numpy()
        return {"energy_pointing_game": energy_pointing_game(batch.maps().numpy(), mask)}


@register_bench_metric
class MaxBoxAccV2(BenchMetric):
    name, keys = "maxboxacc_v2", ("maxboxacc_v2",)
    higher_is_better: ClassVar[dict[str, bool]] = {"maxboxacc_v2": True}
    description = "Choe et al. 2020: all contours, δ ∈ {0.3, 0.5, 0.7}, best τ over the set"

    def compute(self, batch: MapBatch) -> dict[str, Any]:
        step = float(batch.options.get("threshold_step", 0.01))
        metric = MaxBoxAcc(IOU_THRESHOLDS, thresholds=np.arange(0, 1, step))
        ious = metric.update(batch.maps().numpy(), batch.boxes)
        return {"box_ious": [row.round(6).tolist() for row in ious]}

    def values(self, key: str, rows: list[dict]) -> np.ndarray:
        return np.asarray([row["box_ious"] for row in rows if "box_ious" in row], dtype=float)

    def reduce(self, key: str, values: np.ndarray) -> float:
        if values.size == 0:
            return math.nan
        return float(np.mean([(values >= d).mean(axis=0).max() for d in IOU_THRESHOLDS]))


@register_bench_metric
class PaperLoc(BenchMetric):
    name, keys = "loc", ("loc",)
    higher_is_better: ClassVar[dict[str, bool]] = {"loc": True}
    description = "the paper's Loc.: share of foreground cells whose top-1 class is the target (methods with all-class maps)"

    def compute(self, batch: MapBatch) -> dict[str, Any]:
        from ...compare.wrappers import ReadoutMethod
        from ...evaluation.protocol import grid_occupancy

        method = batch.method
        if not isinstance(method, ReadoutMethod) or method.last_scores is None:
            return {}
        scores = method.last_scores.detach().cpu()
        if not method.include_bias and method.last_bias is not None:
            scores = scores - method.last_bias.detach().cpu().view(1, -1, 1, 1)
        fg = grid_occupancy(batch.mask, tuple(scores.shape[-2:]))
        hits = (scores.argmax(dim=1) == batch.targets.view(-1, 1, 1)) & fg
        count = fg.flatten(1).sum(dim=1).double()
        loc = torch.where(count > 0, hits.flatten(1).sum(dim=1) / count.clamp(min=1), math.nan)
        return {"loc": loc.numpy()}


class _Curve(BenchMetric):
    group, mode = "faithfulness", "deletion"

    def compute(self, batch: MapBatch) -> dict[str, Any]:
        curves = perturbation_curves(
            batch.model,
            batch.inputs,
            batch.baseline,
            batch.maps("all"),  # signed: the order is not left to the ties of a ReLU
            batch.targets,
            steps=int(batch.options.get("steps", 16)),
            mode=self.mode,
            ends=batch.ends,
            forward_batch=int(batch.options.get("forward_batch", 32)),
        )
        return {
            f"{self.mode}_auc": curve_auc(curves).numpy(),
            f"{self.mode}_curve": curves.numpy().round(6).tolist(),
        }


@register_bench_metric
class Deletion(_Curve):
    name, keys, mode = "deletion", ("deletion_auc",), "deletion"
    higher_is_better: ClassVar[dict[str, bool]] = {"deletion_auc": False}
    description = "area under the target probability as the most relevant pixels are removed (RISE)"


@register_bench_metric
class Insertion(_Curve):
    name, keys, mode = "insertion", ("insertion_auc",), "insertion"
    higher_is_better: ClassVar[dict[str, bool]] = {"insertion_auc": True}
    description = (
        "area under the target probability as the most relevant pixels are inserted (RISE)"
    )


@register_bench_metric
class Road(BenchMetric):
    name, group = "road", "road"
    keys = ("road_morf", "road_lerf", "road_combined")
    higher_is_better: ClassVar[dict[str, bool]] = {
        "road_morf": False,
        "road_lerf": True,
        "road_combined": True,
    }
    description = "pytorch-grad-cam ROAD: noisy linear imputation of MoRF / LeRF pixels"

    def compute(self, batch: MapBatch) -> dict[str, Any]:
        percentiles = tuple(batch.options.get("road_percentiles", (20, 50, 80)))
        seed = int(batch.indices[0]) if len(batch.indices) else 0
        return road_scores(
            batch.model, batch.inputs, batch.maps("all"), batch.targets, percentiles, seed
        )


@register_bench_metric
class Mprt(BenchMetric):
    name, group, keys = "mprt", "sanity", ("mprt_spearman",)
    higher_is_better: ClassVar[dict[str, bool]] = {"mprt_spearman": False}
    description = "Adebayo et al. 2018 cascade: Spearman of |map| trained vs top layers randomised (last level)"

    def compute(self, batch: MapBatch) -> dict[str, Any]:
        trained = batch.maps("absolute")
        levels = []
        for _, method in batch.cascade:
            raw = call_method(method, batch.inputs, batch.targets)
            levels.append(spearman_maps(trained, postprocess(raw, batch.size, "absolute")))
        if not levels:
            return {}
        table = np.stack(levels, axis=1)  # B×L
        return {"mprt_spearman": table[:, -1], "mprt_levels": table.round(6).tolist()}


@register_bench_metric
class RandomLogit(BenchMetric):
    name, group, keys = "random_logit", "sanity", ("random_logit_ssim",)
    higher_is_better: ClassVar[dict[str, bool]] = {"random_logit_ssim": False}
    description = "Sixt et al. 2020 (Quantus RandomLogit): SSIM of the maps for the target and a random other class"

    def compute(self, batch: MapBatch) -> dict[str, Any]:
        classes = int(batch.options["num_classes"])
        others = random_other_classes(batch.targets, batch.indices, classes)
        raw = call_method(batch.method, batch.inputs, others)
        other_maps = postprocess(raw, batch.size, "positive")
        return {"random_logit_ssim": ssim_maps(batch.maps(), other_maps)}


@register_bench_metric
class Cost(BenchMetric):
    name, group = "cost", "cost"
    keys = (
        "seconds_per_map",
        "seconds_all_classes",
        "forward_ratio_per_map",
        "forward_ratio_all_classes",
    )
    higher_is_better = dict.fromkeys(keys, False)
    description = "wall seconds of the method call per map and for all K classes, and as ratios to one forward of the same batch"

    def compute(self, batch: MapBatch) -> dict[str, Any]:
        count = len(batch.targets)
        classes = int(batch.options["num_classes"])
        per_call = batch.method.classes_per_call
        calls = 1 if per_call is None else math.ceil(classes / max(1, per_call))
        return {
            "method_seconds": np.full(count, batch.seconds / count),
            "forward_seconds": np.full(count, batch.forward_seconds / count),
            "calls_all_classes": np.full(count, calls),
        }

    def values(self, key: str, rows: list[dict]) -> np.ndarray:
        used = [row for row in rows if "method_seconds" in row]
        return np.asarray(
            [
                [
                    r["method_seconds"],
                    r["method_seconds"] * r["calls_all_classes"],
                    r["forward_seconds"],
                ]
                for r in used
            ],
            dtype=float,
        ).reshape(-1, 3)

    def reduce(self, key: str, values: np.ndarray) -> float:
        if len(values) == 0:
            return math.nan
        method, every, forward = values.sum(axis=0)
        return {
            "seconds_per_map": method / len(values),
            "seconds_all_classes": every / len(values),
            "forward_ratio_per_map": method / forward,
            "forward_ratio_all_classes": every / forward,
        }[key]
