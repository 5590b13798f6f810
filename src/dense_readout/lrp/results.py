"""What the :class:`~dense_readout.lrp.LRPReadout` entry points return.

* :class:`LRPResult` — one relevance map per image (``cell``, ``class_map``);
* :class:`CellRelevance` — one map per refined cell (``cells``);
* :class:`LabelMap` — pixel labels from every cell's own top-1 score (``label_map``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..errors import InputError
from .diagnostics import _mass, cell_patch_masks

__all__ = ["CellRelevance", "LRPResult", "LabelMap"]


@dataclass
class LRPResult:
    """Pixel relevance of one start (a cell's score, or a class map) per image.

    Attributes:
        relevance: ``B×1×H×W``, input relevance summed over colour channels.
        input_relevance: ``B×C×H×W``, per input channel.
        start: ``B``, total relevance put in at the readout (the selected scores' sum).
        conservation: ``B``, ``relevance.sum() / start`` (health check: 1 for a
            conservative rule set without biases; see docs/lrp.md).
        targets: ``B`` class per image.
        cells: ``B×2`` ``(u, v)`` of the refined cell, or None for a class map.
        scores: ``Z`` of the same pass, ``B×K×h×w`` (detached).
        composite: name (or class name) of the composite used.

    Example:
        >>> import timm, torch
        >>> from dense_readout.lrp import LRPReadout
        >>> lrp = LRPReadout(timm.create_model("resnet18", num_classes=3).eval())
        >>> result = lrp.class_map(torch.randn(1, 3, 64, 64), target=2)
        >>> tuple(result.relevance.shape), tuple(result.input_relevance.shape), result.targets.tolist()
        ((1, 1, 64, 64), (1, 3, 64, 64), [2])
        >>> torch.allclose(result.relevance.sum(), result.conservation * result.start, rtol=1e-4)
        True
    """

    relevance: Tensor
    input_relevance: Tensor
    start: Tensor
    conservation: Tensor
    targets: Tensor
    cells: Tensor | None
    scores: Tensor
    composite: str

    @property
    def grid_size(self) -> tuple[int, int]:
        """``(h, w)`` of the readout grid."""
        return int(self.scores.shape[-2]), int(self.scores.shape[-1])

    def outside_share(self, mode: str = "abs") -> Tensor:
        """``B`` share of the cell's relevance outside its own image patch (cell results only)."""
        if self.cells is None:
            raise InputError(
                "outside_share needs a single-cell result (LRPReadout.cell), not a class map."
            )
        image_size = (int(self.relevance.shape[-2]), int(self.relevance.shape[-1]))
        masks = cell_patch_masks(self.grid_size, image_size)
        inside = masks[self.cells[:, 0], self.cells[:, 1]].to(self.relevance.device)  # B×H×W
        mass = _mass(self.relevance[:, 0], mode)
        return 1 - (mass * inside).sum(dim=(1, 2)) / mass.sum(dim=(1, 2))


@dataclass
class CellRelevance:
    """Relevance of every refined cell, kept separate.

    Attributes:
        relevance: ``B×h×w×H×W`` (channels summed); entry ``[b, u, v]`` is the map
            of cell ``(u, v)``. Cells not requested are zero.
        classes: ``B×h×w`` class refined at each cell.
        start: ``B×h×w`` starting relevance (the cell's score of that class).
        conservation: ``B×h×w`` input relevance sum / start (NaN for cells not requested).
        scores: ``Z`` (``B×K×h×w``).
        composite: name (or class name) of the composite used.
        strategy: the batching strategy that ran.

    Example:
        >>> import timm, torch
        >>> from dense_readout.lrp import LRPReadout
        >>> lrp = LRPReadout(timm.create_model("resnet18", num_classes=3).eval())
        >>> cells = lrp.cells(torch.randn(1, 3, 64, 64), which=[(0, 1)])
        >>> tuple(cells.relevance.shape), tuple(cells.classes.shape)
        ((1, 2, 2, 64, 64), (1, 2, 2))
        >>> bool(cells.relevance[0, 0, 0].eq(0).all()), bool(cells.conservation[0, 0, 0].isnan())  # not requested
        (True, True)
    """

    relevance: Tensor
    classes: Tensor
    start: Tensor
    conservation: Tensor
    scores: Tensor
    composite: str
    strategy: str

    @property
    def grid_size(self) -> tuple[int, int]:
        """``(h, w)`` of the readout grid."""
        return int(self.classes.shape[-2]), int(self.classes.shape[-1])

    def cell(self, u: int, v: int) -> Tensor:
        """The ``B×1×H×W`` map of cell ``(u, v)``."""
        return self.relevance[:, u, v].unsqueeze(1)


@dataclass
class LabelMap:
    """Pixel-level label map from every cell's own top-1 score.

    Attributes:
        labels: ``B×H×W`` class of the group of cells whose relevance dominates
            each pixel (argmax over classes of the summed relevance).
        classes: ``B×M`` class of each group (``-1`` pads images with fewer classes).
        relevance: ``B×M×H×W`` relevance per class group (channels summed).
        grid_labels: ``B×h×w`` the readout label grid the groups come from.
        conservation: ``B`` total input relevance / total starting relevance.
        scores: ``Z``.
        composite: name (or class name) of the composite used.

    Example:
        >>> import timm, torch
        >>> from dense_readout.lrp import LRPReadout
        >>> lrp = LRPReadout(timm.create_model("resnet18", num_classes=3).eval())
        >>> labels = lrp.label_map(torch.randn(1, 3, 64, 64))
        >>> tuple(labels.labels.shape), tuple(labels.grid_labels.shape)
        ((1, 64, 64), (1, 2, 2))
        >>> set(labels.labels.unique().tolist()) <= set(labels.grid_labels.unique().tolist())
        True
    """

    labels: Tensor
    classes: Tensor
    relevance: Tensor
    grid_labels: Tensor
    conservation: Tensor
    scores: Tensor
    composite: str
