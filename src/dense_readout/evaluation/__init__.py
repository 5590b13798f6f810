"""The paper's ImageNet evaluation as a benchmark suite (datasets, protocol, metrics, runner).

Modules: :mod:`.datasets` (ILSVRC boxes, ReaL, ImageNet-A) with :mod:`.box_layouts`
(the three box annotation layouts), :mod:`.protocol` (crop, box mask, any-pixel grid
occupancy, occlusion), :mod:`.metrics` (streaming mergeable accumulators),
:mod:`.thresholds` (A.3 thresholding controls), :mod:`.runner` (batched, resumable,
distributed) with :mod:`.batches` (items and one batch's update), :mod:`.state`
(state, checkpoints, results) and :mod:`.distributed`, and :mod:`.reports`
(results.json, markdown, CSV, plot).
"""
