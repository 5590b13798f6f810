"""Images, masks and crop-frame boxes for the benchmark, decoded in DataLoader workers.

Wraps :class:`~dense_readout.evaluation.batches.BenchmarkItems` (the paper's
resize + crop, the union-of-boxes mask, per-item errors as a ``status``) and adds
each box mapped through the same resize and crop as an inclusive pixel box (for
MaxBoxAccV2), the item's position in the run's image list, and its dataset index.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from PIL import Image
    >>> from dense_readout.preprocessing import Preprocess
    >>> from dense_readout.evaluation.datasets import Sample
    >>> from dense_readout.evaluation.protocol import Protocol
    >>> from dense_readout.compare.bench.items import BoxItems
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "one.png"
    >>> Image.new("RGB", (256, 256)).save(path)
    >>> sample = Sample(0, path, 3, np.array([[16, 16, 47, 47]]), image_size=(256, 256))
    >>> item = BoxItems([sample], Protocol(Preprocess()), [0], num_classes=10)[0]
    >>> item["status"], item["boxes"].tolist()
    ('', [[0.0, 0.0, 31.0, 31.0]])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ...errors import DatasetError
from ...evaluation.batches import BenchmarkItems
from ...evaluation.protocol import Protocol

__all__ = ["BoxItems", "collate", "crop_boxes", "make_loader"]


def crop_boxes(protocol: Protocol, size: tuple[int, int], boxes: np.ndarray) -> np.ndarray:
    """Each box through the protocol's resize + crop (drawn as a mask), as an inclusive box."""
    out = []
    for box in np.asarray(boxes).reshape(-1, 4):
        mask = protocol.mask(size, box[None]).numpy()
        if mask.any():
            rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
            out.append([cols[0], rows[0], cols[-1], rows[-1]])
    return np.asarray(out, dtype=np.float64).reshape(-1, 4)


class BoxItems(Dataset):
    """``items[position]``: the benchmark item of ``indices[position]`` plus its crop boxes."""

    def __init__(
        self, dataset: Any, protocol: Protocol, indices: Sequence[int], num_classes: int
    ) -> None:
        self.dataset, self.protocol, self.indices = dataset, protocol, list(indices)
        self.items = BenchmarkItems(dataset, protocol, self.indices, num_classes, boxes=True)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict:
        item = self.items[position]
        item.update(position=position, boxes=np.zeros((0, 4)))
        if item["status"]:
            return item
        try:
            sample = self.dataset[self.indices[position]]
            item["boxes"] = crop_boxes(self.protocol, sample.image_size, sample.boxes)
        except DatasetError as error:  # pragma: no cover - the item above failed first
            item.update(status="other_error", message=str(error))
        if len(item["boxes"]) == 0 or not bool(item["mask"].any()):
            item.update(status="no_box_in_crop", message="every box falls outside the crop")
        return item


def collate(items: list[dict]) -> dict:
    """Stack tensors, keep boxes, statuses and messages as lists."""
    return {
        "x": torch.stack([item["x"] for item in items]),
        "mask": torch.stack([item["mask"] for item in items]),
        "label": torch.tensor([item["label"] for item in items], dtype=torch.long),
        "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
        "position": [int(item["position"]) for item in items],
        "boxes": [item["boxes"] for item in items],
        "status": [item["status"] for item in items],
        "message": [item["message"] for item in items],
    }


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def make_loader(items: BoxItems, batches: list[list[int]], workers: int) -> DataLoader:
    """An in-order loader yielding exactly the given batches of positions."""
    return DataLoader(
        items,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=2 if workers else None,
    )
