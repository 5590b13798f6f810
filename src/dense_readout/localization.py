"""Localization scores of any saliency map against boxes or masks.

Per-image scores against a foreground mask (registered in
:data:`MASK_METRICS`, add your own with :func:`register_mask_metric`). Each
returns one value per image; an image whose mask is empty gives **NaN** (as in
Quantus), and :func:`summarise_scores` counts those images instead of
averaging them.

* ``pointing_game``: 1 if a maximal pixel of the map lies in the mask (or
  within ``tolerance`` pixels of it, Zhang et al. 2016). Ties: any maximal pixel
  counts (Quantus' ``PointingGame``).
* ``energy_pointing_game``: the share of the map's positive energy inside the
  mask, ``Σ_mask max(s, 0) / Σ max(s, 0)`` (Wang et al. 2020, Score-CAM).
* ``relevance_mass``: ``Σ_mask s / Σ s`` on the map as given (Quantus'
  ``RelevanceMassAccuracy`` with ``abs=False``; signed maps can leave [0, 1]).
* ``relevance_rank``: with ``k`` the mask's pixel count, the share of the ``k``
  highest pixels that fall in the mask (Quantus' ``RelevanceRankAccuracy``).
* ``attribution_localisation``: ``Σ_mask |s| / Σ |s|`` (Kohlbrenner et al. 2020,
  Quantus' ``AttributionLocalisation`` with its defaults; NaN above 1, as there).
* ``top_k_intersection``: the share of the ``k = 1000`` highest pixels inside the
  mask (Theiner et al. 2021, Quantus' ``TopKIntersection``).

Ties in the two ranking scores (``relevance_rank``, ``top_k_intersection``)
follow Quantus: pixels are ordered by ``np.argsort(-s)``, numpy's default sort, in
the map's own floating dtype (as Quantus sorts it; the tie order of that sort
depends on the dtype, the numpy release and the CPU's SIMD kernels).
It keeps equal values in pixel order on small maps but not always on large
ones (it is not a stable sort), so on a map with a plateau across the cut the
score depends on that order, exactly as Quantus' does; ``ties="first"`` takes
equal pixels in row-major order instead (a stable sort), which is
reproducible across numpy versions. The two differ only when a plateau crosses
the cut (e.g. a ReLU'd map whose zeros must fill the top ``k``).

Dataset-level scores (streaming accumulators, so a benchmark can feed one image
at a time):

* :class:`MaxBoxAcc`: Choe et al. 2020 ("Evaluating WSOL right"). Each map is
  min-max normalised, quantised to uint8 like clovaai/wsolevaluation, and
  thresholded at every ``τ`` of ``thresholds`` (default ``0, 0.001, …, 0.999``;
  a pixel is on when its uint8 value exceeds ``int(τ·max)``). The boxes of
  the contours (all contours for **V2**, the largest for V1) are compared with
  all ground-truth boxes; the image is correct at ``(τ, δ)`` when the best IoU
  is ≥ δ. ``MaxBoxAcc(δ) = max_τ BoxAcc(τ, δ)``; **MaxBoxAccV2** is its mean over
  δ ∈ {0.3, 0.5, 0.7}. Boxes are ``x0, y0, x1, y1`` inclusive pixel indices and IoU
  counts pixels (the ``+1`` convention of wsolevaluation). One deliberate
  difference: wsolevaluation takes ``x1 = x + w`` from ``cv2.boundingRect``, one
  pixel past the contour, so even a perfect map scores IoU < 1 (25/36 for a
  5×5 box); here ``x1 = x + w − 1``. ``wsol_boxes=True`` reproduces theirs.
* :class:`PxAP`: pixel average precision of the min-max normalised maps against
  masks, pooled over all pixels of all images (wsolevaluation's MaskEvaluator;
  optional ignore regions).

Everything is in fractions (multiply by 100 for percent). Maps and masks are
``H×W`` or ``B×H×W`` numpy arrays or tensors and must have the same size:

Everything is in fractions (multiply by 100 for percent). Maps and masks are
``H×W`` or ``B×H×W`` numpy arrays or tensors and must have the same size:
upsample maps to the image first (:meth:`dense_readout.ReadoutResult.upsample`).

Example:
    >>> import numpy as np
    >>> from dense_readout.localization import pointing_game, MaxBoxAcc
    >>> saliency = np.zeros((20, 20)); saliency[5:10, 5:10] = 1.0
    >>> mask = np.zeros((20, 20), bool); mask[4:12, 4:12] = True
    >>> pointing_game(saliency, mask).tolist()
    [1.0]
    >>> metric = MaxBoxAcc(); _ = metric.update(saliency, [np.array([[5, 5, 9, 9]])])
    >>> metric.compute().v2
    1.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from ._boxes import (
    ArrayLike,
    MaxBoxAcc,
    MaxBoxAccResult,
    PxAP,
    _pair,
    box_iou,
    boxes_from_map,
)
from .errors import InputError
from .registry import Registry

__all__ = [
    "MASK_METRICS",
    "MaxBoxAcc",
    "MaxBoxAccResult",
    "PxAP",
    "ScoreSummary",
    "attribution_localisation",
    "box_iou",
    "boxes_from_map",
    "energy_pointing_game",
    "pointing_game",
    "register_mask_metric",
    "relevance_mass",
    "relevance_rank",
    "score_masks",
    "summarise_scores",
    "top_k_intersection",
]

_TIES = ("quantus", "first")

PEAK_TIE = 1e-5
"""Relative tolerance (of a map's range) within which pixels tie for its maximum."""

# -- per-image mask scores ------------------------------------------------------------


def pointing_game(saliency: ArrayLike, mask: ArrayLike, tolerance: float = 0.0) -> np.ndarray:
    """1.0 where a maximal pixel hits the mask (within ``tolerance`` pixels), else 0.0; ``B``.

    Images with an empty mask give NaN. Pixels within ``PEAK_TIE`` (1e-5) of the map's range
    below its maximum are maxima too: two computations of one map (CAM and Grad-CAM on a
    GAP-linear model) differ in the last bits, and rounding must not decide a hit.

    Example:
        >>> import numpy as np
        >>> from dense_readout.localization import pointing_game
        >>> saliency = np.zeros((2, 4, 4)); saliency[0, 1, 1] = 1.0; saliency[1, 3, 3] = 1.0
        >>> mask = np.zeros((2, 4, 4), dtype=bool); mask[:, :2, :2] = True
        >>> pointing_game(saliency, mask).tolist(), pointing_game(saliency, mask, tolerance=3).tolist()
        ([1.0, 0.0], [1.0, 1.0])
    """
    maps, masks = _pair(saliency, mask)
    if tolerance < 0:
        raise InputError(f"tolerance must be >= 0 pixels, got {tolerance}.")
    scores = np.empty(maps.shape[0])
    for index, (one, region) in enumerate(zip(maps, masks, strict=False)):
        if not region.any():
            scores[index] = np.nan
            continue
        if tolerance > 0:
            from scipy.ndimage import distance_transform_edt

            region = distance_transform_edt(~region) <= tolerance
        peaks = one >= one.max() - PEAK_TIE * (one.max() - one.min())
        scores[index] = float(np.logical_and(peaks, region).any())
    return scores


def _ratio(inside: np.ndarray, total: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``inside / total`` per image; NaN where the mask is empty or the total is 0."""
    valid = (total != 0) & masks.reshape(masks.shape[0], -1).any(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid, inside / np.where(valid, total, 1.0), np.nan)


def energy_pointing_game(saliency: ArrayLike, mask: ArrayLike) -> np.ndarray:
    """Share of the positive saliency energy inside the mask, ``B``.

    NaN for an empty mask or an all-≤0 map.

    Example:
        >>> import numpy as np
        >>> s = np.array([[3.0, 1.0], [-2.0, 0.0]])
        >>> energy_pointing_game(s, np.array([[True, False], [False, False]])).tolist()
        [0.75]
    """
    maps, masks = _pair(saliency, mask)
    energy = np.clip(maps, 0.0, None)
    return _ratio((energy * masks).sum(axis=(1, 2)), energy.sum(axis=(1, 2)), masks)


def relevance_mass(saliency: ArrayLike, mask: ArrayLike) -> np.ndarray:
    """Quantus' relevance mass accuracy: ``Σ_mask s / Σ s`` on the map as given, ``B``.

    NaN for an empty mask (Quantus too) or a map summing to 0.

    Example:
        >>> import numpy as np
        >>> s = np.array([[3.0, 1.0], [0.0, 0.0]])
        >>> relevance_mass(s, s > 2).tolist(), relevance_mass(s, s > 5).tolist()
        ([0.75], [nan])
    """
    maps, masks = _pair(saliency, mask)
    return _ratio((maps * masks).sum(axis=(1, 2)), maps.sum(axis=(1, 2)), masks)


def attribution_localisation(
    saliency: ArrayLike,
    mask: ArrayLike,
    *,
    absolute: bool = True,
    positive: bool = False,
    weighted: bool = False,
) -> np.ndarray:
    """Quantus' ``AttributionLocalisation`` (Kohlbrenner et al. 2020): relevance share in the mask, ``B``.

    ``absolute`` (Quantus' ``abs=True``, default) scores ``|s|``; ``positive``
    keeps ``max(s, 0)`` (then with ``absolute=False`` it is the energy pointing
    game). A share above 1 (possible for signed maps) is NaN, as in Quantus.
    ``weighted`` multiplies by the mask's share of the image, ``|mask| / (H·W)``
    (Quantus 0.6 divides by ``x_batch[2:].size``, the batch from its third image
    on, which looks like a slip; not reproduced). An all-zero map scores 0, as
    in Quantus (which adds 1e-9 to the denominator); an empty mask gives NaN.

    Example:
        >>> import numpy as np
        >>> s = np.array([[3.0, -1.0], [0.0, 0.0]])
        >>> attribution_localisation(s, s > 2).tolist()
        [0.75]
        >>> attribution_localisation(s, s > 2, absolute=False, positive=True).tolist()
        [1.0]
    """
    maps, masks = _pair(saliency, mask)
    if absolute:
        maps = np.abs(maps)
    if positive:
        maps = np.clip(maps, 0.0, None)
    total = maps.sum(axis=(1, 2))
    share = _ratio((maps * masks).sum(axis=(1, 2)), np.where(total == 0, 1.0, total), masks)
    share[share > 1] = np.nan
    if weighted:
        share = share * masks.reshape(masks.shape[0], -1).mean(axis=1)
    return share


def _sort_dtype(saliency: ArrayLike) -> np.dtype:
    """The dtype Quantus would sort ``saliency`` in: its own floating dtype.

    numpy's default sort is unstable and its tie order depends on the dtype (and on the
    numpy release and CPU: other SIMD kernels), so matching Quantus on a plateau needs
    the same dtype as the map it is given; the float64 working copy would tie otherwise.
    """
    name = str(getattr(saliency, "dtype", "float64")).removeprefix("torch.")  # torch or numpy
    try:
        dtype = np.dtype(name)
    except TypeError:  # e.g. bfloat16, which numpy has no dtype for
        return np.dtype(np.float64)
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def _order(flat: np.ndarray, ties: str, dtype: np.dtype) -> np.ndarray:
    """Pixel indices, highest value first; ``ties`` as in the module docstring."""
    if ties not in _TIES:
        raise InputError(f"ties must be one of {list(_TIES)}, got {ties!r}.")
    if ties == "quantus":  # the working copy is float64; the cast back to the map's dtype is exact
        return np.argsort(-flat.astype(dtype, copy=False))
    return np.argsort(-flat, kind="stable")


def relevance_rank(saliency: ArrayLike, mask: ArrayLike, ties: str = "quantus") -> np.ndarray:
    """Quantus' relevance rank accuracy: share of the top-``|mask|`` pixels in the mask, ``B``.

    NaN for an empty mask. Ties: see the module docstring (``"quantus"`` or ``"first"``).

    Example:
        >>> import numpy as np
        >>> s = np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 2.0, 0.0]])
        >>> mask = np.zeros((3, 4), bool); mask[0, :2] = True  # 2 pixels, on the plateau
        >>> relevance_rank(s, mask).tolist(), relevance_rank(s, mask, ties="first").tolist()
        ([0.0], [0.0])
        >>> mask[2, 2] = True  # now 3 pixels: the peak, then one plateau pixel (the first)
        >>> relevance_rank(s, mask).tolist()
        [0.6666666666666666]
    """
    maps, masks = _pair(saliency, mask)
    dtype = _sort_dtype(saliency)
    scores = np.empty(maps.shape[0])
    for index, (one, region) in enumerate(zip(maps, masks, strict=False)):
        flat = region.ravel()
        size = int(flat.sum())
        order = _order(one.ravel(), ties, dtype)
        scores[index] = np.nan if size == 0 else flat[order[:size]].mean()
    return scores


def top_k_intersection(
    saliency: ArrayLike,
    mask: ArrayLike,
    k: int = 1000,
    *,
    concept_influence: bool = False,
    ties: str = "quantus",
) -> np.ndarray:
    """Quantus' ``TopKIntersection``: share of the ``k`` highest pixels inside the mask, ``B``.

    ``concept_influence`` divides by the mask's share of the image (Quantus'
    option). NaN for an empty mask. Ties: see the module docstring.

    Example:
        >>> import numpy as np
        >>> s = np.arange(16.0).reshape(4, 4)  # the highest pixels are the bottom row
        >>> mask = np.zeros((4, 4), bool); mask[3] = True
        >>> top_k_intersection(s, mask, k=4).tolist(), top_k_intersection(s, mask, k=8).tolist()
        ([1.0], [0.5])
    """
    maps, masks = _pair(saliency, mask)
    dtype = _sort_dtype(saliency)
    pixels = maps.shape[1] * maps.shape[2]
    if not 1 <= int(k) <= pixels:
        raise InputError(f"k must be in [1, {pixels}] (the map's pixels), got {k}.")
    scores = np.empty(maps.shape[0])
    for index, (one, region) in enumerate(zip(maps, masks, strict=False)):
        flat = region.ravel()
        if not flat.any():
            scores[index] = np.nan
            continue
        scores[index] = flat[_order(one.ravel(), ties, dtype)[: int(k)]].mean()
        if concept_influence:
            scores[index] *= pixels / flat.sum()
    return scores


MaskMetric = Callable[[ArrayLike, ArrayLike], np.ndarray]

MASK_METRICS: Registry[MaskMetric] = Registry(
    "localization metric",
    hint="Register your own with dense_readout.localization.register_mask_metric.",
)


@overload
def register_mask_metric(name: str) -> Callable[[MaskMetric], MaskMetric]: ...


@overload
def register_mask_metric(name: str, metric: MaskMetric) -> MaskMetric: ...


def register_mask_metric(name: str, metric: MaskMetric | None = None) -> Any:
    """Decorator: add a per-image ``(saliency, mask) -> B scores`` metric under ``name``.

    ``register_mask_metric(name, metric)`` is the same registration without the
    decorator syntax; both return ``metric``.

    Example:
        >>> import numpy as np
        >>> from dense_readout.localization import MASK_METRICS, register_mask_metric, score_masks
        >>> @register_mask_metric("peak_value")
        ... def peak_value(saliency, mask):
        ...     return np.asarray(saliency).reshape(-1, 4).max(1)
        >>> score_masks(np.ones((2, 2)), np.ones((2, 2), bool), ["peak_value"])["peak_value"].tolist()
        [1.0]
        >>> _ = MASK_METRICS.unregister("peak_value"); "peak_value" in MASK_METRICS
        False
    """
    if metric is None:
        return MASK_METRICS.register(name)
    return MASK_METRICS.register(name, metric)


# the metrics are public functions defined above the registry: the decorator is applied here
register_mask_metric("pointing_game")(pointing_game)
register_mask_metric("energy_pointing_game")(energy_pointing_game)
register_mask_metric("relevance_mass")(relevance_mass)
register_mask_metric("relevance_rank")(relevance_rank)
register_mask_metric("attribution_localisation")(attribution_localisation)
register_mask_metric("top_k_intersection")(top_k_intersection)


def score_masks(
    saliency: ArrayLike, mask: ArrayLike, metrics: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """Several registered per-image metrics at once: ``{name: B scores}``.

    Without ``metrics``, every registered one, in registration order.

    Example:
        >>> import numpy as np
        >>> from dense_readout.localization import MASK_METRICS, score_masks
        >>> saliency = np.zeros((2, 32, 32))
        >>> saliency[0, 2:6, 2:6] = 1; saliency[1, 20:24, 20:24] = 1  # inside, outside the mask
        >>> mask = np.zeros((2, 32, 32), bool); mask[:, :16, :16] = True
        >>> scores = score_masks(saliency, mask, ["pointing_game", "relevance_mass"])
        >>> {name: values.tolist() for name, values in scores.items()}
        {'pointing_game': [1.0, 0.0], 'relevance_mass': [1.0, 0.0]}
        >>> list(score_masks(saliency, mask)) == [name for name, _ in MASK_METRICS.items()]
        True
    """
    names = list(metrics) if metrics is not None else [name for name, _ in MASK_METRICS.items()]
    unknown = [name for name in names if name not in MASK_METRICS]
    if unknown:
        raise InputError(
            f"Unknown localization metric(s) {unknown}; registered: {sorted(MASK_METRICS)}."
        )
    return {name: MASK_METRICS.get(name)(saliency, mask) for name in names}


@dataclass(frozen=True)
class ScoreSummary:
    """One score over a set of images: ``mean`` of the ``scored`` images; ``empty`` were NaN.

    Example:
        >>> import numpy as np
        >>> from dense_readout.localization import score_masks, summarise_scores
        >>> saliency = np.zeros((3, 32, 32)); saliency[:, 4, 4] = 1  # every peak at (4, 4)
        >>> mask = np.zeros((3, 32, 32), bool)
        >>> mask[0, :8, :8] = True; mask[1, 16:, 16:] = True  # image 2: an empty mask
        >>> summary = summarise_scores(score_masks(saliency, mask, ["pointing_game"]))
        >>> summary["pointing_game"]  # one hit, one miss; the empty mask scores NaN
        ScoreSummary(mean=0.5, scored=2, empty=1)
    """

    mean: float
    scored: int
    empty: int


def summarise_scores(scores: dict[str, np.ndarray]) -> dict[str, ScoreSummary]:
    """Per-metric mean over the images with a score; NaN images (empty masks) are counted.

    Example:
        >>> import numpy as np
        >>> summarise_scores({"pointing_game": np.array([1.0, np.nan, 0.0])})
        {'pointing_game': ScoreSummary(mean=0.5, scored=2, empty=1)}
    """
    summary = {}
    for name, values in scores.items():
        array = np.asarray(values, dtype=np.float64).ravel()
        finite = array[~np.isnan(array)]
        mean = float(finite.mean()) if finite.size else float("nan")
        summary[name] = ScoreSummary(mean, int(finite.size), int(array.size - finite.size))
    return summary
