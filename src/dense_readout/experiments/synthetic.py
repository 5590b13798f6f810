"""Synthetic single-label multi-object scenes (paper A.2, Fig. 4).

Each 224×224 RGB scene holds 3–5 objects of distinct classes out of K = 20
(10 base shapes × 2 internal patterns: a centre dot for classes 0–9, a diagonal
cross for classes 10–19), scale 42–68 px (diameter of the shape's circumscribed
circle), rotation uniform in ±180°, positions uniform subject to an overlap
constraint, colour from a fixed palette with per-channel jitter (independent of
the class), a light random background, random render order. For each scene the
generator returns the RGB image, a semantic mask (0 = background, 1..K = class
+ 1), an instance mask (0 = background, 1..n = instance id in render order) and
a JSON-serialisable record (sampled target, visible classes, per-object class,
scale, rotation, centre, colour, bbox, areas).

Scenes are a pure function of ``(seed, split, index)``: the same arguments give
identical bytes, so a dataset can be streamed on the fly (random access) or
written to disk with :func:`write_scenes`.

Rendering is crisp (no anti-aliasing) so the masks agree pixel for pixel with
the image: a pixel belongs to the object drawn last over it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..errors import DatasetError, InputError

__all__ = [
    "BASE_SHAPES",
    "NUM_CLASSES",
    "PATTERNS",
    "SPLITS",
    "Scene",
    "SceneConfig",
    "SceneGenerator",
    "class_name",
    "contact_sheet",
    "expected_top1",
    "read_scene",
    "render_symbol",
    "write_scenes",
]

Point = tuple[float, float]


# -- the 20 classes -------------------------------------------------------------------


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
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}

# Saturated palette (object colour is independent of the class).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (200, 30, 40),
    (30, 140, 50),
    (30, 70, 200),
    (235, 130, 20),
    (130, 40, 170),
    (20, 150, 150),
    (140, 80, 30),
    (210, 40, 160),
    (110, 120, 20),
    (30, 30, 110),
)


def class_name(k: int) -> str:
    """Human name of class ``k`` (0..19), e.g. ``class_name(13) == 'pentagon+cross'``."""
    if not 0 <= int(k) < NUM_CLASSES:
        raise InputError(f"class index must be in [0, {NUM_CLASSES - 1}], got {k}.")
    return f"{_SHAPE_NAMES[k % len(_SHAPE_NAMES)]}+{PATTERNS[k // len(_SHAPE_NAMES)]}"


def expected_top1(min_objects: int = 3, max_objects: int = 5) -> float:
    """E[1/n] for n uniform on ``{min_objects..max_objects}``.

    The image-level Top-1 of a model that names one visible object, scored against
    a target sampled uniformly from the visible classes (paper 4.4: ≈ 26.1%).

    Example:
        >>> round(expected_top1(3, 5), 4)
        0.2611
    """
    if not 1 <= min_objects <= max_objects:
        raise InputError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}.")
    counts = range(min_objects, max_objects + 1)
    return sum(1.0 / n for n in counts) / len(counts)


# -- configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class SceneConfig:
    """Parameters of the scene distribution (defaults: paper A.2).

    Attributes:
        image_size: side of the square scene in pixels.
        min_objects, max_objects: number of objects, uniform on this range; classes
            are drawn without replacement.
        min_scale, max_scale: object size (diameter of the circumscribed circle) in
            pixels, uniform.
        max_rotation: rotation uniform in ``[-max_rotation, max_rotation]`` degrees.
        min_center_distance: overlap constraint, the centres of two objects are at
            least this fraction of the sum of their radii apart (1.0: circumscribed
            circles never overlap; smaller values allow partial occlusion).
        min_visible_fraction: an object counts as visible (and its class may be the
            target) if at least this fraction of its pixels stays unoccluded.
        background_range: each background channel is uniform in this range (light).
        color_jitter: each object channel is the palette value ± this (uniform).
        pattern_scale: centre-dot radius / cross arm length relative to the radius.
    """

    image_size: int = 224
    min_objects: int = 3
    max_objects: int = 5
    min_scale: float = 42.0
    max_scale: float = 68.0
    max_rotation: float = 180.0
    min_center_distance: float = 0.8
    min_visible_fraction: float = 0.25
    background_range: tuple[int, int] = (190, 255)
    color_jitter: int = 25
    dot_radius: float = 0.24
    cross_half_length: float = 0.75
    cross_half_width: float = 0.09
    max_attempts: int = 200

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects <= NUM_CLASSES:
            raise InputError(
                f"objects per scene must satisfy 1 <= min <= max <= {NUM_CLASSES}, got "
                f"{self.min_objects}..{self.max_objects}."
            )
        if not 0 < self.min_scale <= self.max_scale <= self.image_size:
            raise InputError(
                f"scale range {self.min_scale}..{self.max_scale} must be positive and fit in "
                f"the {self.image_size}px image."
            )
        low, high = self.background_range
        if not 0 <= low <= high <= 255:
            raise InputError(
                f"background_range must be within 0..255, got {self.background_range}."
            )


# -- rendering ----------------------------------------------------------------------------


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


def _pattern_polygons(pattern: str, config: SceneConfig) -> list[list[Point]]:
    if pattern == "dot":
        return [_ellipse(config.dot_radius, config.dot_radius, n=32)]
    length, width = config.cross_half_length, config.cross_half_width
    bar = [(-length, -width), (length, -width), (length, width), (-length, width)]
    return [_transform(bar, (0.0, 0.0), 1.0, 45.0), _transform(bar, (0.0, 0.0), 1.0, -45.0)]


def _symbol_masks(
    k: int, center: Point, radius: float, degrees: float, size: int, config: SceneConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(shape mask, pattern mask inside the shape) of class ``k`` on a ``size`` canvas."""
    outline = BASE_SHAPES[_SHAPE_NAMES[k % len(_SHAPE_NAMES)]]
    shape = _polygon_mask(size, [_transform(outline, center, radius, degrees)])
    pattern_polys = [
        _transform(poly, center, radius, degrees)
        for poly in _pattern_polygons(PATTERNS[k // len(_SHAPE_NAMES)], config)
    ]
    pattern = _polygon_mask(size, pattern_polys) & shape
    return shape, pattern


def _pattern_color(color: np.ndarray) -> np.ndarray:
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    return np.array([20, 20, 20] if luminance > 150 else [245, 245, 245], dtype=np.uint8)


@dataclass
class Scene:
    """One rendered scene: ``image`` H×W×3 uint8, ``semantic`` and ``instance`` H×W
    uint8 masks and the JSON-serialisable ``record``."""

    image: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> int:
        return int(self.record["target"])

    @property
    def visible_classes(self) -> list[int]:
        return list(self.record["visible_classes"])


class SceneGenerator:
    """Deterministic scene generator: ``generator(i)`` is a function of (seed, split, i).

    Args:
        config: the scene distribution (default: paper A.2).
        seed: dataset seed (the paper used 0 for all splits).
        split: ``'train'``, ``'val'`` or ``'test'`` (different random streams).

    Example:
        >>> from dense_readout.experiments.synthetic import SceneGenerator
        >>> scene = SceneGenerator(seed=0)(0)
        >>> scene.image.shape, scene.image.dtype.name
        ((224, 224, 3), 'uint8')
        >>> 3 <= len(scene.record["objects"]) <= 5
        True
        >>> scene.record["target"] in scene.record["visible_classes"]
        True
    """

    def __init__(
        self, config: SceneConfig | None = None, seed: int = 0, split: str = "train"
    ) -> None:
        if split not in SPLITS:
            raise InputError(f"split must be one of {sorted(SPLITS)}, got {split!r}.")
        if not isinstance(seed, int) or seed < 0:
            raise InputError(f"seed must be a non-negative int, got {seed!r}.")
        self.config = config or SceneConfig()
        self.seed = seed
        self.split = split

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng(
            np.random.SeedSequence([self.seed, SPLITS[self.split], int(index)])
        )

    def __call__(self, index: int) -> Scene:
        if not isinstance(index, (int, np.integer)) or index < 0:
            raise InputError(f"scene index must be a non-negative int, got {index!r}.")
        config = self.config
        rng = self.rng(int(index))
        for _ in range(config.max_attempts):
            scene = self._try_render(rng, int(index))
            if scene is not None:
                return scene
        raise DatasetError(  # pragma: no cover - only with an infeasible config
            f"Could not place objects for scene {index} in {config.max_attempts} attempts; "
            "lower max_scale/max_objects or min_center_distance."
        )

    # Layout: number, classes, scales, rotations, positions (rejection sampling).
    def _layout(self, rng: np.random.Generator) -> list[dict[str, Any]] | None:
        config = self.config
        count = int(rng.integers(config.min_objects, config.max_objects + 1))
        classes = rng.choice(NUM_CLASSES, size=count, replace=False)
        objects: list[dict[str, Any]] = []
        for k in classes:
            scale = float(rng.uniform(config.min_scale, config.max_scale))
            radius = scale / 2.0
            rotation = float(rng.uniform(-config.max_rotation, config.max_rotation))
            for _ in range(config.max_attempts):
                cx = float(rng.uniform(radius, config.image_size - radius))
                cy = float(rng.uniform(radius, config.image_size - radius))
                if all(
                    math.hypot(cx - o["center"][0], cy - o["center"][1])
                    >= config.min_center_distance * (radius + o["scale"] / 2.0)
                    for o in objects
                ):
                    break
            else:
                return None
            base = np.array(PALETTE[int(rng.integers(len(PALETTE)))], dtype=np.int64)
            jitter = rng.integers(-config.color_jitter, config.color_jitter + 1, size=3)
            color = np.clip(base + jitter, 0, 255)
            objects.append(
                {
                    "class": int(k),
                    "scale": scale,
                    "rotation": rotation,
                    "center": [cx, cy],
                    "color": [int(c) for c in color],
                }
            )
        order = rng.permutation(count)  # random render order
        return [objects[i] for i in order]

    def _try_render(self, rng: np.random.Generator, index: int) -> Scene | None:
        config = self.config
        size = config.image_size
        objects = self._layout(rng)
        if objects is None:
            return None
        low, high = config.background_range
        background = rng.integers(low, high + 1, size=3)
        image = np.empty((size, size, 3), dtype=np.uint8)
        image[:] = background.astype(np.uint8)
        semantic = np.zeros((size, size), dtype=np.uint8)
        instance = np.zeros((size, size), dtype=np.uint8)
        full_areas = []
        for instance_id, obj in enumerate(objects, start=1):
            shape, pattern = _symbol_masks(
                obj["class"],
                tuple(obj["center"]),
                obj["scale"] / 2.0,
                obj["rotation"],
                size,
                config,
            )
            color = np.array(obj["color"], dtype=np.uint8)
            image[shape] = color
            image[pattern] = _pattern_color(color)
            semantic[shape] = obj["class"] + 1
            instance[shape] = instance_id
            full_areas.append(int(shape.sum()))
        visible: list[int] = []
        for instance_id, (obj, full) in enumerate(zip(objects, full_areas, strict=False), start=1):
            ys, xs = np.nonzero(instance == instance_id)
            area = int(ys.size)
            obj["instance_id"] = instance_id
            obj["render_order"] = instance_id - 1
            obj["area"] = full
            obj["visible_area"] = area
            obj["visible"] = bool(full > 0 and area >= config.min_visible_fraction * full)
            obj["bbox"] = (
                [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
                if area
                else None
            )
            if obj["visible"]:
                visible.append(obj["class"])
        if not visible:
            return None
        visible_sorted = sorted(visible)
        target = int(visible_sorted[int(rng.integers(len(visible_sorted)))])
        record = {
            "index": index,
            "seed": self.seed,
            "split": self.split,
            "image_size": size,
            "background": [int(c) for c in background],
            "num_objects": len(objects),
            "target": target,
            "visible_classes": visible_sorted,
            "classes": sorted(o["class"] for o in objects),
            "objects": objects,
        }
        return Scene(image=image, semantic=semantic, instance=instance, record=record)

    def __iter__(self) -> Iterator[Scene]:  # an endless stream
        index = 0
        while True:
            yield self(index)
            index += 1


# -- single symbols and the contact sheet ------------------------------------------------


def render_symbol(
    k: int,
    size: int = 96,
    color: Sequence[int] = (30, 70, 200),
    background: Sequence[int] = (235, 235, 235),
    config: SceneConfig | None = None,
) -> np.ndarray:
    """Class ``k`` upright and centred on a ``size``-px tile (H×W×3 uint8)."""
    class_name(k)  # validates k
    config = config or SceneConfig()
    shape, pattern = _symbol_masks(k, (size / 2.0, size / 2.0), size * 0.42, 0.0, size, config)
    tile = np.empty((size, size, 3), dtype=np.uint8)
    tile[:] = np.asarray(background, dtype=np.uint8)
    col = np.asarray(color, dtype=np.uint8)
    tile[shape] = col
    tile[pattern] = _pattern_color(col)
    return tile


def contact_sheet(path: str | Path | None = None, tile: int = 96, columns: int = 10) -> Image.Image:
    """The 20 classes on one sheet (paper Fig. 4), labelled with id and name.

    Example:
        >>> from dense_readout.experiments.synthetic import contact_sheet
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


# -- on-disk datasets -----------------------------------------------------------------------


def write_scenes(
    root: str | Path,
    count: int,
    seed: int = 0,
    split: str = "train",
    config: SceneConfig | None = None,
    start: int = 0,
) -> Path:
    """Write ``count`` scenes to ``root/split/``: ``images/NNNNNN.png``,
    ``semantic/NNNNNN.png``, ``instance/NNNNNN.png``, ``records/NNNNNN.json`` and a
    ``manifest.json`` (config, seed, count, SHA-256 of every image). Returns the
    split directory. Existing files with the same index are overwritten with
    identical bytes (the generator is deterministic), so an interrupted write can be
    rerun.

    Example:
        >>> import tempfile
        >>> from dense_readout.experiments.synthetic import write_scenes, read_scene
        >>> folder = write_scenes(tempfile.mkdtemp(), count=2, seed=0, split="val")
        >>> read_scene(folder, 1).record["index"]
        1
    """
    if count < 0 or start < 0:
        raise InputError(f"count and start must be >= 0, got {count}, {start}.")
    generator = SceneGenerator(config, seed=seed, split=split)
    folder = Path(root) / split
    for sub in ("images", "semantic", "instance", "records"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    digests: dict[str, str] = {}
    for index in range(start, start + count):
        scene = generator(index)
        stem = f"{index:06d}"
        Image.fromarray(scene.image).save(folder / "images" / f"{stem}.png")
        Image.fromarray(scene.semantic).save(folder / "semantic" / f"{stem}.png")
        Image.fromarray(scene.instance).save(folder / "instance" / f"{stem}.png")
        (folder / "records" / f"{stem}.json").write_text(json.dumps(scene.record, indent=1))
        digests[stem] = hashlib.sha256(scene.image.tobytes()).hexdigest()
    manifest = {
        "seed": seed,
        "split": split,
        "start": start,
        "count": count,
        "config": asdict(generator.config),
        "num_classes": NUM_CLASSES,
        "class_names": [class_name(k) for k in range(NUM_CLASSES)],
        "sha256": digests,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return folder


def read_scene(folder: str | Path, index: int) -> Scene:
    """Read scene ``index`` written by :func:`write_scenes` from a split folder."""
    folder = Path(folder)
    stem = f"{int(index):06d}"
    paths = [folder / sub / f"{stem}.png" for sub in ("images", "semantic", "instance")]
    record_path = folder / "records" / f"{stem}.json"
    missing = [str(p) for p in [*paths, record_path] if not p.is_file()]
    if missing:
        raise DatasetError(
            f"Scene {index} is incomplete in {folder}: missing {', '.join(missing)}. "
            "Write it with dense_readout.experiments.synthetic.write_scenes(...)."
        )
    image, semantic, instance = (np.asarray(Image.open(p)) for p in paths)
    try:
        record = json.loads(record_path.read_text())
    except json.JSONDecodeError as error:
        raise DatasetError(f"{record_path} is not valid JSON: {error}") from None
    return Scene(
        image=np.array(image),
        semantic=np.array(semantic),
        instance=np.array(instance),
        record=record,
    )
