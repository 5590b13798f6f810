"""Decoding for the export: one image → preprocessed tensor, geometry and a status, in workers.

A file that cannot be read becomes ``status`` :data:`~.store_layout.STATUS` ``"unreadable"``
(with the message), never an exception in a DataLoader worker; the export counts it
and goes on.

Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> from dense_readout.preprocessing import Preprocess
    >>> root = tempfile.mkdtemp()
    >>> Image.new("RGB", (40, 30)).save(f"{root}/ok.png")
    >>> _ = open(f"{root}/bad.jpg", "wb").write(b"not a jpeg")
    >>> items = ExportItems([f"{root}/ok.png", f"{root}/bad.jpg"], Preprocess(resize=32, crop=32))
    >>> [(item["status"], tuple(item["x"].shape)) for item in (items[0], items[1])]
    [(1, (3, 32, 32)), (2, (3, 32, 32))]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DenseReadoutError, ImageLoadError
from ..images import load_image
from .geometry import GEOMETRY_FIELDS, geometry_record
from .store_layout import STATUS

__all__ = ["ExportItems", "make_loader"]


class ExportItems(Dataset):
    """Image ``i`` of ``paths`` → ``{index, x, geometry, status, message}``."""

    def __init__(self, paths: Sequence[str], preprocess, exif_transpose: bool = True) -> None:
        self.paths, self.preprocess, self.exif_transpose = list(paths), preprocess, exif_transpose

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        crop = int(self.preprocess.crop)
        item = {
            "index": index,
            "x": torch.zeros(3, crop, crop),
            "geometry": torch.zeros(len(GEOMETRY_FIELDS), dtype=torch.int32),
            "status": STATUS["ok"],
            "message": "",
        }
        try:
            image = load_image(self.paths[index], exif_transpose=self.exif_transpose)
            item["x"] = self.preprocess(image)
            item["geometry"] = torch.from_numpy(geometry_record(self.preprocess, image.size))
        except ImageLoadError as error:
            item.update(status=STATUS["unreadable"], message=str(error))
        except (DenseReadoutError, OSError, ValueError) as error:
            item.update(status=STATUS["error"], message=f"{self.paths[index]}: {error}")
        return item


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def make_loader(items: ExportItems, batches: list[list[int]], workers: int) -> DataLoader:
    """An in-order loader yielding exactly ``batches`` (lists of image indices)."""
    return DataLoader(
        items,
        batch_sampler=batches,
        num_workers=workers,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None,
    )
