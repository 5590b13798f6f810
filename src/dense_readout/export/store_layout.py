"""The export store on disk: a Zarr v2 group of per-image and per-batch chunks.

::

    STORE/.zgroup, .zattrs     settings (model, preprocessing, grid, classes, dtype…);
                               after the run also "complete" and the counts
    STORE/paths/               N image paths (UTF-8 bytes, fixed width), in store order
    STORE/scores/              N×M×h×w maps (float16/32); one chunk = one image
    STORE/logits/              N×K image logits (float32); one chunk = one batch of B images
    STORE/classes/             N×M class index of each kept map (int32, -1 = none);
                               absent when every class is kept (M = K)
    STORE/geometry/            N×7 int32: width, height, resized w/h, left, top, crop
    STORE/labels/              N×L image-level labels (int32, -1 pads); labelled layouts only
    STORE/features/            N×C×h×w grid features (with --features); one chunk = one image
    STORE/status/              N int8: 0 not yet done, 1 exported, 2 unreadable image, 3 other error
    STORE/skipped/b<b>/        a group per batch with skipped images: their messages in .zattrs

Batch ``b`` is images ``[b·B, (b+1)·B)``; under ``torch.distributed.run`` rank ``r``
of ``w`` exports the batches ``b ≡ r (mod w)``, so ranks write disjoint files of the
same arrays. Every chunk is written atomically and a batch's ``status`` chunk last:
it marks the batch done, so a rerun after a kill redoes exactly the unmarked batches
(with any number of processes). Unwritten maps read as NaN.

Example:
    >>> import tempfile
    >>> layout = StoreLayout(tempfile.mkdtemp(), batch_size=4)
    >>> layout.batches(10), layout.batches(10, rank=1, world=2)
    ([0, 1, 2], [1])
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from . import zarr_v2
from .geometry import GEOMETRY_FIELDS

__all__ = ["FORMAT", "STATUS", "StoreLayout"]

FORMAT = "dense-readout-export/1"
STATUS = {"pending": 0, "ok": 1, "unreadable": 2, "error": 3}
ARRAYS = {"scores", "logits", "classes", "geometry", "labels", "features", "status", "paths"}


class StoreLayout:
    """Paths and array creation of one export store.

    Example:
        >>> import tempfile
        >>> from dense_readout.export import StoreLayout, open_store
        >>> tmp = tempfile.TemporaryDirectory()
        >>> layout = StoreLayout(f"{tmp.name}/store", batch_size=2)
        >>> settings = {"maps_per_image": 3, "num_classes": 3, "grid": [2, 2], "dtype": "<f2",
        ...     "classes": "all", "features_dim": 0}
        >>> layout.create(settings, ["a.png", "b.png", "c.png"], labels=[(1,), (), (0, 2)])
        >>> layout.paths(), layout.settings() == settings, layout.meta("logits")["chunks"]
        (['a.png', 'b.png', 'c.png'], True, [2, 3])
        >>> layout.batches(3), layout.batches(3, rank=1, world=2), layout.done(0)
        ([0, 1], [1], False)
        >>> store = open_store(layout.root)  # readable before any batch is written
        >>> store.status(2), store.labels(2), layout.has("features")
        ('pending', (0, 2), False)
        >>> tmp.cleanup()
    """

    def __init__(self, root: str | Path, batch_size: int) -> None:
        self.root = Path(root)
        self.batch_size = int(batch_size)

    def batches(self, count: int, rank: int = 0, world: int = 1) -> list[int]:
        """The batch numbers process ``rank`` of ``world`` exports."""
        return list(range(rank, math.ceil(count / self.batch_size), world))

    def done(self, batch: int) -> bool:
        """Whether batch ``batch`` was completed (its status chunk exists)."""
        return zarr_v2.chunk_path(self.root, "status", (batch,)).is_file()

    def settings(self) -> dict[str, Any] | None:
        """The settings of an existing store (None for a new folder or an unfinished creation)."""
        return zarr_v2.read_attrs(self.root).get("settings")

    def create(self, settings: dict[str, Any], paths: list[str], labels: Any) -> None:
        """Write the arrays' metadata, the paths and the labels, then the settings.

        The settings go last: a store whose creation was killed is created again.
        """
        foreign = sorted(
            p.name for p in self.root.glob("*") if p.name not in ARRAYS | {".zgroup", "skipped"}
        )
        if foreign:
            raise InputError(
                f"{self.root} holds other files ({', '.join(foreign[:3])}); "
                "choose an empty or new --out."
            )
        n, size = len(paths), self.batch_size
        maps, classes, grid = settings["maps_per_image"], settings["num_classes"], settings["grid"]
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_rows("paths", np.asarray([p.encode("utf-8") for p in paths]), "")
        create = zarr_v2.create_array
        create(self.root, "scores", (n, maps, *grid), (1, maps, *grid), settings["dtype"], "NaN")
        create(self.root, "logits", (n, classes), (size, classes), "<f4", "NaN")
        fields = len(GEOMETRY_FIELDS)
        create(self.root, "geometry", (n, fields), (size, fields), "<i4", 0)
        create(self.root, "status", (n,), (size,), "|i1", 0)
        zarr_v2.write_attrs(self.root / "geometry", {"fields": list(GEOMETRY_FIELDS)})
        zarr_v2.write_attrs(self.root / "status", {"codes": STATUS})
        if settings["classes"] != "all":
            create(self.root, "classes", (n, maps), (size, maps), "<i4", -1)
        if settings["features_dim"]:
            dim = settings["features_dim"]
            create(
                self.root, "features", (n, dim, *grid), (1, dim, *grid), settings["dtype"], "NaN"
            )
        if labels is not None:
            width = max(1, max((len(row) for row in labels), default=1))
            padded = [list(row) + [-1] * (width - len(row)) for row in labels]
            self._write_rows("labels", np.asarray(padded, dtype=np.int32), -1)
        zarr_v2.write_group(self.root, {"format": FORMAT, "settings": settings, "complete": False})

    def _write_rows(self, name: str, values: np.ndarray, fill: Any) -> None:
        """A small array written whole at creation (paths, labels), one chunk per batch."""
        size = self.batch_size
        chunks = (size, *values.shape[1:])
        meta = zarr_v2.create_array(self.root, name, values.shape, chunks, values.dtype.str, fill)
        for batch in range(math.ceil(len(values) / size)):
            key = (batch, *([0] * (values.ndim - 1)))
            zarr_v2.write_chunk(
                self.root, name, meta, key, values[batch * size : (batch + 1) * size]
            )

    def paths(self) -> list[str]:
        """The image paths of the store, in order."""
        return [p.decode("utf-8") for p in zarr_v2.read_array(self.root, "paths")]

    def meta(self, name: str) -> dict[str, Any]:
        """The ``.zarray`` metadata of array ``name``."""
        return zarr_v2.array_meta(self.root, name)

    def has(self, name: str) -> bool:
        """Whether the store has array ``name``."""
        return (self.root / name / ".zarray").is_file()
