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

from .blocks import BlockRewrite, pass_multiply, residual_sum
from .checks import bias_free, block_forward_matches
from .composites import build_composite, register_composite, registered_composites
from .core import STRATEGIES, CellRelevance, LabelMap, LRPReadout, LRPResult
from .diagnostics import (
    ReceptiveFieldSummary,
    cell_patch_masks,
    outside_share,
    summarize_shares,
    uniform_window_share,
    window_share,
)
from .families import (
    FAMILIES,
    default_composite,
    family_of,
    register_family,
    registered_blocks,
    rewrites,
)
from .family import LRPFamily
from .figures import plot_cell_relevance
from .integrations import LRPReadoutAttribution, LRPReadoutCAM

__all__ = [
    "FAMILIES",
    "STRATEGIES",
    "BlockRewrite",
    "CellRelevance",
    "LRPFamily",
    "LRPReadout",
    "LRPReadoutAttribution",
    "LRPReadoutCAM",
    "LRPResult",
    "LabelMap",
    "ReceptiveFieldSummary",
    "bias_free",
    "block_forward_matches",
    "build_composite",
    "cell_patch_masks",
    "default_composite",
    "family_of",
    "outside_share",
    "pass_multiply",
    "plot_cell_relevance",
    "register_composite",
    "register_family",
    "registered_blocks",
    "registered_composites",
    "residual_sum",
    "rewrites",
    "summarize_shares",
    "uniform_window_share",
    "window_share",
]
