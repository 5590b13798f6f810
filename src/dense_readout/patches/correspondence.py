"""Patch correspondence between two images (paper A.8, Fig. 9): one forward pass each.

The cosine similarity of every pre-pooling cell vector of image A with every cell
vector of image B, and the ``top`` most similar pairs: which parts of the two images
the backbone sees as alike. Works with or without a classification head.

Example:
    >>> import timm, torch
    >>> from dense_readout.patches import correspondence
    >>> backbone = timm.create_model("resnet18", num_classes=0).eval()
    >>> image = torch.rand(3, 96, 96)
    >>> result = correspondence(backbone, image, image, top=3)
    >>> tuple(result.similarity.shape), result.grid_a
    ((9, 9), (3, 3))
    >>> result.best_match().tolist() == list(range(9))  # each cell's best match is itself
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from PIL import Image
from torch import Tensor, nn

from ..errors import InputError
from ..preprocessing import Preprocess
from ..readout import DenseReadout
from .grid import GridExtractor, normalise_rows

__all__ = ["Correspondence", "Pair", "correspondence"]


class Pair(NamedTuple):
    """One matched pair: cell ``(u, v)`` of image A, cell of image B, cosine similarity.

    Example:
        >>> from dense_readout.patches import Pair
        >>> pair = Pair((0, 1), (2, 2), 0.93)
        >>> pair.cell_a, pair.cell_b, pair.similarity
        ((0, 1), (2, 2), 0.93)
    """

    cell_a: tuple[int, int]
    cell_b: tuple[int, int]
    similarity: float


@dataclass
class Correspondence:
    """Cosine similarities of all cell pairs of two images and the most similar ones.

    Attributes:
        similarity: ``(h_a·w_a)×(h_b·w_b)``; row ``u·w_a + v`` is cell ``(u, v)`` of A.
        pairs: the ``top`` largest entries, most similar first.
        grid_a: ``(h, w)`` of image A's grid.
        grid_b: ``(h, w)`` of image B's grid.
        input_a: the preprocessed input of A, ``3×H×W`` (for figures).
        input_b: the preprocessed input of B, ``3×H×W``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from dense_readout.patches import correspondence
        >>> body = nn.Conv2d(3, 4, 8, stride=8).eval()
        >>> image = torch.rand(3, 16, 24)
        >>> result = correspondence(body, image, image, top=2, features=body)
        >>> tuple(result.similarity.shape), result.grid_a, len(result.pairs)
        ((6, 6), (2, 3), 2)
        >>> all(abs(p.similarity - 1) < 1e-5 and p.cell_a == p.cell_b for p in result.pairs)  # a cell matches itself
        True
    """

    similarity: Tensor
    pairs: list[Pair]
    grid_a: tuple[int, int]
    grid_b: tuple[int, int]
    input_a: Tensor
    input_b: Tensor

    def best_match(self) -> Tensor:
        """For each cell of A, the index (``u·w_b + v``) of its most similar cell of B."""
        return self.similarity.argmax(dim=1)

    def to_dict(self) -> dict[str, Any]:
        """The pairs and grids as plain JSON-ready values."""
        return {
            "grid_a": list(self.grid_a),
            "grid_b": list(self.grid_b),
            "pairs": [
                {"cell_a": list(p.cell_a), "cell_b": list(p.cell_b), "similarity": p.similarity}
                for p in self.pairs
            ],
        }


def correspondence(
    model: nn.Module | DenseReadout,
    image_a: Tensor | Image.Image,
    image_b: Tensor | Image.Image,
    top: int = 20,
    *,
    features: Callable[[Tensor], Tensor] | None = None,
    preprocess: Preprocess | None = None,
) -> Correspondence:
    """Cosine similarity between all grid cells of ``image_a`` and ``image_b``.

    Args:
        model: any model :class:`~dense_readout.DenseReadout` supports, a backbone
            without a head (timm ``num_classes=0``), or a ``DenseReadout``.
        image_a: preprocessed tensor ``3×H×W`` (or ``1×3×H×W``), or a PIL image
            (then ``preprocess``, default the model's own at crop_pct 1.0).
        image_b: the second image, as ``image_a``.
        top: how many most-similar pairs to list (Fig. 9 draws 20).
        features: a callable ``input → B×C×h×w`` for a backbone no adapter knows.
        preprocess: how PIL images become inputs (default: the model's own).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> body = nn.Conv2d(3, 4, 8, stride=8).eval()
        >>> result = correspondence(body, torch.rand(3, 16, 16), torch.rand(3, 32, 16),
        ...                         top=2, features=body)
        >>> result.grid_a, result.grid_b, len(result.pairs)
        ((2, 2), (4, 2), 2)
    """
    extract = GridExtractor(model, features=features)
    inputs = [_as_input(image, extract.model, preprocess) for image in (image_a, image_b)]
    grids = [extract(x.unsqueeze(0))[0] for x in inputs]
    if grids[0].shape[0] != grids[1].shape[0]:
        raise InputError(
            f"the two grids have {grids[0].shape[0]} and {grids[1].shape[0]} channels; "
            "use the same model for both images."
        )
    vectors = [normalise_rows(g.flatten(1).T) for g in grids]
    similarity = vectors[0] @ vectors[1].T
    grid_a = (int(grids[0].shape[1]), int(grids[0].shape[2]))
    grid_b = (int(grids[1].shape[1]), int(grids[1].shape[2]))
    return Correspondence(
        similarity, top_pairs(similarity, grid_a, grid_b, top), grid_a, grid_b, *inputs
    )


def top_pairs(
    similarity: Tensor, grid_a: tuple[int, int], grid_b: tuple[int, int], top: int
) -> list[Pair]:
    """The ``top`` largest entries of ``similarity`` as :class:`Pair` s, largest first.

    Example:
        >>> import torch
        >>> top_pairs(torch.tensor([[0.25, 0.75], [0.5, 0.125]]), (1, 2), (1, 2), 2)
        [Pair(cell_a=(0, 0), cell_b=(0, 1), similarity=0.75), Pair(cell_a=(0, 1), cell_b=(0, 0), similarity=0.5)]
    """
    if top < 1:
        raise InputError(f"top must be at least 1, got {top}.")
    values, flat = similarity.flatten().topk(min(top, similarity.numel()))
    columns = similarity.shape[1]
    pairs = []
    for value, index in zip(values.tolist(), flat.tolist(), strict=True):
        row, column = divmod(index, columns)
        pairs.append(Pair(divmod(row, grid_a[1]), divmod(column, grid_b[1]), float(value)))
    return pairs


def _as_input(
    image: Tensor | Image.Image, model: nn.Module, preprocess: Preprocess | None
) -> Tensor:
    if isinstance(image, Image.Image):
        return (preprocess or Preprocess.from_model(model, crop_pct=1.0))(image.convert("RGB"))
    if isinstance(image, Tensor) and image.dim() == 4 and image.shape[0] == 1:
        return image[0]
    if isinstance(image, Tensor) and image.dim() == 3:
        return image
    shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
    raise InputError(f"each image must be a PIL image or a tensor 3×H×W (or 1×3×H×W), got {shape}.")
