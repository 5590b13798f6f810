"""Shared pieces of the figures: class names and colours, input coercion, layout, text fitting.

Private to :mod:`dense_readout.viz` (and :mod:`dense_readout.lrp.figures`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from .._optional import require_matplotlib
from ..errors import InputError

ImageLike = Image.Image | np.ndarray | Tensor
GridLike = np.ndarray | Tensor | Sequence[Sequence[int]]

DPI = 100
FONT = "DejaVu Sans"
OTHER_COLOUR = (0.55, 0.55, 0.55)


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
    require_matplotlib()
    from matplotlib import colormaps

    # The greys of tab10/tab20 are left out: grey marks "other classes".
    def rgb(colour: Sequence[float]) -> tuple[float, float, float]:
        return (float(colour[0]), float(colour[1]), float(colour[2]))

    colours = [rgb(colormaps["tab10"](i)) for i in range(10) if i != 7]
    colours += [rgb(colormaps["tab20"](2 * i + 1)) for i in range(10) if i != 7]
    extra = max(0, count - len(colours))
    colours += [rgb(colormaps["hsv"](i / max(extra, 1))) for i in range(extra)]
    return colours[:count]


def _name_of(index: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= index < len(class_names):
        return short_name(class_names[index])
    return str(index)


# -- input coercion -------------------------------------------------------------------
def _as_rgb_array(image: ImageLike) -> np.ndarray:
    """Image → ``H×W×3`` float array in [0, 1]."""
    if isinstance(image, Image.Image):
        from ..images import to_rgb

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

    def figure(self) -> Any:
        require_matplotlib()
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(self.width / DPI, self.height / DPI), dpi=DPI, facecolor="white")
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
            family=FONT,
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
    return TextPath((0, 0), text, size=size, prop=FontProperties(family=FONT)).get_extents().width


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
