"""The comparative attribution benchmark: quality × faithfulness × sanity × cost, one run.

``dense-readout compare ROOT --methods … --out DIR`` (see ``docs/compare.md``)
runs every method of the :mod:`dense_readout.compare` registry on the same images
and targets (the ground-truth class), post-processes every map the same way
(:func:`~dense_readout.compare.postprocess`), and scores it with the metrics of
:data:`~.metrics.BENCH_METRICS`: localization (pointing game, energy pointing
game, MaxBoxAccV2, the paper's Loc for all-class maps), faithfulness (batched
deletion / insertion, ROAD), sanity (MPRT cascade, random logit) and cost
(seconds per map and for all K classes, as ratios to one forward of the same
batch in the same process).

Modules: :mod:`.items` (images, masks, crop boxes), :mod:`.perturbation`
(curves, ROAD), :mod:`.sanity` (cascade, correlations), :mod:`.metrics` (one
class per metric, the registry), :mod:`.records` (resumable per-image records),
:mod:`.runner` (batches, shards), :mod:`.summary` (bootstrap CIs, JSON, CSV) and
:mod:`.report` (Markdown, HTML).

Example:
    >>> from dense_readout.compare.bench import BenchConfig
    >>> BenchConfig(methods=("dense-readout", "gradcam"), limit=10).subset_limit
    200
"""

from .metrics import BENCH_METRICS, BenchMetric, MapBatch, register_bench_metric
from .runner import BenchConfig, run_compare_bench

__all__ = [
    "BENCH_METRICS",
    "BenchConfig",
    "BenchMetric",
    "MapBatch",
    "register_bench_metric",
    "run_compare_bench",
]
