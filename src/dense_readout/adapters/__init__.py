"""Model-family adapters (a registry, like timm's models and zennit's composites)."""

from . import timm_models, torchvision_models  # noqa: F401  (registers the adapters)
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

__all__ = [
    "CustomAdapter",
    "ModelAdapter",
    "PooledGridAdapter",
    "TokenGridAdapter",
    "affine_leaf",
    "executed_leaves",
    "find_adapter",
    "register_adapter",
    "registered_adapters",
]
