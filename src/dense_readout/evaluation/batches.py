"""From dataset items to metric updates: decoding in DataLoader workers, one batch's forward.

:class:`BenchmarkItems` turns a dataset's samples into tensors inside the
DataLoader workers (decode, resize, crop, draw the box mask); a per-item error
becomes a ``status`` (a reason of :data:`~.state.SKIP_REASONS`), never an exception
in the worker. :func:`process_batch` forwards one batch (``[original; w/o BG;
w/o FG]`` for ILSVRC) through the dense readout and updates the state.

Images are decoded in their **stored** frame (``load_image(path,
exif_transpose=False)``): the boxes and the image size of a
:class:`~.datasets.Sample` refer to it, so an EXIF orientation tag must not turn
the pixels away from the boxes.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from PIL import Image
    >>> from dense_readout.preprocessing import Preprocess
    >>> from dense_readout.evaluation.batches import BenchmarkItems
    >>> from dense_readout.evaluation.datasets import Sample
    >>> from dense_readout.evaluation.protocol import Protocol
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "one.png"
    >>> Image.new("RGB", (256, 256)).save(path)
    >>> sample = Sample(0, path, 3, np.array([[16, 16, 47, 47]]), image_size=(256, 256))
    >>> items = BenchmarkItems([sample], Protocol(Preprocess()), [0], num_classes=10, boxes=True)
    >>> item = items[0]
    >>> item["status"], item["label"], tuple(item["x"].shape), int(item["mask"].sum())
    ('', 3, (3, 224, 224), 1024)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import DatasetError, ImageLoadError
from ..images import load_image
from ..readout import DenseReadout
from .metrics import GridBatch, restrict_classes
from .protocol import Protocol, grid_occupancy
from .state import SKIP_REASONS, BenchmarkState

__all__ = ["BenchmarkItems", "check_errors", "make_loader", "process_batch"]


class BenchmarkItems(Dataset):
    """Turns dataset samples into tensors in the workers; per-item errors become a status.

    Example:
        >>> import pathlib, tempfile, numpy as np
        >>> from PIL import Image
        >>> from dense_readout.preprocessing import Preprocess
        >>> from dense_readout.evaluation.batches import BenchmarkItems
        >>> from dense_readout.evaluation.datasets import Sample
        >>> from dense_readout.evaluation.protocol import Protocol
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = pathlib.Path(folder) / "one.png"
        ...     Image.new("RGB", (64, 64)).save(path)
        ...     samples = [Sample(0, path, 3, np.array([[0, 0, 31, 31]]), image_size=(64, 64)),
        ...                Sample(1, path.with_name("missing.png"), 5, np.zeros((0, 4)))]
        ...     items = BenchmarkItems(samples, Protocol(Preprocess(resize=64, crop=64)), [0, 1], 10, boxes=True)
        ...     good, bad = items[0], items[1]
        >>> good["status"], good["label"], int(good["mask"].sum()), bad["status"] != ""  # a bad item: a status
        ('', 3, 1024, True)
    """

    def __init__(
        self,
        dataset: Any,
        protocol: Protocol,
        indices: Sequence[int],
        num_classes: int,
        boxes: bool,
    ) -> None:
        self.dataset, self.protocol, self.indices = dataset, protocol, list(indices)
        self.num_classes, self.boxes = num_classes, boxes
        self.crop = protocol.preprocess.crop

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict:
        index = self.indices[position]
        real = torch.zeros(self.num_classes, dtype=torch.bool)
        item = {
            "index": index,
            "status": "",
            "message": "",
            "label": -1,
            "real": real,
            "real_known": False,
            "clipped": 0,
        }
        try:
            sample = self.dataset[index]
            image = load_image(sample.path, exif_transpose=False)  # the boxes' frame
            if self.boxes:
                x, mask = self.protocol.transform(image, sample.boxes)
            else:
                x, mask = (
                    self.protocol.preprocess(image),
                    torch.zeros(self.crop, self.crop, dtype=torch.bool),
                )
            item.update(x=x, mask=mask, label=int(sample.label), clipped=int(sample.boxes_clipped))
            if sample.real is not None:
                item["real_known"] = True
                labels = [v for v in sample.real if 0 <= v < self.num_classes]
                real[labels] = True
        except (DatasetError, ImageLoadError) as error:
            reason = getattr(error, "reason", None)
            if reason is None:
                reason = "corrupt_image" if isinstance(error, ImageLoadError) else "other_error"
            item.update(
                status=reason if reason in SKIP_REASONS else "other_error", message=str(error)
            )
        if "x" not in item:
            item["x"] = torch.zeros(3, self.crop, self.crop)
            item["mask"] = torch.zeros(self.crop, self.crop, dtype=torch.bool)
        return item


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def make_loader(
    items: BenchmarkItems, batch_size: int, workers: int, device: torch.device
) -> DataLoader:
    """An in-order DataLoader over ``items`` (one thread per worker, pinned memory on CUDA).

    Example:
        >>> import pathlib, tempfile, numpy as np, torch
        >>> from PIL import Image
        >>> from dense_readout.preprocessing import Preprocess
        >>> from dense_readout.evaluation.batches import BenchmarkItems, make_loader
        >>> from dense_readout.evaluation.datasets import Sample
        >>> from dense_readout.evaluation.protocol import Protocol
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = pathlib.Path(folder) / "one.png"
        ...     Image.new("RGB", (64, 64)).save(path)
        ...     samples = [Sample(k, path, k, np.array([[0, 0, 31, 31]]), image_size=(64, 64)) for k in range(3)]
        ...     items = BenchmarkItems(samples, Protocol(Preprocess(resize=64, crop=64)), [0, 1, 2], 10, boxes=True)
        ...     batches = list(make_loader(items, batch_size=2, workers=0, device=torch.device("cpu")))
        >>> [b["label"].tolist() for b in batches], tuple(batches[0]["x"].shape)  # in order
        ([[0, 1], [2]], (2, 3, 64, 64))
    """
    return DataLoader(
        items,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        worker_init_fn=_worker_init if workers else None,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )


def check_errors(batch: dict, on_error: str) -> None:
    """Under ``on_error='stop'``, raise the first failed item's error.

    Example:
        >>> from dense_readout.errors import DatasetError
        >>> from dense_readout.evaluation.batches import check_errors
        >>> batch = {"status": ["", "unreadable"], "message": ["", "b.JPEG: truncated file"]}
        >>> check_errors(batch, "skip")  # counted later, not raised
        >>> try:
        ...     check_errors(batch, "stop")
        ... except DatasetError as error:
        ...     print(error)
        b.JPEG: truncated file (reason: unreadable; pass --on-error skip to skip and count such items)
    """
    if on_error == "stop":
        for status, message in zip(batch["status"], batch["message"], strict=False):
            if status:
                raise DatasetError(
                    f"{message} (reason: {status}; pass --on-error skip to skip and count such items)"
                )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def process_batch(
    phase: str,
    state: BenchmarkState,
    batch: dict,
    ok: Tensor,
    protocol: Protocol,
    readout: DenseReadout,
    boxes: bool,
    subset: list[int] | None,
    device: torch.device,
) -> float:
    """Forward the ``ok`` items of ``batch`` and update ``state``; returns the forward seconds.

    ``phase='prototypes'`` feeds the prototype sums (original input only);
    ``'main'`` the metrics, edge cases and threshold sweep.

    Example:
        >>> import pathlib, tempfile, numpy as np, timm, torch
        >>> from PIL import Image
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.preprocessing import Preprocess
        >>> from dense_readout.evaluation.batches import BenchmarkItems, make_loader, process_batch
        >>> from dense_readout.evaluation.datasets import Sample
        >>> from dense_readout.evaluation.metrics import MetricSuite
        >>> from dense_readout.evaluation.protocol import Protocol
        >>> from dense_readout.evaluation.state import BenchmarkState
        >>> from dense_readout.evaluation.thresholds import PrototypeAccumulator
        >>> protocol, cpu = Protocol(Preprocess(resize=64, crop=64)), torch.device("cpu")
        >>> readout = DenseReadout(timm.create_model("resnet18", num_classes=10).eval())
        >>> state = BenchmarkState(MetricSuite(["top1", "loc"], 10), None, PrototypeAccumulator())
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = pathlib.Path(folder) / "one.png"
        ...     Image.new("RGB", (64, 64)).save(path)
        ...     sample = Sample(0, path, 3, np.array([[0, 0, 31, 31]]), image_size=(64, 64))
        ...     batch = next(iter(make_loader(BenchmarkItems([sample], protocol, [0], 10, True), 1, 0, cpu)))
        >>> ok = torch.tensor([not status for status in batch["status"]])  # the items that loaded
        >>> seconds = process_batch("main", state, batch, ok, protocol, readout, boxes=True,
        ...                         subset=None, device=cpu)
        >>> seconds > 0, state.suite.counts()["top1"]
        (True, {'used': 1, 'skipped': 0})
    """
    x = batch["x"][ok].to(device, non_blocking=True)
    mask = batch["mask"][ok].to(device, non_blocking=True)
    target = batch["label"][ok].to(device)
    inputs = protocol.three_inputs(x, mask) if (boxes and phase == "main") else x
    _synchronize(device)
    tic = time.perf_counter()
    result = readout(inputs)
    _synchronize(device)
    elapsed = time.perf_counter() - tic
    scores, logits = result.scores, result.logits
    if subset is not None:
        scores, logits = restrict_classes(scores, subset), restrict_classes(logits, subset)
    if not boxes:
        state.suite.update(GridBatch(target=target, logits=logits, scores=scores))
        return elapsed
    fg = grid_occupancy(mask, result.grid_size)
    if phase == "prototypes":
        state.prototypes.update(scores, result.features, fg, target)
        return elapsed
    size = x.shape[0]
    real = batch["real"][ok].to(device)
    real_known = batch["real_known"][ok].to(device)
    _count_edge_cases(state, fg, real, real_known, batch["clipped"][ok])
    grid = GridBatch(
        target=target,
        logits=logits[:size],
        scores=scores[:size],
        fg=fg,
        scores_wo_bg=scores[size : 2 * size],
        scores_wo_fg=scores[2 * size :],
        real=real if bool(real_known.any()) else None,
        real_known=real_known,
    )
    if state.sweep is not None:
        state.sweep.update(scores[:size], result.features[:size], fg, target)
    state.suite.update(grid)
    return elapsed


def _count_edge_cases(
    state: BenchmarkState, fg: Tensor, real: Tensor, real_known: Tensor, clipped: Tensor
) -> None:
    """Add the batch's images without FG cell, without BG cell, with an empty ReaL set, clipped."""
    n_fg = fg.flatten(1).sum(1)
    cells = fg[0].numel()
    state.edges += torch.tensor(
        [
            int((n_fg == 0).sum()),
            int((n_fg == cells).sum()),
            int((real_known & (real.sum(1) == 0)).sum()),
            int((clipped > 0).sum()),
        ]
    )
