"""Synthetic single-label multi-object scenes (paper A.2): the scene dataset.

Each 224×224 RGB scene holds 3–5 objects of distinct classes out of K = 20 (the
symbols of :mod:`.synthetic_symbols`: 10 base shapes × 2 internal patterns),
scale 42–68 px (diameter of the shape's circumscribed circle), rotation uniform
in ±180°, positions uniform subject to an overlap constraint, colour from a
fixed palette with per-channel jitter (independent of the class), a light
random background, random render order. For each scene the generator returns
the RGB image, a semantic mask (0 = background, 1..K = class + 1), an instance
mask (0 = background, 1..n = instance id in render order) and a
JSON-serialisable record (sampled target, visible classes, per-object class,
scale, rotation, centre, colour, bbox, areas).

Scenes are a pure function of ``(seed, split, index)``: the same arguments give
identical bytes, so a dataset can be streamed on the fly (random access) or
written to disk with :func:`write_scenes` and read back with :func:`read_scene`.

Rendering is crisp (no anti-aliasing) so the masks agree pixel for pixel with
the image: a pixel belongs to the object drawn last over it.

The class names of :mod:`.synthetic_symbols` (``NUM_CLASSES``, ``class_name``,
``render_symbol``, ``contact_sheet`` …) are re-exported here.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DatasetError, InputError
from .synthetic_symbols import (
    BASE_SHAPES,
    DEFAULT_PATTERN_SIZES,
    NUM_CLASSES,
    PATTERNS,
    class_name,
    contact_sheet,
    pattern_color,
    render_symbol,
    symbol_masks,
)

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
        dot_radius, cross_half_length, cross_half_width: centre-dot radius and the
            cross bars' half length and half width, relative to the object's radius
            (:data:`~.synthetic_symbols.DEFAULT_PATTERN_SIZES`).
        max_attempts: rejection-sampling attempts per object position and per scene.

    Example:
        >>> from dense_readout.errors import InputError
        >>> from dense_readout.experiments.synthetic import SceneConfig, SceneGenerator
        >>> small = SceneConfig(image_size=96, min_objects=2, max_objects=2,
        ...     min_scale=24, max_scale=32)
        >>> scene = SceneGenerator(small, seed=0)(0)
        >>> scene.image.shape, scene.record["num_objects"]
        ((96, 96, 3), 2)
        >>> try:
        ...     SceneConfig(min_objects=4, max_objects=3)
        ... except InputError as error:
        ...     print(error)
        objects per scene must satisfy 1 <= min <= max <= 20, got 4..3.
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
    dot_radius: float = DEFAULT_PATTERN_SIZES.dot_radius
    cross_half_length: float = DEFAULT_PATTERN_SIZES.cross_half_length
    cross_half_width: float = DEFAULT_PATTERN_SIZES.cross_half_width
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


@dataclass
class Scene:
    """One rendered scene.

    ``image`` H×W×3 uint8, ``semantic`` and ``instance`` H×W uint8 masks and the
    JSON-serialisable ``record``.

    Example:
        >>> import numpy as np
        >>> from dense_readout.experiments.synthetic import SceneConfig, SceneGenerator
        >>> config = SceneConfig(image_size=96, min_objects=2, max_objects=2,
        ...     min_scale=24, max_scale=32)
        >>> scene = SceneGenerator(config, seed=0)(0)
        >>> scene.target in scene.visible_classes  # the training label is a visible class
        True
        >>> present = sorted(int(v) - 1 for v in np.unique(scene.semantic) if v)  # 1 + class
        >>> present == sorted(o["class"] for o in scene.record["objects"] if o["visible"])
        True
        >>> np.unique(scene.instance).tolist()  # 0 background, then one id per object
        [0, 1, 2]
        >>> bool(((scene.semantic > 0) == (scene.instance > 0)).all())
        True
    """

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
        full_areas: list[int] = []
        for instance_id, obj in enumerate(objects, start=1):
            shape, pattern = symbol_masks(
                obj["class"],
                tuple(obj["center"]),
                obj["scale"] / 2.0,
                obj["rotation"],
                size,
                config,
            )
            color = np.array(obj["color"], dtype=np.uint8)
            image[shape] = color
            image[pattern] = pattern_color(color)
            semantic[shape] = obj["class"] + 1
            instance[shape] = instance_id
            full_areas.append(int(shape.sum()))
        visible = self._record_visibility(objects, instance, full_areas)
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

    def _record_visibility(
        self, objects: list[dict[str, Any]], instance: np.ndarray, full_areas: list[int]
    ) -> list[int]:
        """Add ids, areas, bbox and visibility to each object; return the visible classes."""
        visible: list[int] = []
        for instance_id, (obj, full) in enumerate(zip(objects, full_areas, strict=False), start=1):
            ys, xs = np.nonzero(instance == instance_id)
            area = int(ys.size)
            obj["instance_id"] = instance_id
            obj["render_order"] = instance_id - 1
            obj["area"] = full
            obj["visible_area"] = area
            obj["visible"] = bool(full > 0 and area >= self.config.min_visible_fraction * full)
            obj["bbox"] = (
                [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
                if area
                else None
            )
            if obj["visible"]:
                visible.append(obj["class"])
        return visible

    def __iter__(self) -> Iterator[Scene]:  # an endless stream
        index = 0
        while True:
            yield self(index)
            index += 1


# -- on-disk datasets -----------------------------------------------------------------------


def write_scenes(
    root: str | Path,
    count: int,
    seed: int = 0,
    split: str = "train",
    config: SceneConfig | None = None,
    start: int = 0,
) -> Path:
    """Write ``count`` scenes to ``root/split/`` and return that directory.

    Files: ``images/NNNNNN.png``, ``semantic/NNNNNN.png``, ``instance/NNNNNN.png``,
    ``records/NNNNNN.json`` and a ``manifest.json`` (config, seed, count, SHA-256 of every
    image). Existing files with the same index are overwritten with identical bytes (the
    generator is deterministic), so an interrupted write can be rerun.

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
    """Read scene ``index`` written by :func:`write_scenes` from a split folder.

    Example:
        >>> import tempfile, numpy as np
        >>> from dense_readout.experiments.synthetic import (SceneConfig, SceneGenerator,
        ...     read_scene, write_scenes)
        >>> config = SceneConfig(image_size=64, min_objects=1, max_objects=2,
        ...     min_scale=16, max_scale=24)
        >>> tmp = tempfile.TemporaryDirectory()
        >>> folder = write_scenes(tmp.name, count=2, split="val", config=config)
        >>> scene = read_scene(folder, 1)
        >>> again = SceneGenerator(config, split="val")(1)  # scenes are pure functions of the index
        >>> np.array_equal(scene.image, again.image), scene.record == again.record
        (True, True)
        >>> tmp.cleanup()
    """
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
