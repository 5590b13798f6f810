"""The pre-pooling feature grid of any model, with or without a classification head.

:class:`GridExtractor` turns a batch ``B×3×H×W`` into the grid ``B×C×h×w`` that the
dense readout applies its head to. It uses the model's adapter
(:func:`dense_readout.adapters.find_adapter`), which finds the grid whether or not
the model has a head (a timm model built with ``num_classes=0`` works), or a
``features=`` callable for any other backbone. :func:`cell_boxes` maps the cells
back to pixel boxes of the original image.

Example:
    >>> import timm, torch
    >>> from dense_readout.patches import GridExtractor
    >>> backbone = timm.create_model("resnet18", num_classes=0).eval()  # no head
    >>> extract = GridExtractor(backbone)
    >>> tuple(extract(torch.rand(2, 3, 64, 64)).shape), extract.has_head
    ((2, 512, 2, 2), False)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InputError, UnsupportedModelError
from ..images import crop_region
from ..readout import DenseReadout
from ..validation import check_eval_mode, check_images

__all__ = ["GridExtractor", "cell_boxes", "normalise_rows"]


class GridExtractor:
    """Callable ``B×3×H×W → B×C×h×w`` (the pre-pooling grid), one forward pass.

    Args:
        model: a model an adapter exists for (timm, torchvision, Hugging Face, any
            GAP network the structural adapter recognises), with or without a head;
            or a :class:`~dense_readout.DenseReadout`.
        features: for a bare backbone no adapter knows: a callable mapping the input
            batch to the grid ``B×C×h×w`` (``model`` is then only checked for eval mode).

    ``has_head`` says whether :meth:`top1` can name each cell's class.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> body = nn.Conv2d(3, 8, 4, stride=4).eval()
        >>> extract = GridExtractor(body, features=body)
        >>> tuple(extract(torch.rand(1, 3, 16, 16)).shape), extract.has_head
        ((1, 8, 4, 4), False)
    """

    def __init__(
        self, model: nn.Module | DenseReadout, *, features: Callable[[Tensor], Tensor] | None = None
    ) -> None:
        self.readout: DenseReadout | None = None
        if isinstance(model, DenseReadout):
            self.readout, model = model, model.model
        self.model = model
        self.features = features
        if features is None and self.readout is None:
            self.readout = DenseReadout(model)  # finds the adapter, or says why not
        self.has_head = self.readout is not None and _has_head(self.readout)

    def __call__(self, inputs: Tensor) -> Tensor:
        """The grid ``B×C×h×w`` of ``inputs`` (no gradients; model in eval mode)."""
        check_eval_mode(self.model, "the feature grid")
        with torch.no_grad():
            if self.features is not None:
                grid = self.features(inputs)
            else:
                assert self.readout is not None
                check_images(inputs, channels=self.readout.adapter.in_channels)
                adapter = self.readout.adapter
                grid = adapter.grid(adapter.forward_features(inputs), inputs)
        if not isinstance(grid, Tensor) or grid.dim() != 4:
            shape = tuple(grid.shape) if isinstance(grid, Tensor) else type(grid).__name__
            raise UnsupportedModelError(
                f"the feature grid must be B×C×h×w, got {shape}; pass features= returning one."
            )
        return grid.float()

    def top1(self, grid: Tensor) -> Tensor:
        """The readout's top-1 class of every cell of ``grid``, ``B×h×w`` (int64)."""
        if not self.has_head or self.readout is None:
            raise InputError("this model has no classification head: no per-cell top-1 class.")
        with torch.no_grad():
            return self.readout.adapter.readout(grid).argmax(dim=1)


def _has_head(readout: DenseReadout) -> bool:
    count = getattr(readout.model, "num_classes", None)
    if isinstance(count, int) and count <= 0:
        return False
    try:
        return readout.num_classes > 0
    except UnsupportedModelError:
        return False


def normalise_rows(vectors: Tensor) -> Tensor:
    """Each row divided by its L2 norm (zero rows stay zero): cosine = dot product.

    Example:
        >>> normalise_rows(torch.tensor([[3.0, 4.0], [0.0, 0.0]])).tolist()
        [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    return vectors / vectors.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def cell_boxes(
    image_size: Sequence[int], grid: Sequence[int], resize: int, crop: int
) -> np.ndarray:
    """Pixel boxes ``x0, y0, x1, y1`` of each cell in the ORIGINAL image, ``h·w×4`` (int).

    ``image_size`` is the original ``(width, height)``; ``resize``/``crop`` are the
    preprocessing's (shorter side resized to ``resize``, centre crop ``crop``). Cells
    are in row-major order: row ``u``, column ``v`` is entry ``u·w + v``.

    Example:
        >>> cell_boxes((400, 200), grid=(2, 2), resize=100, crop=100).tolist()
        [[100, 0, 200, 100], [200, 0, 300, 100], [100, 100, 200, 200], [200, 100, 300, 200]]
    """
    left, top, right, bottom = crop_region(tuple(image_size), resize, crop)
    rows, cols = int(grid[0]), int(grid[1])
    ys = np.linspace(top, bottom, rows + 1)
    xs = np.linspace(left, right, cols + 1)
    boxes = [(xs[v], ys[u], xs[v + 1], ys[u + 1]) for u in range(rows) for v in range(cols)]
    return np.rint(np.asarray(boxes, dtype=np.float64)).astype(np.int64)
