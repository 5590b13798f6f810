"""The paper's Fig. 8: the label grid with one cell highlighted, beside its LRP map."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from ..errors import InputError

__all__ = ["plot_cell_relevance"]


def plot_cell_relevance(
    image: object,
    labels: Tensor,
    relevance: Tensor,
    cell: tuple[int, int],
    class_names: Sequence[str] | None = None,
    *,
    title: str | None = None,
    max_legend: int = 8,
):
    """Two panels: label grid with ``cell`` outlined in red; its relevance, cell outlined in white.

    Args:
        image: the picture the model saw (PIL image, ``H×W×3`` array in [0, 1] or a
            ``3×H×W`` tensor in [0, 1], e.g. ``preprocess.denormalize(x[0])``).
        labels: ``h×w`` top-1 classes (``result.labels()[0]``).
        relevance: ``H×W`` (or ``1×H×W``) relevance of the cell (``LRPResult.relevance[0]``).
        cell: ``(u, v)`` of the refined cell.
        class_names: names for the legend (short names are used).

    Returns:
        A matplotlib ``Figure`` on the Agg canvas (no pyplot); ``figure.savefig(path)``.

    Example:
        >>> import torch
        >>> fig = plot_cell_relevance(torch.rand(3, 64, 64), torch.zeros(2, 2, dtype=torch.long),
        ...                           torch.randn(64, 64), (0, 1))
        >>> len(fig.axes)  # two panels and the colour bar
        3
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    from ..viz import _as_rgb_array, class_palette, short_name

    picture = _as_rgb_array(image)
    grid = np.asarray(labels.detach().cpu() if isinstance(labels, Tensor) else labels)
    if grid.ndim != 2:
        raise InputError(f"labels must be an h×w grid, got shape {grid.shape}.")
    heat = (
        relevance.detach().cpu().float().numpy()
        if isinstance(relevance, Tensor)
        else np.asarray(relevance)
    )
    heat = heat.reshape(heat.shape[-2:])
    rows, cols = picture.shape[:2]
    if heat.shape != (rows, cols):
        raise InputError(f"relevance is {heat.shape}, the image {rows}×{cols}; they must match.")
    height, width = grid.shape
    u, v = cell
    if not (0 <= u < height and 0 <= v < width):
        raise InputError(f"cell {cell} is outside the {height}×{width} grid.")
    cell_h, cell_w = rows / height, cols / width

    classes, counts = np.unique(grid, return_counts=True)
    classes = classes[np.argsort(-counts)]
    colours = dict(zip(classes.tolist(), class_palette(len(classes)), strict=False))
    tint = np.zeros((height, width, 3))
    for k, colour in colours.items():
        tint[grid == k] = colour
    tint_full = np.kron(tint, np.ones((int(np.ceil(cell_h)), int(np.ceil(cell_w)), 1)))[
        :rows, :cols
    ]

    figure = Figure(figsize=(10, 6.0), facecolor="white")  # Agg canvas: no pyplot state, no display
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    left.imshow(0.6 * picture + 0.4 * tint_full)
    for x in range(1, width):
        left.axvline(x * cell_w - 0.5, color="white", lw=0.5)
    for y in range(1, height):
        left.axhline(y * cell_h - 0.5, color="white", lw=0.5)
    left.add_patch(
        Rectangle((v * cell_w - 0.5, u * cell_h - 0.5), cell_w, cell_h, fill=False, ec="red", lw=3)
    )
    names = [
        short_name(class_names[k]) if class_names and k < len(class_names) else str(k)
        for k in classes
    ]
    handles = [
        Patch(color=colours[k], label=n) for k, n in zip(classes.tolist(), names, strict=False)
    ][:max_legend]
    left.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.01),
        ncol=min(3, len(handles)),
        fontsize=8,
        frameon=False,
    )
    left.set_title("(a) label grid (top-1 per cell)", fontsize=10)

    limit = float(np.abs(heat).max()) or 1.0
    shown = right.imshow(heat, cmap="bwr", vmin=-limit, vmax=limit)
    right.imshow(picture.mean(axis=-1), cmap="gray", alpha=0.12)
    right.add_patch(
        Rectangle(
            (v * cell_w - 0.5, u * cell_h - 0.5), cell_w, cell_h, fill=False, ec="white", lw=2.5
        )
    )
    right.set_facecolor("black")
    right.set_title(f"(b) LRP relevance of cell ({u}, {v})", fontsize=10)
    figure.colorbar(shown, ax=right, fraction=0.046, pad=0.02)
    for axis in (left, right):
        axis.set_xticks([])
        axis.set_yticks([])
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return figure
