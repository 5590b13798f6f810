"""The WSSS seed recipe: per-class ReLU + max-normalisation, a background threshold, argmax.

This is IRN's (Ahn et al. 2019) ``make_cam`` → ``cam_to_ir_label`` seed step, the
recipe most WSSS code reports "CAM seed mIoU" with: for each class the image is
labelled with, its map is ReLU'd and divided by its maximum (so every class peaks
at 1); a constant background plane at ``bg_threshold`` (IRN: 0.15) is stacked in
front, and every pixel takes the argmax — ``0`` background, ``1 + c`` class ``c``.
Pixels where the maps are NaN (outside the crop the model saw) are :data:`IGNORE`.

Example:
    >>> import numpy as np
    >>> maps = np.array([[[0.0, 1.0], [2.0, -1.0]]])  # one class, 2×2
    >>> seed_labels(maps, [4], bg_threshold=0.3).tolist()  # class 4 → label 5
    [[0, 5], [5, 0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["IGNORE", "labels_from_normalised", "normalise_maps", "seed_labels"]

IGNORE = 255  # the VOC "void" label: not scored
EPSILON = 1e-5  # IRN's: a map that is zero everywhere stays zero


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """``M×H×W`` maps → ReLU, each divided by its own maximum (+1e-5), float32; NaN kept.

    Example:
        >>> import numpy as np
        >>> from dense_readout.pseudo_labels import normalise_maps
        >>> normalise_maps(np.array([[[-1.0, 2.0], [1.0, 4.0]]])).round(3).tolist()  # ReLU, then / max
        [[[0.0, 0.5], [0.25, 1.0]]]
    """
    maps = np.asarray(maps, dtype=np.float32)
    positive = np.maximum(maps, 0.0)  # NaN stays NaN
    peak = np.nanmax(positive.reshape(len(maps), -1), axis=1) if maps.size else np.zeros(0)
    peak = np.nan_to_num(peak, nan=0.0)
    return positive / (peak[:, None, None] + EPSILON)


def labels_from_normalised(
    normalised: np.ndarray, classes: Sequence[int], bg_threshold: float
) -> np.ndarray:
    """Argmax over ``[background = bg_threshold, normalised maps]`` → labels ``H×W`` (int64).

    Ties go to the lower index (background first), as ``np.argmax``.

    Example:
        >>> import numpy as np
        >>> from dense_readout.pseudo_labels import labels_from_normalised
        >>> normalised = np.array([[[0.1, 0.9]], [[0.6, 0.2]]])  # two classes, a 1×2 image
        >>> labels_from_normalised(normalised, [7, 12], bg_threshold=0.15).tolist()  # index 0 = background
        [[13, 8]]
    """
    height, width = normalised.shape[-2:]
    planes = np.concatenate(
        [np.full((1, height, width), bg_threshold, np.float32), normalised], axis=0
    )
    invalid = np.isnan(planes).any(axis=0)
    winner = np.nan_to_num(planes, nan=-np.inf).argmax(axis=0)
    lookup = np.asarray([0, *[1 + int(c) for c in classes]], dtype=np.int64)
    labels = lookup[winner]
    labels[invalid] = IGNORE
    return labels


def seed_labels(maps: np.ndarray, classes: Sequence[int], bg_threshold: float = 0.15) -> np.ndarray:
    """The seed labels of one image from its class maps ``M×H×W`` (one map per ``classes``).

    Example:
        >>> import numpy as np
        >>> from dense_readout.pseudo_labels import seed_labels
        >>> maps = np.array([[[0.0, 4.0], [2.0, 0.1]]])  # one class (index 0) present in the image
        >>> seed_labels(maps, [0]).tolist()  # label k + 1 for class k; 0 where below the threshold
        [[0, 1], [1, 0]]
    """
    if len(classes) != len(maps):
        from ..errors import InputError

        raise InputError(f"{len(maps)} maps but {len(classes)} classes; give one class per map.")
    return labels_from_normalised(normalise_maps(maps), classes, bg_threshold)
