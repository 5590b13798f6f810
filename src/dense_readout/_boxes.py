"""Box- and pixel-level localization scores (wsolevaluation's protocol) and map input checks.

The public names are re-exported by :mod:`dense_readout.localization`, which
documents them; this module holds the dataset-level accumulators
(:class:`MaxBoxAcc`, :class:`PxAP`), the contour boxes they need, and the checks
that turn maps and masks (numpy or torch, ``H×W`` or ``B×H×W``) into float64 /
bool batches for every localization score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import DenseReadoutError, InputError

__all__ = ["MaxBoxAcc", "MaxBoxAccResult", "PxAP", "box_iou", "boxes_from_map"]

ArrayLike = np.ndarray | torch.Tensor


# -- input handling -------------------------------------------------------------------


def _as_batch(values: ArrayLike, name: str, dtype: type | None = None) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise InputError(
            f"{name} must be H×W or B×H×W, got shape {array.shape}. The localization scores "
            "are 2-D: score a clip or volume frame by frame (ReadoutResult.frame(t))."
        )
    if dtype is bool:
        return array.astype(bool)
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN/Inf values.")
    return array


def _pair(saliency: ArrayLike, mask: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    maps = _as_batch(saliency, "saliency")
    masks = _as_batch(mask, "mask", bool)
    if masks.shape[0] == 1 and maps.shape[0] > 1:
        masks = np.broadcast_to(masks, maps.shape)
    if maps.shape != masks.shape:
        raise InputError(
            f"saliency {maps.shape} and mask {masks.shape} differ in size. Upsample the maps to "
            "the image size first (e.g. ReadoutResult.upsample or compare(..., size=...))."
        )
    return maps, masks


def _normalise(saliency: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] per map; a constant map becomes all zeros."""
    low = saliency.min(axis=(-2, -1), keepdims=True)
    span = saliency.max(axis=(-2, -1), keepdims=True) - low
    return np.where(span > 0, (saliency - low) / np.where(span > 0, span, 1.0), 0.0)


# -- boxes ------------------------------------------------------------------------------


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU matrix of ``x0, y0, x1, y1`` boxes with inclusive pixel coordinates (``+1`` areas).

    Example:
        >>> import numpy as np
        >>> from dense_readout.localization import box_iou
        >>> box_iou(np.array([[0, 0, 9, 9]]), np.array([[0, 0, 9, 9], [5, 0, 14, 9], [20, 20, 29, 29]])).round(4).tolist()
        [[1.0, 0.3333, 0.0]]
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(1, -1, 4)
    width = np.clip(
        np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1, 0, None
    )
    height = np.clip(
        np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1, 0, None
    )
    intersection = width * height
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)


def _cv2():
    try:
        import cv2
    except ImportError:  # pragma: no cover - cv2 comes with pytorch-grad-cam
        raise DenseReadoutError(
            "Box metrics need OpenCV for contours: pip install opencv-python-headless "
            "(it is installed with the grad-cam extra)."
        ) from None
    return cv2


def boxes_from_map(
    saliency: ArrayLike, threshold: float, multi_contour: bool = True, wsol_boxes: bool = False
) -> np.ndarray:
    """Boxes (``N×4``, inclusive) around the contours of a map thresholded at ``threshold``.

    The map is min-max normalised and quantised to uint8 as in wsolevaluation;
    pixels above ``int(threshold · max)`` are on. No contour gives ``[[0, 0, 0, 0]]``.

    Example:
        >>> import numpy as np
        >>> from dense_readout.localization import boxes_from_map
        >>> saliency = np.zeros((16, 16))
        >>> saliency[2:5, 3:7] = 1.0; saliency[10:14, 9:12] = 0.8  # two blobs
        >>> boxes_from_map(saliency, 0.5).tolist()  # x0, y0, x1, y1, inclusive
        [[9.0, 10.0, 11.0, 13.0], [3.0, 2.0, 6.0, 4.0]]
        >>> boxes_from_map(saliency, 0.9).tolist()  # the 0.8 blob is off above 0.9 · max
        [[3.0, 2.0, 6.0, 4.0]]
        >>> boxes_from_map(saliency, 0.5, multi_contour=False).tolist()  # the largest contour
        [[9.0, 10.0, 11.0, 13.0]]
        >>> boxes_from_map(np.zeros((4, 4)), 0.5).tolist()
        [[0.0, 0.0, 0.0, 0.0]]
    """
    (one,) = _as_batch(saliency, "saliency")
    image = (_normalise(one) * 255).astype(np.uint8)
    return _boxes_at(image, int(threshold * image.max()), multi_contour, wsol_boxes)


def _boxes_at(
    image: np.ndarray, level: int, multi_contour: bool, wsol_boxes: bool = False
) -> np.ndarray:
    cv2 = _cv2()
    height, width = image.shape
    _, binary = cv2.threshold(image, level, 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
    if len(contours) == 0:
        return np.zeros((1, 4))
    if not multi_contour:
        contours = [max(contours, key=cv2.contourArea)]
    boxes = []
    past = 0 if wsol_boxes else 1  # wsolevaluation: x1 = x + w (one pixel past the contour)
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        boxes.append([x, y, min(x + w - past, width - 1), min(y + h - past, height - 1)])
    return np.asarray(boxes, dtype=np.float64)


def _threshold_grid(thresholds: Sequence[float] | np.ndarray | None) -> np.ndarray:
    """The map thresholds as a float64 array (default ``0, 0.001, …, 0.999``)."""
    return np.asarray(np.arange(0, 1, 0.001) if thresholds is None else thresholds, np.float64)


@dataclass
class MaxBoxAccResult:
    """``per_iou``: ``{δ: MaxBoxAcc(δ)}``; ``v2``: their mean; ``best_threshold``: the argmax τ per δ.

    Example:
        >>> import numpy as np
        >>> from dense_readout.localization import MaxBoxAcc
        >>> metric = MaxBoxAcc(iou_thresholds=(0.5, 0.7), thresholds=[0.1, 0.5, 0.9])
        >>> hit = np.zeros((32, 32)); hit[8:16, 8:24] = 1  # exactly the box
        >>> miss = np.zeros((32, 32)); miss[24:30, 0:6] = 1  # elsewhere
        >>> _ = metric.update(np.stack([hit, miss]), [np.array([[8, 8, 23, 15]])] * 2)
        >>> result = metric.compute()
        >>> result.per_iou, result.v2, result.count  # half the images at both δ
        ({0.5: 0.5, 0.7: 0.5}, 0.5, 2)
        >>> result.best_threshold, result.multi_contour  # ties: the first τ
        ({0.5: 0.1, 0.7: 0.1}, True)
    """

    per_iou: dict[float, float]
    v2: float
    best_threshold: dict[float, float]
    count: int
    multi_contour: bool


@dataclass
class MaxBoxAcc:
    """Streaming MaxBoxAcc / MaxBoxAccV2 (Choe et al. 2020).

    Args:
        iou_thresholds: the δ values (default 0.3, 0.5, 0.7).
        thresholds: map thresholds τ in [0, 1) (default ``np.arange(0, 1, 0.001)``).
        multi_contour: True for V2 (all contours), False for the original MaxBoxAcc
            (largest contour only; use ``iou_thresholds=(0.5,)`` for the original).
        wsol_boxes: reproduce wsolevaluation's one-pixel-too-large contour boxes.

    Example:
        >>> import numpy as np
        >>> from dense_readout.localization import MaxBoxAcc
        >>> metric = MaxBoxAcc()
        >>> saliency = np.zeros((32, 32)); saliency[8:16, 8:24] = 1
        >>> _ = metric.update(saliency, [np.array([[8, 8, 23, 15]])])
        >>> metric.compute().per_iou[0.7]
        1.0
    """

    iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7)
    thresholds: Sequence[float] | np.ndarray | None = None  # an array after __post_init__
    multi_contour: bool = True
    wsol_boxes: bool = False
    _taus: np.ndarray = field(init=False, repr=False)
    _correct: np.ndarray = field(init=False, repr=False)
    _count: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        taus = _threshold_grid(self.thresholds)
        if taus.ndim != 1 or len(taus) == 0:
            raise InputError("thresholds must be a non-empty 1-D sequence in [0, 1).")
        if (taus < 0).any() or (taus >= 1).any():
            raise InputError("thresholds must lie in [0, 1).")
        if not all(0 < delta <= 1 for delta in self.iou_thresholds):
            raise InputError(f"iou_thresholds must lie in (0, 1], got {list(self.iou_thresholds)}.")
        self.thresholds = self._taus = taus
        self._correct = np.zeros((len(self.iou_thresholds), len(taus)))

    def best_ious(self, saliency: ArrayLike, boxes: np.ndarray) -> np.ndarray:
        """Best IoU with any ground-truth box at every threshold, for one map."""
        (one,) = _as_batch(saliency, "saliency")
        gt = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(gt) == 0:
            raise InputError("Each image needs at least one ground-truth box (x0, y0, x1, y1).")
        image = (_normalise(one) * 255).astype(np.uint8)
        levels = (self._taus * image.max()).astype(int)
        cache: dict[int, float] = {}
        result = np.empty(len(levels))
        for index, level in enumerate(levels):
            if level not in cache:
                estimated = _boxes_at(image, int(level), self.multi_contour, self.wsol_boxes)
                cache[level] = float(box_iou(estimated, gt).max())
            result[index] = cache[level]
        return result

    def update(self, saliency: ArrayLike, boxes: Sequence[np.ndarray]) -> np.ndarray:
        """Add a batch: maps ``B×H×W`` and one ``N_i×4`` box array per map. Returns ``B×T`` IoUs."""
        maps = _as_batch(saliency, "saliency")
        if len(boxes) != maps.shape[0]:
            raise InputError(
                f"Got {len(boxes)} box arrays for {maps.shape[0]} maps; give one per map."
            )
        ious = np.stack([self.best_ious(one, gt) for one, gt in zip(maps, boxes, strict=False)])
        for row, delta in enumerate(self.iou_thresholds):
            self._correct[row] += (ious >= delta).sum(axis=0)
        self._count += maps.shape[0]
        return ious

    def compute(self) -> MaxBoxAccResult:
        if self._count == 0:
            raise InputError("MaxBoxAcc has no images yet; call update() first.")
        accuracy = self._correct / self._count
        per_iou = {float(d): float(accuracy[i].max()) for i, d in enumerate(self.iou_thresholds)}
        best = {
            float(d): float(self._taus[accuracy[i].argmax()])
            for i, d in enumerate(self.iou_thresholds)
        }
        return MaxBoxAccResult(
            per_iou, float(np.mean(list(per_iou.values()))), best, self._count, self.multi_contour
        )


@dataclass
class PxAP:
    """Streaming pixel average precision (wsolevaluation's MaskEvaluator).

    Histograms of the normalised map values at foreground and background pixels
    are pooled over images; AP is ``Σ precision · Δrecall`` over thresholds.

    Example:
        >>> import numpy as np
        >>> from dense_readout.localization import PxAP
        >>> metric = PxAP()
        >>> mask = np.zeros((8, 8), bool); mask[:4] = True
        >>> metric.update(mask.astype(float), mask)
        >>> round(metric.compute(), 6)
        1.0
    """

    thresholds: Sequence[float] | np.ndarray | None = None  # an array after __post_init__
    _positive: np.ndarray = field(init=False, repr=False)
    _negative: np.ndarray = field(init=False, repr=False)
    _edges: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        taus = _threshold_grid(self.thresholds)
        self.thresholds = taus
        self._edges = np.append(taus, [1.0, 2.0, 3.0])
        self._positive = np.zeros(len(self._edges) - 1)
        self._negative = np.zeros(len(self._edges) - 1)

    def update(self, saliency: ArrayLike, mask: ArrayLike, ignore: ArrayLike | None = None) -> None:
        """Add maps ``B×H×W`` with foreground masks (and optional ignore regions)."""
        maps, masks = _pair(saliency, mask)
        maps = _normalise(maps)
        keep = np.ones_like(masks) if ignore is None else ~_pair(saliency, ignore)[1]
        self._positive += np.histogram(maps[masks & keep], bins=self._edges)[0]
        self._negative += np.histogram(maps[~masks & keep], bins=self._edges)[0]

    def compute(self) -> float:
        true_positive = self._positive[::-1].cumsum()
        false_positive = self._negative[::-1].cumsum()
        positives = self._positive.sum()
        if positives <= 0:
            raise InputError("PxAP needs at least one foreground pixel over the images seen.")
        predicted = true_positive + false_positive
        precision = np.where(
            predicted > 0, true_positive / np.where(predicted > 0, predicted, 1), 0.0
        )
        recall = true_positive / positives
        valid = predicted[1:] > 0
        return float((precision[1:] * np.diff(recall))[valid].sum())
