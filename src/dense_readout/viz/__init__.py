"""Pictures of a dense readout: the label grid (the paper's Fig. 0) and class heatmaps.

* :func:`plot_label_grid` draws the image with the readout grid on it; every cell
  is tinted with the colour of its top-1 class and shows the class's short name
  (or, when names do not fit, a legend key), with a legend of the classes present.
* :func:`plot_heatmap` overlays one class's per-cell scores ``Z_k`` on the image,
  bilinearly upsampled, with a colour bar in the scores' own units.

Both return a :class:`matplotlib.figure.Figure` built on the Agg canvas (no
pyplot, no global state, no display needed); :func:`save_png` writes it and
:func:`figure_to_array` rasterises it. The image is drawn at ``panel_px`` pixels
per side (a 224 px input is upscaled so that text stays legible) and the grid
lines fall exactly on the cell boundaries: cell ``(u, v)`` of an ``h×w`` grid
covers rows ``u·H/h … (u+1)·H/h`` and columns ``v·W/w … (v+1)·W/w`` of the image.

Example:
    >>> import numpy as np
    >>> from dense_readout.viz import plot_label_grid, figure_to_array
    >>> image = np.full((224, 224, 3), 0.5)
    >>> labels = np.array([[0, 1], [1, 1]])
    >>> figure = plot_label_grid(image, labels, ["cat", "dog"], panel_px=200)
    >>> figure_to_array(figure).shape[2]
    3
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .._atomic import write_atomic
from ..errors import InputError
from ._common import DPI, ImageLike, _name_of, class_palette, short_name
from ._common import _as_rgb_array as _as_rgb_array  # used by lrp.figures
from .heatmap import plot_heatmap
from .label_grid import plot_label_grid

__all__ = [
    "add_photo_inset",
    "class_palette",
    "figure_to_array",
    "panel_box",
    "plot_heatmap",
    "plot_label_grid",
    "readout_figures",
    "save_png",
    "short_name",
]


INSET_TITLE_PX = 16  # the thumbnail's title line above it (8 pt text, 4 pt pad)


# -- convenience ----------------------------------------------------------------------
def readout_figures(
    result,
    image: ImageLike,
    class_names: Sequence[str] | None = None,
    *,
    index: int = 0,
    target: int | None = None,
    name: str = "",
):
    """Label grid and heatmap figures of image ``index`` of a :class:`ReadoutResult`.

    The heatmap shows ``target`` (default: the image-level top-1 class from the
    model's own logits). Returns ``(label_grid_figure, heatmap_figure)``.

    Example:
        >>> import timm, torch
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.viz import readout_figures
        >>> model = timm.create_model("resnet18", num_classes=5).eval()
        >>> x = torch.rand(1, 3, 64, 64)
        >>> grid, heat = readout_figures(DenseReadout(model)(x), x[0])
    """
    if not 0 <= index < result.batch_size:
        raise InputError(f"index must be in [0, {result.batch_size}), got {index}.")
    image_probs = torch.softmax(result.logits[index].detach().float(), dim=0)
    top = int(image_probs.argmax()) if target is None else int(target)
    if not 0 <= top < result.num_classes:
        raise InputError(f"target must be in [0, {result.num_classes}), got {top}.")
    cell_probs = result.probabilities()[index].detach()
    labels = cell_probs.argmax(dim=0)
    top_probs = cell_probs.max(dim=0).values
    h, w = result.grid_size
    prefix = f"{name} · " if name else ""
    exactness = "mean of cells = logits" if result.exact else "not exact: mean of cells ≠ logits"
    top_name = _name_of(top, class_names)
    grid_title = (
        f"{prefix}image top-1: {top_name} ({100 * float(image_probs[top]):.1f}%)\n"
        f"top-1 class of each of the {h}×{w} cells ({exactness})"
    )
    grid_figure = plot_label_grid(
        image, labels, class_names, probabilities=top_probs, title=grid_title
    )
    heat_title = (
        f"{prefix}evidence for {top_name}" + (f" ({top})" if class_names is not None else "") + "\n"
        f"per-cell logit Z of the class, {h}×{w} grid upsampled bilinearly"
    )
    heat_figure = plot_heatmap(
        image,
        result.class_map(top)[index].detach(),
        title=heat_title,
        value_label=f"Z[{top}] per cell (logit units; cells average to the image logit)"
        if result.exact
        else f"Z[{top}] per cell (logit units)",
    )
    return grid_figure, heat_figure


def save_png(figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG at its own size (no cropping, atomically) and release it.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from dense_readout.viz import plot_heatmap, save_png
        >>> path = save_png(plot_heatmap(np.ones((8, 8, 3)), np.eye(2)), os.path.join(tempfile.mkdtemp(), "h.png"))
        >>> path.suffix
        '.png'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # written whole, then renamed: never a half-written PNG
    figure.savefig(buffer, dpi=DPI, format="png", facecolor="white")
    figure.clear()
    return write_atomic(path, buffer.getvalue())


def add_photo_inset(figure, photo: ImageLike, region: Sequence[float], width_px: int = 300):
    """Draw a thumbnail of the whole ``photo`` with ``region`` outlined.

    The thumbnail sits low in the figure's right side; ``region`` is ``[left, top, right,
    bottom]`` in photo pixels (e.g. the crop). On a label grid the legend is redrawn
    with its rows above the thumbnail and its note below it, so that nothing overlaps
    (the rows get smaller when they must).

    Example:
        >>> import numpy as np
        >>> from dense_readout.viz import add_photo_inset, plot_heatmap
        >>> figure = plot_heatmap(np.ones((8, 8, 3)), np.eye(2))
        >>> axes = add_photo_inset(figure, np.zeros((30, 45, 3)), [8, 0, 38, 30])
        >>> len(axes.patches)
        1
    """
    from matplotlib.patches import Rectangle

    picture = _as_rgb_array(photo)
    height, width = picture.shape[:2]
    fig_w, fig_h = figure.get_size_inches() * figure.dpi
    inset_w = min(width_px, 0.3 * fig_w)
    inset_h = min(inset_w * height / width, 0.3 * fig_h)
    inset_w = inset_h * width / height
    panel = getattr(figure, "legend_panel", None)  # a label grid's legend
    lift = 104.0  # above the legend's note at the foot of the side panel
    if panel is not None:
        lift = panel.layout.bottom_px + panel.layout.margin + panel.note_px + 6
        panel.draw(reserve_px=inset_h + INSET_TITLE_PX + 12)
    axes = figure.add_axes(
        [1 - (inset_w + 12) / fig_w, lift / fig_h, inset_w / fig_w, inset_h / fig_h]
    )
    axes.imshow(picture, extent=(0, width, height, 0), interpolation="antialiased", aspect="auto")
    left, top, right, bottom = (float(v) for v in region)
    axes.add_patch(
        Rectangle(
            (left, top), right - left, bottom - top, fill=False, edgecolor="#ffd400", linewidth=2
        )
    )
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title("whole photo, crop outlined", fontsize=8, pad=4)
    return axes


def figure_to_array(figure) -> np.ndarray:
    """Rasterise ``figure`` to an ``H×W×3`` uint8 array (as :func:`save_png` would write it).

    Example:
        >>> import os, tempfile, numpy as np
        >>> from PIL import Image
        >>> from dense_readout.viz import figure_to_array, plot_heatmap, save_png
        >>> figure = plot_heatmap(np.ones((16, 16, 3)), np.eye(2))
        >>> pixels = figure_to_array(figure)
        >>> pixels.dtype, pixels.shape[2], pixels.shape[:2] == figure.canvas.get_width_height()[::-1]
        (dtype('uint8'), 3, True)
        >>> path = save_png(figure, os.path.join(tempfile.mkdtemp(), "h.png"))
        >>> np.array_equal(np.asarray(Image.open(path).convert("RGB")), pixels)
        True
    """
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def panel_box(figure) -> tuple[int, int, int, int]:
    """Pixel box ``(left, top, right, bottom)`` of the image panel in the rasterised figure.

    Example:
        >>> import numpy as np
        >>> from dense_readout.viz import figure_to_array, panel_box, plot_heatmap
        >>> blue = np.zeros((64, 64, 3)); blue[..., 2] = 1.0
        >>> figure = plot_heatmap(blue, np.zeros((2, 2)), alpha=0.0)  # the photo alone shows
        >>> left, top, right, bottom = panel_box(figure)
        >>> pixels = figure_to_array(figure)
        >>> panel = pixels[top + 2 : bottom - 2, left + 2 : right - 2]
        >>> bool((panel == (0, 0, 255)).all(-1).mean() > 0.95)  # inside the box: the blue photo
        True
        >>> bool((pixels[:, : left - 1] == 255).all())  # left of it: the white margin
        True
    """
    figure.canvas.draw()
    box = figure.axes[0].get_window_extent()
    height = figure.canvas.get_width_height()[1]
    return (round(box.x0), round(height - box.y1), round(box.x1), round(height - box.y0))
