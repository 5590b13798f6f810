"""Scoring pseudo-labels against ground-truth masks: confusion matrix, per-class IoU, mIoU, sweep.

Labels are ``0`` background, ``1..K`` classes; ``255`` (``IGNORE``) in the ground
truth is not scored, and neither is a pixel the prediction leaves ``IGNORE`` (outside
the crop; counted apart as ``unscored``). The mean IoU is over the classes present in
the ground truth or the prediction of the evaluated set (background included), as
VOC's evaluation does.

Example:
    >>> import numpy as np
    >>> confusion = ConfusionMatrix(3)
    >>> confusion.update(np.array([[0, 1], [2, 2]]), np.array([[0, 1], [1, 2]]))
    >>> [round(float(v), 3) for v in confusion.iou()], round(confusion.miou(), 3)
    ([1.0, 0.5, 0.5], 0.667)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .seeds import IGNORE, labels_from_normalised

__all__ = ["ConfusionMatrix", "ThresholdSweep"]


class ConfusionMatrix:
    """``labels×labels`` pixel counts, rows = ground truth, columns = prediction (int64).

    Example:
        >>> import numpy as np
        >>> from dense_readout.pseudo_labels import IGNORE, ConfusionMatrix
        >>> truth = np.array([[0, 0, 1, 1], [0, 2, 2, IGNORE]])
        >>> prediction = np.array([[0, 1, 1, 1], [0, 2, IGNORE, 2]])
        >>> confusion = ConfusionMatrix(3)
        >>> confusion.update(prediction, truth)
        >>> confusion.counts.tolist(), confusion.unscored  # a truth-2 pixel left IGNORE
        ([[2, 1, 0], [0, 2, 0], [0, 0, 1]], 1)
        >>> [round(float(v), 3) for v in confusion.iou()]  # 2/3, 2/3, 1/1
        [0.667, 0.667, 1.0]
        >>> round(confusion.miou(), 3), round(confusion.pixel_accuracy(), 3)  # 5 of 6 scored right
        (0.778, 0.833)
    """

    def __init__(self, num_labels: int) -> None:
        self.num_labels = int(num_labels)
        self.counts = np.zeros((self.num_labels, self.num_labels), dtype=np.int64)
        self.unscored = 0  # ground-truth pixels the prediction left IGNORE

    def update(self, prediction: np.ndarray, truth: np.ndarray) -> None:
        """Add one image (``H×W`` each, same size)."""
        prediction, truth = np.asarray(prediction).ravel(), np.asarray(truth).ravel()
        scored_truth = truth != IGNORE
        self.unscored += int((scored_truth & (prediction == IGNORE)).sum())
        keep = scored_truth & (prediction != IGNORE)
        pairs = truth[keep].astype(np.int64) * self.num_labels + prediction[keep]
        self.counts += np.bincount(pairs, minlength=self.num_labels**2).reshape(
            self.num_labels, self.num_labels
        )

    def iou(self) -> np.ndarray:
        """IoU per label: ``TP / (TP + FP + FN)``; NaN where the label never occurs."""
        true_positive = np.diag(self.counts).astype(np.float64)
        union = self.counts.sum(0) + self.counts.sum(1) - true_positive
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, true_positive / union, np.nan)

    def miou(self) -> float:
        """Mean IoU over the labels that occur (NaN when nothing was scored)."""
        values = self.iou()
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    def pixel_accuracy(self) -> float:
        """Fraction of scored pixels labelled right."""
        total = self.counts.sum()
        return float(np.trace(self.counts) / total) if total else float("nan")


class ThresholdSweep:
    """One :class:`ConfusionMatrix` per background threshold, fed the same normalised maps.

    Example:
        >>> import numpy as np
        >>> from dense_readout.pseudo_labels import ThresholdSweep
        >>> normalised = np.array([[[0.9, 0.5, 0.2, 0.0]]])  # one class map over a 1×4 image
        >>> truth = np.array([[1, 1, 0, 0]])  # label 1 = the class, 0 = background
        >>> sweep = ThresholdSweep([0.1, 0.3, 0.6], num_labels=2)
        >>> sweep.update(normalised, [0], truth)
        >>> [(c["bg_threshold"], round(c["miou"], 3)) for c in sweep.curve()]
        [(0.1, 0.583), (0.3, 1.0), (0.6, 0.583)]
        >>> sweep.best()["bg_threshold"]  # between 0.2 and 0.5 the seeds match the truth
        0.3
    """

    def __init__(self, thresholds: Sequence[float], num_labels: int) -> None:
        self.thresholds = [float(t) for t in thresholds]
        self.matrices = [ConfusionMatrix(num_labels) for _ in self.thresholds]

    def update(self, normalised: np.ndarray, classes: Sequence[int], truth: np.ndarray) -> None:
        """Add one image's normalised maps (one per ``classes``) against its ground truth."""
        for threshold, matrix in zip(self.thresholds, self.matrices, strict=True):
            matrix.update(labels_from_normalised(normalised, classes, threshold), truth)

    def curve(self) -> list[dict[str, float]]:
        """``[{bg_threshold, miou}]`` in threshold order."""
        return [
            {"bg_threshold": t, "miou": m.miou()}
            for t, m in zip(self.thresholds, self.matrices, strict=True)
        ]

    def best(self) -> dict[str, float]:
        """The threshold with the highest mIoU (the first of equals)."""
        curve = self.curve()
        scores = [(-1.0 if np.isnan(c["miou"]) else c["miou"]) for c in curve]
        return curve[int(np.argmax(scores))]
