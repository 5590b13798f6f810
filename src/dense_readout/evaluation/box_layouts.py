"""ILSVRC box annotations in three on-disk layouts, behind one registry.

Each layout (:data:`BOX_LAYOUTS`, a :class:`~dense_readout.registry.Registry`) knows
how to find its annotation location under a dataset root and how to read it into a
``lookup(image_id) -> Annotation | None``:

* ``voc``: the official ``ILSVRC2012_bbox_val_v3`` per-image Pascal-VOC XMLs
  (``<size>``, one ``<object>`` per box, ``<name>`` = WordNet id).
* ``kaggle``: Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``
  with ``wnid xmin ymin xmax ymax`` repeated) + ``LOC_synset_mapping.txt``.
* ``wsol``: clovaai/wsolevaluation metadata (``image_ids.txt``,
  ``class_labels.txt``, ``image_sizes.txt``, ``localization.txt``).

A problem with one entry becomes an :class:`Annotation` with ``error`` set (the
dataset turns it into a per-item error); a problem with a whole file raises
:class:`~dense_readout.errors.DatasetError` at once. Everything here is also
importable from :mod:`dense_readout.evaluation.datasets`.

Example:
    >>> import tempfile, pathlib
    >>> from dense_readout.evaluation.box_layouts import BOX_LAYOUTS, detect_layout
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "LOC_val_solution.csv").write_text(
    ...     "ImageId,PredictionString\\nILSVRC2012_val_00000001,n01440764 2 3 20 25\\n")
    >>> detect_layout(root)
    'kaggle'
    >>> lookup = BOX_LAYOUTS.get("kaggle").read(root / "LOC_val_solution.csv", {"n01440764": 0})
    >>> annotation = lookup("ILSVRC2012_val_00000001.JPEG")
    >>> annotation.label, annotation.boxes.tolist()
    (0, [[2.0, 3.0, 20.0, 25.0]])
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..registry import Registry

__all__ = [
    "BOX_LAYOUTS",
    "Annotation",
    "BoxLayout",
    "detect_layout",
    "register_box_layout",
]

PathLike = str | Path


@dataclass(frozen=True)
class Annotation:
    """Boxes of one image as written in its annotation file.

    ``size`` is the ``(width, height)`` frame the boxes refer to (None: the
    stored file's own frame). ``error`` marks an annotation that could not be
    parsed (the item is then skipped or stops the run).

    Example:
        >>> import numpy as np
        >>> from dense_readout.evaluation.box_layouts import Annotation
        >>> good = Annotation(label=3, boxes=np.array([[2.0, 3.0, 20.0, 25.0]]), size=(500, 375))
        >>> bad = Annotation(label=None, boxes=np.zeros((0, 4)), error="unreadable XML")
        >>> good.boxes.shape, good.size, bad.error is not None
        ((1, 4), (500, 375), True)
    """

    label: int | None
    boxes: np.ndarray  # N×4 float64
    size: tuple[int, int] | None = None
    error: str | None = None


@dataclass(frozen=True)
class BoxLayout:
    """How one on-disk annotation layout is detected and read.

    Example:
        >>> import numpy as np
        >>> from dense_readout.evaluation.box_layouts import Annotation, BoxLayout
        >>> def read(location, synsets):  # one box per image, the whole of a 10×10 frame
        ...     return lambda image_id: Annotation(0, np.array([[0.0, 0.0, 9.0, 9.0]]), size=(10, 10))
        >>> layout = BoxLayout("everything", detect=lambda root: root, read=read, description="a demo")
        >>> layout.read(None, {})("any.JPEG").boxes.tolist()
        [[0.0, 0.0, 9.0, 9.0]]
    """

    name: str
    detect: Callable[[Path], Path | None]  # root -> annotation location or None
    read: Callable[[Path, dict[str, int]], Callable[[str], Annotation | None]]
    description: str = ""


BOX_LAYOUTS: Registry[BoxLayout] = Registry(
    "box layout",
    hint="Register your own with dense_readout.evaluation.box_layouts.register_box_layout.",
)


def register_box_layout(layout: BoxLayout) -> BoxLayout:
    """Add a box layout under ``layout.name`` (``read(location, synsets)`` returns ``lookup(image_id)``).

    Layouts are tried in registration order by :func:`detect_layout`.

    Example:
        >>> from pathlib import Path
        >>> from dense_readout.evaluation.box_layouts import (
        ...     BOX_LAYOUTS, BoxLayout, register_box_layout)
        >>> never = BoxLayout("never", lambda root: None, lambda location, synsets: lambda i: None)
        >>> register_box_layout(never) is never, "never" in BOX_LAYOUTS
        (True, True)
        >>> BOX_LAYOUTS.unregister("never") is never, "never" in BOX_LAYOUTS
        (True, False)
    """
    return BOX_LAYOUTS.add(layout)


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
    def rows(name: str, columns: int) -> Iterator[tuple[str, str, list[str]]]:
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
    """Name of the first box layout found under ``root`` (voc, kaggle, wsol).

    Example:
        >>> import pathlib, tempfile
        >>> from dense_readout.errors import DatasetError
        >>> from dense_readout.evaluation.box_layouts import detect_layout
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     root = pathlib.Path(folder)
        ...     _ = (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\\n")
        ...     print(detect_layout(root))
        ...     (root / "LOC_val_solution.csv").unlink()
        ...     try:
        ...         detect_layout(root)
        ...     except DatasetError as error:
        ...         print("layout=" in str(error))
        kaggle
        True
    """
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
