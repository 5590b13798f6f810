"""Dataset layouts the export reads: a plain folder, ILSVRC (val + boxes), COCO (instances).

Each layout turns a root into an :class:`ExportSource`: the image paths in a fixed
order and, where the layout has them, the image-level labels (class indices). The
layouts are a :class:`~dense_readout.registry.Registry` (:data:`SOURCES`), chosen by
name or detected (:func:`detect_source`).

Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> root = tempfile.mkdtemp()
    >>> for name in ("b.png", "a.jpg"):
    ...     Image.new("RGB", (8, 8)).save(f"{root}/{name}")
    >>> source = open_source(root)
    >>> source.layout, [p.rsplit("/", 1)[-1] for p in source.paths], source.labels
    ('folder', ['a.jpg', 'b.png'], None)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError, ImageLoadError, InputError
from ..registry import Registry

__all__ = [
    "SOURCES",
    "ExportSource",
    "SourceReader",
    "detect_source",
    "open_source",
    "register_source",
]


@dataclass
class ExportSource:
    """What an export streams: image paths, their labels (or None), the class names.

    Example:
        >>> from dense_readout.export import ExportSource
        >>> source = ExportSource("folder", "/data", ["/data/a.png", "/data/b.png"])
        >>> len(source.paths), source.labels is None  # a plain folder: no labels
        (2, True)
    """

    layout: str
    root: str
    paths: list[str]
    labels: list[tuple[int, ...]] | None = None
    class_names: tuple[str, ...] | None = None


SourceReader = Callable[[Path], ExportSource]
SOURCES: Registry[SourceReader] = Registry(
    "export source",
    hint="Register a function root -> ExportSource with "
    "@dense_readout.export.sources.register_source(name).",
)


def register_source(name: str) -> Callable[[SourceReader], SourceReader]:
    """Decorator: make ``reader(root) -> ExportSource`` the dataset layout ``name``.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> @register_source("one-image")
        ... def one_image(root):
        ...     return ExportSource("one-image", str(root), [str(Path(root) / "x.png")])
        >>> open_source(tempfile.mkdtemp(), "one-image").paths[0].endswith("x.png")
        True
        >>> SOURCES.unregister("one-image") is one_image, "one-image" in SOURCES
        (True, False)
    """
    return SOURCES.register(name)


@register_source("folder")
def folder_source(root: Path) -> ExportSource:
    """Every image file under ``root`` (recursively, sorted), no labels."""
    from .._inputs import expand_inputs

    found = [path for path, error in expand_inputs([str(root)]) if error is None]
    if not found:
        raise InputError(f"{root}: no image files found; give a folder of images.")
    return ExportSource("folder", str(root), found)


@register_source("ilsvrc")
def ilsvrc_source(root: Path) -> ExportSource:
    """ILSVRC2012 val with box annotations: labels from the annotations (1 per image)."""
    from ..evaluation.datasets import ILSVRCBoxes

    dataset = ILSVRCBoxes(root)
    labels: list[tuple[int, ...]] = []
    for index in range(len(dataset)):
        try:
            labels.append((int(dataset[index].label),))
        except (DatasetError, ImageLoadError):  # exported anyway, without a label
            labels.append(())
    return ExportSource("ilsvrc", str(root), [str(p) for p in dataset.files], labels)


@register_source("coco")
def coco_source(root: Path) -> ExportSource:
    """COCO ``annotations/instances_val2017.json``: the kept classes of each image (A.1 filter)."""
    from ..experiments.coco_annotations import CocoInstances

    dataset = CocoInstances(root)
    return ExportSource(
        "coco",
        str(root),
        [str(image.path) for image in dataset.images],
        [tuple(image.labels) for image in dataset.images],
        tuple(dataset.class_names),
    )


def detect_source(root: str | Path) -> str:
    """The layout of ``root``: ``coco``, ``ilsvrc`` or ``folder``.

    ``coco`` with ``annotations/instances_*.json``, ``ilsvrc`` with ``bbox_val/`` or
    ``LOC_val_solution.csv``, else ``folder``.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from dense_readout.export import detect_source
        >>> tmp = tempfile.TemporaryDirectory(); root = Path(tmp.name)
        >>> detect_source(root)
        'folder'
        >>> (root / "LOC_val_solution.csv").touch(); detect_source(root)
        'ilsvrc'
        >>> (root / "annotations").mkdir(); (root / "annotations/instances_val2017.json").touch()
        >>> detect_source(root)  # COCO annotations win
        'coco'
        >>> tmp.cleanup()
    """
    root = Path(root)
    if any((root / "annotations").glob("instances_*.json")):
        return "coco"
    if (root / "bbox_val").is_dir() or (root / "LOC_val_solution.csv").is_file():
        return "ilsvrc"
    return "folder"


def open_source(root: str | Path, layout: str | None = None) -> ExportSource:
    """The :class:`ExportSource` of ``root`` in ``layout`` (default: detected).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> from dense_readout.export import open_source
        >>> tmp = tempfile.TemporaryDirectory(); root = Path(tmp.name)
        >>> (root / "sub").mkdir()
        >>> Image.new("RGB", (8, 8)).save(root / "sub/b.png"); Image.new("RGB", (8, 8)).save(root / "a.jpg")
        >>> _ = (root / "notes.txt").write_text("not an image")  # skipped: not an image
        >>> source = open_source(root)
        >>> source.layout, [Path(p).relative_to(root).as_posix() for p in source.paths]
        ('folder', ['a.jpg', 'sub/b.png'])
        >>> tmp.cleanup()
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; give the dataset root.")
    return SOURCES.get(layout or detect_source(root))(root)
