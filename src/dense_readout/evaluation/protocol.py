"""The paper's evaluation protocol: crop, box mask, any-pixel grid occupancy, occlusion.

1. The image is resized (shorter side 256) and centre-cropped to 224 by a
   :class:`~dense_readout.preprocessing.Preprocess` (``crop_pct=0.875``), then normalised
   (:func:`paper_preprocess`: 256→224 for every model, whatever its own input size).
2. The foreground is the union of the boxes filled at the stored file's pixel
   resolution (boxes are inclusive pixel index ranges); the mask gets the same
   resize+crop with nearest-neighbour interpolation.
3. A grid cell is foreground if any foreground pixel falls into it
   (:func:`grid_occupancy`; for grids that do not divide the input, cell ``i``
   covers pixels ``floor(i·H/h) .. ceil((i+1)·H/h)-1``, adaptive pooling's windows).
4. Three inputs per image: original, w/o BG (pixels outside the foreground
   replaced by the fill), w/o FG (pixels inside replaced). The fill is a colour
   from :data:`FILLS` (default ``'mean'`` = zero after normalisation, the
   normalisation's mean colour) or an ``'r,g,b'`` triple in [0, 1].

Example:
    >>> import numpy as np, torch
    >>> from PIL import Image
    >>> from dense_readout.preprocessing import Preprocess
    >>> from dense_readout.evaluation.protocol import Protocol, grid_occupancy
    >>> protocol = Protocol(Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3))
    >>> x, mask = protocol.transform(Image.new("RGB", (256, 256)), np.array([[16, 16, 47, 47]]))
    >>> tuple(x.shape), int(mask.sum())          # 32×32 box, 256->256 resize, crop offset 16
    ((3, 224, 224), 1024)
    >>> grid_occupancy(mask[None], (7, 7))[0].nonzero().tolist()
    [[0, 0]]
    >>> inputs = protocol.three_inputs(x[None], mask[None])
    >>> tuple(inputs.shape)
    (3, 3, 224, 224)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from ..errors import InputError
from ..preprocessing import Preprocess
from ..registry import Registry

__all__ = [
    "FILLS",
    "PAPER_CROP",
    "PAPER_RESIZE",
    "Protocol",
    "boxes_to_mask",
    "grid_occupancy",
    "occlude",
    "paper_preprocess",
    "register_fill",
]

PAPER_RESIZE = 256
"""A.1: the shorter side is resized to 256 pixels."""
PAPER_CROP = 224
"""A.1: then the centre 224×224 crop is taken (crop_pct 0.875)."""

# name -> colour in [0,1] pixel space given the normalisation (mean, std)
FillColour = Callable[[Preprocess], tuple[float, ...]]
FILLS: Registry[FillColour] = Registry(
    "occlusion fill",
    hint="Give 'r,g,b' in [0, 1], or register a name with "
    "dense_readout.evaluation.protocol.register_fill.",
)


ColourFunction = Callable[[Preprocess], Sequence[float]]


@overload
def register_fill(name: str) -> Callable[[ColourFunction], ColourFunction]: ...


@overload
def register_fill(name: str, colour: ColourFunction) -> ColourFunction: ...


def register_fill(name: str, colour: ColourFunction | None = None) -> Any:
    """Decorator: register ``colour(preprocess) -> RGB in [0, 1]`` as the fill ``name``.

    ``register_fill(name, colour)`` is the same registration without the decorator
    syntax; both return ``colour``. The registry keeps a wrapper that turns the
    colour into a tuple of Python floats.

    Example:
        >>> from dense_readout.preprocessing import Preprocess
        >>> from dense_readout.evaluation.protocol import FILLS, Protocol, register_fill
        >>> @register_fill("red")
        ... def red(pre):
        ...     return (1, 0, 0)
        >>> Protocol(Preprocess(), fill="red").fill_colour()
        (1.0, 0.0, 0.0)
        >>> _ = FILLS.unregister("red"); "red" in FILLS
        False
    """

    def decorate(colour: ColourFunction) -> ColourFunction:
        def fill(pre: Preprocess) -> tuple[float, ...]:
            return tuple(float(c) for c in colour(pre))

        FILLS.register(name, fill)
        return colour

    return decorate if colour is None else decorate(colour)


@register_fill("mean")
def _mean_fill(pre: Preprocess) -> Sequence[float]:
    return pre.mean  # zero after normalisation


@register_fill("black")
def _black_fill(pre: Preprocess) -> Sequence[float]:
    return (0.0, 0.0, 0.0)


@register_fill("white")
def _white_fill(pre: Preprocess) -> Sequence[float]:
    return (1.0, 1.0, 1.0)


@register_fill("gray")
def _gray_fill(pre: Preprocess) -> Sequence[float]:
    return (0.5, 0.5, 0.5)


def paper_preprocess(
    model: torch.nn.Module, normalization: str = "model", *, crop: int = PAPER_CROP
) -> Preprocess:
    """The paper's preprocessing (A.1) for ``model``: shorter side 256, centre crop 224.

    The geometry is the paper's for every model, whatever input size the model's
    own data config declares (e.g. 240 px for EfficientNet-Lite1, which would
    otherwise give 274→240); only the normalisation (``'model'``: the config's
    mean/std, ``'imagenet'``: ImageNet's) and the resize filter come from the
    model. ``crop`` changes the crop at the same ratio (``resize = crop / 0.875``).

    Example:
        >>> import torch
        >>> from dense_readout.evaluation.protocol import paper_preprocess
        >>> lite1 = torch.nn.Identity()
        >>> lite1.pretrained_cfg = {"input_size": (3, 240, 240), "crop_pct": 0.882}
        >>> pre = paper_preprocess(lite1)
        >>> pre.resize, pre.crop
        (256, 224)
    """
    return Preprocess.from_model(
        model, normalization=normalization, crop=crop, crop_pct=PAPER_CROP / PAPER_RESIZE
    )


def boxes_to_mask(size: tuple[int, int], boxes: np.ndarray) -> Image.Image:
    """Union of ``boxes`` (``N×4`` inclusive pixel ranges) as an 'L' mask of ``size=(W, H)``.

    Example:
        >>> import numpy as np
        >>> from dense_readout.evaluation.protocol import boxes_to_mask
        >>> mask = boxes_to_mask((6, 4), np.array([[1, 0, 2, 1], [4, 2, 5, 3]]))  # W=6, H=4
        >>> mask.size, (np.asarray(mask) > 0).astype(int).tolist()
        ((6, 4), [[0, 1, 1, 0, 0, 0], [0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1]])
    """
    mask = Image.new("L", (int(size[0]), int(size[1])), 0)
    draw = ImageDraw.Draw(mask)
    for xmin, ymin, xmax, ymax in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        draw.rectangle([round(xmin), round(ymin), round(xmax), round(ymax)], fill=255)
    return mask


def grid_occupancy(mask: Tensor, grid: tuple[int, ...]) -> Tensor:  # (h, w)
    """Any-pixel occupancy: ``B×H×W`` boolean pixel mask -> ``B×h×w`` boolean cell mask.

    Example:
        >>> import torch
        >>> from dense_readout.evaluation.protocol import grid_occupancy
        >>> mask = torch.zeros(1, 4, 4, dtype=torch.bool); mask[0, 1, 2] = True
        >>> grid_occupancy(mask, (2, 2)).int().tolist()
        [[[0, 1], [0, 0]]]
    """
    if mask.dim() != 3:
        raise InputError(f"grid_occupancy expects a B×H×W mask, got shape {tuple(mask.shape)}.")
    pooled = F.adaptive_max_pool2d(mask.float().unsqueeze(1), tuple(int(v) for v in grid))
    return pooled.squeeze(1) > 0


def occlude(inputs: Tensor, region: Tensor, fill: Tensor) -> Tensor:
    """Replace the pixels of ``region`` (``B×H×W`` bool) by ``fill`` (normalised, length 3).

    Example:
        >>> import torch
        >>> from dense_readout.evaluation.protocol import occlude
        >>> inputs = torch.ones(1, 3, 2, 2)
        >>> region = torch.tensor([[[True, False], [False, False]]])
        >>> occlude(inputs, region, torch.tensor([0.0, -1.0, 2.0]))[0, :, 0].tolist()  # row 0, per channel
        [[0.0, 1.0], [-1.0, 1.0], [2.0, 1.0]]
    """
    fill = fill.to(inputs).view(1, -1, 1, 1)
    return torch.where(region.unsqueeze(1).to(inputs.device), fill.expand_as(inputs), inputs)


@dataclass(frozen=True)
class Protocol:
    """Crop, mask and occlusion of the paper's ImageNet protocol.

    Args:
        preprocess: resize/crop/normalisation; use :func:`paper_preprocess`.
        fill: a name in :data:`FILLS` or ``'r,g,b'`` in [0, 1] (pixel space).

    Example:
        >>> import numpy as np
        >>> from PIL import Image
        >>> from dense_readout.preprocessing import Preprocess
        >>> from dense_readout.evaluation.protocol import Protocol
        >>> protocol = Protocol(Preprocess(resize=64, crop=64), fill="mean")
        >>> inputs, fg = protocol.transform(Image.new("RGB", (64, 64)), np.array([[0, 0, 31, 63]]))
        >>> tuple(inputs.shape), fg.float().mean().item()  # the box covers the left half
        ((3, 64, 64), 0.5)
        >>> batch = protocol.three_inputs(inputs[None], fg[None])  # originals, w/o BG, w/o FG
        >>> tuple(batch.shape), protocol.fill_value().tolist()  # 'mean' is zero after normalising
        ((3, 3, 64, 64), [0.0, 0.0, 0.0])
    """

    preprocess: Preprocess
    fill: str = "mean"

    def fill_colour(self) -> tuple[float, ...]:
        """The fill colour (R, G, B) in [0, 1] pixel space."""
        if self.fill in FILLS:
            return FILLS.get(self.fill)(self.preprocess)
        try:
            values = tuple(float(v) for v in str(self.fill).split(","))
        except ValueError:
            values = ()
        if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
            raise InputError(
                f"fill must be one of {sorted(FILLS)} or 'r,g,b' with values in [0, 1], got {self.fill!r}."
            )
        return values

    def fill_value(self) -> Tensor:
        """The fill colour after normalisation (length-3 tensor); ``'mean'`` gives zeros."""
        colour = torch.tensor(self.fill_colour(), dtype=torch.float32)
        mean = torch.tensor(self.preprocess.mean, dtype=torch.float32)
        std = torch.tensor(self.preprocess.std, dtype=torch.float32)
        return (colour - mean) / std

    def mask(self, size: tuple[int, int], boxes: np.ndarray) -> Tensor:
        """The 224×224 boolean foreground mask of ``boxes`` drawn on a ``size=(W, H)`` file."""
        cropped = self.preprocess.geometry_of(boxes_to_mask(size, boxes), "nearest")
        return torch.from_numpy(np.asarray(cropped) > 127)

    def transform(self, image: Image.Image, boxes: np.ndarray) -> tuple[Tensor, Tensor]:
        """``(normalised 3×224×224 tensor, 224×224 bool foreground mask)`` of one image."""
        return self.preprocess(image), self.mask(image.size, boxes)

    def three_inputs(self, inputs: Tensor, mask: Tensor) -> Tensor:
        """One batch ``[originals; w/o BG; w/o FG]`` of shape ``3B×3×H×W`` (in that order).

        ``inputs`` is ``B×3×H×W`` normalised, ``mask`` the ``B×H×W`` pixel foreground.
        """
        fill = self.fill_value()
        return torch.cat([inputs, occlude(inputs, ~mask, fill), occlude(inputs, mask, fill)])

    def describe(self) -> dict:
        """The protocol's settings, for reports."""
        pre = self.preprocess
        return {
            "resize_shorter_side": pre.resize,
            "crop": pre.crop,
            "interpolation": pre.interpolation,
            "mean": list(pre.mean),
            "std": list(pre.std),
            "fill": self.fill,
            "fill_rgb": list(self.fill_colour()),
            "mask_interpolation": "nearest",
            "grid_projection": "any-pixel occupancy",
        }


Fill = str | Sequence[float]
