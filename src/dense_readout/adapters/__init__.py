"""Model-family adapters (a registry, like timm's models and zennit's composites)."""

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
from . import timm_models, torchvision_models  # noqa: F401  (registers the adapters)

__all__ = [
    "ModelAdapter",
    "PooledGridAdapter",
    "TokenGridAdapter",
    "CustomAdapter",
    "register_adapter",
    "registered_adapters",
    "find_adapter",
    "affine_leaf",
    "executed_leaves",
]
