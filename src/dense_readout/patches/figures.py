"""Fig. 9 of the paper: two images side by side, the most similar cell pairs joined by lines.

Example:
    >>> import numpy as np, torch
    >>> from torch import nn
    >>> from dense_readout.patches import correspondence, correspondence_figure
    >>> body = nn.Conv2d(3, 4, 8, stride=8).eval()
    >>> result = correspondence(body, torch.rand(3, 32, 32), torch.rand(3, 32, 32),
    ...                         top=5, features=body)
    >>> figure = correspondence_figure(result, np.zeros((32, 32, 3)), np.ones((32, 32, 3)))
    >>> len(figure.axes)  # the images and the colour bar
    2
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._optional import require_matplotlib
from ..viz import save_png
from ..viz._common import ImageLike, _as_rgb_array
from .correspondence import Correspondence

__all__ = ["correspondence_figure", "save_correspondence_figure"]


def correspondence_figure(
    result: Correspondence,
    picture_a: ImageLike,
    picture_b: ImageLike,
    *,
    title: str | None = None,
    panel_px: int = 448,
    cmap: str = "viridis",
):
    """A matplotlib figure: A left, B right, one line per pair of ``result.pairs``.

    ``picture_a``/``picture_b`` are what the model saw (``preprocess.geometry(pil)``,
    or the denormalised inputs); lines join cell centres and are coloured by cosine
    similarity (colour bar), the most similar drawn on top with numbered ends.

    Example:
        >>> import numpy as np, torch
        >>> from torch import nn
        >>> from dense_readout.patches import correspondence, correspondence_figure
        >>> body = nn.Conv2d(3, 4, 8, stride=8).eval()
        >>> result = correspondence(body, torch.rand(3, 32, 32), torch.rand(3, 32, 32), top=5, features=body)
        >>> figure = correspondence_figure(result, np.zeros((32, 32, 3)), np.ones((32, 32, 3)), title="A and B")
        >>> len(figure.axes)  # the images and the colour bar
        2
    """
    require_matplotlib()
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    images = [_resized(_as_rgb_array(p), panel_px) for p in (picture_a, picture_b)]
    height = max(i.shape[0] for i in images)
    gap = panel_px // 16
    canvas = np.ones((height, images[0].shape[1] + gap + images[1].shape[1], 3))
    canvas[: images[0].shape[0], : images[0].shape[1]] = images[0]
    offset = images[0].shape[1] + gap
    canvas[: images[1].shape[0], offset:] = images[1]
    dpi = 100
    size = (canvas.shape[1] / dpi * 1.15, canvas.shape[0] / dpi * 1.15 + 0.5)
    figure = Figure(figsize=size, dpi=dpi, facecolor="white")
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.02, 0.02, 0.86, 0.88))
    axes.imshow(canvas, interpolation="lanczos")
    axes.set_axis_off()
    similarities = [p.similarity for p in result.pairs] or [0.0]
    norm = Normalize(min(similarities), max(similarities) + 1e-9)
    colours = colormaps[cmap]
    for pair in reversed(result.pairs):  # best drawn last (on top)
        xa, ya = _centre(pair.cell_a, result.grid_a, images[0].shape)
        xb, yb = _centre(pair.cell_b, result.grid_b, images[1].shape)
        colour = colours(norm(pair.similarity))
        axes.plot([xa, xb + offset], [ya, yb], color=colour, linewidth=2.0, alpha=0.9)
        axes.scatter([xa, xb + offset], [ya, yb], s=22, color=colour, edgecolors="white", zorder=3)
    bar_axes = figure.add_axes((0.9, 0.1, 0.025, 0.72))
    bar = figure.colorbar(ScalarMappable(norm=norm, cmap=colours), cax=bar_axes)
    bar.set_label("cosine similarity")
    figure.suptitle(
        title
        or f"top-{len(result.pairs)} most similar cell pairs "
        f"({result.grid_a[0]}×{result.grid_a[1]} and {result.grid_b[0]}×{result.grid_b[1]} grids)",
        fontsize=10,
    )
    return figure


def save_correspondence_figure(
    result: Correspondence, picture_a: ImageLike, picture_b: ImageLike, path: str | Path, **options
) -> Path:
    """:func:`correspondence_figure` written to ``path`` as a PNG (atomically).

    Example:
        >>> import os, tempfile, numpy as np, torch
        >>> from PIL import Image
        >>> from torch import nn
        >>> from dense_readout.patches import correspondence, save_correspondence_figure
        >>> body = nn.Conv2d(3, 4, 8, stride=8).eval()
        >>> result = correspondence(body, torch.rand(3, 32, 32), torch.rand(3, 32, 32), top=3, features=body)
        >>> with tempfile.TemporaryDirectory() as root:
        ...     path = save_correspondence_figure(result, np.zeros((32, 32, 3)), np.ones((32, 32, 3)), os.path.join(root, "pairs.png"))
        ...     print(path.name, Image.open(path).format)
        pairs.png PNG
    """
    return save_png(correspondence_figure(result, picture_a, picture_b, **options), path)


def _resized(image: np.ndarray, height: int) -> np.ndarray:
    from PIL import Image

    scale = height / image.shape[0]
    width = max(1, round(image.shape[1] * scale))
    pil = Image.fromarray(np.round(image * 255).astype(np.uint8))
    return np.asarray(pil.resize((width, height), Image.Resampling.BICUBIC)) / 255.0


def _centre(cell: tuple[int, int], grid: tuple[int, int], shape: tuple[int, ...]):
    """Pixel centre ``(x, y)`` of ``cell`` in a picture of ``shape`` split into ``grid``."""
    (u, v), (rows, cols) = cell, grid
    return (v + 0.5) * shape[1] / cols, (u + 0.5) * shape[0] / rows
