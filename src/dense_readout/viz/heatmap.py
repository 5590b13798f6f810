"""One class's per-cell scores over the image, bilinearly upsampled, with a colour bar."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._optional import require_matplotlib
from ..errors import InputError
from ._common import (
    FONT,
    GridLike,
    ImageLike,
    _add_title,
    _as_grid,
    _as_rgb_array,
    _image_axes,
    _Layout,
    _upscaled,
)


# -- heatmap --------------------------------------------------------------------------
def plot_heatmap(
    image: ImageLike,
    score_map: GridLike,
    *,
    title: str | None = None,
    value_label: str = "per-cell score",
    cmap: str = "turbo",
    centre: float | None = None,
    alpha: float = 0.5,
    show_grid: bool = True,
    panel_px: int = 800,
) -> Any:
    """Overlay one class's per-cell scores on the image, bilinearly upsampled.

    Args:
        image: the picture the model saw (see :func:`plot_label_grid`).
        score_map: ``h×w`` scores of one class, e.g. ``result.class_map(k)[0]``.
        title: text above the picture.
        value_label: colour-bar label (say what the values are, e.g. logit units).
        cmap: a matplotlib colour map; the default diverging map shows positive
            evidence in red and negative in blue.
        centre: value mapped to the middle of ``cmap`` with limits symmetric
            around it (0 separates evidence for and against); ``None`` spans
            ``[min, max]``.
        alpha: opacity of the heat layer.
        show_grid: draw the cell boundaries faintly.
        panel_px: size of the image panel's longer side in output pixels.

    Example:
        >>> import numpy as np
        >>> from dense_readout.viz import plot_heatmap
        >>> figure = plot_heatmap(np.ones((32, 32, 3)), np.arange(4.0).reshape(2, 2) - 1)
        >>> len(figure.axes)
        2
    """
    require_matplotlib()
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    if cmap not in colormaps:
        raise InputError(f"Unknown colour map {cmap!r}; see matplotlib.colormaps.")
    picture = _upscaled(_as_rgb_array(image), panel_px)
    scores = _as_grid(score_map, "score_map", integer=False)
    rows, cols = scores.shape
    height, width = picture.shape[:2]
    norm = Normalize(*_colour_limits(scores, centre))

    layout = _Layout(
        width, height, side_px=110, title_lines=(title.count("\n") + 1) if title else 0
    )
    figure = layout.figure()
    _add_title(figure, layout, title)
    axes = _image_axes(figure, layout, picture)
    # Bilinear upsampling with cell centres at ((v + 0.5)·W/w, (u + 0.5)·H/h), edges clamped
    # (align_corners=False), so every value sits over the cell it belongs to.
    upsampled = torch.nn.functional.interpolate(
        torch.from_numpy(scores)[None, None].float(),
        size=(height, width),
        mode="bilinear",
        align_corners=False,
    )[0, 0].numpy()
    heat = axes.imshow(
        upsampled,
        extent=(0, width, height, 0),
        cmap=cmap,
        norm=norm,
        alpha=alpha,
        interpolation="none",
        aspect="auto",
    )
    if show_grid:
        _draw_faint_grid(axes, rows, cols, width, height)
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)

    left, bottom, _, panel_h = layout.side_rect()
    bar = figure.add_axes([left, bottom, 22 / layout.width, panel_h])
    colourbar = figure.colorbar(heat, cax=bar)
    colourbar.solids.set_alpha(1.0)
    colourbar.set_label(value_label, fontsize=11, family=FONT)
    bar.tick_params(labelsize=10)
    return figure


def _colour_limits(scores: np.ndarray, centre: float | None) -> tuple[float, float]:
    """``[min, max]`` of the scores, or limits symmetric around ``centre``; never empty."""
    low, high = float(scores.min()), float(scores.max())
    if centre is not None:
        spread = max(abs(high - centre), abs(low - centre), 1e-6)
        return centre - spread, centre + spread
    if high - low < 1e-6:
        return low - 0.5, high + 0.5
    return low, high


def _draw_faint_grid(axes: Any, rows: int, cols: int, width: int, height: int) -> None:
    from matplotlib.collections import LineCollection

    lines = [[(v * width / cols, 0.0), (v * width / cols, height)] for v in range(1, cols)]
    lines += [[(0.0, u * height / rows), (width, u * height / rows)] for u in range(1, rows)]
    axes.add_collection(
        LineCollection(lines, colors="black", alpha=0.25, linewidths=min(0.6, width / cols / 12))
    )
