"""Synthetic scenes as training and validation data: tensors, grid labels, batches.

* :func:`cell_presence` projects a 224-px semantic mask onto the readout grid
  (any-pixel occupancy, per class): the per-cell labels of the Loc. metrics.
* :class:`SyntheticDataset` streams scenes as ``(image, target, presence,
  visible)`` tensors, box-downsampled to the model input.
* :class:`SceneTensors` (a split rendered once, :func:`materialize`) and
  :class:`StreamingScenes` (rendered on the fly by DataLoader workers) give the
  same train batches for a given ``(seed, epoch)`` and the same eval batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..errors import InputError
from .synthetic import NUM_CLASSES, SceneGenerator

__all__ = [
    "SceneSource",
    "SceneTensors",
    "StreamingScenes",
    "SyntheticDataset",
    "cell_presence",
    "materialize",
    "normalize_images",
]


def _cell_bounds(size: int, cells: int) -> list[tuple[int, int]]:
    # the windows of adaptive pooling, as in evaluation.protocol.grid_occupancy
    return [((i * size) // cells, -((-(i + 1) * size) // cells)) for i in range(cells)]


def cell_presence(
    semantic: np.ndarray, grid: tuple[int, int], num_classes: int = NUM_CLASSES
) -> np.ndarray:
    """Classes present in each grid cell by any-pixel occupancy: ``K×h×w`` bool.

    ``semantic`` holds 0 for background and ``k + 1`` for class ``k``. Cell ``i``
    covers rows ``floor(i·H/h) .. ceil((i+1)·H/h)-1`` (and likewise columns): the
    windows of :func:`~dense_readout.evaluation.protocol.grid_occupancy`, applied to
    every class at once. (Computed per cell on the label map rather than by pooling
    K one-hot float masks: that allocates 4 MB per scene and fragmented the heap
    to 19 GB over 5,000 scenes.)

    Example:
        >>> import numpy as np
        >>> from dense_readout.experiments.synthetic_data import cell_presence
        >>> mask = np.zeros((4, 4), np.uint8); mask[0, 3] = 2   # class 1, top-right pixel
        >>> cell_presence(mask, (2, 2), num_classes=3)[1].tolist()
        [[False, True], [False, False]]
    """
    if semantic.ndim != 2:
        raise InputError(f"semantic mask must be H×W, got shape {semantic.shape}.")
    if int(semantic.max(initial=0)) > num_classes:
        raise InputError(
            f"semantic mask holds label {int(semantic.max())} > num_classes={num_classes}."
        )
    height, width = semantic.shape
    out = np.zeros((num_classes, grid[0], grid[1]), dtype=bool)
    for i, (top, bottom) in enumerate(_cell_bounds(height, grid[0])):
        for j, (left, right) in enumerate(_cell_bounds(width, grid[1])):
            labels = np.unique(semantic[top:bottom, left:right])
            out[labels[labels > 0] - 1, i, j] = True
    return out


def normalize_images(images: Tensor) -> Tensor:
    """uint8 images to the models' input range: ``x / 127.5 - 1`` (mean = std = 0.5).

    Example:
        >>> import torch
        >>> from dense_readout.experiments.synthetic_data import normalize_images
        >>> normalize_images(torch.tensor([0, 51, 255], dtype=torch.uint8)).tolist()
        [-1.0, -0.6000000238418579, 1.0]
    """
    return images.float().div_(127.5).sub_(1.0)


class SyntheticDataset(torch.utils.data.Dataset):
    """Scenes streamed on the fly.

    ``(image uint8 3×S×S, target, presence K×h×w bool, visible K bool)``. ``visible`` marks
    the record's visible classes (the ones a target may be sampled from).

    Args:
        generator: a :class:`~dense_readout.experiments.synthetic.SceneGenerator`.
        count: number of scenes (indices ``0..count-1``).
        input_size: model input side; scenes are box-downsampled from their render size.
        grid: readout grid ``(h, w)`` for the presence maps (from the 224-px masks).

    Example:
        >>> from dense_readout.experiments.synthetic import SceneGenerator
        >>> from dense_readout.experiments.synthetic_data import SyntheticDataset
        >>> image, target, presence, visible = SyntheticDataset(SceneGenerator(), 4, 112, (7, 7))[0]
        >>> tuple(image.shape), tuple(presence.shape), bool(presence[target].any())
        ((3, 112, 112), (20, 7, 7), True)
    """

    def __init__(
        self, generator: SceneGenerator, count: int, input_size: int, grid: Sequence[int]
    ) -> None:
        if count <= 0:
            raise InputError(f"count must be positive, got {count}.")
        self.generator, self.count, self.input_size = generator, count, input_size
        self.grid: tuple[int, int] = (int(grid[0]), int(grid[1]))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[Tensor, int, Tensor, Tensor]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        scene = self.generator(index)
        image = scene.image
        if image.shape[0] != self.input_size:
            image = np.asarray(
                Image.fromarray(image).resize(
                    (self.input_size, self.input_size), Image.Resampling.BOX
                )
            )
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        presence = torch.from_numpy(cell_presence(scene.semantic, self.grid))
        visible = torch.zeros(NUM_CLASSES, dtype=torch.bool)
        visible[scene.visible_classes] = True
        return tensor, scene.target, presence, visible


def _epoch_order(count: int, batch_size: int, seed: int, epoch: int) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(count, generator=generator)
    return [order[i : i + batch_size] for i in range(0, count - batch_size + 1, batch_size)]


@dataclass
class SceneTensors:
    """A materialised split.

    ``images`` N×3×S×S uint8, ``targets`` N, ``presence`` N×K×h×w and ``visible`` N×K
    (bool).

    Example:
        >>> from dense_readout.experiments.synthetic import SceneConfig, SceneGenerator
        >>> from dense_readout.experiments.synthetic_data import SyntheticDataset
        >>> config = SceneConfig(image_size=64, min_objects=1, max_objects=2,
        ...     min_scale=16, max_scale=24)
        >>> dataset = SyntheticDataset(SceneGenerator(config, split="val"), 6, 32, (4, 4))
        >>> from dense_readout.experiments.synthetic_data import materialize
        >>> data = materialize(dataset)  # a SceneTensors
        >>> len(data), tuple(data.images.shape), tuple(data.presence.shape)
        (6, (6, 3, 32, 32), (6, 20, 4, 4))
        >>> [len(images) for images, _, _ in data.train_batches(4, seed=0, epoch=0)]  # full only
        [4]
        >>> [len(images) for images, _, _ in data.eval_batches(4)]  # every scene, in order
        [4, 2]
        >>> first = [t.tolist() for _, t, _ in data.train_batches(2, seed=0, epoch=1)]
        >>> first == [t.tolist() for _, t, _ in data.train_batches(2, seed=0, epoch=1)]
        True
    """

    images: Tensor
    targets: Tensor
    presence: Tensor
    visible: Tensor

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def train_batches(
        self, batch_size: int, seed: int, epoch: int
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """Shuffled ``(images, targets, visible)`` batches; the order is a function of ``(seed, epoch)``."""
        for index in _epoch_order(len(self), batch_size, seed, epoch):
            yield self.images[index], self.targets[index], self.visible[index]

    def eval_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """Sequential ``(images, targets, presence)`` batches."""
        for start in range(0, len(self), batch_size):
            stop = start + batch_size
            yield self.images[start:stop], self.targets[start:stop], self.presence[start:stop]


class StreamingScenes:
    """A split rendered on the fly by DataLoader workers (for the full-size recipes).

    Same interface as :class:`SceneTensors` (``train_batches``/``eval_batches``),
    same epoch order for a given ``(seed, epoch)``.

    Example:
        >>> import torch
        >>> from dense_readout.experiments.synthetic import SceneConfig, SceneGenerator
        >>> from dense_readout.experiments.synthetic_data import SyntheticDataset
        >>> config = SceneConfig(image_size=64, min_objects=1, max_objects=2,
        ...     min_scale=16, max_scale=24)
        >>> dataset = SyntheticDataset(SceneGenerator(config, split="val"), 6, 32, (4, 4))
        >>> from dense_readout.experiments.synthetic_data import StreamingScenes, materialize
        >>> streamed, stored = StreamingScenes(dataset), materialize(dataset)
        >>> pairs = zip(streamed.train_batches(2, seed=3, epoch=1),
        ...     stored.train_batches(2, seed=3, epoch=1))
        >>> all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in pairs)
        True
        >>> [tuple(p.shape) for _, _, p in streamed.eval_batches(4)]
        [(4, 20, 4, 4), (2, 20, 4, 4)]
    """

    def __init__(self, dataset: SyntheticDataset, workers: int = 0) -> None:
        self.dataset, self.workers = dataset, workers

    def __len__(self) -> int:
        return len(self.dataset)

    def _loader(self, batch_sampler: Any) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=batch_sampler,
            num_workers=self.workers,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
        )

    def train_batches(
        self, batch_size: int, seed: int, epoch: int
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        order = [index.tolist() for index in _epoch_order(len(self), batch_size, seed, epoch)]
        for images, targets, _, visible in self._loader(order):
            yield images, targets, visible

    def eval_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        order = [
            list(range(i, min(i + batch_size, len(self)))) for i in range(0, len(self), batch_size)
        ]
        for images, targets, presence, _ in self._loader(order):
            yield images, targets, presence


SceneSource = SceneTensors | StreamingScenes
"""Either kind of split: both have ``train_batches`` and ``eval_batches``."""


def materialize(
    dataset: SyntheticDataset, cache: Path | None = None, progress: bool = False
) -> SceneTensors:
    """Render a dataset into tensors once; reuse ``cache`` (a ``.pt`` file) if it exists.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from dense_readout.experiments.synthetic import SceneConfig, SceneGenerator
        >>> from dense_readout.experiments.synthetic_data import SyntheticDataset
        >>> config = SceneConfig(image_size=64, min_objects=1, max_objects=2,
        ...     min_scale=16, max_scale=24)
        >>> dataset = SyntheticDataset(SceneGenerator(config, split="val"), 6, 32, (4, 4))
        >>> from dense_readout.experiments.synthetic_data import materialize
        >>> tmp = tempfile.TemporaryDirectory(); cache = Path(tmp.name) / "val.pt"
        >>> data = materialize(dataset, cache)
        >>> data.images.dtype, int(data.targets[0]) == dataset[0][1], cache.is_file()
        (torch.uint8, True, True)
        >>> again = materialize(dataset, cache)  # read back, not rendered
        >>> torch.equal(again.images, data.images) and torch.equal(again.visible, data.visible)
        True
        >>> tmp.cleanup()
    """
    if cache is not None and cache.is_file():
        data = torch.load(cache, weights_only=True)
        return SceneTensors(data["images"], data["targets"], data["presence"], data["visible"])
    items: Iterable[int] = range(len(dataset))
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc=f"render {dataset.generator.split}", leave=False)
    images, targets, presence, visible = [], [], [], []
    for index in items:
        image, target, cells, classes = dataset[index]
        visible.append(classes)
        images.append(image)
        targets.append(target)
        presence.append(cells)
    tensors = SceneTensors(
        torch.stack(images),
        torch.tensor(targets, dtype=torch.long),
        torch.stack(presence),
        torch.stack(visible),
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save(
            {
                "images": tensors.images,
                "targets": tensors.targets,
                "presence": tensors.presence,
                "visible": tensors.visible,
            },
            tmp,
        )
        tmp.replace(cache)
    return tensors
