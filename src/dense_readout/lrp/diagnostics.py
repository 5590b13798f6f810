"""Receptive-field diagnostic: how much of a cell's relevance lies outside its own patch.

The readout treats the ``h·w`` cells as instances of a bag (paper sec. 3). They are
not independent: a cell's feature vector sees far beyond its own image patch
(paper sec. 6.1, Fig. 8). Refining each cell's score to pixels with LRP gives a
number for that caveat: the share of the cell's relevance mass that falls outside
the ``H/h × W/w`` patch the cell sits on.

Shares use absolute relevance by default (``mode='abs'``); ``'positive'`` uses the
positive part only (evidence *for* the class).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InputError

__all__ = [
    "ReceptiveFieldSummary",
    "cell_patch_masks",
    "outside_share",
    "summarize_shares",
    "uniform_window_share",
    "window_share",
]

_MODES = ("abs", "positive")


def _mass(relevance: Tensor, mode: str) -> Tensor:
    if mode == "abs":
        return relevance.abs()
    if mode == "positive":
        return relevance.clamp(min=0)
    raise InputError(f"mode must be one of {_MODES}, got {mode!r}.")


def _bounds(index: int, cells: int, pixels: int) -> tuple[int, int]:
    return (index * pixels) // cells, ((index + 1) * pixels) // cells


def cell_patch_masks(
    grid_size: tuple[int, int], input_size: tuple[int, int], radius: int = 0
) -> Tensor:
    """Boolean ``h×w×H×W``: pixels of the patch of each cell, grown by ``radius`` cells.

    Cell ``(u, v)`` owns rows ``[u·H/h, (u+1)·H/h)`` and columns ``[v·W/w, (v+1)·W/w)``
    (integer division, so uneven sizes still tile the image).

    Example:
        >>> masks = cell_patch_masks((7, 7), (224, 224))
        >>> int(masks[3, 3].sum()), bool(masks[3, 3, 96, 96]), bool(masks[3, 3, 95, 96])
        (1024, True, False)
    """
    height, width = grid_size
    rows, cols = input_size
    if radius < 0:
        raise InputError(f"radius must be >= 0, got {radius}.")
    masks = torch.zeros(height, width, rows, cols, dtype=torch.bool)
    for u in range(height):
        top = _bounds(max(0, u - radius), height, rows)[0]
        bottom = _bounds(min(height - 1, u + radius), height, rows)[1]
        for v in range(width):
            left = _bounds(max(0, v - radius), width, cols)[0]
            right = _bounds(min(width - 1, v + radius), width, cols)[1]
            masks[u, v, top:bottom, left:right] = True
    return masks


def window_share(cell_maps: Tensor, radius: int = 0, mode: str = "abs") -> Tensor:
    """Share of each cell's relevance inside its patch grown by ``radius`` cells.

    Args:
        cell_maps: ``B×h×w×H×W`` per-cell relevance (``CellRelevance.relevance``).
        radius: how many cells the window extends beyond the cell's own patch.
        mode: ``"abs"`` (relevance magnitude) or ``"positive"`` (positive part only).

    Returns:
        ``B×h×w`` shares in [0, 1] (NaN for cells with no relevance mass).

    Example:
        >>> import torch
        >>> from dense_readout.lrp import window_share
        >>> maps = torch.zeros(1, 2, 2, 4, 4)  # a 2×2 grid over a 4×4 input: 2×2 pixels per cell
        >>> for u in range(2):
        ...     for v in range(2):
        ...         maps[0, u, v, 2 * u : 2 * u + 2, 2 * v : 2 * v + 2] = 1.0  # each cell's own patch
        >>> maps[0, 0, 0, 3, 3] = 1.0  # cell (0, 0) also spends 1/5 of its relevance elsewhere
        >>> window_share(maps).tolist()
        [[[0.800000011920929, 1.0], [1.0, 1.0]]]
        >>> window_share(maps, radius=1).tolist()  # a window of 3×3 cells covers the whole grid
        [[[1.0, 1.0], [1.0, 1.0]]]
    """
    if cell_maps.dim() != 5:
        raise InputError(
            f"cell_maps must be B×h×w×H×W (LRPReadout.cells(...).relevance), got {tuple(cell_maps.shape)}."
        )
    _, height, width, rows, cols = cell_maps.shape
    masks = cell_patch_masks((height, width), (rows, cols), radius)
    mass = _mass(cell_maps, mode)
    inside = (mass * masks.to(mass.device)).sum(dim=(-2, -1))
    total = mass.sum(dim=(-2, -1))
    return inside / total


def outside_share(cell_maps: Tensor, mode: str = "abs") -> Tensor:
    """Share of each cell's relevance outside its own patch, ``B×h×w`` (1 − window_share(r=0)).

    Example:
        >>> import torch
        >>> from dense_readout.lrp import outside_share
        >>> maps = torch.zeros(1, 1, 2, 2, 4)  # a 1×2 grid over a 2×4 input
        >>> maps[0, 0, 0, :, :2] = 1.0  # cell (0, 0): all inside its own patch
        >>> maps[0, 0, 1, :, :] = 1.0  # cell (0, 1): spread evenly, half of it outside
        >>> outside_share(maps).tolist()
        [[[0.0, 0.5]]]
    """
    return 1 - window_share(cell_maps, 0, mode)


def uniform_window_share(
    grid_size: tuple[int, int], input_size: tuple[int, int], radius: int = 0
) -> Tensor:
    """What :func:`window_share` would be for relevance spread uniformly: the window's area fraction.

    Example:
        >>> from dense_readout.lrp import uniform_window_share
        >>> uniform_window_share((2, 2), (4, 4)).tolist()  # each cell's patch is 1/4 of the image
        [[0.25, 0.25], [0.25, 0.25]]
        >>> uniform_window_share((3, 3), (6, 6), radius=1)[1, 1].item()  # the centre window: all of it
        1.0
    """
    masks = cell_patch_masks(grid_size, input_size, radius)
    return masks.float().mean(dim=(-2, -1))


@dataclass
class ReceptiveFieldSummary:
    """Distribution of outside-patch shares over many cells (and images).

    ``count`` cells; ``mean``, ``median``, ``q10``/``q90``; ``uniform`` is the share a
    uniform spread would leave outside the patch (``1 − 1/(h·w)``).

    Example:
        >>> from dense_readout.lrp import ReceptiveFieldSummary
        >>> summary = ReceptiveFieldSummary(count=4, mean=0.3, median=0.25, q10=0.1, q90=0.6, uniform=0.75)
        >>> summary.mean < summary.uniform, sorted(summary.as_dict())[:3]
        (True, ['count', 'mean', 'median'])
    """

    count: int
    mean: float
    median: float
    q10: float
    q90: float
    uniform: float

    def as_dict(self) -> dict:
        """The summary as a plain dictionary (for JSON)."""
        return dict(self.__dict__)


def summarize_shares(
    shares: Iterable[Tensor], uniform: float | None = None
) -> ReceptiveFieldSummary:
    """Summarise outside shares (any shapes; NaNs dropped) into a :class:`ReceptiveFieldSummary`.

    Example:
        >>> import torch
        >>> from dense_readout.lrp import summarize_shares
        >>> summary = summarize_shares([torch.tensor([[0.1, 0.2], [0.3, float("nan")]])], uniform=0.75)
        >>> summary.count, round(summary.mean, 6), round(summary.median, 6), summary.uniform
        (3, 0.2, 0.2, 0.75)
    """
    values = torch.cat([torch.as_tensor(s, dtype=torch.float64).flatten() for s in shares])
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        raise InputError("No finite shares to summarise (all cells had zero relevance?).")
    quantiles = torch.quantile(values, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return ReceptiveFieldSummary(
        count=int(values.numel()),
        mean=float(values.mean()),
        median=float(quantiles[1]),
        q10=float(quantiles[0]),
        q90=float(quantiles[2]),
        uniform=float("nan") if uniform is None else float(uniform),
    )
