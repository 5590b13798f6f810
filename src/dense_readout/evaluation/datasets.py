"""ILSVRC2012 validation with boxes (three on-disk layouts), ReaL labels, ImageNet-A.

Datasets here only *index* files and parse annotations; they never decode
images at construction. ``dataset[i]`` returns a :class:`Sample`: the image
path, the class index (standard 0..999 order), the boxes **in pixel
coordinates of the stored image file** (``N×4`` float array ``xmin, ymin, xmax,
ymax``, inclusive pixel indices as in Pascal-VOC) and the ReaL label set.
"Stored" means the pixel grid as written in the file, before any EXIF orientation
tag is applied: ILSVRC's boxes and ``<size>`` refer to it, so the benchmark decodes
images with ``load_image(path, exif_transpose=False)``.

Box layouts (``voc``, ``kaggle``, ``wsol``; chosen with ``layout=`` or detected) live
in :mod:`.box_layouts` and are re-exported here (:data:`BOX_LAYOUTS`,
:func:`register_box_layout`, :func:`detect_layout`, :class:`Annotation`).

Boxes are stored in the frame of the annotation's declared image size (VOC
``<size>``, wsol ``image_sizes.txt``). When the stored file has another size
(e.g. a resized copy of the validation set) the boxes are scaled linearly to
the file; Kaggle's CSV declares no size and is taken to be in the file's frame.

Per-item problems (missing annotation, no box, every box outside the image,
unreadable image header, malformed XML) raise :class:`~dense_readout.errors.DatasetError`
or :class:`~dense_readout.errors.ImageLoadError` from ``dataset[i]`` with a
``reason`` attribute; the benchmark runner turns them into counted skips (or stops,
with ``on_error='stop'``). Problems with a whole annotation file raise at construction.

Example:
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from dense_readout.evaluation.datasets import ILSVRCBoxes
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "val").mkdir(); (root / "bbox_val").mkdir()
    >>> Image.new("RGB", (40, 30)).save(root / "val" / "ILSVRC2012_val_00000001.JPEG")
    >>> _ = (root / "bbox_val" / "ILSVRC2012_val_00000001.xml").write_text(
    ...     "<annotation><size><width>40</width><height>30</height></size><object>"
    ...     "<name>n01440764</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>20</xmax>"
    ...     "<ymax>25</ymax></bndbox></object></annotation>")
    >>> dataset = ILSVRCBoxes(root)
    >>> sample = dataset[0]
    >>> sample.label, sample.boxes.tolist()
    (0, [[2.0, 3.0, 20.0, 25.0]])
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DatasetError, ImageLoadError
from ..imagenet import imagenet_wnids
from ._imagenet_a_wnids import IMAGENET_A_WNIDS
from .box_layouts import BOX_LAYOUTS, Annotation, BoxLayout, detect_layout, register_box_layout

PathLike = str | Path

__all__ = [
    "BOX_LAYOUTS",
    "IMAGENET_A_WNIDS",
    "Annotation",
    "BoxLayout",
    "ILSVRCBoxes",
    "ImageNetA",
    "Sample",
    "detect_layout",
    "imagenet_a_class_indices",
    "item_error",
    "load_real_labels",
    "read_synset_mapping",
    "register_box_layout",
]

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp"}
_VAL_NUMBER = re.compile(r"ILSVRC2012_val_(\d{8})")


def item_error(reason: str, message: str, kind: type[Exception] = DatasetError) -> Exception:
    """An exception for one bad item, tagged with a short machine-readable ``reason``.

    Example:
        >>> from dense_readout.errors import DatasetError, ImageLoadError
        >>> from dense_readout.evaluation.datasets import item_error
        >>> error = item_error("no_boxes", "ILSVRC2012_val_00000001: no boxes in its annotation.")
        >>> isinstance(error, DatasetError), error.reason
        (True, 'no_boxes')
        >>> type(item_error("unreadable", "truncated file", ImageLoadError)).__name__
        'ImageLoadError'
    """
    error: Any = kind(message)
    error.reason = reason
    return error


@dataclass(frozen=True)
class Sample:
    """One ILSVRC (or ImageNet-A) item, ready for :mod:`~dense_readout.evaluation.protocol`.

    ``boxes`` are in pixel coordinates of the stored file; ``real`` is the ReaL
    label set (``None`` when no ReaL file was given or the file name carries no
    validation number; an empty tuple means ReaL judged the image unlabelable).
    ``image_size`` is the stored file's ``(width, height)`` (EXIF orientation not applied).

    Example:
        >>> from pathlib import Path
        >>> import numpy as np
        >>> from dense_readout.evaluation.datasets import Sample
        >>> sample = Sample(0, Path("ILSVRC2012_val_00000001.JPEG"), label=65,
        ...                 boxes=np.array([[111.0, 108.0, 441.0, 353.0]]), real=(65,), image_size=(500, 375))
        >>> sample.label in sample.real, sample.boxes.shape, sample.boxes_clipped
        (True, (1, 4), 0)
    """

    index: int
    path: Path
    label: int
    boxes: np.ndarray
    real: tuple[int, ...] | None = None
    image_size: tuple[int, int] = (0, 0)
    boxes_clipped: int = 0
    image_id: str = ""


# --------------------------------------------------------------------------------------
# synsets and ReaL
# --------------------------------------------------------------------------------------
def read_synset_mapping(path: PathLike | None = None) -> dict[str, int]:
    """WordNet id -> class index, from ``LOC_synset_mapping.txt`` (line i = class i).

    Without a path, timm's standard ImageNet-1k order is used.

    Example:
        >>> import pathlib, tempfile
        >>> from dense_readout.evaluation.datasets import read_synset_mapping
        >>> read_synset_mapping()["n01440764"], len(read_synset_mapping())  # timm's order: tench first
        (0, 1000)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = pathlib.Path(folder, "LOC_synset_mapping.txt")
        ...     _ = path.write_text("n01443537 goldfish\\nn01440764 tench\\n")
        ...     print(read_synset_mapping(path))
        {'n01443537': 0, 'n01440764': 1}
    """
    if path is None:
        return {wnid: i for i, wnid in enumerate(imagenet_wnids())}
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: synset mapping not found (expected 'WNID name' per line).")
    mapping: dict[str, int] = {}
    for line_number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        wnid = line.split()[0]
        if not re.fullmatch(r"n\d{8}", wnid):
            raise DatasetError(f"{path}:{line_number}: {wnid!r} is not a WordNet id (nXXXXXXXX).")
        if wnid in mapping:
            raise DatasetError(f"{path}:{line_number}: duplicate WordNet id {wnid}.")
        mapping[wnid] = len(mapping)
    if not mapping:
        raise DatasetError(f"{path}: empty synset mapping.")
    return mapping


def load_real_labels(path: PathLike) -> list[list[int]]:
    """Read ``real.json`` (a list of 50,000 label lists; entry i = ILSVRC2012_val_{i+1}).

    Example:
        >>> import json, pathlib, tempfile
        >>> from dense_readout.evaluation.datasets import load_real_labels
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = pathlib.Path(folder, "real.json")
        ...     _ = path.write_text(json.dumps([[65], [], [970, 795]]))  # [] = judged unlabelable
        ...     print(load_real_labels(path))
        [[65], [], [970, 795]]
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(
            f"{path}: ReaL file not found; pass real=None to skip ReaL metrics."
        ) from None
    except json.JSONDecodeError as error:
        raise DatasetError(
            f"{path}: not valid JSON ({error}); expected the ReaL real.json."
        ) from None
    if not isinstance(data, list) or not all(isinstance(entry, list) for entry in data):
        raise DatasetError(
            f"{path}: expected a JSON list of label lists (google-research/reassessed-imagenet)."
        )
    return data


def _real_for(image_id: str, real: list[list[int]] | None) -> tuple[int, ...] | None:
    if real is None:
        return None
    match = _VAL_NUMBER.search(image_id)
    if not match:
        return None
    number = int(match.group(1))
    if not 1 <= number <= len(real):
        return None
    return tuple(int(v) for v in real[number - 1])


# --------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------
def _list_images(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise DatasetError(
            f"{directory}: image folder not found; pass images=<folder of validation JPEGs>."
        )
    files = sorted(
        p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not files:
        raise DatasetError(f"{directory}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    return files


def _file_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise item_error(
            "missing_image", f"{path}: image file is missing.", ImageLoadError
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise item_error(
            "corrupt_image", f"{path}: unreadable image header ({error}).", ImageLoadError
        ) from None


def fit_boxes(
    boxes: np.ndarray, frame: tuple[int, int] | None, size: tuple[int, int]
) -> tuple[np.ndarray, int]:
    """Scale boxes from the annotation ``frame`` to the file ``size`` and clip them to it.

    Returns the boxes that keep a non-empty area and how many were clipped;
    boxes entirely outside the image are dropped.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    width, height = size
    if frame is not None and tuple(frame) != (width, height) and min(frame) > 0:
        scale = np.array([width / frame[0], height / frame[1]] * 2)
        boxes = boxes * scale
    low = np.array([0.0, 0.0, 0.0, 0.0])
    high = np.array([width - 1.0, height - 1.0, width - 1.0, height - 1.0])
    clipped = np.clip(boxes, low, high)
    # a box ending one pixel past the border (exclusive vs inclusive conventions) is not 'clipped'
    changed = np.any(np.abs(clipped - boxes) > 1.0 + 1e-9, axis=1)
    ordered = (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])
    inside = (
        (boxes[:, 2] >= 0)
        & (boxes[:, 3] >= 0)
        & (boxes[:, 0] <= width - 1)
        & (boxes[:, 1] <= height - 1)
    )
    keep = ordered & inside
    return clipped[keep], int(np.sum(changed & keep))


class ILSVRCBoxes:
    """ILSVRC2012 validation images with localization boxes and optional ReaL labels.

    Args:
        root: dataset root. Defaults resolve below it: images in ``root/val``,
            boxes detected (``bbox_val/``, ``LOC_val_solution.csv``, wsol metadata),
            ``LOC_synset_mapping.txt`` and ``real.json`` when present.
        layout: ``'voc'``, ``'kaggle'``, ``'wsol'`` or ``None`` (detect).
        boxes: the annotation location for ``layout`` (XML folder, CSV file or wsol folder).
        images: folder holding the ``ILSVRC2012_val_*.JPEG`` files.
        synsets: ``LOC_synset_mapping.txt``; default ``root``'s, else timm's standard order.
        real: ``real.json`` path, ``False`` to ignore ReaL, default ``root/real.json`` if present.

    The index is the sorted list of image files; an image without annotation
    entry fails per item (reason ``missing_annotation``).

    Example:
        >>> from dense_readout.evaluation.datasets import ILSVRCBoxes
        >>> ILSVRCBoxes("/no/such/root")
        Traceback (most recent call last):
        ...
        dense_readout.errors.DatasetError: /no/such/root: dataset root not found.
    """

    def __init__(
        self,
        root: PathLike,
        layout: str | None = None,
        boxes: PathLike | None = None,
        images: PathLike | None = None,
        synsets: PathLike | None = None,
        real: PathLike | bool | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset root not found.")
        self.layout = layout or detect_layout(self.root)
        if self.layout not in BOX_LAYOUTS:
            raise DatasetError(f"Unknown box layout {self.layout!r}; known: {sorted(BOX_LAYOUTS)}.")
        spec = BOX_LAYOUTS.get(self.layout)
        location = Path(boxes) if boxes is not None else spec.detect(self.root)
        if location is None or not location.exists():
            raise DatasetError(
                f"{self.layout} box annotations not found under {self.root} ({spec.description}); pass boxes=<path>."
            )
        self.boxes_location = location
        if synsets is None and (self.root / "LOC_synset_mapping.txt").is_file():
            synsets = self.root / "LOC_synset_mapping.txt"
        self.synsets = read_synset_mapping(synsets)
        self.num_classes = len(self.synsets)
        self._lookup = spec.read(location, self.synsets)
        self.images_dir = Path(images) if images is not None else self._default_images()
        self.files = _list_images(self.images_dir)
        if real is None:
            real = self.root / "real.json" if (self.root / "real.json").is_file() else False
        self.real_path = None if real is False else Path(real)  # type: ignore[arg-type]
        self._real = load_real_labels(self.real_path) if self.real_path is not None else None

    def _default_images(self) -> Path:
        for candidate in (
            self.root / "val",
            self.root / "ILSVRC" / "Data" / "CLS-LOC" / "val",
            self.root,
        ):
            if candidate.is_dir() and any(
                p.suffix.lower() in IMAGE_SUFFIXES for p in candidate.iterdir()
            ):
                return candidate
        raise DatasetError(
            f"No validation images found under {self.root}/val; pass images=<folder>."
        )

    @property
    def has_real(self) -> bool:
        """Whether ReaL labels were loaded."""
        return self._real is not None

    def __len__(self) -> int:
        return len(self.files)

    def describe(self) -> dict:
        """What was loaded, for reports."""
        return {
            "dataset": "ilsvrc",
            "layout": self.layout,
            "boxes": str(self.boxes_location),
            "images": str(self.images_dir),
            "real": str(self.real_path) if self.real_path else None,
            "num_images": len(self),
        }

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self.files):
            raise IndexError(index)
        path = self.files[index]
        annotation = self._lookup(path.name)
        if annotation is None:
            raise item_error(
                "missing_annotation",
                f"{path.name}: no entry in the {self.layout} annotations ({self.boxes_location}).",
            )
        if annotation.error:
            raise item_error("malformed_annotation", annotation.error)
        if annotation.label is None or len(annotation.boxes) == 0:
            raise item_error("no_box", f"{path.name}: the annotation holds no box.")
        size = _file_size(path)
        fitted, clipped = fit_boxes(annotation.boxes, annotation.size, size)
        if len(fitted) == 0:
            raise item_error(
                "box_outside_image",
                f"{path.name}: every box lies outside the {size[0]}x{size[1]} image.",
            )
        return Sample(
            index=index,
            path=path,
            label=int(annotation.label),
            boxes=fitted,
            real=_real_for(path.name, self._real),
            image_size=size,
            boxes_clipped=clipped,
            image_id=path.stem,
        )


def imagenet_a_class_indices(synsets: dict[str, int] | None = None) -> list[int]:
    """ImageNet-1k indices of the 200 ImageNet-A classes, in ImageNet order.

    Example:
        >>> from dense_readout.evaluation.datasets import imagenet_a_class_indices
        >>> indices = imagenet_a_class_indices()
        >>> len(indices), indices == sorted(indices), all(0 <= k < 1000 for k in indices)
        (200, True, True)
    """
    synsets = synsets or read_synset_mapping()
    return sorted(synsets[w] for w in IMAGENET_A_WNIDS)


class ImageNetA:
    """ImageNet-A in its ``<wnid>/<file>.jpg`` layout; labels are ImageNet-1k indices.

    ``class_indices`` are the 200 ImageNet-1k classes the logits are restricted to.
    A folder whose name is not one of the 200 ImageNet-A WordNet ids is an error.

    Example:
        >>> from dense_readout.evaluation.datasets import ImageNetA
        >>> len(ImageNetA.CLASSES)
        200
    """

    CLASSES = IMAGENET_A_WNIDS

    def __init__(self, root: PathLike, synsets: PathLike | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(
                f"{self.root}: ImageNet-A root not found (expected <wnid>/<file>.jpg folders)."
            )
        self.synsets = read_synset_mapping(synsets)
        self.num_classes = len(self.synsets)
        known = set(IMAGENET_A_WNIDS)
        folders = sorted(p for p in self.root.iterdir() if p.is_dir())
        unknown = [p.name for p in folders if p.name not in known]
        if unknown:
            raise DatasetError(
                f"{self.root}: folders {unknown[:5]} are not ImageNet-A WordNet ids; the root must hold "
                "only the 200 <wnid> class folders of imagenet-a."
            )
        self.items: list[tuple[Path, int]] = []
        for folder in folders:
            label = self.synsets[folder.name]
            self.items += [
                (p, label) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES
            ]
        if not self.items:
            raise DatasetError(f"{self.root}: no images in <wnid>/ folders.")
        self.class_indices = imagenet_a_class_indices(self.synsets)
        self.has_real = False

    def __len__(self) -> int:
        return len(self.items)

    def describe(self) -> dict:
        """What to record about the dataset in ``results.json``."""
        return {
            "dataset": "imagenet-a",
            "images": str(self.root),
            "num_images": len(self),
            "num_classes": len(self.class_indices),
        }

    def __getitem__(self, index: int) -> Sample:
        path, label = self.items[index]
        size = _file_size(path)
        return Sample(
            index=index,
            path=path,
            label=label,
            boxes=np.zeros((0, 4)),
            image_size=size,
            image_id=f"{path.parent.name}/{path.stem}",
        )
