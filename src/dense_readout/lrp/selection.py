"""Which scores an LRP call starts from: cell indices, classes and starting relevances.

LRP with fixed rules is linear in its starting relevance, so every entry point of
:class:`~dense_readout.lrp.LRPReadout` is "put these scores of ``Z`` in, zero
elsewhere". The helpers here check the requested cells and build those starts;
a stack of ``N`` starts (``N×B×K×h×w``) is propagated in one batched pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import InputError
from ..validation import check_targets

__all__ = [
    "Cell",
    "Target",
    "cell_classes",
    "cell_order",
    "cell_starts",
    "check_cells",
    "chunk_length",
    "class_group_starts",
    "class_map_start",
    "refined_mask",
    "scatter_cells",
    "single_cell_start",
]

Target = int | Sequence[int] | Tensor | None
Cell = tuple[int, int] | Sequence[Sequence[int]] | Tensor


def check_cells(cell: Cell, batch: int, grid: Sequence[int]) -> Tensor:
    """``cell`` as a ``B×2`` long tensor of ``(u, v)`` inside the ``h×w`` ``grid``.

    Example:
        >>> check_cells((1, 2), batch=2, grid=(3, 3)).tolist()
        [[1, 2], [1, 2]]
    """
    height, width = int(grid[0]), int(grid[1])
    try:
        cells = torch.as_tensor(cell)
    except (TypeError, ValueError) as error:
        raise InputError(f"Cannot read cell {cell!r} as (u, v) indices: {error}") from None
    if cells.is_floating_point() or cells.dtype == torch.bool:
        raise InputError(f"cell must hold integer (row, column) indices, got dtype {cells.dtype}.")
    cells = cells.long().cpu()
    if cells.shape == (2,):
        cells = cells.view(1, 2).expand(batch, 2)
    if cells.dim() != 2 or cells.shape != (batch, 2):
        raise InputError(
            f"cell must be (u, v) or a B×2 tensor (B={batch}); got shape {tuple(cells.shape)}."
        )
    if (
        (cells[:, 0] < 0).any()
        or (cells[:, 0] >= height).any()
        or (cells[:, 1] < 0).any()
        or (cells[:, 1] >= width).any()
    ):
        raise InputError(
            f"cell {cells.tolist()} is outside the {height}×{width} readout grid "
            f"(rows 0..{height - 1}, columns 0..{width - 1})."
        )
    return cells


def single_cell_start(z: Tensor, cell: Cell, target: Target) -> tuple[Tensor, Tensor, Tensor]:
    """Start at one cell per image: ``Z[b, k, u, v]``, zero elsewhere.

    ``k`` is ``target`` or the cell's own top-1 class. Returns the ``1×B×K×h×w``
    start, the ``B×2`` cells and the ``B`` classes.
    """
    cells = check_cells(cell, z.shape[0], z.shape[-2:])
    batch = torch.arange(z.shape[0])
    if target is None:
        classes = z[batch, :, cells[:, 0], cells[:, 1]].argmax(dim=1).cpu()
    else:
        classes = check_targets(target, z.shape[0], z.shape[1])
    mask = torch.zeros_like(z)
    mask[batch, classes, cells[:, 0], cells[:, 1]] = 1
    return (mask * z).unsqueeze(0), cells, classes


def class_map_start(z: Tensor, target: Target) -> tuple[Tensor, Tensor]:
    """Start at every cell of class ``k`` (``target``, or the top-1 of ``mean_uv Z``).

    Returns the ``1×B×K×h×w`` start and the ``B`` classes.
    """
    if target is None:
        classes = z.mean(dim=(2, 3)).argmax(dim=1).cpu()
    else:
        classes = check_targets(target, z.shape[0], z.shape[1])
    mask = torch.zeros_like(z)
    mask[torch.arange(z.shape[0]), classes] = 1
    return (mask * z).unsqueeze(0), classes


def cell_order(which: Sequence[tuple[int, int]] | None, grid: tuple[int, int]) -> Tensor:
    """Flat indices ``u·w + v`` of the cells to refine: all cells, or those in ``which``.

    Example:
        >>> cell_order(None, (2, 2)).tolist(), cell_order([(1, 0), (0, 1)], (2, 2)).tolist()
        ([0, 1, 2, 3], [2, 1])
    """
    height, width = grid
    if which is None:
        return torch.arange(height * width)
    picked = check_cells(list(which), len(which), grid) if len(which) else None
    if picked is None:
        raise InputError("which= must list at least one (u, v) cell.")
    return picked[:, 0] * width + picked[:, 1]


def cell_classes(scores: Tensor, target: Target) -> Tensor:
    """``B×h×w`` class to refine at each cell: the cell's own top-1, or ``target`` everywhere."""
    if target is None:
        return scores.argmax(dim=1).cpu()
    batch, classes, height, width = scores.shape
    return check_targets(target, batch, classes).view(-1, 1, 1).expand(-1, height, width)


def chunk_length(chunk_size: int | None, count: int, batch: int) -> int:
    """Cells per batched pass: ``chunk_size``, or ``max(1, 16 // batch)`` (at most ``count``)."""
    chunk = chunk_size or max(1, min(count, 16 // max(1, batch)))
    if chunk < 1:
        raise InputError(f"chunk_size must be >= 1, got {chunk_size}.")
    return chunk


def cell_starts(z: Tensor, index: Tensor, classes: Tensor) -> Tensor:
    """One start per cell in ``index`` (flat): ``Z[b, k, u, v]`` at its class ``k``, zero elsewhere.

    Returns ``len(index)×B×K×h×w``.

    Example:
        >>> z = torch.arange(8.0).view(1, 2, 2, 2)  # B=1, K=2, 2×2 grid
        >>> starts = cell_starts(z, torch.tensor([3]), z.argmax(dim=1))
        >>> starts.shape, starts.sum().item(), starts[0, 0, 1, 1, 1].item()
        (torch.Size([1, 1, 2, 2, 2]), 7.0, 7.0)
    """
    batch, width = z.shape[0], z.shape[-1]
    start = torch.zeros(len(index), *z.shape, dtype=z.dtype, device=z.device)
    rows, cols = index // width, index % width
    for slot, (u, v) in enumerate(zip(rows.tolist(), cols.tolist(), strict=False)):
        k = classes[:, u, v]
        start[slot, torch.arange(batch), k, u, v] = z[torch.arange(batch), k, u, v]
    return start


def scatter_cells(computed: Tensor, order: Tensor, grid: tuple[int, int]) -> Tensor:
    """``count×B×H×W`` maps of the cells in ``order`` into ``B×h×w×H×W`` (other cells zero)."""
    computed = computed.permute(1, 0, 2, 3)  # B×count×H×W
    batch, _, rows, cols = computed.shape
    relevance = computed.new_zeros(batch, grid[0] * grid[1], rows, cols)
    relevance[:, order.to(relevance.device)] = computed
    return relevance.reshape(batch, grid[0], grid[1], rows, cols)


def refined_mask(order: Tensor, grid: tuple[int, int]) -> Tensor:
    """``h×w`` booleans: True at the cells in ``order``."""
    done = torch.zeros(grid[0] * grid[1], dtype=torch.bool)
    done[order] = True
    return done.view(grid)


def class_group_starts(z: Tensor, classes: Tensor) -> Tensor:
    """One start per class group: ``Z[b, k]`` at the cells whose top-1 is ``k``, ``M×B×K×h×w``.

    ``classes`` is ``B×M``, the classes present per image (``-1`` pads).
    """
    batch, groups = classes.shape
    start = torch.zeros(groups, *z.shape, dtype=z.dtype, device=z.device)
    labels = z.argmax(dim=1)
    for b in range(batch):
        for g, k in enumerate(classes[b].tolist()):
            if k < 0:
                continue
            start[g, b, k] = z[b, k] * (labels[b] == k)
    return start
