"""ILSVRC2012 validation with boxes (three on-disk layouts), ReaL labels, ImageNet-A.

Datasets here only *index* files and parse annotations; they never decode
images at construction. ``dataset[i]`` returns a :class:`Sample`: the image
path, the class index (standard 0..999 order), the boxes **in pixel
coordinates of the stored image file** (``N×4`` float array ``xmin, ymin, xmax,
ymax``, inclusive pixel indices as in Pascal-VOC) and the ReaL label set.

Box layouts (:data:`BOX_LAYOUTS`, chosen with ``layout=`` or detected):

* ``voc``: the official ``ILSVRC2012_bbox_val_v3`` per-image Pascal-VOC XMLs
  (``<size>``, one ``<object>`` per box, ``<name>`` = WordNet id).
* ``kaggle``: Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``
  with ``wnid xmin ymin xmax ymax`` repeated) + ``LOC_synset_mapping.txt``.
* ``wsol``: clovaai/wsolevaluation metadata (``image_ids.txt``,
  ``class_labels.txt``, ``image_sizes.txt``, ``localization.txt``).

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

import csv
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DatasetError, ImageLoadError
from ..imagenet import imagenet_wnids
from ._imagenet_a_wnids import IMAGENET_A_WNIDS

PathLike = str | Path

__all__ = [
    "BOX_LAYOUTS",
    "IMAGENET_A_WNIDS",
    "Annotation",
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


def item_error(reason: str, message: str, kind: type = DatasetError) -> Exception:
    """An exception for one bad item, tagged with a short machine-readable ``reason``."""
    error = kind(message)
    error.reason = reason  # type: ignore[attr-defined]
    return error


@dataclass(frozen=True)
class Annotation:
    """Boxes of one image as written in its annotation file.

    ``size`` is the ``(width, height)`` frame the boxes refer to (None: the
    stored file's own frame). ``error`` marks an annotation that could not be
    parsed (the item is then skipped or stops the run).
    """

    label: int | None
    boxes: np.ndarray  # N×4 float64
    size: tuple[int, int] | None = None
    error: str | None = None


@dataclass(frozen=True)
class Sample:
    """One ILSVRC (or ImageNet-A) item, ready for :mod:`~dense_readout.evaluation.protocol`.

    ``boxes`` are in pixel coordinates of the stored file; ``real`` is the ReaL
    label set (``None`` when no ReaL file was given or the file name carries no
    validation number; an empty tuple means ReaL judged the image unlabelable).
    ``image_size`` is the stored file's ``(width, height)``.
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
    """Read ``real.json`` (a list of 50,000 label lists; entry i = ILSVRC2012_val_{i+1})."""
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
# box layouts (registry)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BoxLayout:
    """How one on-disk annotation layout is detected and read."""

    name: str
    detect: Callable[[Path], Path | None]  # root -> annotation location or None
    read: Callable[[Path, dict[str, int]], Callable[[str], Annotation | None]]
    description: str = ""


BOX_LAYOUTS: dict[str, BoxLayout] = {}


def register_box_layout(layout: BoxLayout) -> BoxLayout:
    """Add a box layout (``read(location, synsets)`` returns ``lookup(image_id)``)."""
    BOX_LAYOUTS[layout.name] = layout
    return layout


def _floats(values: Sequence[str], where: str) -> list[float]:
    try:
        return [float(v) for v in values]
    except ValueError:
        raise ValueError(f"{where}: non-numeric box coordinate in {list(values)}") from None


# -- voc -------------------------------------------------------------------------------
def _detect_voc(root: Path) -> Path | None:
    for candidate in (
        root / "bbox_val",
        root / "ILSVRC2012_bbox_val_v3" / "val",
        root / "Annotations",
    ):
        if candidate.is_dir() and any(candidate.glob("*.xml")):
            return candidate
    return None


def _parse_voc(path: Path, synsets: dict[str, int]) -> Annotation:
    try:
        tree = ET.parse(path)
    except ET.ParseError as error:
        return Annotation(None, np.zeros((0, 4)), error=f"{path}: malformed XML ({error}).")
    root = tree.getroot()
    size = None
    width, height = root.findtext("size/width"), root.findtext("size/height")
    try:
        if width and height:
            size = (int(float(width)), int(float(height)))
        boxes, labels = [], set()
        for obj in root.iter("object"):
            wnid = (obj.findtext("name") or "").strip()
            if wnid not in synsets:
                return Annotation(
                    None, np.zeros((0, 4)), size, f"{path}: unknown WordNet id {wnid!r}."
                )
            labels.add(synsets[wnid])
            box = obj.find("bndbox")
            if box is None:
                return Annotation(
                    None, np.zeros((0, 4)), size, f"{path}: <object> without <bndbox>."
                )
            boxes.append(
                _floats(
                    [box.findtext(k) or "" for k in ("xmin", "ymin", "xmax", "ymax")], str(path)
                )
            )
    except ValueError as error:
        return Annotation(None, np.zeros((0, 4)), size, f"{path}: {error}.")
    if len(labels) > 1:
        return Annotation(
            None, np.zeros((0, 4)), size, f"{path}: boxes of several classes {sorted(labels)}."
        )
    label = labels.pop() if labels else None
    return Annotation(label, np.asarray(boxes, dtype=np.float64).reshape(-1, 4), size)


def _read_voc(location: Path, synsets: dict[str, int]) -> Callable[[str], Annotation | None]:
    def lookup(image_id: str) -> Annotation | None:
        path = location / f"{Path(image_id).stem}.xml"
        return _parse_voc(path, synsets) if path.is_file() else None

    return lookup


register_box_layout(
    BoxLayout("voc", _detect_voc, _read_voc, "ILSVRC2012_bbox_val_v3 per-image XML")
)


# -- kaggle ----------------------------------------------------------------------------
def _detect_kaggle(root: Path) -> Path | None:
    path = root / "LOC_val_solution.csv"
    return path if path.is_file() else None


def _read_kaggle(location: Path, synsets: dict[str, int]) -> Callable[[str], Annotation | None]:
    table: dict[str, Annotation] = {}
    with location.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise DatasetError(
                f"{location}: expected the header 'ImageId,PredictionString' of Kaggle's LOC_val_solution.csv."
            )
        for line_number, row in enumerate(reader, 2):
            if not row:
                continue
            if len(row) != 2 or not row[0].strip():
                raise DatasetError(f"{location}:{line_number}: expected 2 columns, got {len(row)}.")
            image_id, tokens = row[0].strip(), row[1].split()
            where = f"{location}:{line_number}"
            if len(tokens) % 5:
                table[image_id] = Annotation(
                    None,
                    np.zeros((0, 4)),
                    None,
                    f"{where}: {len(tokens)} tokens, "
                    "expected groups of 'wnid xmin ymin xmax ymax'.",
                )
                continue
            boxes, labels, error = [], set(), None
            for start in range(0, len(tokens), 5):
                wnid = tokens[start]
                if wnid not in synsets:
                    error = f"{where}: unknown WordNet id {wnid!r}."
                    break
                labels.add(synsets[wnid])
                try:
                    boxes.append(_floats(tokens[start + 1 : start + 5], where))
                except ValueError as problem:
                    error = str(problem)
                    break
            if error is None and len(labels) > 1:
                error = f"{where}: boxes of several classes {sorted(labels)}."
            table[image_id] = Annotation(
                None if error else (labels.pop() if labels else None),
                np.asarray(boxes if not error else [], dtype=np.float64).reshape(-1, 4),
                None,
                error,
            )

    def lookup(image_id: str) -> Annotation | None:
        return table.get(Path(image_id).stem)

    return lookup


register_box_layout(
    BoxLayout("kaggle", _detect_kaggle, _read_kaggle, "Kaggle LOC_val_solution.csv")
)


# -- wsolevaluation --------------------------------------------------------------------
_WSOL_FILES = ("class_labels.txt", "image_sizes.txt", "localization.txt")


def _detect_wsol(root: Path) -> Path | None:
    for candidate in (root, root / "metadata" / "ILSVRC" / "test", root / "metadata"):
        if all((candidate / name).is_file() for name in _WSOL_FILES):
            return candidate
    return None


def _read_wsol(location: Path, synsets: dict[str, int]) -> Callable[[str], Annotation | None]:
    def rows(name: str, columns: int):
        path = location / name
        if not path.is_file():
            raise DatasetError(
                f"{path}: missing; wsolevaluation metadata needs {', '.join(_WSOL_FILES)}."
            )
        for line_number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != columns:
                raise DatasetError(
                    f"{path}:{line_number}: expected {columns} comma-separated fields, got {len(parts)}."
                )
            yield f"{path}:{line_number}", Path(parts[0]).stem, parts[1:]

    labels: dict[str, int] = {}
    sizes: dict[str, tuple[int, int]] = {}
    boxes: dict[str, list[list[float]]] = {}
    errors: dict[str, str] = {}
    for where, key, (value,) in rows("class_labels.txt", 2):
        try:
            labels[key] = int(value)
        except ValueError:
            errors[key] = f"{where}: class label {value!r} is not an integer."
    for where, key, (width, height) in rows("image_sizes.txt", 3):
        try:
            sizes[key] = (int(width), int(height))
        except ValueError:
            errors[key] = f"{where}: image size {width!r}x{height!r} is not integer."
    for where, key, values in rows("localization.txt", 5):
        try:
            boxes.setdefault(key, []).append(_floats(values, where))
        except ValueError as problem:
            errors[key] = str(problem)

    def lookup(image_id: str) -> Annotation | None:
        key = Path(image_id).stem
        if key in errors:
            return Annotation(None, np.zeros((0, 4)), None, errors[key])
        if key not in labels:
            return None
        label = labels[key]
        if not 0 <= label < len(synsets):
            return Annotation(
                None,
                np.zeros((0, 4)),
                None,
                f"{location}/class_labels.txt: label {label} of {key} out of range.",
            )
        array = np.asarray(boxes.get(key, []), dtype=np.float64).reshape(-1, 4)
        return Annotation(label, array, sizes.get(key))

    return lookup


register_box_layout(BoxLayout("wsol", _detect_wsol, _read_wsol, "clovaai/wsolevaluation metadata"))


def detect_layout(root: PathLike) -> str:
    """Name of the first box layout found under ``root`` (voc, kaggle, wsol)."""
    root = Path(root)
    for name, layout in BOX_LAYOUTS.items():
        if layout.detect(root) is not None:
            return name
    raise DatasetError(
        f"No box annotations found under {root}. Expected one of: bbox_val/*.xml (official "
        "ILSVRC2012_bbox_val_v3), LOC_val_solution.csv + LOC_synset_mapping.txt (Kaggle), or "
        "class_labels.txt/image_sizes.txt/localization.txt (wsolevaluation metadata). "
        "Pass layout= and boxes= to point at them."
    )


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
        >>> ILSVRCBoxes.__name__
        'ILSVRCBoxes'
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
        spec = BOX_LAYOUTS[self.layout]
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
    """ImageNet-1k indices of the 200 ImageNet-A classes, in ImageNet order."""
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
