"""Model-family adapters (a registry, like timm's models and zennit's composites)."""

from . import hf_models, timm_models, torchvision_models  # noqa: F401  (registers the adapters)
from . import structural  # noqa: F401  (the fallback, lowest priority: registered last)
from .base import (
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
