"""Multiple-instance pooling rules that re-aggregate a dense readout into image scores.

GAP is the mean rule; the paper argues for comparing aggregation rules post hoc,
which the dense readout makes free: every rule below maps ``Z`` (``B×K×h×w``) to
``B×K`` without another forward pass. Add a rule with :func:`register_aggregation`.

Example:
    >>> import torch
    >>> from dense_readout.aggregation import aggregate
    >>> scores = torch.tensor([[[[0.0, 4.0]]]])  # B=1, K=1, 1×2 grid
    >>> aggregate(scores, "mean").item(), aggregate(scores, "max").item()
    (2.0, 4.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .errors import InputError
from .registry import Registry

AggregationRule = Callable[..., Tensor]
AGGREGATIONS: Registry[AggregationRule] = Registry(
    "aggregation rule",
    hint="Register your own with dense_readout.aggregation.register_aggregation.",
)

__all__ = ["AGGREGATIONS", "aggregate", "available_aggregations", "register_aggregation"]


def register_aggregation(name: str) -> Callable[[AggregationRule], AggregationRule]:
    """Register ``fn(cells: B×K×N, **options) -> B×K`` under ``name`` (a decorator).

    Example:
        >>> import torch
        >>> from dense_readout import aggregate, register_aggregation
        >>> from dense_readout.aggregation import AGGREGATIONS
        >>> @register_aggregation("median-example")
        ... def median(cells):
        ...     return cells.median(dim=2).values
        >>> aggregate(torch.tensor([[[[1.0, 2.0, 9.0]]]]), "median-example").item()
        2.0
        >>> _ = AGGREGATIONS.unregister("median-example")  # leave no rule behind
    """
    return AGGREGATIONS.register(name)


def available_aggregations() -> list[str]:
    """Names of the registered rules (``AGGREGATIONS.names()``)."""
    return AGGREGATIONS.names()


def aggregate(scores: Tensor, rule: str = "mean", **options: float) -> Tensor:
    """Pool ``scores`` (``B×K×h×w``, or ``B×K×t×h×w`` for clips/volumes) over cells; ``B×K``.

    Example:
        >>> import torch
        >>> from dense_readout import aggregate
        >>> scores = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]])  # B=1, K=1, a 2×2 grid
        >>> aggregate(scores).item(), aggregate(scores, "max").item(), aggregate(scores, "topk", k=2).item()
        (3.0, 6.0, 4.5)
    """
    pool = AGGREGATIONS.get(rule)
    if scores.dim() not in (4, 5):
        raise InputError(
            f"Expected scores of shape B×K×h×w or B×K×t×h×w, got {tuple(scores.shape)}."
        )
    return pool(scores.flatten(2), **options)


@register_aggregation("mean")
def _mean(cells: Tensor) -> Tensor:
    return cells.mean(dim=2)


@register_aggregation("max")
def _max(cells: Tensor) -> Tensor:
    return cells.amax(dim=2)


@register_aggregation("topk")
def _topk_mean(cells: Tensor, k: int | None = None, fraction: float | None = None) -> Tensor:
    """Mean of the k highest cells per class (``k`` or ``fraction`` of the cells)."""
    n = cells.shape[2]
    if (k is None) == (fraction is None):
        raise InputError("topk aggregation needs exactly one of k=... or fraction=...")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise InputError(f"fraction must be in (0, 1], got {fraction}.")
        k = max(1, math.ceil(fraction * n))
    assert k is not None  # exactly one of k / fraction was given
    if not 1 <= int(k) <= n:
        raise InputError(f"k must be in [1, {n}] (number of cells), got {k}.")
    return cells.topk(int(k), dim=2).values.mean(dim=2)


@register_aggregation("lse")
def _log_mean_exp(cells: Tensor, temperature: float = 1.0) -> Tensor:
    """(1/r)·log mean exp(r·Z): tends to the mean as r→0 and to the max as r→∞."""
    if temperature <= 0:
        raise InputError(f"lse temperature must be > 0, got {temperature}.")
    r = float(temperature)
    # float64: for small r the result is a difference of nearly equal numbers over r
    pooled = (torch.logsumexp(r * cells.double(), dim=2) - math.log(cells.shape[2])) / r
    return pooled.to(cells.dtype)
