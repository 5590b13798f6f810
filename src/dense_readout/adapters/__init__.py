"""Model-family adapters (a registry, like timm's models and zennit's composites)."""

# importing registers the adapters; structural is the fallback (lowest priority)
from . import hf_mean_pooled, hf_models, structural, timm_models, torchvision_models, video  # noqa: F401
from .base import (
    ADAPTERS,
    ModelAdapter,
    affine_leaf,
    executed_leaves,
    find_adapter,
    register_adapter,
    registered_adapters,
)
from .custom import CustomAdapter
from .pooled import PooledGridAdapter, TokenGridAdapter
from .structural import StructuralAdapter

__all__ = [
    "ADAPTERS",
    "CustomAdapter",
    "ModelAdapter",
    "PooledGridAdapter",
    "StructuralAdapter",
    "TokenGridAdapter",
    "affine_leaf",
    "executed_leaves",
    "find_adapter",
    "register_adapter",
    "registered_adapters",
]
