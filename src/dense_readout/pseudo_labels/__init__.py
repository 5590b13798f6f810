"""Weakly supervised segmentation seeds from exported maps (the IRN recipe), with evaluation.

* :mod:`.seeds`: ReLU + max-normalisation per class, background threshold, argmax.
* :mod:`.metrics`: confusion matrix, per-class IoU, mIoU, background-threshold sweep.
* :mod:`.palette`: VOC palette label PNGs.
* :mod:`.run`: :func:`make_pseudo_labels` over an export store (``dense-readout pseudo-labels``).

Example:
    >>> import numpy as np
    >>> from dense_readout.pseudo_labels import ConfusionMatrix, seed_labels
    >>> labels = seed_labels(np.array([[[0.0, 4.0], [2.0, 0.1]]]), [0])
    >>> matrix = ConfusionMatrix(2); matrix.update(labels, np.array([[0, 1], [1, 1]]))
    >>> labels.tolist(), round(matrix.miou(), 3)
    ([[0, 1], [1, 0]], 0.583)
"""

from __future__ import annotations

from .metrics import ConfusionMatrix, ThresholdSweep
from .palette import read_label_png, save_label_png, voc_palette
from .run import TRUTHS, PseudoLabelConfig, image_classes, make_pseudo_labels, register_truth
from .seeds import IGNORE, labels_from_normalised, normalise_maps, seed_labels

__all__ = [
    "IGNORE",
    "TRUTHS",
    "ConfusionMatrix",
    "PseudoLabelConfig",
    "ThresholdSweep",
    "image_classes",
    "labels_from_normalised",
    "make_pseudo_labels",
    "normalise_maps",
    "read_label_png",
    "register_truth",
    "save_label_png",
    "seed_labels",
    "voc_palette",
]
