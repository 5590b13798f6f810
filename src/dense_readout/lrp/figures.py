"""The paper's Fig. 8: the label grid with one cell highlighted, beside its LRP map."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from ..errors import InputError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..viz import ImageLike

__all__ = ["plot_cell_relevance"]


def plot_cell_relevance(
    image: ImageLike,
    labels: Tensor,
    relevance: Tensor,
    cell: tuple[int, int],
    class_names: Sequence[str] | None = None,
    *,
    title: str | None = None,
    max_legend: int = 8,
) -> Figure:
    """Two panels: label grid with ``cell`` outlined in red; its relevance, cell outlined in white.

    Args:
        image: the picture the model saw (PIL image, ``H×W×3`` array in [0, 1] or a
            ``3×H×W`` tensor in [0, 1], e.g. ``preprocess.denormalize(x[0])``).
        labels: ``h×w`` top-1 classes (``result.labels()[0]``).
        relevance: ``H×W`` (or ``1×H×W``) relevance of the cell (``LRPResult.relevance[0]``).
        cell: ``(u, v)`` of the refined cell.
        class_names: names for the legend (short names are used).
        title: figure title (optional).
        max_legend: classes listed in the legend, by cell count.

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

    from ..viz import _as_rgb_array

    picture, grid, heat = _checked_panels(_as_rgb_array(image), labels, relevance, cell)
    figure = Figure(figsize=(10, 6.0), facecolor="white")  # Agg canvas: no pyplot state, no display
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    _draw_label_grid(left, picture, grid, cell, class_names, max_legend)
    _draw_relevance(figure, right, picture, heat, cell, grid.shape)
    for axis in (left, right):
        axis.set_xticks([])
        axis.set_yticks([])
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return figure


def _checked_panels(
    picture: np.ndarray, labels: Any, relevance: Any, cell: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(picture, h×w label grid, H×W heat)`` as arrays; InputError on mismatched shapes."""
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
    return picture, grid, heat


def _cell_box(
    cell: tuple[int, int], cell_size: tuple[float, float], colour: str, width: float
) -> Any:
    """The outline of ``cell`` in pixel coordinates (a matplotlib ``Rectangle``)."""
    from matplotlib.patches import Rectangle

    (u, v), (cell_h, cell_w) = cell, cell_size
    return Rectangle(
        (v * cell_w - 0.5, u * cell_h - 0.5), cell_w, cell_h, fill=False, ec=colour, lw=width
    )


def _draw_label_grid(
    axis: Axes,
    picture: np.ndarray,
    grid: np.ndarray,
    cell: tuple[int, int],
    class_names: Sequence[str] | None,
    max_legend: int,
) -> None:
    """Panel (a): the picture tinted by class, grid lines, ``cell`` in red, a class legend."""
    from matplotlib.patches import Patch

    from ..viz import class_palette, short_name

    rows, cols = picture.shape[:2]
    height, width = grid.shape
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
    axis.imshow(0.6 * picture + 0.4 * tint_full)
    for x in range(1, width):
        axis.axvline(x * cell_w - 0.5, color="white", lw=0.5)
    for y in range(1, height):
        axis.axhline(y * cell_h - 0.5, color="white", lw=0.5)
    axis.add_patch(_cell_box(cell, (cell_h, cell_w), "red", 3))
    names = [
        short_name(class_names[k]) if class_names and k < len(class_names) else str(k)
        for k in classes
    ]
    handles = [
        Patch(color=colours[k], label=n) for k, n in zip(classes.tolist(), names, strict=False)
    ][:max_legend]
    axis.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.01),
        ncol=min(3, len(handles)),
        fontsize=8,
        frameon=False,
    )
    axis.set_title("(a) label grid (top-1 per cell)", fontsize=10)


def _draw_relevance(
    figure: Figure,
    axis: Axes,
    picture: np.ndarray,
    heat: np.ndarray,
    cell: tuple[int, int],
    grid_shape: tuple[int, ...],
) -> None:
    """Panel (b): the relevance in a symmetric ``bwr`` scale over the faint picture, ``cell`` in white."""
    rows, cols = picture.shape[:2]
    cell_size = (rows / grid_shape[0], cols / grid_shape[1])
    limit = float(np.abs(heat).max()) or 1.0
    shown = axis.imshow(heat, cmap="bwr", vmin=-limit, vmax=limit)
    axis.imshow(picture.mean(axis=-1), cmap="gray", alpha=0.12)
    axis.add_patch(_cell_box(cell, cell_size, "white", 2.5))
    axis.set_facecolor("black")
    axis.set_title(f"(b) LRP relevance of cell ({cell[0]}, {cell[1]})", fontsize=10)
    figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.02)
