"""Batched perturbation curves: deletion and insertion (Petsiuk et al. 2018), and ROAD.

Deletion removes the pixels in the order of the map (most relevant first) and
replaces them with a *baseline* image; insertion starts from the baseline and puts
the pixels back in the same order. The curve is the softmax probability of the
target after ``0, n/S, 2n/S, …, n`` pixels (``n = H·W``, ``S`` steps); its area is
the trapezoid rule over the fraction in [0, 1]. Deletion: lower is better;
insertion: higher is better.

All ``S − 1`` inner steps of a batch are built as one ``B·(S − 1)`` tensor and
forwarded in chunks of ``forward_batch`` (not one forward per step per image);
the two end points (the image, the baseline) do not depend on the map and are
passed in, computed once per batch.

With one baseline for both curves the two are mirror images:
``insertion(m)[k] = deletion(−m)[S − k]``, so a map drawn at random (where ``m``
and ``−m`` are equally likely) scores the same on both in expectation — the
chance level.

ROAD (Rong et al. 2022) removes a percentile of pixels and fills them by noisy
linear imputation, through pytorch-grad-cam's ``metrics/road.py``.

Example:
    >>> import torch
    >>> from dense_readout.compare.bench.perturbation import curve_auc, perturbation_curves
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> x, base = torch.randn(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    >>> maps, targets = torch.rand(2, 4, 4), torch.tensor([0, 2])
    >>> curves = perturbation_curves(model, x, base, maps, targets, steps=4, mode="deletion")
    >>> tuple(curves.shape), tuple(curve_auc(curves).shape)
    ((2, 5), (2,))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ...errors import InputError

__all__ = [
    "MODES",
    "curve_auc",
    "perturbation_curves",
    "pixel_order",
    "probabilities",
    "road_scores",
]

MODES = ("deletion", "insertion")


def probabilities(
    model: nn.Module, inputs: Tensor, targets: Tensor, forward_batch: int = 32
) -> Tensor:
    """Softmax probability of ``targets`` (per row of ``inputs``), in chunks, as float64."""
    out = []
    with torch.no_grad():
        for start in range(0, inputs.shape[0], forward_batch):
            logits = model(inputs[start : start + forward_batch]).double()
            chunk = targets[start : start + forward_batch].to(logits.device)
            out.append(logits.softmax(dim=1).gather(1, chunk.view(-1, 1))[:, 0].cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def pixel_order(maps: Tensor) -> Tensor:
    """Rank of every pixel by decreasing map value (0 = most relevant); ties by pixel index.

    Example:
        >>> pixel_order(torch.tensor([[[0.1, 0.9], [0.5, 0.5]]])).tolist()
        [[[3, 0], [1, 2]]]
    """
    flat = maps.flatten(1)
    order = torch.sort(-flat, dim=1, stable=True).indices
    ranks = torch.empty_like(order)
    positions = torch.arange(flat.shape[1]).expand_as(order)
    ranks.scatter_(1, order, positions)
    return ranks.view(maps.shape)


def perturbation_curves(
    model: nn.Module,
    inputs: Tensor,
    baseline: Tensor,
    maps: Tensor,
    targets: Tensor,
    steps: int = 16,
    mode: str = "deletion",
    ends: tuple[Tensor, Tensor] | None = None,
    forward_batch: int = 32,
) -> Tensor:
    """``B×(steps+1)`` target probabilities along the deletion or insertion path.

    Args:
        model: the classifier (eval mode).
        inputs: ``B×C×H×W`` images.
        baseline: the same shape, what removed pixels become.
        maps: ``B×H×W`` saliency (only the order of the values matters).
        targets: ``B`` class indices.
        steps: ``S``; step ``k`` has ``round(k·H·W/S)`` pixels removed (deletion) or inserted.
        mode: ``"deletion"`` or ``"insertion"``.
        ends: the probabilities of ``(inputs, baseline)`` if already known (saves two forwards).
        forward_batch: images per forward call.
    """
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}.")
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}.")
    if ends is None:
        ends = (
            probabilities(model, inputs, targets, forward_batch),
            probabilities(model, baseline, targets, forward_batch),
        )
    batch, pixels = inputs.shape[0], maps[0].numel()
    ranks = pixel_order(maps).to(inputs.device).unsqueeze(1)  # B×1×H×W
    counts = [round(k * pixels / steps) for k in range(1, steps)]
    mixed = []
    for count in counts:
        changed = ranks < count  # the `count` most relevant pixels
        if mode == "deletion":
            mixed.append(torch.where(changed, baseline, inputs))
        else:
            mixed.append(torch.where(changed, inputs, baseline))
    inner = torch.zeros(batch, 0, dtype=torch.float64)
    if mixed:
        stacked = torch.stack(mixed, dim=1).flatten(0, 1)  # B·(S−1) images, image-major
        repeated = targets.repeat_interleave(len(counts))
        inner = probabilities(model, stacked, repeated, forward_batch).view(batch, len(counts))
    first, last = ends if mode == "deletion" else (ends[1], ends[0])
    return torch.cat([first.view(-1, 1).double(), inner, last.view(-1, 1).double()], dim=1)


def curve_auc(curves: Tensor) -> Tensor:
    """Area under each curve, trapezoid rule over equally spaced fractions in [0, 1].

    Example:
        >>> float(curve_auc(torch.tensor([[1.0, 0.5, 0.0]]))[0])
        0.5
    """
    steps = curves.shape[1] - 1
    return (curves.sum(dim=1) - (curves[:, 0] + curves[:, -1]) / 2) / steps


def road_scores(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor,
    targets: Tensor,
    percentiles: Sequence[int] = (20, 50, 80),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """ROAD with pytorch-grad-cam: target probability after imputing MoRF / LeRF pixels.

    ``road_morf``: mean over ``percentiles`` p of the probability when the most relevant
    ``(100 − p)`` % are imputed (lower is better); ``road_lerf``: the most relevant ``p`` %
    kept, the rest imputed (higher is better; pytorch-grad-cam's convention);
    ``road_combined = (lerf − morf) / 2`` (higher is better). The imputer's noise is
    drawn from torch's global generator, seeded with ``seed`` here.
    """
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    cams = maps.detach().float().cpu().numpy()
    wanted = [ClassifierOutputSoftmaxTarget(int(k)) for k in targets.tolist()]
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        morf = [
            ROADMostRelevantFirst(p)(inputs, cams, wanted, model, return_diff=False)
            for p in percentiles
        ]
        lerf = [
            ROADLeastRelevantFirst(p)(inputs, cams, wanted, model, return_diff=False)
            for p in percentiles
        ]
    finally:
        torch.random.set_rng_state(state)
    morf_mean = np.mean(np.asarray(morf, dtype=np.float64), axis=0)
    lerf_mean = np.mean(np.asarray(lerf, dtype=np.float64), axis=0)
    return {
        "road_morf": morf_mean,
        "road_lerf": lerf_mean,
        "road_combined": (lerf_mean - morf_mean) / 2,
    }
