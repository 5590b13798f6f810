"""The label grid (the paper's Fig. 0): every cell tinted and named by its top-1 class."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._optional import require_matplotlib
from ..errors import InputError
from ._common import (
    DPI,
    FONT,
    OTHER_COLOUR,
    GridLike,
    ImageLike,
    _add_title,
    _as_grid,
    _as_rgb_array,
    _fit_label,
    _image_axes,
    _Layout,
    _name_of,
    _outline,
    _text_width,
    _upscaled,
    class_palette,
)


# -- label grid -----------------------------------------------------------------------
def plot_label_grid(
    image: ImageLike,
    labels: GridLike,
    class_names: Sequence[str] | None = None,
    *,
    probabilities: GridLike | None = None,
    title: str | None = None,
    cell_text: str = "auto",
    max_legend: int = 18,
    panel_px: int = 800,
    alpha: float = 0.38,
    min_font: float = 7.5,
) -> Any:
    """Draw the label grid: each cell tinted by its top-1 class and labelled with it.

    Args:
        image: the picture the model saw (PIL image, ``H×W×3`` array in [0, 1] or
            uint8, or a ``3×H×W`` tensor in [0, 1]), e.g. ``preprocess.geometry(pil)``.
        labels: ``h×w`` integer class indices (``result.labels()[i]``).
        class_names: names indexed by class; cells show the short name (first
            comma-separated synonym). ``None`` shows class ids.
        probabilities: optional ``h×w`` top-1 probabilities, printed under the
            name when there is room.
        title: text above the picture (may contain a newline).
        cell_text: ``"name"``, ``"key"`` (legend number), ``"none"`` or ``"auto"``
            (names if they fit at ``min_font`` points, else keys).
        min_font: smallest font size (points) for text in a cell.
        max_legend: classes beyond this many (by cell count) are drawn grey and
            grouped as "other classes" in the legend.
        panel_px: size of the image panel's longer side in output pixels.
        alpha: opacity of the class tint over the image.

    Returns:
        A matplotlib ``Figure`` (Agg canvas); write it with :func:`save_png`.

    Example:
        >>> import numpy as np
        >>> from dense_readout.viz import plot_label_grid
        >>> figure = plot_label_grid(np.zeros((64, 64, 3)), np.eye(2, dtype=int), ["a", "b"])
        >>> len(figure.axes)
        2
    """
    require_matplotlib()
    if cell_text not in ("auto", "name", "key", "none"):
        raise InputError(f"cell_text must be 'auto', 'name', 'key' or 'none', got {cell_text!r}.")
    if max_legend < 1:
        raise InputError(f"max_legend must be >= 1, got {max_legend}.")
    picture = _upscaled(_as_rgb_array(image), panel_px)
    grid = _as_grid(labels, "labels", integer=True)
    probs = (
        None if probabilities is None else _as_grid(probabilities, "probabilities", integer=False)
    )
    if probs is not None and probs.shape != grid.shape:
        raise InputError(f"probabilities {probs.shape} and labels {grid.shape} differ in shape.")
    rows, cols = grid.shape
    height, width = picture.shape[:2]
    cell_w, cell_h = width / cols, height / rows

    legend = _LegendClasses(grid, max_legend)
    text = _choose_cell_text(
        legend, class_names, cell_text, cell_w, cell_h, probs is not None, min_font
    )

    layout = _Layout(width, height, 330, title_lines=(title.count("\n") + 1) if title else 0)
    figure = layout.figure()
    _add_title(figure, layout, title)
    axes = _image_axes(figure, layout, picture)
    _draw_tint(axes, grid, legend.colour_of, alpha, width, height)
    _draw_cell_text(axes, grid, probs, legend, text, cell_w, cell_h)
    _draw_cell_lines(axes, grid, cell_w, cell_h, width, height)

    note = ("class" if class_names is None else "name (id)") + ": number of cells"
    if text.prob_font is not None:
        note += "\n% in a cell: its softmax probability\nof its top-1 class"
    panel = LegendPanel(
        figure,
        layout,
        (legend.shown, legend.others, legend.colour_of, legend.key_of),
        class_names,
        rows * cols,
        text.mode == "key",
        note,
    )
    panel.draw()
    figure.legend_panel = panel  # add_photo_inset makes room for the thumbnail through it
    return figure


@dataclass
class LegendPanel:
    """The label grid's side panel: classes by cell count, the note at its foot.

    :func:`~dense_readout.viz.add_photo_inset` asks it for room (:meth:`draw` with
    ``reserve_px``) so that the thumbnail sits between the entries and the note.
    """

    figure: Any
    layout: Any
    classes: tuple  # (shown, others, colour_of, key_of) of _LegendClasses
    class_names: Sequence[str] | None
    total: int
    keyed: bool
    note: str
    axes: Any = None

    @property
    def note_px(self) -> float:
        """Height kept for the note at the panel's foot."""
        return 24.0 * (self.note.count("\n") + 1) if self.note else 0.0

    def draw(self, reserve_px: float = 0.0) -> Any:
        """(Re)draw the panel, its entries above ``reserve_px`` kept free over the note."""
        if self.axes is not None:
            self.axes.remove()
        self.axes = _draw_legend(self, reserve_px)
        return self.axes


class _LegendClasses:
    """The classes on the grid by cell count: the ``max_legend`` most frequent get colours."""

    def __init__(self, grid: np.ndarray, max_legend: int) -> None:
        classes, counts = np.unique(grid, return_counts=True)
        self.order = sorted(
            zip(classes.tolist(), counts.tolist(), strict=True),
            key=lambda item: (-item[1], item[0]),
        )
        self.shown = self.order[:max_legend]
        self.others = self.order[max_legend:]
        self.colour_of = dict(
            zip((c for c, _ in self.shown), class_palette(len(self.shown)), strict=True)
        )
        self.key_of = {c: i + 1 for i, (c, _) in enumerate(self.shown)}


@dataclass
class _CellText:
    """What the cells say: ``mode`` (name/key/none), one font size, names, probability font."""

    mode: str
    font: float
    names: dict[int, tuple[str, float]]
    prob_font: float | None


def _choose_cell_text(
    legend: _LegendClasses,
    class_names: Sequence[str] | None,
    cell_text: str,
    cell_w: float,
    cell_h: float,
    with_probs: bool,
    min_font: float,
) -> _CellText:
    """Pick names, legend keys or nothing, at one font size for the whole grid."""
    cell_w_pt, cell_h_pt = cell_w * 72 / DPI, cell_h * 72 / DPI
    max_size = 13.0
    names: dict[int, tuple[str, float]] = {}
    mode, font = cell_text, max_size
    if mode in ("auto", "name"):
        usable_h = cell_h_pt * (0.72 if with_probs else 1.0)
        names = {
            c: _fit_label(_name_of(c, class_names), cell_w_pt, usable_h, max_size)
            for c, _ in legend.order
        }
        smallest = min(size for _, size in names.values())
        if mode == "auto" and smallest < min_font:
            mode = "key"
        else:
            mode = "name"
            font = max(smallest, 4.0)
    if mode == "key":
        widest = max(_text_width(str(len(legend.shown))), _text_width("00"))
        font = min(max_size, 0.7 * cell_w_pt / widest, 0.55 * cell_h_pt)
        if cell_text == "auto" and font < 5.0:
            mode = "none"  # cells too small for any text: colours and legend only
    prob_font = None
    if with_probs and mode != "none":
        prob_font = min(font * 0.85, 0.8 * cell_w_pt / _text_width("100%"))
        if prob_font < 5.5:
            prob_font = None
    return _CellText(mode, font, names, prob_font)


def _draw_tint(
    axes: Any,
    grid: np.ndarray,
    colour_of: dict[int, tuple[float, float, float]],
    alpha: float,
    width: int,
    height: int,
) -> None:
    rows, cols = grid.shape
    tint = np.zeros((rows, cols, 4))
    for u in range(rows):
        for v in range(cols):
            tint[u, v, :3] = colour_of.get(int(grid[u, v]), OTHER_COLOUR)
    tint[..., 3] = alpha
    axes.imshow(tint, extent=(0, width, height, 0), interpolation="nearest", aspect="auto")


def _draw_cell_text(
    axes: Any,
    grid: np.ndarray,
    probs: np.ndarray | None,
    legend: _LegendClasses,
    text: _CellText,
    cell_w: float,
    cell_h: float,
) -> None:
    if text.mode == "none":
        return
    rows, cols = grid.shape
    for u in range(rows):
        for v in range(cols):
            c = int(grid[u, v])
            x0, y0 = v * cell_w, u * cell_h
            cx, cy = x0 + cell_w / 2, y0 + cell_h / 2
            if text.mode == "name":
                label = text.names[c][0]
            else:
                label = str(legend.key_of[c]) if c in legend.key_of else "·"
            offset = 0.0
            if text.prob_font is not None and probs is not None:
                offset = -0.12 * cell_h
                axes.text(
                    cx,
                    y0 + cell_h * 0.84,
                    f"{100 * probs[u, v]:.0f}%",
                    ha="center",
                    va="center",
                    fontsize=text.prob_font,
                    color="white",
                    family=FONT,
                    path_effects=_outline(2.0),
                )
            axes.text(
                cx,
                cy + offset,
                label,
                ha="center",
                va="center",
                fontsize=text.font,
                color="white",
                family=FONT,
                fontweight="bold",
                linespacing=1.05,
                path_effects=_outline(),
            )


def _draw_cell_lines(
    axes: Any, grid: np.ndarray, cell_w: float, cell_h: float, width: int, height: int
) -> None:
    """Thin lines on every cell boundary, thick ones where the top-1 class changes."""
    from matplotlib.collections import LineCollection

    rows, cols = grid.shape
    thin = min(0.8, cell_w / 12)
    lines: list[list[tuple[float, float]]] = [
        [(v * cell_w, 0.0), (v * cell_w, float(height))] for v in range(cols + 1)
    ]
    lines += [[(0.0, u * cell_h), (float(width), u * cell_h)] for u in range(rows + 1)]
    axes.add_collection(LineCollection(lines, colors="white", alpha=0.7, linewidths=thin))
    borders = []
    for u in range(rows):
        for v in range(cols):
            if v + 1 < cols and grid[u, v] != grid[u, v + 1]:
                x = (v + 1) * cell_w
                borders.append([(x, u * cell_h), (x, (u + 1) * cell_h)])
            if u + 1 < rows and grid[u, v] != grid[u + 1, v]:
                y = (u + 1) * cell_h
                borders.append([(v * cell_w, y), ((v + 1) * cell_w, y)])
    if borders:
        thick = min(2.6, max(thin, cell_w / 30))
        axes.add_collection(
            LineCollection(borders, colors="white", linewidths=thick, capstyle="round")
        )
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)


def _draw_legend(panel: LegendPanel, reserve_px: float) -> Any:
    layout, note, class_names = panel.layout, panel.note, panel.class_names
    shown, others, _, _ = panel.classes
    legend = panel.figure.add_axes(layout.side_rect())
    legend.set_axis_off()
    legend.set_xlim(0, layout.side_px)
    legend.set_ylim(layout.panel_h, 0)
    entries = [(c, n) for c, n in shown] + ([(-1, sum(n for _, n in others))] if others else [])
    # a heading row (1.1 rows) and the entries between 6 px from the top and the reserve
    room = layout.panel_h - panel.note_px - reserve_px - 12
    row_px = min(34.0, room / (len(entries) + 1.1))
    size = min(12.0, row_px * 0.42)
    total = panel.total
    legend.text(
        0,
        6,
        f"top-1 class per cell ({total} cells)",
        fontsize=size,
        va="top",
        family=FONT,
        fontweight="bold",
    )
    y = 6 + row_px * 1.1
    if note:
        legend.text(
            0,
            layout.panel_h - 4,
            note,
            fontsize=min(size, 10.5),
            va="bottom",
            family=FONT,
            color="0.25",
            linespacing=1.3,
        )
    for c, count in entries:
        name = f"{len(others)} other classes" if c == -1 else _name_of(c, class_names)
        if c != -1 and class_names is not None:
            name += f" ({c})"
        _draw_entry(legend, panel, c, name, count, y, row_px, size)
        y += row_px
    return legend


def _draw_entry(legend, panel: LegendPanel, c, name, count, y, row_px, size) -> None:
    """One legend row at ``y``: the class's swatch (with its key when cells show keys), its text."""
    from matplotlib.patches import Rectangle

    _, _, colour_of, key_of = panel.classes
    box = row_px * 0.62
    colour = colour_of.get(c, OTHER_COLOUR)
    legend.add_patch(
        Rectangle((0, y), box * 1.4, box, facecolor=colour, edgecolor="black", linewidth=0.5)
    )
    if panel.keyed and c in key_of:
        legend.text(
            box * 0.7,
            y + box / 2,
            str(key_of[c]),
            ha="center",
            va="center",
            fontsize=size * 0.85,
            color="white",
            family=FONT,
            fontweight="bold",
            path_effects=_outline(2.0),
        )
    line = _fit_legend_text(name, count, size, panel.layout.side_px - box * 1.4 - 10)
    legend.text(box * 1.4 + 8, y + box / 2, line, va="center", fontsize=size, family=FONT)


def _fit_legend_text(name: str, count: int, size: float, limit_px: float) -> str:
    """``"name: count"``, the name shortened with an ellipsis until it fits ``limit_px``."""
    text = f"{name}: {count}"
    while _text_width(text, size) * DPI / 72 > limit_px and len(name) > 4:
        name = name[:-2].rstrip() + "…"
        text = f"{name}: {count}"
    return text
