"""The 20 symbol classes of the synthetic scenes (paper A.2, Fig. 4).

A class is one of 10 base outlines (circle, triangle, square, pentagon, hexagon,
star, plus, rhombus, arrow, ellipse) with one of 2 internal patterns: a centre
dot (classes 0–9) or a diagonal cross (classes 10–19). This module holds what a
class looks like and how one symbol is rasterised (crisp, no anti-aliasing):
:func:`symbol_masks` for the scene renderer of :mod:`.synthetic`,
:func:`render_symbol` for a single upright tile and :func:`contact_sheet` for
the labelled sheet of all 20 classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError

__all__ = [
    "BASE_SHAPES",
    "DEFAULT_PATTERN_SIZES",
    "NUM_CLASSES",
    "PATTERNS",
    "PatternSizes",
    "class_name",
    "contact_sheet",
    "pattern_color",
    "render_symbol",
    "symbol_masks",
]

Point = tuple[float, float]


# -- outlines and names ---------------------------------------------------------------


def _regular(n: int, phase: float = -math.pi / 2) -> list[Point]:
    return [
        (math.cos(phase + 2 * math.pi * i / n), math.sin(phase + 2 * math.pi * i / n))
        for i in range(n)
    ]


def _star(points: int = 5, inner: float = 0.45) -> list[Point]:
    out: list[Point] = []
    for i in range(2 * points):
        radius = 1.0 if i % 2 == 0 else inner
        angle = -math.pi / 2 + math.pi * i / points
        out.append((radius * math.cos(angle), radius * math.sin(angle)))
    return out


def _ellipse(a: float, b: float, n: int = 64) -> list[Point]:
    return [
        (a * math.cos(2 * math.pi * i / n), b * math.sin(2 * math.pi * i / n)) for i in range(n)
    ]


def _plus(arm: float = 0.34) -> list[Point]:
    # circumradius 1: the arm tips' outer corners lie on the unit circle
    tip = math.sqrt(1.0 - arm * arm)
    return [
        (-arm, -tip),
        (arm, -tip),
        (arm, -arm),
        (tip, -arm),
        (tip, arm),
        (arm, arm),
        (arm, tip),
        (-arm, tip),
        (-arm, arm),
        (-tip, arm),
        (-tip, -arm),
        (-arm, -arm),
    ]


def _arrow() -> list[Point]:
    # tail corners at radius sqrt(0.95² + 0.3²) < 1, tip at 1
    return [
        (-0.95, -0.3),
        (0.15, -0.3),
        (0.15, -0.66),
        (1.0, 0.0),
        (0.15, 0.66),
        (0.15, 0.3),
        (-0.95, 0.3),
    ]


# Unit outlines centred on the origin, inside the unit circle, each containing the
# origin (where the centre dot goes).
BASE_SHAPES: dict[str, list[Point]] = {
    "circle": _ellipse(1.0, 1.0),
    "triangle": _regular(3),
    "square": _regular(4, phase=-math.pi / 4),
    "pentagon": _regular(5),
    "hexagon": _regular(6),
    "star": _star(),
    "plus": _plus(),
    "rhombus": [(0.0, -1.0), (0.55, 0.0), (0.0, 1.0), (-0.55, 0.0)],
    "arrow": _arrow(),
    "ellipse": _ellipse(1.0, 0.5),
}
PATTERNS: tuple[str, ...] = ("dot", "cross")
NUM_CLASSES = len(BASE_SHAPES) * len(PATTERNS)  # 20
_SHAPE_NAMES = tuple(BASE_SHAPES)


def class_name(k: int) -> str:
    """Human name of class ``k`` (0..19), e.g. ``class_name(13) == 'pentagon+cross'``.

    Example:
        >>> from dense_readout.experiments.synthetic_symbols import NUM_CLASSES, class_name
        >>> class_name(0), class_name(13), class_name(NUM_CLASSES - 1)  # 0-9 dot, 10-19 cross
        ('circle+dot', 'pentagon+cross', 'ellipse+cross')
        >>> len({class_name(k) for k in range(NUM_CLASSES)})
        20
    """
    if not 0 <= int(k) < NUM_CLASSES:
        raise InputError(f"class index must be in [0, {NUM_CLASSES - 1}], got {k}.")
    return f"{_SHAPE_NAMES[k % len(_SHAPE_NAMES)]}+{PATTERNS[k // len(_SHAPE_NAMES)]}"


class PatternSizes(Protocol):
    """Sizes of the internal patterns relative to the symbol's radius.

    A :class:`~dense_readout.experiments.synthetic.SceneConfig` has them.

    Example:
        >>> from dataclasses import dataclass
        >>> from dense_readout.experiments.synthetic import SceneConfig
        >>> from dense_readout.experiments.synthetic_symbols import render_symbol
        >>> @dataclass(frozen=True)
        ... class BigDot:  # any object with the three sizes is a PatternSizes
        ...     dot_radius: float = 0.5
        ...     cross_half_length: float = 0.75
        ...     cross_half_width: float = 0.09
        >>> dark = lambda tile: int((tile.sum(-1) < 100).sum())  # the near-black dot's pixels
        >>> white = (255, 255, 255)
        >>> dark(render_symbol(0, 64, white, config=BigDot())) > dark(render_symbol(0, 64, white))
        True
        >>> SceneConfig(dot_radius=0.5).dot_radius  # a scene config is one too
        0.5
    """

    @property
    def dot_radius(self) -> float: ...

    @property
    def cross_half_length(self) -> float: ...

    @property
    def cross_half_width(self) -> float: ...


@dataclass(frozen=True)
class _PatternSizes:
    dot_radius: float = 0.24
    cross_half_length: float = 0.75
    cross_half_width: float = 0.09


DEFAULT_PATTERN_SIZES: PatternSizes = _PatternSizes()
"""The pattern sizes of the paper's scenes (the defaults of ``SceneConfig``)."""


# -- rasterising one symbol -----------------------------------------------------------


def _transform(
    points: Sequence[Point], center: Point, radius: float, degrees: float
) -> list[Point]:
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    cx, cy = center
    return [
        (cx + radius * (x * cos - y * sin), cy + radius * (x * sin + y * cos)) for x, y in points
    ]


def _polygon_mask(size: int, polygons: Sequence[Sequence[Point]]) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        draw.polygon([(float(x), float(y)) for x, y in polygon], fill=255)
    return np.asarray(canvas) > 0


def _pattern_polygons(pattern: str, config: PatternSizes) -> list[list[Point]]:
    if pattern == "dot":
        return [_ellipse(config.dot_radius, config.dot_radius, n=32)]
    length, width = config.cross_half_length, config.cross_half_width
    bar = [(-length, -width), (length, -width), (length, width), (-length, width)]
    return [_transform(bar, (0.0, 0.0), 1.0, 45.0), _transform(bar, (0.0, 0.0), 1.0, -45.0)]


def symbol_masks(
    k: int, center: Point, radius: float, degrees: float, size: int, config: PatternSizes
) -> tuple[np.ndarray, np.ndarray]:
    """(shape mask, pattern mask inside the shape) of class ``k`` on a ``size`` canvas.

    Example:
        >>> import math
        >>> from dense_readout.experiments.synthetic_symbols import (DEFAULT_PATTERN_SIZES,
        ...     symbol_masks)
        >>> shape, pattern = symbol_masks(2, (32, 32), 20, 0, 64, DEFAULT_PATTERN_SIZES)
        >>> shape.shape, bool(shape[32, 32]), bool(shape[2, 2])  # a square at the centre
        ((64, 64), True, False)
        >>> bool((pattern <= shape).all()), bool(pattern[32, 32])  # the dot lies inside
        (True, True)
        >>> circle, _ = symbol_masks(0, (32, 32), 20, 0, 64, DEFAULT_PATTERN_SIZES)
        >>> bool(abs(circle.sum() / (math.pi * 20**2) - 1) < 0.05)  # radius 20: area πr²
        True
    """
    outline = BASE_SHAPES[_SHAPE_NAMES[k % len(_SHAPE_NAMES)]]
    shape = _polygon_mask(size, [_transform(outline, center, radius, degrees)])
    pattern_polys = [
        _transform(poly, center, radius, degrees)
        for poly in _pattern_polygons(PATTERNS[k // len(_SHAPE_NAMES)], config)
    ]
    pattern = _polygon_mask(size, pattern_polys) & shape
    return shape, pattern


def pattern_color(color: np.ndarray) -> np.ndarray:
    """The pattern's colour on a body of ``color``: near-black on light bodies, else near-white.

    Example:
        >>> import numpy as np
        >>> from dense_readout.experiments.synthetic_symbols import pattern_color
        >>> pattern_color(np.array([250, 220, 60])).tolist()  # yellow body: dark pattern
        [20, 20, 20]
        >>> pattern_color(np.array([30, 70, 200])).tolist()  # blue body: light pattern
        [245, 245, 245]
    """
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    return np.array([20, 20, 20] if luminance > 150 else [245, 245, 245], dtype=np.uint8)


# -- single symbols and the contact sheet ------------------------------------------------


def render_symbol(
    k: int,
    size: int = 96,
    color: Sequence[int] = (30, 70, 200),
    background: Sequence[int] = (235, 235, 235),
    config: PatternSizes | None = None,
) -> np.ndarray:
    """Class ``k`` upright and centred on a ``size``-px tile (H×W×3 uint8).

    Example:
        >>> import numpy as np
        >>> from dense_readout.experiments.synthetic_symbols import render_symbol
        >>> tile = render_symbol(10, size=48)  # circle+cross, blue on light grey
        >>> tile.shape, tile.dtype.name
        ((48, 48, 3), 'uint8')
        >>> tile[0, 0].tolist(), tile[24, 24].tolist()  # background corner, the cross's centre
        ([235, 235, 235], [245, 245, 245])
        >>> colours = {tuple(c) for c in tile.reshape(-1, 3).tolist()}
        >>> sorted(colours)  # crisp: exactly background, body and pattern
        [(30, 70, 200), (235, 235, 235), (245, 245, 245)]
    """
    class_name(k)  # validates k
    config = config or DEFAULT_PATTERN_SIZES
    shape, pattern = symbol_masks(k, (size / 2.0, size / 2.0), size * 0.42, 0.0, size, config)
    tile = np.empty((size, size, 3), dtype=np.uint8)
    tile[:] = np.asarray(background, dtype=np.uint8)
    col = np.asarray(color, dtype=np.uint8)
    tile[shape] = col
    tile[pattern] = pattern_color(col)
    return tile


def contact_sheet(path: str | Path | None = None, tile: int = 96, columns: int = 10) -> Image.Image:
    """The 20 classes on one sheet (paper Fig. 4), labelled with id and name.

    Example:
        >>> from dense_readout.experiments.synthetic_symbols import contact_sheet
        >>> contact_sheet(tile=48).size
        (480, 128)
    """
    rows = math.ceil(NUM_CLASSES / columns)
    label = 16
    sheet = Image.new("RGB", (columns * tile, rows * (tile + label)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k in range(NUM_CLASSES):
        r, c = divmod(k, columns)
        x, y = c * tile, r * (tile + label)
        sheet.paste(Image.fromarray(render_symbol(k, tile)), (x, y))
        text = f"{k}" if tile < 80 else f"{k} {class_name(k)}"
        draw.text((x + 2, y + tile + 2), text, fill=(0, 0, 0))
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        sheet.save(path)
    return sheet
