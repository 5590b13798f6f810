"""Reading an export store: :func:`open_store` → :class:`ExportStore`.

Example:
    >>> import tempfile, timm, torch
    >>> from PIL import Image
    >>> from dense_readout import DenseReadout
    >>> from dense_readout.preprocessing import Preprocess
    >>> from dense_readout.export import ExportConfig, export_dataset, open_source, open_store
    >>> root = tempfile.mkdtemp()
    >>> Image.new("RGB", (96, 64), (200, 90, 30)).save(f"{root}/a.png")
    >>> _ = torch.manual_seed(0)
    >>> readout = DenseReadout(timm.create_model("test_resnet", num_classes=4).eval())
    >>> _ = export_dataset(open_source(root), f"{root}/store", readout,
    ...     Preprocess(resize=64, crop=64), ExportConfig(progress=False))
    >>> store = open_store(f"{root}/store")
    >>> len(store), store.scores(0).shape, store.logits(0).shape
    (1, (4, 2, 2), (4,))
    >>> store.upsample(0).shape  # on the original 96×64 image (NaN outside the crop)
    (4, 64, 96)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from . import zarr_v2
from .geometry import cell_box, to_original
from .store_layout import FORMAT, STATUS, StoreLayout

__all__ = ["ExportStore", "open_store"]


def open_store(path: str | Path) -> ExportStore:
    """Open the export store at ``path`` (read-only).

    Example:
        >>> import tempfile, timm, torch
        >>> from PIL import Image
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.preprocessing import Preprocess
        >>> from dense_readout.export import ExportConfig, export_dataset, open_source, open_store
        >>> tmp = tempfile.TemporaryDirectory()
        >>> for k, colour in enumerate(["red", "blue"]):
        ...     Image.new("RGB", (64, 48), colour).save(f"{tmp.name}/img{k}.png")
        >>> _ = torch.manual_seed(0)
        >>> readout = DenseReadout(timm.create_model("test_resnet", num_classes=3).eval())
        >>> _ = export_dataset(open_source(tmp.name), f"{tmp.name}/store", readout,
        ...     Preprocess(resize=64, crop=64), ExportConfig(progress=False))
        >>> store = open_store(f"{tmp.name}/store")
        >>> len(store), store.grid, store.complete, store.status(1)
        (2, (2, 2), True, 'ok')
        >>> with torch.no_grad():  # the stored maps are the readout's (float16)
        ...     direct = readout(Preprocess(resize=64, crop=64)(Image.open(store.paths[0]))[None])
        >>> bool(abs(store.scores(0) - direct.scores[0].numpy()).max() < 1e-2)
        True
        >>> tmp.cleanup()
    """
    return ExportStore(path)


class ExportStore:
    """An export store, read with NumPy alone (no zarr needed).

    ``len``, ``paths``, ``scores(i)``, ``logits(i)``, ``classes(i)``, ``labels(i)``,
    ``geometry(i)``, ``cell_box(i, row, col)``, ``upsample(i)``, ``status(i)``.

    Example:
        >>> import tempfile, timm, torch
        >>> from PIL import Image
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.preprocessing import Preprocess
        >>> from dense_readout.export import ExportConfig, export_dataset, open_source, open_store
        >>> tmp = tempfile.TemporaryDirectory()
        >>> for k, colour in enumerate(["red", "blue"]):
        ...     Image.new("RGB", (64, 48), colour).save(f"{tmp.name}/img{k}.png")
        >>> _ = torch.manual_seed(0)
        >>> readout = DenseReadout(timm.create_model("test_resnet", num_classes=3).eval())
        >>> _ = export_dataset(open_source(tmp.name), f"{tmp.name}/store", readout,
        ...     Preprocess(resize=64, crop=64), ExportConfig(classes="topk:2", progress=False))
        >>> store = ExportStore(f"{tmp.name}/store")
        >>> store.scores(0).shape, store.logits(0).shape  # 2 maps kept of 3 classes
        ((2, 2, 2), (3,))
        >>> store.classes(0).tolist() == sorted(store.logits(0).argsort()[-2:].tolist(),
        ...     key=lambda c: -store.logits(0)[c])  # the two highest logits, best first
        True
        >>> # the 64×48 original is resized to 85×64 and cropped from x = 10: a 32-px cell
        >>> # is 32 · 64/85 original pixels wide, its left edge at 10 · 64/85
        >>> [round(v, 2) for v in store.cell_box(0, 0, 0)], round(10 * 64 / 85, 2)
        ([7.53, 0.0, 31.62, 24.0], 7.53)
        >>> store.upsample(0).shape, store.labels(0)  # a plain folder has no labels
        ((2, 48, 64), ())
        >>> tmp.cleanup()
    """

    def __init__(self, path: str | Path) -> None:
        self.root = Path(path)
        attrs = zarr_v2.read_attrs(self.root)
        if attrs.get("format") != FORMAT:
            raise InputError(
                f"{self.root}: not a dense-readout export store (no {FORMAT!r} in .zattrs); "
                "give the --out folder of `dense-readout export`."
            )
        self.attrs = attrs
        self.settings: dict[str, Any] = attrs["settings"]
        self.paths: list[str] = StoreLayout(self.root, 1).paths()
        self._meta = {
            name: zarr_v2.array_meta(self.root, name)
            for name in ("scores", "logits", "geometry", "status", "classes", "labels", "features")
            if (self.root / name / ".zarray").is_file()
        }
        self._rows: dict[str, tuple[int, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"ExportStore({str(self.root)!r}, images={len(self)}, grid={self.grid})"

    @property
    def grid(self) -> tuple[int, int]:
        """``(h, w)`` of the stored maps."""
        rows, cols = self.settings["grid"]
        return int(rows), int(cols)

    @property
    def complete(self) -> bool:
        """Whether every image was processed (exported or skipped)."""
        return bool(self.attrs.get("complete"))

    def _row(self, name: str, index: int) -> np.ndarray:
        """Row ``index`` of a per-batch array (one chunk read, cached)."""
        if name not in self._meta:
            raise InputError(f"{self.root} has no {name!r} array (not asked for at export).")
        self._check(index)
        meta = self._meta[name]
        size = meta["chunks"][0]
        key = index // size
        cached = self._rows.get(name)
        if cached is None or cached[0] != key:
            chunk = zarr_v2.read_chunk(
                self.root, name, meta, (key, *([0] * (len(meta["shape"]) - 1)))
            )
            self._rows[name] = cached = (key, chunk)
        return cached[1][index - key * size]

    def _check(self, index: int) -> None:
        if not 0 <= index < len(self):
            raise IndexError(f"image {index} out of range: the store holds {len(self)}.")

    def status(self, index: int) -> str:
        """``'ok'``, ``'unreadable'``, ``'error'`` or ``'pending'`` (not exported yet)."""
        code = int(self._row("status", index))
        return {v: k for k, v in STATUS.items()}[code]

    def scores(self, index: int) -> np.ndarray:
        """The maps of image ``index``: ``M×h×w`` (all ``K`` classes unless ``--classes``)."""
        self._check(index)
        meta = self._meta["scores"]
        return zarr_v2.read_chunk(self.root, "scores", meta, (index, 0, 0, 0))[0]

    def features(self, index: int) -> np.ndarray:
        """The grid features ``C×h×w`` (stores made with ``--features``)."""
        if "features" not in self._meta:
            raise InputError(f"{self.root} holds no features; export with --features.")
        self._check(index)
        return zarr_v2.read_chunk(self.root, "features", self._meta["features"], (index, 0, 0, 0))[
            0
        ]

    def logits(self, index: int) -> np.ndarray:
        """The image logits ``K`` (NaN for a skipped image)."""
        return self._row("logits", index)

    def classes(self, index: int) -> np.ndarray:
        """The class of each stored map (``-1``: none); ``arange(K)`` when all are kept."""
        if "classes" not in self._meta:
            return np.arange(self.settings["num_classes"])
        return self._row("classes", index)

    def labels(self, index: int) -> tuple[int, ...]:
        """The image-level labels of a labelled layout (ILSVRC, COCO); ``()`` otherwise."""
        if "labels" not in self._meta:
            return ()
        return tuple(int(v) for v in self._row("labels", index) if v >= 0)

    def geometry(self, index: int) -> np.ndarray:
        """The 7 :data:`~.geometry.GEOMETRY_FIELDS` of image ``index``."""
        return self._row("geometry", index)

    def cell_box(self, index: int, row: int, col: int) -> tuple[float, float, float, float]:
        """Cell ``(row, col)`` as a box ``(x0, y0, x1, y1)`` in the original image's pixels."""
        return cell_box(self.geometry(index), self.grid, row, col)

    def upsample(
        self, index: int, maps: np.ndarray | None = None, mode: str = "bilinear"
    ) -> np.ndarray:
        """``maps`` (default: the stored ones) on the original image, ``M×height×width``.

        NaN outside the crop the model saw.
        """
        maps = self.scores(index) if maps is None else maps
        return to_original(maps, self.geometry(index), mode)
