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

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .errors import InputError

__all__ = [
    "class_palette",
    "figure_to_array",
    "panel_box",
    "plot_heatmap",
    "plot_label_grid",
    "readout_figures",
    "save_png",
    "short_name",
]

ImageLike = Image.Image | np.ndarray | Tensor
GridLike = np.ndarray | Tensor | Sequence[Sequence[int]]

_DPI = 100
_FONT = "DejaVu Sans"
_OTHER_COLOUR = (0.55, 0.55, 0.55)


# -- names and colours -----------------------------------------------------------------
def short_name(name: str) -> str:
    """First comma-separated synonym of a class description.

    Example:
        >>> short_name("tabby, tabby cat")
        'tabby'
    """
    return name.split(",")[0].strip() or name


def class_palette(count: int) -> list[tuple[float, float, float]]:
    """``count`` distinct RGB colours (tab10, then the light tab20 tones, then hsv).

    Example:
        >>> len(set(class_palette(18)))
        18
    """
    from matplotlib import colormaps

    # The greys of tab10/tab20 are left out: grey marks "other classes".
    colours = [tuple(colormaps["tab10"](i)[:3]) for i in range(10) if i != 7]
    colours += [tuple(colormaps["tab20"](2 * i + 1)[:3]) for i in range(10) if i != 7]
    extra = max(0, count - len(colours))
    colours += [tuple(colormaps["hsv"](i / max(extra, 1))[:3]) for i in range(extra)]
    return colours[:count]


def _name_of(index: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= index < len(class_names):
        return short_name(class_names[index])
    return str(index)


# -- input coercion -------------------------------------------------------------------
def _as_rgb_array(image: ImageLike) -> np.ndarray:
    """Image → ``H×W×3`` float array in [0, 1]."""
    if isinstance(image, Image.Image):
        from .images import to_rgb

        return np.asarray(to_rgb(image), dtype=np.float64) / 255.0
    if isinstance(image, Tensor):
        array = image.detach().cpu().float().numpy()
        if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
            array = np.moveaxis(array, 0, -1)  # C×H×W → H×W×C
    else:
        array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3):
        raise InputError(
            f"Expected an RGB image (H×W×3 array, 3×H×W tensor or PIL image), got shape "
            f"{tuple(array.shape)}. Pass the preprocessed picture, e.g. preprocess.geometry(pil)."
        )
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise InputError("The image contains NaN or Inf values.")
    if array.min() < -1e-6 or array.max() > 1 + 1e-6:
        raise InputError(
            f"Float images must lie in [0, 1], got [{array.min():.3g}, {array.max():.3g}]. "
            "Undo the normalisation first, e.g. preprocess.denormalize(x)."
        )
    return array.clip(0, 1)


def _as_grid(values: GridLike, what: str, integer: bool) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.size == 0:
        raise InputError(
            f"{what} must be an h×w grid for one image, got shape {tuple(array.shape)}; "
            "index the batch first, e.g. result.labels()[0]."
        )
    if integer:
        if not np.issubdtype(array.dtype, np.integer):
            raise InputError(f"{what} must hold integer class indices, got dtype {array.dtype}.")
        return array.astype(np.int64)
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise InputError(f"{what} contains NaN or Inf values.")
    return array


def _upscaled(image: np.ndarray, panel_px: int) -> np.ndarray:
    """Resize the picture to ``panel_px`` on its longer side (Lanczos), as floats in [0, 1]."""
    height, width = image.shape[:2]
    scale = panel_px / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    pil = Image.fromarray(np.round(image * 255).astype(np.uint8))
    return np.asarray(pil.resize(size, Image.Resampling.LANCZOS), dtype=np.float64) / 255.0


# -- figure layout --------------------------------------------------------------------
class _Layout:
    """Fixed layout in pixels: title band, square-ish image panel, optional side panel."""

    def __init__(
        self, panel_w: int, panel_h: int, side_px: int, title_lines: int, bottom_px: int = 12
    ):
        self.margin = 12
        self.title_px = 0 if title_lines == 0 else 14 + 24 * title_lines
        self.panel_w, self.panel_h = panel_w, panel_h
        self.side_px = side_px
        self.bottom_px = bottom_px
        self.width = self.margin + panel_w + (side_px + self.margin if side_px else 0) + self.margin
        self.height = self.title_px + panel_h + self.bottom_px + self.margin

    def figure(self):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(
            figsize=(self.width / _DPI, self.height / _DPI), dpi=_DPI, facecolor="white"
        )
        FigureCanvasAgg(figure)
        return figure

    def rect(self, left: float, bottom: float, width: float, height: float) -> list[float]:
        return [left / self.width, bottom / self.height, width / self.width, height / self.height]

    def image_rect(self) -> list[float]:
        return self.rect(self.margin, self.bottom_px + self.margin, self.panel_w, self.panel_h)

    def side_rect(self) -> list[float]:
        left = self.margin + self.panel_w + self.margin
        return self.rect(left, self.bottom_px + self.margin, self.side_px, self.panel_h)

    def title_y(self) -> float:
        return 1 - 10 / self.height


def _add_title(figure, layout: _Layout, title: str | None) -> None:
    if title:
        figure.text(
            layout.margin / layout.width,
            layout.title_y(),
            title,
            ha="left",
            va="top",
            fontsize=13,
            family=_FONT,
            linespacing=1.35,
        )


def _image_axes(figure, layout: _Layout, picture: np.ndarray):
    axes = figure.add_axes(layout.image_rect())
    height, width = picture.shape[:2]
    axes.imshow(picture, extent=(0, width, height, 0), interpolation="none", aspect="auto")
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.set_axis_off()
    return axes


def _text_width(text: str, size: float = 1.0) -> float:
    """Width of ``text`` in points at font size ``size`` (exact glyph metrics)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    if not text:
        return 0.0
    return TextPath((0, 0), text, size=size, prop=FontProperties(family=_FONT)).get_extents().width


def _wrap(words: list[str], lines: int) -> list[str]:
    """Split ``words`` into at most ``lines`` lines of balanced character length."""
    if lines <= 1 or len(words) <= 1:
        return [" ".join(words)]
    total = sum(len(w) for w in words) + len(words) - 1
    target = total / lines
    out: list[str] = []
    current: list[str] = []
    for word in words:
        candidate = " ".join([*current, word])
        if current and len(candidate) > target * 1.15 and len(out) < lines - 1:
            out.append(" ".join(current))
            current = [word]
        else:
            current.append(word)
    out.append(" ".join(current))
    return out


def _fit_label(name: str, cell_w_pt: float, cell_h_pt: float, max_size: float) -> tuple[str, float]:
    """Best wrapping of ``name`` into a cell and the largest font size that fits."""
    words = name.replace("-", "- ").split()
    best = (name, 0.0)
    for lines in range(1, min(3, len(words)) + 1):
        wrapped = _wrap(words, lines)
        wrapped = [line.replace("- ", "-") for line in wrapped]
        widest = max(_text_width(line) for line in wrapped)
        size = min(
            max_size, 0.8 * cell_w_pt / max(widest, 1e-6), 0.8 * cell_h_pt / (1.2 * len(wrapped))
        )
        if size > best[1] + 0.25:
            best = ("\n".join(wrapped), size)
    return best


def _outline(width: float = 2.5):
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=width, foreground="black")]


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
):
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
    from matplotlib.collections import LineCollection

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

    classes, counts = np.unique(grid, return_counts=True)
    order = sorted(
        zip(classes.tolist(), counts.tolist(), strict=False), key=lambda item: (-item[1], item[0])
    )
    shown = order[:max_legend]
    others = order[max_legend:]
    colour_of = dict(zip((c for c, _ in shown), class_palette(len(shown)), strict=False))
    key_of = {c: i + 1 for i, (c, _) in enumerate(shown)}

    # Decide what the cells say, at one font size for the whole grid.
    cell_w_pt, cell_h_pt = cell_w * 72 / _DPI, cell_h * 72 / _DPI
    max_size = 13.0
    prob_room = probs is not None
    texts: dict[int, tuple[str, float]] = {}
    mode = cell_text
    if mode in ("auto", "name"):
        usable_h = cell_h_pt * (0.72 if prob_room else 1.0)
        texts = {
            c: _fit_label(_name_of(c, class_names), cell_w_pt, usable_h, max_size) for c, _ in order
        }
        smallest = min(size for _, size in texts.values())
        if mode == "auto" and smallest < min_font:
            mode = "key"
        else:
            mode = "name"
            font = max(smallest, 4.0)
    if mode == "key":
        widest = max(_text_width(str(len(shown))), _text_width("00"))
        font = min(max_size, 0.7 * cell_w_pt / widest, 0.55 * cell_h_pt)
        if cell_text == "auto" and font < 5.0:
            mode = "none"  # cells too small for any text: colours and legend only
    prob_font = None
    if probs is not None and mode != "none":
        prob_font = min(font * 0.85, 0.8 * cell_w_pt / _text_width("100%"))
        if prob_font < 5.5:
            prob_font = None

    side_px = 330
    layout = _Layout(width, height, side_px, title_lines=(title.count("\n") + 1) if title else 0)
    figure = layout.figure()
    _add_title(figure, layout, title)
    axes = _image_axes(figure, layout, picture)

    tint = np.zeros((rows, cols, 4))
    for u in range(rows):
        for v in range(cols):
            tint[u, v, :3] = colour_of.get(int(grid[u, v]), _OTHER_COLOUR)
    tint[..., 3] = alpha
    axes.imshow(tint, extent=(0, width, height, 0), interpolation="nearest", aspect="auto")

    for u in range(rows):
        for v in range(cols):
            if mode == "none":
                break
            c = int(grid[u, v])
            x0, y0 = v * cell_w, u * cell_h
            cx, cy = x0 + cell_w / 2, y0 + cell_h / 2
            label = texts[c][0] if mode == "name" else (str(key_of[c]) if c in key_of else "·")
            offset = 0.0
            if prob_font is not None:
                offset = -0.12 * cell_h
                axes.text(
                    cx,
                    y0 + cell_h * 0.84,
                    f"{100 * probs[u, v]:.0f}%",
                    ha="center",
                    va="center",
                    fontsize=prob_font,
                    color="white",
                    family=_FONT,
                    path_effects=_outline(2.0),
                )
            axes.text(
                cx,
                cy + offset,
                label,
                ha="center",
                va="center",
                fontsize=font,
                color="white",
                family=_FONT,
                fontweight="bold",
                linespacing=1.05,
                path_effects=_outline(),
            )

    # Thin lines on every cell boundary, thick ones where the top-1 class changes.
    thin = min(0.8, cell_w / 12)
    lines = [[(v * cell_w, 0), (v * cell_w, height)] for v in range(cols + 1)]
    lines += [[(0, u * cell_h), (width, u * cell_h)] for u in range(rows + 1)]
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

    note = ("class" if class_names is None else "name (id)") + ": number of cells"
    if prob_font is not None:
        note += "\n% in a cell: its softmax probability\nof its top-1 class"
    _draw_legend(
        figure,
        layout,
        shown,
        others,
        colour_of,
        key_of,
        class_names,
        rows * cols,
        mode == "key",
        note,
    )
    return figure


def _draw_legend(
    figure, layout, shown, others, colour_of, key_of, class_names, total, keyed, note
) -> None:
    from matplotlib.patches import Rectangle

    legend = figure.add_axes(layout.side_rect())
    legend.set_axis_off()
    legend.set_xlim(0, layout.side_px)
    legend.set_ylim(layout.panel_h, 0)
    entries = [(c, n) for c, n in shown] + ([(-1, sum(n for _, n in others))] if others else [])
    row_px = min(
        34.0,
        (layout.panel_h - 40 - (24 * (note.count(chr(10)) + 1) if note else 0))
        / max(len(entries), 1),
    )
    size = min(12.0, row_px * 0.42)
    legend.text(
        0,
        6,
        f"top-1 class per cell ({total} cells)",
        fontsize=size,
        va="top",
        family=_FONT,
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
            family=_FONT,
            color="0.25",
            linespacing=1.3,
        )
    for c, count in entries:
        colour = colour_of.get(c, _OTHER_COLOUR)
        box = row_px * 0.62
        legend.add_patch(
            Rectangle((0, y), box * 1.4, box, facecolor=colour, edgecolor="black", linewidth=0.5)
        )
        if keyed and c in key_of:
            legend.text(
                box * 0.7,
                y + box / 2,
                str(key_of[c]),
                ha="center",
                va="center",
                fontsize=size * 0.85,
                color="white",
                family=_FONT,
                fontweight="bold",
                path_effects=_outline(2.0),
            )
        if c == -1:
            name = f"{len(others)} other classes"
        else:
            name = _name_of(c, class_names) + ("" if class_names is None else f" ({c})")
        text = f"{name}: {count}"
        limit = layout.side_px - box * 1.4 - 10
        while _text_width(text, size) * _DPI / 72 > limit and len(name) > 4:
            name = name[:-2].rstrip() + "…"
            text = f"{name}: {count}"
        legend.text(box * 1.4 + 8, y + box / 2, text, va="center", fontsize=size, family=_FONT)
        y += row_px


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
):
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
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    if cmap not in colormaps:
        raise InputError(f"Unknown colour map {cmap!r}; see matplotlib.colormaps.")
    picture = _upscaled(_as_rgb_array(image), panel_px)
    scores = _as_grid(score_map, "score_map", integer=False)
    rows, cols = scores.shape
    height, width = picture.shape[:2]
    low, high = float(scores.min()), float(scores.max())
    if centre is not None:
        spread = max(abs(high - centre), abs(low - centre), 1e-6)
        low, high = centre - spread, centre + spread
    elif high - low < 1e-6:
        low, high = low - 0.5, high + 0.5
    norm = Normalize(vmin=low, vmax=high)

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
        from matplotlib.collections import LineCollection

        lines = [[(v * width / cols, 0), (v * width / cols, height)] for v in range(1, cols)]
        lines += [[(0, u * height / rows), (width, u * height / rows)] for u in range(1, rows)]
        axes.add_collection(
            LineCollection(
                lines, colors="black", alpha=0.25, linewidths=min(0.6, width / cols / 12)
            )
        )
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)

    left, bottom, _, panel_h = layout.side_rect()
    bar = figure.add_axes([left, bottom, 22 / layout.width, panel_h])
    colourbar = figure.colorbar(heat, cax=bar)
    colourbar.solids.set_alpha(1.0)
    colourbar.set_label(value_label, fontsize=11, family=_FONT)
    bar.tick_params(labelsize=10)
    return figure


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
    """Write ``figure`` as a PNG at its own size (no cropping) and release it.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from dense_readout.viz import plot_heatmap, save_png
        >>> path = save_png(plot_heatmap(np.ones((8, 8, 3)), np.eye(2)), os.path.join(tempfile.mkdtemp(), "h.png"))
        >>> path.suffix
        '.png'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=_DPI, format="png", facecolor="white")
    figure.clear()
    return path


def figure_to_array(figure) -> np.ndarray:
    """Rasterise ``figure`` to an ``H×W×3`` uint8 array (as :func:`save_png` would write it)."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def panel_box(figure) -> tuple[int, int, int, int]:
    """Pixel box ``(left, top, right, bottom)`` of the image panel in the rasterised figure."""
    figure.canvas.draw()
    box = figure.axes[0].get_window_extent()
    height = figure.canvas.get_width_height()[1]
    return (round(box.x0), round(height - box.y1), round(box.x1), round(height - box.y0))
