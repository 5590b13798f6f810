"""LRP refinement of the dense readout (paper sec. 6.1, A.7, Fig. 8), built on zennit.

Example:
    >>> import torch
    >>> from dense_readout import load_pretrained
    >>> from dense_readout.lrp import LRPReadout
    >>> lrp = LRPReadout(load_pretrained().model)
    >>> result = lrp.class_map(torch.randn(1, 3, 224, 224))
    >>> tuple(result.relevance.shape), result.composite
    ((1, 1, 224, 224), 'epsilon_plus_flat')
"""

from . import timm_blocks as _timm_blocks  # noqa: F401  (registers timm's block forwards)
from . import torchvision_blocks as _torchvision_blocks  # noqa: F401  (and torchvision's)
from .canonizers import pass_multiply, register_block, registered_blocks, residual_sum
from .composites import (
    FAMILY_DEFAULTS,
    build_composite,
    default_composite,
    register_composite,
    registered_composites,
)
from .core import STRATEGIES, CellRelevance, LabelMap, LRPReadout, LRPResult
from .diagnostics import (
    ReceptiveFieldSummary,
    cell_patch_masks,
    outside_share,
    summarize_shares,
    uniform_window_share,
    window_share,
)
from .figures import plot_cell_relevance
from .integrations import LRPReadoutAttribution, LRPReadoutCAM

__all__ = [
    "FAMILY_DEFAULTS",
    "STRATEGIES",
    "CellRelevance",
    "LRPReadout",
    "LRPReadoutAttribution",
    "LRPReadoutCAM",
    "LRPResult",
    "LabelMap",
    "ReceptiveFieldSummary",
    "build_composite",
    "cell_patch_masks",
    "default_composite",
    "outside_share",
    "pass_multiply",
    "plot_cell_relevance",
    "register_block",
    "register_composite",
    "registered_blocks",
    "registered_composites",
    "residual_sum",
    "summarize_shares",
    "uniform_window_share",
    "window_share",
]
