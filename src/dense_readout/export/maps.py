"""One batch's maps: the readout at several scales and flipped, and the classes kept.

:func:`readout_maps` is the WSSS multi-scale convention (IRN, CLIP-ES): the input at
each scale (default only 1.0; WSSS uses 1.0/0.5/1.5/2.0) and, with ``flip``, mirrored;
every map is resized onto the scale-1.0 grid (bilinear) — flipped ones mirrored back
first — and summed. The image logits are those of the plain scale-1.0 input.
:class:`ClassSelection` keeps all classes, the top-N by logit, the image's
ground-truth classes, or a fixed list.

Example:
    >>> import torch, timm
    >>> from dense_readout import DenseReadout
    >>> _ = torch.manual_seed(0)
    >>> readout = DenseReadout(timm.create_model("test_resnet", num_classes=5).eval())
    >>> scores, logits, _ = readout_maps(readout, torch.randn(2, 3, 64, 64), (1.0, 0.5), flip=True)
    >>> tuple(scores.shape), tuple(logits.shape)
    ((2, 5, 2, 2), (2, 5))
    >>> kept, classes = ClassSelection.parse("topk:2").select(scores, logits, [(), ()])
    >>> tuple(kept.shape), bool((classes == logits.topk(2).indices).all())
    ((2, 2, 2, 2), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError

__all__ = ["ClassSelection", "readout_maps"]


def readout_maps(
    readout, x: Tensor, scales: Sequence[float] = (1.0,), flip: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """``(scores B×K×h×w, logits B×K, features B×C×h×w)`` of ``x``, summed over scales/flip.

    ``h×w`` and the features are the plain input's grid. With ``scales=(1.0,)`` and no
    flip this is exactly ``readout(x)``.

    Example:
        >>> import timm, torch
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.export import readout_maps
        >>> _ = torch.manual_seed(0)
        >>> readout = DenseReadout(timm.create_model("test_resnet", num_classes=3).eval())
        >>> x = torch.randn(2, 3, 64, 64)
        >>> scores, logits, features = readout_maps(readout, x)
        >>> tuple(scores.shape), tuple(logits.shape), features.shape[-2:] == scores.shape[-2:]
        ((2, 3, 2, 2), (2, 3), True)
        >>> torch.allclose(scores.mean((2, 3)), logits, atol=1e-5)  # the cells average to the logits
        True
        >>> summed, _, _ = readout_maps(readout, x, scales=(1.0, 0.5), flip=True)
        >>> tuple(summed.shape)  # four passes, summed on the scale-1.0 grid
        (2, 3, 2, 2)
    """
    with torch.inference_mode():
        base = readout(x)
        grid = base.grid_size
        total = torch.zeros_like(base.scores)
        for scale in scales:
            if scale <= 0:
                raise InputError(f"scales must be positive, got {scale}; e.g. 1.0,0.5,1.5,2.0.")
            scaled = x if scale == 1.0 else _rescale(x, scale)
            total += base.scores if scale == 1.0 else _on_grid(readout(scaled).scores, grid)
            if flip:
                total += _on_grid(readout(scaled.flip(-1)).scores.flip(-1), grid)
    return total, base.logits, base.features


def _rescale(x: Tensor, scale: float) -> Tensor:
    size = (max(1, round(x.shape[-2] * scale)), max(1, round(x.shape[-1] * scale)))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _on_grid(scores: Tensor, grid: tuple[int, int]) -> Tensor:
    if tuple(scores.shape[-2:]) == grid:
        return scores
    return F.interpolate(scores, size=grid, mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class ClassSelection:
    """Which classes' maps an export keeps: ``all``, ``topk:N``, ``gt`` or a list ``3,17``.

    Example:
        >>> import torch
        >>> from dense_readout.export import ClassSelection
        >>> selection = ClassSelection.parse("topk:2")
        >>> scores = torch.arange(4.0).view(1, 4, 1, 1).expand(1, 4, 2, 2)  # class k scores k
        >>> kept, classes = selection.select(scores, scores.mean((2, 3)), [()])
        >>> tuple(kept.shape), classes.tolist(), kept[0, :, 0, 0].tolist()
        ((1, 2, 2, 2), [[3, 2]], [3.0, 2.0])
        >>> ClassSelection.parse("3,17").width(num_classes=20), ClassSelection.parse("all").width(20)
        (2, 20)
    """

    kind: str = "all"
    count: int = 0
    fixed: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str, max_labels: int = 0) -> ClassSelection:
        """From ``--classes``; ``max_labels`` is the most labels an image has (for ``gt``)."""
        text = text.strip()
        if text == "all":
            return cls()
        if text == "gt":
            if max_labels < 1:
                raise InputError("--classes gt needs a labelled dataset (ILSVRC or COCO layout).")
            return cls("gt", max_labels)
        if text.startswith("topk:"):
            count = _int(text[5:], text)
            if count < 1:
                raise InputError(f"--classes {text}: N must be at least 1.")
            return cls("topk", count)
        fixed = tuple(_int(part, text) for part in text.split(",") if part.strip())
        if not fixed:
            raise InputError(f"--classes {text!r}: use all, topk:N, gt or a list such as 3,17.")
        return cls("list", len(fixed), fixed)

    def width(self, num_classes: int) -> int:
        """Maps kept per image."""
        if self.kind == "all":
            return num_classes
        if self.kind == "list" and max(self.fixed) >= num_classes:
            raise InputError(f"--classes lists {max(self.fixed)}; the model has {num_classes}.")
        return min(self.count, num_classes)

    def select(
        self, scores: Tensor, logits: Tensor, labels: Sequence[Sequence[int]]
    ) -> tuple[Tensor, Tensor | None]:
        """``(kept maps B×M×h×w, class index per map B×M or None for all)``.

        ``-1`` pads ``gt`` rows with fewer labels (their maps are NaN).
        """
        if self.kind == "all":
            return scores, None
        width = self.width(scores.shape[1])
        if self.kind == "topk":
            classes = logits.topk(width, dim=1).indices
        elif self.kind == "list":
            classes = torch.tensor(self.fixed).expand(scores.shape[0], -1)
        else:
            classes = torch.full((scores.shape[0], width), -1, dtype=torch.long)
            for row, image_labels in enumerate(labels):
                classes[row, : len(image_labels)] = torch.tensor(list(image_labels)[:width])
        gather = classes.clamp(min=0).to(scores.device)[:, :, None, None]
        kept = scores.gather(1, gather.expand(-1, -1, *scores.shape[-2:])).clone()
        kept[(classes < 0).to(scores.device)] = float("nan")
        return kept, classes


def _int(text: str, whole: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(
            f"--classes {whole!r}: {text!r} is not a class index; "
            "use all, topk:N, gt or a list such as 3,17."
        ) from None
