"""The paper's ImageNet evaluation as a benchmark suite (datasets, protocol, metrics, runner).

Modules: :mod:`.datasets` (ILSVRC boxes in three layouts, ReaL, ImageNet-A),
:mod:`.protocol` (crop, box mask, any-pixel grid occupancy, occlusion),
:mod:`.metrics` (streaming mergeable accumulators), :mod:`.thresholds`
(A.3 thresholding controls), :mod:`.runner` (batched, resumable, distributed)
and :mod:`.reports` (results.json, markdown, CSV, plot).
"""
